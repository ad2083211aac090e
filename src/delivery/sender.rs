//! Sending one update until it has a final outcome: through the send gate
//! (budget and pauses), the client, the classifier and the retry schedule.

use super::concurrency::{AdaptiveConcurrency, Signal};
use super::gate::SendGate;
use super::retry::RetryPolicy;
use super::spans::RequestTrace;
use crate::mapping::ProfileUpdate;
use crate::ops::metrics::Metrics;
use crate::target::{TargetClient, Verdict};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What finally happened to an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Target accepted it (2xx).
    Accepted,
    /// Target refused it for good (another 4xx): dead letter `target_rejected`.
    Rejected {
        /// The status.
        status: u16,
    },
    /// `delivery.max_attempts` retryable failures: dead letter `retries_exhausted`.
    Exhausted {
        /// The last status, when there was a response.
        last_status: Option<u16>,
    },
    /// Given up at the drain deadline: not finished, so not committed.
    Abandoned,
}

/// What a sender needs, shared by all of them.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The HTTP client.
    pub client: Arc<TargetClient>,
    /// Budget and pauses.
    pub gate: Arc<SendGate>,
    /// How many updates may be under way, learnt from Target's answers.
    pub concurrency: Arc<AdaptiveConcurrency>,
    /// Retry delays.
    pub retry: RetryPolicy,
    /// 0: retry forever.
    pub max_attempts: u32,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl Sender {
    /// Sends until accepted, rejected, exhausted or abandoned; each attempt
    /// is a `pps.target.request` span placed by `trace`.
    pub async fn deliver(
        &self,
        update: &ProfileUpdate,
        abandon: &CancellationToken,
        trace: &RequestTrace,
    ) -> DeliveryOutcome {
        let mut schedule = self.retry.schedule();
        let mut failures = 0u32;
        let mut first = true;
        let mut attempts = 0u32;
        loop {
            // A slot first, then budget: see `concurrency`.
            let mut slot = tokio::select! {
                biased;
                _ = abandon.cancelled() => return DeliveryOutcome::Abandoned,
                slot = self.concurrency.reserve() => slot,
            };
            let permit = tokio::select! {
                biased;
                _ = abandon.cancelled() => return DeliveryOutcome::Abandoned,
                permit = self.gate.acquire() => permit,
            };
            if !first {
                self.metrics.target_retries.inc();
            }
            first = false;
            self.metrics.target_in_flight.inc();
            attempts += 1;
            let span = trace.attempt(attempts);
            slot.send();
            let attempt = tokio::select! {
                biased;
                _ = abandon.cancelled() => {
                    self.metrics.target_in_flight.dec();
                    return DeliveryOutcome::Abandoned;
                }
                attempt = self.client.send(update) => attempt,
            };
            self.metrics.target_in_flight.dec();
            slot.land(signal_of(&attempt.verdict));
            self.gate.set_reachable(attempt.status.is_some());
            self.metrics
                .target_request_duration
                .observe(attempt.elapsed.as_secs_f64());
            span.answered(
                attempt.status,
                attempt.timed_out,
                verdict_label(&attempt.verdict),
            );
            let delay = match attempt.verdict {
                Verdict::Accepted => {
                    self.metrics
                        .count_request("accepted", attempt.status, false);
                    self.gate.auth_ok();
                    return DeliveryOutcome::Accepted;
                }
                Verdict::Rejected { status } => {
                    self.metrics
                        .count_request("rejected", attempt.status, false);
                    self.gate.auth_ok();
                    return DeliveryOutcome::Rejected { status };
                }
                Verdict::AuthFailed { status } => {
                    // Never dead-lettered and never counted against
                    // max_attempts: the credentials are wrong for every event.
                    // The gate holds every sender back and schedules probes.
                    self.metrics
                        .count_request("auth_failed", attempt.status, false);
                    self.gate.auth_failed(status, permit.is_probe());
                    continue;
                }
                Verdict::Retry {
                    status,
                    retry_after,
                } => {
                    self.metrics
                        .count_request("retryable", attempt.status, attempt.timed_out);
                    failures += 1;
                    if self.max_attempts > 0 && failures >= self.max_attempts {
                        return DeliveryOutcome::Exhausted {
                            last_status: status,
                        };
                    }
                    if let Some(pause) = retry_after {
                        self.gate.pause_for(pause);
                    }
                    schedule.next_delay().max(retry_after.unwrap_or_default())
                }
            };
            drop(permit);
            sleep_or_abandon(delay, abandon).await;
        }
    }
}

/// What an answer says about Target's load, for the concurrency limit.
fn signal_of(verdict: &Verdict) -> Signal {
    match verdict {
        Verdict::Accepted | Verdict::Rejected { .. } => Signal::Answered,
        Verdict::Retry { .. } => Signal::Backpressure,
        Verdict::AuthFailed { .. } => Signal::Neutral,
    }
}

/// The verdict as the request metrics and spans name it.
fn verdict_label(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Accepted => "accepted",
        Verdict::Rejected { .. } => "rejected",
        Verdict::AuthFailed { .. } => "auth_failed",
        Verdict::Retry { .. } => "retryable",
    }
}

async fn sleep_or_abandon(delay: std::time::Duration, abandon: &CancellationToken) {
    tokio::select! {
        _ = abandon.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
