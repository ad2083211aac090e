//! The read-back task: takes profiles as they fall due, fetches them through
//! the fetch budget, compares, counts `pps_verify_total{result}`, and logs the
//! shares once per `verify.interval_ms`. One fetch at a time: the budget, not
//! concurrency, is what paces read-backs.

use super::compare::{compare, ReadBack, Tally};
use super::pending::Expected;
use super::Verifier;
use crate::delivery::fetch_budget::ProfileFetcher;
use crate::target::fetch::FetchOutcome;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Fetches tried for one profile before its read-back counts as `failed`.
pub const MAX_ATTEMPTS: u32 = 5;
/// The wait before a fetch is tried again: doubled each time, up to a minute.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

/// What to do after one fetch of a waiting profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The read-back has its result.
    Done(ReadBack),
    /// Fetch again after this long.
    Again(Duration),
}

/// Decides a fetch of a profile that expected `expected`.
pub fn after_fetch(expected: &Expected, outcome: &FetchOutcome) -> Step {
    match judge_read_back(&expected.attributes(), expected.accepted_at, outcome) {
        Ok(result) => Step::Done(result),
        Err(retry_after) => match retry_delay(expected.attempts, retry_after) {
            Some(delay) => Step::Again(delay),
            None => Step::Done(ReadBack::Failed),
        },
    }
}

/// The result a fetch gives a read-back that expected `attributes` as of
/// `reference`, or `Err(retry_after)` when the fetch must be tried again.
pub fn judge_read_back(
    attributes: &BTreeMap<String, String>,
    reference: OffsetDateTime,
    outcome: &FetchOutcome,
) -> Result<ReadBack, Option<Duration>> {
    match outcome {
        FetchOutcome::Found { attributes: found } => Ok(compare(attributes, found, reference).0),
        FetchOutcome::NotFound => Ok(ReadBack::NotFound),
        FetchOutcome::Rejected { .. } => Ok(ReadBack::Failed),
        FetchOutcome::AuthFailed { .. } => Err(None),
        FetchOutcome::Retry { retry_after, .. } => Err(*retry_after),
    }
}

/// How long to wait before trying a fetch again after `attempts` that gave no
/// usable answer, `None` once [`MAX_ATTEMPTS`] are spent.
pub fn retry_delay(attempts: u32, retry_after: Option<Duration>) -> Option<Duration> {
    if attempts + 1 >= MAX_ATTEMPTS {
        return None;
    }
    let backoff = FIRST_RETRY
        .saturating_mul(1 << attempts.min(16))
        .min(LAST_RETRY);
    Some(backoff.max(retry_after.unwrap_or_default()))
}

/// Runs read-backs until `shutdown`.
pub async fn run(verifier: Arc<Verifier>, fetcher: ProfileFetcher, shutdown: CancellationToken) {
    let mut tally = Tally::default();
    let mut next_log = Instant::now() + verifier.interval;
    loop {
        let now = Instant::now();
        if now >= next_log {
            log_interval(&tally, verifier.lock().len());
            tally = Tally::default();
            next_log = now + verifier.interval;
        }
        let (due, next) = {
            let mut pending = verifier.lock();
            let due = pending.pop_due(now);
            let next = pending.next_due();
            verifier.metrics.verify_pending.set(pending.len() as i64);
            (due, next)
        };
        let Some((identity, mut expected)) = due else {
            let wake = next.map_or(next_log, |at| at.min(next_log));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = verifier.wake.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            continue;
        };
        let outcome = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            outcome = fetcher.fetch(&identity) => outcome,
        };
        match after_fetch(&expected, &outcome) {
            Step::Done(result) => {
                verifier.metrics.count_verify(result.as_str());
                tally.add(result);
            }
            Step::Again(delay) => {
                expected.attempts += 1;
                verifier
                    .lock()
                    .retry(identity, expected, Instant::now() + delay);
            }
        }
    }
}

fn log_interval(tally: &Tally, waiting: usize) {
    tracing::info!(
        profiles = tally.total(),
        applied = tally.share(ReadBack::Applied),
        not_yet_applied = tally.share(ReadBack::NotYetApplied),
        not_found = tally.share(ReadBack::NotFound),
        different = tally.share(ReadBack::Different),
        failed = tally.share(ReadBack::Failed),
        waiting,
        "Read-back verification of accepted updates: {tally}."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::fetch::FetchedAttribute;

    fn expected(attempts: u32) -> Expected {
        let update =
            super::super::pending::tests::update("a", "2026-11-28T10:00:00Z", &[("x", "1")]);
        let mut set = super::super::PendingSet::new(1, Duration::ZERO);
        let now = Instant::now();
        set.offer(&update, std::time::SystemTime::UNIX_EPOCH, now);
        let (_, mut expected) = set.pop_due(now).unwrap();
        expected.attempts = attempts;
        expected
    }

    #[tokio::test]
    async fn each_fetch_outcome_ends_the_read_back_or_tries_again_a_bounded_number_of_times() {
        let found = |value: &str| FetchOutcome::Found {
            attributes: BTreeMap::from([(
                "x".to_owned(),
                FetchedAttribute {
                    value: value.into(),
                    modified_at: None,
                },
            )]),
        };
        let retry = |seconds: Option<u64>| FetchOutcome::Retry {
            status: Some(503),
            retry_after: seconds.map(Duration::from_secs),
        };
        let fresh = expected(0);
        let table = [
            (found("1"), Step::Done(ReadBack::Applied)),
            (found("2"), Step::Done(ReadBack::Different)),
            (FetchOutcome::NotFound, Step::Done(ReadBack::NotFound)),
            (
                FetchOutcome::Rejected { status: 400 },
                Step::Done(ReadBack::Failed),
            ),
            (retry(None), Step::Again(Duration::from_secs(1))),
            (retry(Some(30)), Step::Again(Duration::from_secs(30))),
            (
                FetchOutcome::AuthFailed { status: 401 },
                Step::Again(Duration::from_secs(1)),
            ),
        ];
        for (outcome, step) in table {
            assert_eq!(after_fetch(&fresh, &outcome), step, "{outcome:?}");
        }
        assert_eq!(
            after_fetch(&expected(3), &retry(None)),
            Step::Again(Duration::from_secs(8))
        );
        assert_eq!(
            after_fetch(&expected(MAX_ATTEMPTS - 1), &retry(None)),
            Step::Done(ReadBack::Failed)
        );
    }
}
