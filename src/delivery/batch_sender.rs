//! Sending one bulk batch until it has a final outcome: submit it (retrying
//! throttling and failures), then poll its status with backoff until Target
//! reports it `complete`. Every call spends one of the pod's share of
//! `bulk.calls_per_minute` ([`CallBudget`]); bulk calls never spend the
//! per-second budget of single updates (contract section 11).

use super::retry::RetryPolicy;
use crate::ops::metrics::Metrics;
use crate::target::bulk::{BatchState, BulkClient, BulkError};
use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The pod's share of Adobe's bulk calls per minute, spread evenly (no burst).
#[derive(Debug)]
pub struct CallBudget {
    per_minute: u32,
    /// The time between calls, and the limiter that spaces them so.
    limiter: Mutex<(Duration, Arc<DefaultDirectRateLimiter>)>,
}

impl CallBudget {
    /// The whole `bulk.calls_per_minute` until [`CallBudget::set_fraction`] says otherwise.
    pub fn new(per_minute: u32) -> CallBudget {
        CallBudget {
            per_minute,
            limiter: Mutex::new(Self::limiter(per_minute as f64)),
        }
    }

    fn limiter(per_minute: f64) -> (Duration, Arc<DefaultDirectRateLimiter>) {
        // At least one call a minute, so a pod with a small share still finishes batches.
        let period = Duration::from_secs_f64(60.0 / per_minute.max(1.0));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        (period, Arc::new(RateLimiter::direct(quota)))
    }

    /// This pod's fraction of the group's partitions.
    pub fn set_fraction(&self, fraction: f64) {
        let limiter = Self::limiter(self.per_minute as f64 * fraction);
        *self.limiter.lock().unwrap_or_else(|p| p.into_inner()) = limiter;
    }

    /// The time between two calls.
    pub fn period(&self) -> Duration {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Waits for a call.
    pub async fn acquire(&self) {
        let limiter = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        limiter.until_ready().await;
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
    /// Target refused the batch for good (a 4xx other than 401/403).
    Rejected {
        /// The status.
        status: u16,
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
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl BatchSender {
    /// Submits until Target takes the batch, refuses it for good, or the drain gives up.
    pub async fn submit(&self, body: &Bytes, abandon: &CancellationToken) -> Submission {
        let mut schedule = self.retry.schedule();
        loop {
            if !self.spend_call(abandon).await {
                return Submission::Abandoned;
            }
            let result = tokio::select! {
                biased;
                _ = abandon.cancelled() => return Submission::Abandoned,
                result = self.client.submit(body.clone()) => result,
            };
            let delay = match result {
                Ok(submitted) => {
                    self.metrics.count_bulk_call("submit", "ok");
                    return Submission::Submitted {
                        status_url: submitted.status_url,
                    };
                }
                Err(BulkError::Permanent { status, message }) => {
                    self.metrics.count_bulk_call("submit", "rejected");
                    return Submission::Rejected { status, message };
                }
                Err(error) => self.failed("submit", &error, &mut schedule),
            };
            if !sleep_or_abandon(delay, abandon).await {
                return Submission::Abandoned;
            }
        }
    }

    /// Polls the batch's status until it is complete, stuck or forgotten.
    pub async fn await_completion(
        &self,
        status_url: &str,
        abandon: &CancellationToken,
    ) -> Completion {
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
            delay = match result {
                Ok(report) => {
                    self.metrics.count_bulk_call("status", "ok");
                    match report.state {
                        BatchState::Complete => {
                            return Completion::Complete {
                                failed_ids: report.failed_ids,
                            }
                        }
                        BatchState::Stuck => {
                            return Completion::Resubmit {
                                why: format!("Target reports batch {} stuck", report.batch_id),
                            }
                        }
                        BatchState::Incomplete => polls.next_bound(),
                    }
                }
                Err(BulkError::Permanent { status, message }) => {
                    self.metrics.count_bulk_call("status", "rejected");
                    return Completion::Resubmit {
                        why: format!("the status call was refused with HTTP {status}: {message}"),
                    };
                }
                Err(error) => self.failed("status", &error, &mut failures),
            };
        }
    }

    /// Counts a retryable or credential failure and says how long to wait.
    fn failed(
        &self,
        call: &'static str,
        error: &BulkError,
        schedule: &mut super::retry::RetrySchedule,
    ) -> Duration {
        let (outcome, retry_after) = match error {
            BulkError::Retry { retry_after, .. } => ("retryable", *retry_after),
            BulkError::Auth { .. } => ("auth_failed", None),
            BulkError::Permanent { .. } => ("rejected", None),
        };
        self.metrics.count_bulk_call(call, outcome);
        tracing::warn!(call, error = %error, "A bulk call failed; retrying.");
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

    #[tokio::test]
    async fn calls_are_spread_evenly_without_a_burst() {
        // 600 a minute: one now, then one every 100 ms.
        let budget = CallBudget::new(600);
        let start = std::time::Instant::now();
        for _ in 0..4 {
            budget.acquire().await;
        }
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(280), "{waited:?}");
    }

    #[test]
    fn a_pods_share_of_calls_follows_its_fraction_and_never_drops_below_one_a_minute() {
        let budget = CallBudget::new(50);
        assert_eq!(budget.period(), Duration::from_millis(1200));
        budget.set_fraction(0.5);
        assert_eq!(budget.period(), Duration::from_millis(2400), "25 a minute");
        budget.set_fraction(0.001);
        assert_eq!(
            budget.period(),
            Duration::from_secs(60),
            "at least one a minute"
        );
    }
}
