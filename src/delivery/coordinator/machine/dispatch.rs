//! Where ready work goes: single updates up to the concurrency limit
//! (profiles whose backoff is over first), fetches, batches or dead
//! letters by what Target is known to have, and the update a profile's
//! events make now.

use super::*;

impl DeliveryState {
    /// Starts update attempts while there is room under the concurrency
    /// limit (`limit`) and work. With a coalescing window, a profile sends
    /// once its oldest waiting event has waited the window, and everything
    /// it has waiting goes as one merged update. While draining, only
    /// retries whose backoff is over go (the queues are empty).
    pub(super) fn start_ready(&mut self, limit: usize) {
        self.next_wake = None;
        if self.draining {
            self.dispatch_single(Duration::ZERO, limit);
            return;
        }
        if self.router.route() == crate::delivery::routing::Route::Batch {
            // Retries go on as they started, whatever the route: the route
            // says where new work goes. A retry left waiting for the single
            // route would hold its profile, and its partition's commits,
            // until the backlog it holds back went away, which it cannot.
            self.start_due_backoffs(limit);
            self.fill_batches();
        } else {
            self.dispatch_single(self.settings.coalesce_window, limit);
        }
        self.seal_due_batches(false);
    }

    /// Starts the attempts and fetches whose retry backoff is over, while
    /// there is room for them, and sets the wake-up for the next one.
    fn start_due_backoffs(&mut self, limit: usize) {
        let now = self.now;
        let max_fetches = self.settings.existence.max_fetches;
        // Each start takes a place: the room is counted again for the next.
        while let Some(backoff) = self.backoffs.pop_due(now, |backoff| match backoff.next {
            Next::Update => self.updates_in_flight < limit,
            Next::Fetch => self.fetches_in_flight < max_fetches,
        }) {
            match backoff.next {
                Next::Update => self.start_update(backoff.profile, backoff.items, backoff.retry),
                Next::Fetch => self.start_fetch(backoff.profile, backoff.items, backoff.retry),
            }
        }
        if let Some(at) = self.backoffs.next_at() {
            self.wake_at(at);
        }
    }

    /// Starts single-update attempts while there is room under the
    /// concurrency limit: first profiles whose retry backoff is over (their
    /// events are the oldest), then waiting work, each profile the way its
    /// existence at Target says (`route_of`).
    pub(super) fn dispatch_single(&mut self, window: Duration, limit: usize) {
        let now = self.now;
        let max_fetches = self.settings.existence.max_fetches;
        self.start_due_backoffs(limit);
        while self.updates_in_flight < limit {
            self.queues.drop_stale_heads();
            // Routed while the head is borrowed: its identity is not copied.
            let (ready_at, way) = match self.queues.head() {
                None => break,
                Some(head) => (
                    head.received_at + window,
                    self.route_of(&head.update.identity, now),
                ),
            };
            if !window.is_zero() && ready_at > now {
                // Oldest first is also ready-time order: nobody else is ready.
                self.wake_at(ready_at);
                break;
            }
            if way == Way::Fetch && self.fetches_in_flight >= max_fetches {
                break;
            }
            let batch = if window.is_zero() { 1 } else { usize::MAX };
            let Some((profile, items)) = self.queues.next_ready(batch) else {
                break;
            };
            for item in &items {
                if let Some(p) = self.partition(&item.event) {
                    p.in_flight += 1;
                }
            }
            let retry = self.fresh_retry();
            match way {
                Way::Single => self.start_update(profile, items, retry),
                Way::Fetch => self.start_fetch(profile, items, retry),
                Way::Batch => self.send_through_batch(profile, items),
                Way::NotFound => self.not_found(profile, items),
            }
        }
    }

    pub(super) fn fresh_retry(&self) -> RetryState {
        RetryState {
            attempts: 0,
            failures: 0,
            schedule: self.retry.schedule(),
        }
    }

    /// Where a profile's ready update goes: a single update only to a
    /// profile Target has (or with `existence.policy = "trust"`); a profile
    /// with a row in an open batch joins it; one a fetch did not find goes
    /// to a batch or a dead letter, as the policy says; any other is fetched.
    pub(super) fn route_of(&self, profile: &Identity, now: Instant) -> Way {
        let policy = self.settings.existence.policy;
        if policy == ExistencePolicy::Trust {
            return Way::Single;
        }
        if self
            .batches
            .as_ref()
            .is_some_and(|b| b.has_open_row(profile))
        {
            return Way::Batch;
        }
        match (self.directory.lookup(profile, now), policy) {
            (Knowledge::Exists, _) => Way::Single,
            (Knowledge::Unknown, _) => Way::Fetch,
            (Knowledge::Absent, ExistencePolicy::DeadLetter) => Way::NotFound,
            (Knowledge::Absent, _) => Way::Batch,
        }
    }

