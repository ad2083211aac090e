//! Sending one bulk batch until it has a final outcome: submit it (retrying
//! throttling and failures), then poll its status with backoff until Target
//! reports it `complete`. Every call spends one of the pod's share of
//! `bulk.calls_per_minute` ([`CallBudget`]); bulk calls never spend the
//! per-second budget of single updates.
//!
//! Nothing goes round forever:
//!
//! - A submission Target answers `success=false` [`MAX_REFUSALS`] times is
//!   given up: Adobe documents `success=false` as a malformed batch, and the
//!   batch's events are dead-lettered as `target_rejected` with Adobe's message.
//! - A batch Target loses after taking it (`stuck`; a status call answered 4xx
//!   or `success=false`, as when Adobe has forgotten the batch; a status URL
//!   that cannot be polled safely; `incomplete`, or no status answer at all,
//!   for longer than [`MAX_PROCESSING`]) is sent again, at most [`MAX_RESUBMISSIONS`] times
//!   ([`Resubmissions`] says why that is safe), then dead-lettered likewise.

use super::gate::SendGate;
pub use super::resubmissions::MAX_RESUBMISSIONS;
use super::resubmissions::{BatchKey, Resubmissions};
use crate::delivery::gate::{until_ready, BudgetLimiter, TokioClock};
use crate::ops::metrics::{BatchStatus, BulkCall, CallOutcome, Metrics};
use crate::retry::RetryPolicy;
use crate::target::bulk::{BatchState, BulkClient, BulkError, RetryCause};
use bytes::Bytes;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `success=false` answers to one submission before the batch is given up.
pub const MAX_REFUSALS: u32 = 3;
/// How long a batch may stay `incomplete` before it counts as lost: Adobe
/// applies a batch in at most 24 hours, and keeps its status no longer.
pub const MAX_PROCESSING: Duration = Duration::from_secs(24 * 3600);

/// The pod's share of Adobe's bulk calls per minute, spread evenly (no burst).
#[derive(Debug)]
pub struct CallBudget {
    per_minute: u32,
    /// The spacing in force.
    spacing: Mutex<Spacing>,
    /// Wakes callers waiting on a limiter that was just replaced.
    changed: tokio::sync::Notify,
}

/// How a [`CallBudget`] spaces calls now.
#[derive(Debug)]
struct Spacing {
    /// The time between calls.
    period: Duration,
    /// The limiter that spaces them so.
    limiter: Arc<BudgetLimiter>,
    /// Changes with the limiter: a caller that waited on an older one
    /// waits again on this one.
    generation: u64,
}

