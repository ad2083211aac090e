//! What becomes of one attempt of a single update: accepted events finish,
//! rejected or exhausted ones are dead-lettered, retryable failures put the
//! profile in backoff (holding nothing a sender could use), and abandoned
//! work of partitions still owned goes back to wait its turn.

use super::*;

impl DeliveryState {
    /// An attempt of `profile`'s update ended with `outcome`.
    pub(super) fn on_update_done(
        &mut self,
        profile: Identity,
        items: Vec<Pending>,
        mut retry: RetryState,
        outcome: AttemptOutcome,
    ) {
        self.updates_in_flight -= 1;
        match outcome {
            AttemptOutcome::Accepted => {
                self.queues.finish(&profile);
                self.delivered(&items);
                self.accepted(items);
            }
            AttemptOutcome::Rejected { status } => {
                let reason = format!("Target rejected the update with HTTP {status}");
                self.dead_letter_all(
                    &profile,
                    items,
                    DeadLetterClass::TargetRejected,
                    &reason,
                    Some(status),
                );
            }
            AttemptOutcome::Retry {
                status,
                retry_after,
            } => {
                let Some(items) = self.count_failure(&profile, items, &mut retry, status, "")
                else {
                    return;
                };
                let delay = retry
                    .schedule
                    .next_delay()
                    .max(retry_after.unwrap_or_default());
                self.back_off(profile, items, retry, delay, Next::Update);
            }
            // The gate holds every attempt until a probe succeeds; this one
            // waits there again (not counted against max_attempts).
            AttemptOutcome::AuthFailed => {
                self.back_off(profile, items, retry, Duration::ZERO, Next::Update)
            }
            AttemptOutcome::Abandoned => self.abandoned(profile, items, retry, Next::Update),
        }
    }

    /// Counts a retryable failure of the profile's call (`call` names it in
    /// the reason, empty for the update itself). Once `delivery.max_attempts`
    /// are reached, its events are dead-lettered as `retries_exhausted` and
    /// `None` is returned; otherwise they are handed back.
    pub(super) fn count_failure(
        &mut self,
        profile: &Identity,
        items: Vec<Pending>,
        retry: &mut RetryState,
        status: Option<u16>,
        call: &str,
    ) -> Option<Vec<Pending>> {
        retry.failures += 1;
        let max_attempts = self.max_attempts;
        if max_attempts == 0 || retry.failures < max_attempts {
            return Some(items);
        }
        let reason = match status {
            Some(status) => format!(
                "gave up after delivery.max_attempts retryable failures{call}; last HTTP {status}"
            ),
            None => format!(
                "gave up after delivery.max_attempts retryable failures{call}; last attempt got no response"
            ),
        };
        self.dead_letter_all(
            profile,
            items,
            DeadLetterClass::RetriesExhausted,
            &reason,
            status,
        );
        None
    }

    /// Accepted events finish (and may be committed).
    fn accepted(&mut self, items: Vec<Pending>) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.daily.add(now as u64 / 60, 1);
        for item in items {
            self.metrics.events_accepted.inc();
            if let Some(ms) = item.timestamp_ms {
                self.counters
                    .age_from_kafka
                    .observe((now - ms as f64 / 1000.0).max(0.0));
            }
            self.counters
                .age_from_occurred_at
                .observe((now - item.update.occurred_at.unix_seconds_f64()).max(0.0));
            if let Some(verify) = &self.settings.verify {
                verify.offer(&item.update);
            }
            self.finish(&item.event);
            item.span.finish(Outcome::Accepted);
        }
    }

    /// The profile waits `delay` before its next attempt, in flight in the
    /// queues (its later events wait) but holding no task.
    ///
    /// Only events of partitions still owned wait ([`keep_live`]): an
    /// attempt can end with a retryable answer after its partition was given
    /// up (the answer was in before the loss or the revoke deadline was
    /// handled), and its events are then dropped as that partition's
    /// backoffs were.
    ///
    /// [`keep_live`]: DeliveryState::keep_live
    pub(super) fn back_off(
        &mut self,
        profile: Identity,
        items: Vec<Pending>,
        retry: RetryState,
        delay: Duration,
        next: Next,
    ) {
        let Some(items) = self.keep_live(&profile, items) else {
            return;
        };
        self.backoffs.push(
            self.now + delay,
            Backoff {
                profile,
                items,
                retry,
                next,
            },
        );
    }

    /// Work cancelled before an answer: events of partitions given up are
    /// dropped (unfinished, so never committed: their new owner reads them
    /// again); events of partitions still owned try again.
    pub(super) fn abandoned(
        &mut self,
        profile: Identity,
        items: Vec<Pending>,
        retry: RetryState,
        next: Next,
    ) {
        let (live, gone) = self.split_live(items);
        for item in gone {
            item.span.finish(Outcome::Abandoned);
        }
        if live.is_empty() || self.draining {
            for item in live {
                if let Some(p) = self.partition(&item.event) {
                    p.in_flight -= 1;
                }
                item.span.finish(Outcome::Abandoned);
            }
            self.queues.finish(&profile);
        } else {
            self.back_off(profile, live, retry, Duration::ZERO, next);
        }
    }

    /// The events of partitions still owned, for work that goes on (a retry,
    /// a batch row, a dead letter). The others are dropped unfinished: their
    /// partition was given up while this work was out, its new owner reads
    /// them again, and a stale send must not land after its newer updates.
    /// `None` when nothing is left; the profile may then send again.
    pub(super) fn keep_live(
        &mut self,
        profile: &Identity,
        items: Vec<Pending>,
    ) -> Option<Vec<Pending>> {
        let live = self.drop_gone(items);
        if live.is_empty() {
            self.queues.finish(profile);
            return None;
        }
        Some(live)
    }

    /// The events of partitions still owned; the others end unfinished
    /// ([`keep_live`](DeliveryState::keep_live) for work that holds no profile).
    pub(super) fn drop_gone(&self, items: Vec<Pending>) -> Vec<Pending> {
        let (live, gone) = self.split_live(items);
        for item in gone {
            item.span.finish(Outcome::Abandoned);
        }
        live
    }

    /// Splits events into those of partitions still owned and not being
    /// given up, and the others.
    fn split_live(&self, items: Vec<Pending>) -> (Vec<Pending>, Vec<Pending>) {
        items
            .into_iter()
            .partition(|item| self.is_live(&item.event))
    }

    /// Whether the event's partition is still owned and not being given up.
    /// (A partition given up leaves [`Partitions`]; one still held has its
    /// token cancelled only by the drain's end, which sets `abandoned`.)
    pub(super) fn is_live(&self, event: &EventRef) -> bool {
        !self.abandoned && self.partitions.current(&event.tp, event.epoch).is_some()
    }

    /// Drops the backoffs of partitions given up (revoke deadline, loss):
    /// their events stay unfinished; the profiles may send again.
    pub(super) fn drop_backoffs_of(&mut self, gone: &[TopicPartition]) {
        if gone.is_empty() || self.backoffs.is_empty() {
            return;
        }
        let queues = &mut self.queues;
        self.backoffs.retain_map(|backoff| {
            let (gone_items, kept): (Vec<Pending>, Vec<Pending>) = backoff
                .items
                .into_iter()
                .partition(|item| gone.contains(&item.event.tp));
            for item in gone_items {
                item.span.finish(Outcome::Abandoned);
            }
            if kept.is_empty() {
                queues.finish(&backoff.profile);
                None
            } else {
                Some(Backoff {
                    items: kept,
                    ..backoff
                })
            }
        });
    }
}