    /// Starts one attempt of a profile's update; its events were counted in
    /// flight when they left the queue.
    pub(super) fn start_update(
        &mut self,
        profile: Identity,
        items: Vec<Pending>,
        mut retry: RetryState,
    ) {
        // The request is built here, from the events' own update: the task
        // takes only the request, not a copy of the update.
        let Some(request) = self
            .current_update(&items)
            .map(|update| self.client.request(&update))
        else {
            // Nothing to send (no events, or every attribute superseded).
            self.superseded(profile, items);
            return;
        };
        retry.attempts += 1;
        let attempt = retry.attempts;
        self.updates_in_flight += 1;
        let trace = RequestTrace::of(items.iter().map(|i| &i.span));
        self.start(
            Work::Update {
                profile,
                items,
                retry,
            },
            Task::Update {
                request,
                trace,
                attempt,
            },
        );
    }

    /// The token that cancels work of `event`'s partition (the shutdown
    /// token when the partition is no longer owned). A profile's events
    /// normally share one partition (the record key is the customer); work
    /// that spans several is cancelled with its first event's partition.
    pub(super) fn cancel_token_of(&self, event: &EventRef) -> CancellationToken {
        self.partitions
            .current(&event.tp, event.epoch)
            .map_or_else(|| self.abandon.clone(), |p| p.cancel.clone())
    }

    /// This pod's fraction of its topics' partitions (those it owns and is not giving up).
    pub(super) fn owned_fraction(&self) -> f64 {
        let owned = self.partitions.owned();
        if self.total_partitions == 0 {
            0.0
        } else {
            owned as f64 / self.total_partitions as f64
        }
    }

    /// The state of an event's partition, if it is still owned in the same assignment.
    pub(super) fn partition(&mut self, event: &EventRef) -> Option<&mut PartitionState> {
        self.partitions.current_mut(&event.tp, event.epoch)
    }
}

impl DeliveryState {
    /// The update a profile's events make now: merged, and with
    /// `delivery.time_order = "occurred_at"` less the attributes a newer event
    /// of the profile already delivered; `None` when nothing is left to send.
    pub(super) fn current_update<'a>(
        &self,
        items: &'a [Pending],
    ) -> Option<Cow<'a, ProfileUpdate>> {
        let update = merged_update(items)?;
        if self.settings.time_order == TimeOrder::Arrival {
            return Some(update);
        }
        let times = attribute_times(items.iter().map(|i| &i.update));
        self.freshness
            .current(update.into_owned(), &times, assignment_of(items))
            .map(Cow::Owned)
    }

    /// Target accepted the update of these events: their attributes are the
    /// newest delivered now.
    pub(super) fn delivered(&mut self, items: &[Pending]) {
        if self.settings.time_order == TimeOrder::Arrival {
            return;
        }
        if let Some(update) = self.current_update(items) {
            let times = attribute_times(items.iter().map(|i| &i.update));
            self.freshness
                .delivered(&update, &times, assignment_of(items));
        }
    }

    /// Events with nothing left to send (newer events delivered every
    /// attribute they carry) are done, like accepted ones.
    pub(super) fn superseded(&mut self, profile: Identity, items: Vec<Pending>) {
        self.queues.finish(&profile);
        for item in items {
            self.metrics.events_superseded.inc();
            self.finish(&item.event);
            item.span.finish(Outcome::Accepted);
        }
    }
}

/// One update for a profile's events: the single one as is, several merged
/// (latest `(occurred_at, offset)` per attribute). `None` only for no
/// events at all, which the queues never hand out.
pub(super) fn merged_update(items: &[Pending]) -> Option<Cow<'_, ProfileUpdate>> {
    let (first, rest) = items.split_first()?;
    Some(match rest {
        // One event (the usual case): its own update, not a copy.
        [] => Cow::Borrowed(&first.update),
        _ => Cow::Owned(merge_updates(
            (&first.update, first.event.offset),
            rest.iter().map(|i| (&i.update, i.event.offset)),
        )),
    })
}

/// Minutes since the Unix epoch: the rolling day's clock.
pub(super) fn current_minute() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 60
}

/// The assignment (epoch) a profile's newest event was read under.
fn assignment_of(items: &[Pending]) -> u64 {
    items.last().map_or(0, |item| item.event.epoch)
}