impl CallBudget {
    /// The whole `bulk.calls_per_minute` until [`CallBudget::set_fraction`] says otherwise.
    pub fn new(per_minute: u32) -> CallBudget {
        let (period, limiter) = Self::limiter(per_minute as f64);
        CallBudget {
            per_minute,
            spacing: Mutex::new(Spacing {
                period,
                limiter: Arc::new(limiter),
                generation: 0,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// No floor: pods that outnumber `calls_per_minute` each get less than
    /// one call a minute, so the group never passes Adobe's limit. A share
    /// of nothing keeps a valid limiter of one call an hour.
    fn limiter(per_minute: f64) -> (Duration, BudgetLimiter) {
        let per_minute = if per_minute > 0.0 {
            per_minute
        } else {
            1.0 / 60.0
        };
        let period = Duration::from_secs_f64(60.0 / per_minute);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        (period, RateLimiter::direct_with_clock(quota, TokioClock))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spacing> {
        self.spacing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This pod's fraction of the group's partitions (at most all of it).
    /// The new limiter keeps the old one's spent call: no fresh call at
    /// every rebalance.
    pub fn set_fraction(&self, fraction: f64) {
        let (period, limiter) = Self::limiter(self.per_minute as f64 * fraction.clamp(0.0, 1.0));
        let mut guard = self.lock();
        if guard.period == period {
            return;
        }
        crate::delivery::gate::carry_tokens(&guard.limiter, 1, &limiter, 1);
        *guard = Spacing {
            period,
            limiter: Arc::new(limiter),
            generation: guard.generation + 1,
        };
        drop(guard);
        self.changed.notify_waiters();
    }

    /// The time between two calls.
    pub fn period(&self) -> Duration {
        self.lock().period
    }

    /// Waits for a call. A caller waiting when the share changes waits on
    /// the new limiter: two limiters never hand out calls side by side.
    pub async fn acquire(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (limiter, generation) = {
                let guard = self.lock();
                (guard.limiter.clone(), guard.generation)
            };
            tokio::select! {
                _ = until_ready(&limiter) => {}
                _ = &mut changed => continue,
            }
            if self.lock().generation == generation {
                return;
            }
        }
    }
}

/// How a submission ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// Target took the batch; poll here.
    Submitted {
        /// The `batchStatus` URL.
        status_url: String,
    },
    /// Target refused the batch for good (a 4xx other than 401/403), or
    /// lost it too often.
    Rejected {
        /// The status of Target's last answer; none when the last call had
        /// no answer (a timeout, a refused connection).
        status: Option<u16>,
        /// Target's message.
        message: String,
    },
    /// Given up at the drain deadline.
    Abandoned,
}

/// How waiting for a submitted batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Processed; these ids' rows failed.
    Complete {
        /// Ids of failed rows.
        failed_ids: Vec<String>,
        /// `failedUpdates`, when Target gave it.
        failed_updates: Option<u64>,
    },
    /// Target will not complete it (`stuck`, or it forgot the batch): send it again.
    Resubmit {
        /// Why, for the log.
        why: String,
    },
    /// Given up at the drain deadline.
    Abandoned,
}

/// What a batch sender needs, shared by all batches.
#[derive(Debug, Clone)]
pub struct BatchSender {
    /// The HTTP client.
    pub client: Arc<BulkClient>,
    /// Calls per minute.
    pub calls: Arc<CallBudget>,
    /// Delays between failed calls.
    pub retry: RetryPolicy,
    /// Delays between status polls (bounds without jitter).
    pub poll: RetryPolicy,
    /// The pod's send gate: refused credentials on a bulk call pause single
    /// updates too and make the pod not ready, as they do on the update path.
    pub gate: Arc<SendGate>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// How often Target lost each batch.
    pub resubmissions: Arc<Resubmissions>,
}

impl BatchSender {
    /// Submits until Target takes the batch, refuses it for good, or the drain
    /// gives up; a batch Target lost too often, or refused `success=false` too
    /// often, is [`Submission::Rejected`].
    pub async fn submit(&self, body: &Bytes, abandon: &CancellationToken) -> Submission {
        let key = BatchKey::of(body);
        if let Some(lost) = self.resubmissions.give_up(key) {
            self.metrics.count_batch(BatchStatus::Lost);
            return Submission::Rejected {
                status: lost.status,
                message: format!(
                    "Target lost track of the batch {} times (last: {}); not sent again",
                    lost.times, lost.why
                ),
            };
        }
        let mut schedule = self.retry.schedule();
        let mut refusals = 0;
        loop {
            if !self.spend_call(abandon).await {
                return Submission::Abandoned;
            }
            let result = tokio::select! {
                biased;
                _ = abandon.cancelled() => return Submission::Abandoned,
                result = self.client.submit(body.clone()) => result,
            };
            self.note_reach(&result);
            let delay = match result {
                Ok(submitted) => {
                    self.metrics
                        .count_bulk_call(BulkCall::Submit, CallOutcome::Ok);
                    self.gate.auth_ok();
                    self.resubmissions.submitted(key, &submitted.status_url);
                    return Submission::Submitted {
                        status_url: submitted.status_url,
                    };
                }
                Err(BulkError::Rejected { status, message }) => {
                    self.metrics
                        .count_bulk_call(BulkCall::Submit, CallOutcome::Rejected);
                    self.resubmissions.forget(key);
                    return Submission::Rejected {
                        status: Some(status),
                        message,
                    };
                }
                Err(BulkError::Retry {
                    cause: RetryCause::Refused(message),
                    ..
                }) if refusals + 1 >= MAX_REFUSALS => {
                    self.metrics
                        .count_bulk_call(BulkCall::Submit, CallOutcome::Rejected);
                    self.resubmissions.forget(key);
                    return Submission::Rejected {
                        status: Some(200),
                        message: format!(
                            "Target answered success=false {MAX_REFUSALS} times: {message}"
                        ),
                    };
                }
                Err(error) => {
                    if matches!(
                        error,
                        BulkError::Retry {
                            cause: RetryCause::Refused(_),
                            ..
                        }
                    ) {
                        refusals += 1;
                    }
                    self.failed(BulkCall::Submit, &error, &mut schedule)
                }
            };
            if !sleep_or_abandon(delay, abandon).await {
                return Submission::Abandoned;
            }
        }
    }

    /// Polls the batch's status until it is complete, or Target lost it.
    pub async fn await_completion(
        &self,
        status_url: &str,
        abandon: &CancellationToken,
    ) -> Completion {
        let started = tokio::time::Instant::now();
        let mut polls = self.poll.schedule();
        let mut failures = self.retry.schedule();
        let mut delay = polls.next_bound();
        loop {
            if !sleep_or_abandon(delay, abandon).await || !self.spend_call(abandon).await {
                return Completion::Abandoned;
            }
            let result = tokio::select! {
                biased;
                _ = abandon.cancelled() => return Completion::Abandoned,
                result = self.client.status(status_url) => result,
            };
            self.note_reach(&result);
            delay = match result {
                Ok(report) => {
                    self.metrics
                        .count_bulk_call(BulkCall::Status, CallOutcome::Ok);
                    self.gate.auth_ok();
                    match report.state {
                        BatchState::Complete => {
                            self.resubmissions.completed(status_url);
                            return Completion::Complete {
                                failed_ids: report.failed_ids,
                                failed_updates: report.failed_updates,
                            };
                        }
                        BatchState::Stuck => {
                            let why = format!("Target reports batch {} stuck", report.batch_id);
                            return self.lost(status_url, Some(200), why);
                        }
                        BatchState::Incomplete if started.elapsed() >= MAX_PROCESSING => {
                            let why = format!(
                                "Target still reports batch {} incomplete after {} hours",
                                report.batch_id,
                                MAX_PROCESSING.as_secs() / 3600
                            );
                            return self.lost(status_url, Some(200), why);
                        }
                        BatchState::Incomplete => polls.next_bound(),
                    }
                }
                Err(BulkError::Rejected { status, message }) => {
                    self.metrics
                        .count_bulk_call(BulkCall::Status, CallOutcome::Rejected);
                    let why = format!("the status call was refused with HTTP {status}: {message}");
                    return self.lost(status_url, Some(status), why);
                }
                Err(BulkError::Retry {
                    cause: RetryCause::Refused(message),
                    ..
                }) => {
                    self.metrics
                        .count_bulk_call(BulkCall::Status, CallOutcome::Rejected);
                    let why = format!("the status call was answered success=false: {message}");
                    return self.lost(status_url, Some(200), why);
                }
                Err(error @ BulkError::StatusUrl(_)) => {
                    self.metrics
                        .count_bulk_call(BulkCall::Status, CallOutcome::Rejected);
                    return self.lost(status_url, Some(200), error.to_string());
                }
                Err(error) => {
                    let wait = self.failed(BulkCall::Status, &error, &mut failures);
                    if started.elapsed() >= MAX_PROCESSING {
                        // No answer for as long as Adobe keeps a status: lost
                        // like a batch still incomplete then, not polled forever.
                        let why = format!(
                            "no status of the batch for {} hours (last: {error})",
                            MAX_PROCESSING.as_secs() / 3600
                        );
                        return self.lost(status_url, status_of(&error), why);
                    }
                    wait
                }
            };
        }
    }

    /// Tells `/readyz` whether Target answered the call at all, as single
    /// updates do: with bulk delivery alone, these calls are its only news.
    fn note_reach<T>(&self, result: &Result<T, BulkError>) {
        let answered = match result {
            Ok(_) => true,
            Err(error) => status_of(error).is_some(),
        };
        self.gate.set_reachable(answered);
    }

    /// Target lost the batch polled at `status_url`: it is to be sent again.
    fn lost(&self, status_url: &str, status: Option<u16>, why: String) -> Completion {
        let times = self.resubmissions.lost(status_url, status, &why);
        tracing::warn!(times, max = MAX_RESUBMISSIONS, why = %why, "Target lost track of a bulk batch.");
        Completion::Resubmit { why }
    }

    /// Counts a retryable or credential failure and says how long to wait.
    fn failed(
        &self,
        call: BulkCall,
        error: &BulkError,
        schedule: &mut crate::retry::RetrySchedule,
    ) -> Duration {
        let (outcome, retry_after) = match error {
            BulkError::Retry { retry_after, .. } => (CallOutcome::Retryable, *retry_after),
            BulkError::AuthFailed { status } => {
                // Wrong for every call: the whole pod pauses and reports not
                // ready until a call is accepted again.
                self.gate.auth_failed(*status, false);
                (CallOutcome::AuthFailed, None)
            }
            BulkError::Rejected { .. } | BulkError::StatusUrl(_) => (CallOutcome::Rejected, None),
        };
        self.metrics.count_bulk_call(call, outcome);
        tracing::warn!(call = call.as_str(), error = %error, "A bulk call failed; retrying.");
        schedule.next_delay().max(retry_after.unwrap_or_default())
    }

    /// Waits for one of the pod's calls; false when abandoned first.
    async fn spend_call(&self, abandon: &CancellationToken) -> bool {
        tokio::select! {
            biased;
            _ = abandon.cancelled() => false,
            _ = self.calls.acquire() => true,
        }
    }
}

/// The HTTP status a failed call was answered with (200 for a 2xx Target
/// refused or that could not be read; none when there was no answer).
fn status_of(error: &BulkError) -> Option<u16> {
    match error {
        BulkError::Retry {
            cause: RetryCause::Status(status),
            ..
        }
        | BulkError::AuthFailed { status }
        | BulkError::Rejected { status, .. } => Some(*status),
        BulkError::Retry {
            cause: RetryCause::Refused(_) | RetryCause::Unreadable(_),
            ..
        }
        | BulkError::StatusUrl(_) => Some(200),
        BulkError::Retry {
            cause: RetryCause::Timeout | RetryCause::Connection,
            ..
        } => None,
    }
}

/// Sleeps; false when abandoned first.
async fn sleep_or_abandon(delay: Duration, abandon: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = abandon.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timing on paused time: tokio's clock drives the budget, so the waits
    /// are exact (to the timer's millisecond) and take no wall time.
    fn within_ms(waited: Duration, from: u64, to: u64) -> bool {
        waited >= Duration::from_millis(from) && waited < Duration::from_millis(to)
    }

    /// A sender whose every call fails to connect, retried hourly.
    fn unreachable_sender() -> BatchSender {
        let hourly = RetryPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        };
        let target = crate::ops::config::TargetSettings {
            client_code: "acme".into(),
            // Nothing listens there.
            base_url: "http://127.0.0.1:1".into(),
            timeout_ms: 1000,
            ..Default::default()
        };
        let share = crate::delivery::gate::RateShare::of_group(10.0, 10, 1, 1);
        BatchSender {
            client: Arc::new(BulkClient::new(&target).expect("client")),
            calls: Arc::new(CallBudget::new(60)),
            retry: hourly,
            poll: hourly,
            gate: Arc::new(SendGate::new(share, hourly)),
            metrics: Arc::new(Metrics::new()),
            resubmissions: Arc::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_that_never_comes_counts_the_batch_lost_after_a_day() {
        let sender = unreachable_sender();
        let started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(
            MAX_PROCESSING * 3,
            sender.await_completion(
                "http://127.0.0.1:1/s?batchId=acme-1",
                &CancellationToken::new(),
            ),
        )
        .await
        .expect("still polling after three days");
        assert!(
            matches!(&outcome, Completion::Resubmit { why } if why.contains("no status")),
            "{outcome:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= MAX_PROCESSING && waited < MAX_PROCESSING + Duration::from_secs(3600),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_lost_for_want_of_any_answer_is_given_up_with_no_status() {
        let sender = unreachable_sender();
        let body = Bytes::from_static(b"batch=thirdPartyId%2Ca%0ACRM-1%2C1");
        let key = BatchKey::of(&body);
        for round in 1..=MAX_RESUBMISSIONS + 1 {
            let status_url = format!("http://127.0.0.1:1/s?batchId=acme-{round}");
            sender.resubmissions.submitted(key, &status_url);
            let outcome = sender
                .await_completion(&status_url, &CancellationToken::new())
                .await;
            assert!(
                matches!(outcome, Completion::Resubmit { .. }),
                "{outcome:?}"
            );
        }
        // Lost a fourth time: not sent again, and no status is made up for
        // the dead letters (no `pps-target-status: 0`).
        match sender.submit(&body, &CancellationToken::new()).await {
            Submission::Rejected { status, message } => {
                assert_eq!(status, None, "{message}");
                assert!(
                    message.contains("lost track of the batch 4 times"),
                    "{message}"
                );
            }
            other => panic!("expected the batch given up, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bulk_calls_tell_readiness_whether_target_answers() {
        let sender = unreachable_sender();
        let body = Bytes::from_static(b"batch=thirdPartyId%2Ca%0ACRM-1%2C1");
        let submitting = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.submit(&body, &CancellationToken::new()).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sender.gate.is_reachable() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        submitting.abort();
        assert!(
            !sender.gate.is_reachable(),
            "a refused connection on a bulk submit leaves Target reachable"
        );

        // The same gate, now with a Target that answers: reachable again.
        let mut config = pps_target_simulator::SimulatorConfig::new("acme");
        config.existence = pps_target_simulator::Existence::all_known();
        let sim =
            pps_target_simulator::Simulator::start("127.0.0.1:0".parse().expect("address"), config)
                .await
                .expect("simulator");
        let target = crate::ops::config::TargetSettings {
            client_code: "acme".into(),
            base_url: sim.base_url(),
            timeout_ms: 5000,
            ..Default::default()
        };
        let answering = BatchSender {
            client: Arc::new(BulkClient::new(&target).expect("client")),
            ..sender.clone()
        };
        let body = Bytes::from_static(b"batch=thirdPartyId%2Ca%0ACRM-1%2C1");
        let outcome = answering.submit(&body, &CancellationToken::new()).await;
        assert!(
            matches!(outcome, Submission::Submitted { .. }),
            "{outcome:?}"
        );
        assert!(
            sender.gate.is_reachable(),
            "an accepted bulk submit leaves Target unreachable"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spread_evenly_without_a_burst() {
        // 600 a minute: one now, then one every 100 ms.
        let budget = CallBudget::new(600);
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            budget.acquire().await;
        }
        let waited = start.elapsed();
        assert!(within_ms(waited, 300, 310), "{waited:?}");
    }

    #[test]
    fn a_pods_share_of_calls_follows_its_fraction_without_a_floor() {
        let budget = CallBudget::new(50);
        assert_eq!(budget.period(), Duration::from_millis(1200));
        budget.set_fraction(0.5);
        assert_eq!(budget.period(), Duration::from_millis(2400), "25 a minute");
        // 100 pods over 50 calls a minute: half a call a minute each, so
        // together they stay within Adobe's limit.
        budget.set_fraction(0.01);
        assert_eq!(budget.period(), Duration::from_secs(120));
        budget.set_fraction(3.0);
        assert_eq!(
            budget.period(),
            Duration::from_millis(1200),
            "never more than all"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_change_neither_refills_the_call_nor_lets_waiters_use_the_old_limiter() {
        // 600 a minute for the group, a hundredth of it here: one call every 10 s.
        let budget = Arc::new(CallBudget::new(600));
        budget.set_fraction(0.01);
        budget.acquire().await;
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        // The whole group's share: one call every 100 ms. The call spent
        // carries over, so the waiter goes after about 100 ms: not at once
        // (a refilled limiter) and not after the old 10 s.
        let changed = tokio::time::Instant::now();
        budget.set_fraction(1.0);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter moves to the new limiter")
            .expect("waiter");
        assert!(
            within_ms(changed.elapsed(), 100, 110),
            "{:?}",
            changed.elapsed()
        );
    }
}
