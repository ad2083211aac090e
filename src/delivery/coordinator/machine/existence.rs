//! Profiles Target may not have (`docs/contract.md`, section 13): a fetch
//! decides whether a profile's update goes as a single update (Target has
//! it) or, as `existence.policy` says, through a bulk v2 batch (which creates
//! it) or to the dead-letter topic as `profile_not_found`. The profile stays
//! in flight in the queues throughout, so its order and coalescing hold
//! whichever way its events go.

use super::*;
use crate::target::fetch::FetchOutcome;

impl DeliveryState {
    /// Fetches a profile before its update goes anywhere; its events were
    /// counted in flight when they left the queue.
    pub(super) fn start_fetch(
        &mut self,
        profile: Identity,
        items: Vec<Pending>,
        retry: RetryState,
    ) {
        let Some(fetcher) = self.settings.existence.fetcher.clone() else {
            // No fetcher (trust): nothing to ask, the update goes as it is.
            self.start_update(profile, items, retry);
            return;
        };
        let Some(first) = items.first() else {
            self.queues.finish(&profile);
            return;
        };
        if !profile.is_fetchable() {
            let reason = format!(
                "the profile id {:?} cannot be fetched (Target's profile API would read it as a path step), so whether Target has the profile cannot be told",
                profile.id()
            );
            self.existence_unknown(profile, items, &reason, None);
            return;
        }
        let cancel = self.cancel_token_of(&first.event);
        self.fetches_in_flight += 1;
        let task = Task::Fetch {
            fetcher,
            profile: profile.clone(),
            cancel,
        };
        self.start(
            Work::Fetch {
                profile,
                items,
                retry,
            },
            task,
        );
    }

    /// A fetch ended (`None`: it was cancelled).
    pub(super) fn on_fetch_done(
        &mut self,
        profile: Identity,
        items: Vec<Pending>,
        mut retry: RetryState,
        outcome: Option<FetchOutcome>,
    ) {
        self.fetches_in_flight -= 1;
        let now = self.now;
        let Some(outcome) = outcome else {
            self.abandoned(profile, items, retry, Next::Fetch);
            return;
        };
        match outcome {
            FetchOutcome::Found { .. } => {
                self.directory.confirmed(profile.clone(), now);
                // Sent under the concurrency limit, before newer work.
                let fresh = self.fresh_retry();
                self.back_off(profile, items, fresh, Duration::ZERO, Next::Update);
            }
            FetchOutcome::NotFound => {
                self.directory.absent(profile.clone(), now);
                if self.settings.existence.policy == ExistencePolicy::DeadLetter {
                    self.not_found(profile, items);
                } else {
                    self.send_through_batch(profile, items);
                }
            }
            FetchOutcome::Retry {
                status,
                retry_after,
            } => {
                let Some(items) = self.count_failure(
                    &profile,
                    items,
                    &mut retry,
                    status,
                    " of the profile fetch",
                ) else {
                    return;
                };
                let delay = retry
                    .schedule
                    .next_delay()
                    .max(retry_after.unwrap_or_default());
                self.back_off(profile, items, retry, delay, Next::Fetch);
            }
            FetchOutcome::AuthFailed { status } => {
                // Wrong for every call: the pod pauses and is not ready.
                self.actions.push(Action::AuthFailed(status));
                let delay = retry.schedule.next_delay();
                self.back_off(profile, items, retry, delay, Next::Fetch);
            }
            FetchOutcome::Rejected { status } => {
                let reason = format!("Target refused the profile fetch with HTTP {status}");
                self.existence_unknown(profile, items, &reason, Some(status));
            }
        }
    }

    /// Whether Target has the profile cannot be told (its fetch was refused,
    /// or cannot be made): with the dead-letter policy its events are
    /// dead-lettered as `target_rejected` for `reason`; otherwise they go
    /// through a v2 batch, which lands whether Target has the profile or not.
    fn existence_unknown(
        &mut self,
        profile: Identity,
        items: Vec<Pending>,
        reason: &str,
        status: Option<u16>,
    ) {
        if self.settings.existence.policy == ExistencePolicy::DeadLetter {
            self.dead_letter_all(
                &profile,
                items,
                DeadLetterClass::TargetRejected,
                reason,
                status,
            );
        } else {
            self.send_through_batch(profile, items);
        }
    }

    /// The profile's events go into a bulk v2 batch, which creates the
    /// profile if Target has none. Its later events join the row while the
    /// batch is open, and wait while it is out.
    /// Events of a partition given up meanwhile (a fetch answered after the
    /// loss) are left to its new owner ([`keep_live`]).
    ///
    /// [`keep_live`]: DeliveryState::keep_live
    pub(super) fn send_through_batch(&mut self, profile: Identity, items: Vec<Pending>) {
        let Some(items) = self.keep_live(&profile, items) else {
            return;
        };
        if self.batches.is_none() {
            // Only with a policy that never routes to batches; a single update
            // is the best left.
            let fresh = self.fresh_retry();
            self.start_update(profile, items, fresh);
            return;
        }
        self.queues.finish(&profile);
        self.add_to_batch(profile, items);
    }

    /// Target has no profile for these events (`existence.policy =
    /// "dead_letter"`): each becomes a `profile_not_found` dead letter.
    pub(super) fn not_found(&mut self, profile: Identity, items: Vec<Pending>) {
        let reason = "Target has no profile for this customer (a profile fetch answered 404); its single update would change nothing";
        self.dead_letter_all(
            &profile,
            items,
            DeadLetterClass::ProfileNotFound,
            reason,
            // The contract's pps-target-status is for target_rejected and
            // retries_exhausted; the reason names the fetch's 404.
            None,
        );
    }
}
