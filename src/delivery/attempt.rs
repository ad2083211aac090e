//! One attempt to send an update: through the send gate (budget and
//! pauses), the client and the classifier. A task makes exactly one attempt
//! and hands the verdict back to the coordinator, which decides what comes
//! next: a retryable failure puts the profile in backoff *in the
//! coordinator*, so a profile waiting out its backoff holds no task, no
//! request slot and no place under the concurrency limit that another
//! profile could use.

use super::concurrency::{AdaptiveConcurrency, Signal};
use super::gate::SendGate;
use super::spans::RequestTrace;
use crate::ops::metrics::{Metrics, RequestOutcome};
use crate::retry::RetryPolicy;
use crate::target::request::UpdateRequest;
use crate::target::{TargetClient, Verdict};
use std::sync::Arc;
use std::time::Duration;

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Target accepted it (2xx).
    Accepted,
    /// Target refused it for good (another 4xx): dead letter `target_rejected`.
    Rejected {
        /// The status.
        status: u16,
    },
    /// A retryable failure (408, 429, 5xx, timeout, connection error).
    Retry {
        /// The status, when there was a response.
        status: Option<u16>,
        /// Target's `Retry-After` (the pod's sending is paused that long already).
        retry_after: Option<Duration>,
    },
    /// Target refused the credentials: the gate now holds every sender back
    /// and probes; the update is tried again as soon as the gate lets it.
    AuthFailed,
    /// Cancelled (drain deadline, revoke deadline, partition lost) before an
    /// answer: the coordinator dropped the attempt.
    Abandoned,
}

/// Attempts of single updates: what each needs (client, gate, concurrency
/// limit, retry policy, counters), shared by all of them.
#[derive(Debug, Clone)]
pub struct UpdateAttempts {
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

impl UpdateAttempts {
    /// Makes attempt number `attempt` (1 for the first): waits for the gate,
    /// sends, classifies. The attempt is a `pps.target.request` span placed
    /// by `trace`.
    ///
    /// An attempt is cancelled by dropping it (the coordinator does, when
    /// its partition goes or the drain ends): it watches no token, as
    /// looking at one on every poll cost a lock per poll of every attempt.
    pub async fn attempt(
        &self,
        request: UpdateRequest,
        trace: &RequestTrace,
        attempt: u32,
    ) -> AttemptOutcome {
        let permit = match self.gate.try_acquire() {
            Some(permit) => permit,
            None => self.gate.acquire().await,
        };
        if attempt > 1 {
            self.metrics.target_retries.inc();
        }
        let span = trace.attempt(attempt);
        // Dropped unanswered (the attempt cancelled), the flight tells the
        // controller nothing about load, and leaves the in-flight count.
        let flight = self.concurrency.send();
        let answer = self.client.send_request(request).await;
        flight.land(signal_of(&answer.verdict, answer.timed_out));
        self.gate.set_reachable(answer.status.is_some());
        self.metrics
            .target_request_duration
            .observe(answer.elapsed.as_secs_f64());
        let label = verdict_label(&answer.verdict);
        span.answered(answer.status, answer.timed_out, label.as_str());
        match answer.verdict {
            Verdict::Accepted => {
                self.metrics.count_request(label, answer.status, false);
                self.gate.auth_ok();
                AttemptOutcome::Accepted
            }
            Verdict::Rejected { status } => {
                self.metrics.count_request(label, answer.status, false);
                self.gate.auth_ok();
                AttemptOutcome::Rejected { status }
            }
            Verdict::AuthFailed { status } => {
                // Never dead-lettered and never counted against
                // max_attempts: the credentials are wrong for every event.
                // The gate holds every sender back and schedules probes.
                self.metrics.count_request(label, answer.status, false);
                self.gate.auth_failed(status, permit.is_probe());
                AttemptOutcome::AuthFailed
            }
            Verdict::Retry {
                status,
                retry_after,
            } => {
                self.metrics
                    .count_request(label, answer.status, answer.timed_out);
                if let Some(pause) = retry_after {
                    self.gate.pause_for(pause);
                }
                if permit.is_probe() {
                    self.gate.probe_inconclusive();
                }
                AttemptOutcome::Retry {
                    status,
                    retry_after,
                }
            }
        }
    }
}

/// What an answer says about Target's load, for the concurrency limit: a 429,
/// a `Retry-After` or no answer in time is overload; another retryable
/// failure is overload only if failures grow with the load (see `concurrency`).
fn signal_of(verdict: &Verdict, timed_out: bool) -> Signal {
    match verdict {
        Verdict::Accepted | Verdict::Rejected { .. } => Signal::Answered,
        Verdict::Retry {
            status: Some(429), ..
        } => Signal::Overload,
        Verdict::Retry {
            retry_after: Some(_),
            ..
        } => Signal::Overload,
        Verdict::Retry { .. } if timed_out => Signal::Overload,
        Verdict::Retry { .. } => Signal::Failed,
        Verdict::AuthFailed { .. } => Signal::Neutral,
    }
}

/// The verdict as the request metrics and spans name it.
fn verdict_label(verdict: &Verdict) -> RequestOutcome {
    match verdict {
        Verdict::Accepted => RequestOutcome::Accepted,
        Verdict::Rejected { .. } => RequestOutcome::Rejected,
        Verdict::AuthFailed { .. } => RequestOutcome::AuthFailed,
        Verdict::Retry { .. } => RequestOutcome::Retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_429_retry_after_and_timeouts_are_overload_by_themselves() {
        let retry = |status, retry_after| Verdict::Retry {
            status,
            retry_after,
        };
        let pause = Some(Duration::from_secs(1));
        // (verdict, timed out, signal)
        let table = [
            (Verdict::Accepted, false, Signal::Answered),
            (Verdict::Rejected { status: 400 }, false, Signal::Answered),
            (retry(Some(429), None), false, Signal::Overload),
            (retry(Some(503), pause), false, Signal::Overload),
            (retry(None, None), true, Signal::Overload),
            (retry(Some(503), None), false, Signal::Failed),
            (retry(Some(500), None), false, Signal::Failed),
            (retry(None, None), false, Signal::Failed),
            (Verdict::AuthFailed { status: 401 }, false, Signal::Neutral),
        ];
        for (verdict, timed_out, signal) in table {
            assert_eq!(signal_of(&verdict, timed_out), signal, "{verdict:?}");
        }
    }
}
