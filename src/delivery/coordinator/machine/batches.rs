//! Bulk batches (contract section 12): rows gather in an open batch per
//! identity kind, one row per profile with everything it has waiting merged;
//! a batch closes at `bulk.max_rows`, `bulk.max_bytes` or `bulk.max_age_ms`
//! and is submitted, then polled until Target reports it complete.
//!
//! A profile in a batch stays "in flight" in the per-profile queues until the
//! batch completes, so its later events wait for the next batch (or a single
//! update) and can never overtake it. Its events become committable when the
//! batch is complete (`commit_on = "complete"`) or accepted for processing
//! (`"submitted"`). Rows Target reports failed become `target_rejected` dead
//! letters of every event they carry; a `stuck` batch is sent again.

use super::super::settings::BulkDelivery;
use super::outcomes::dead_letter_of;
use super::*;
use crate::delivery::batch_sender::{Completion, Submission};
use crate::delivery::routing::{Route, RouteInputs};
use crate::ops::config::CommitOn;
use crate::ops::metrics::{BatchStatus, RowOutcome};
use crate::target::bulk::{Admission, BatchEncoder, BatchKind, EncodedBatch};

/// A batch taking rows: one per profile, each with every event it carries.
/// Rows are merged and encoded when the batch closes, so a profile's events
/// keep joining its row while the batch is open.
struct OpenBatch {
    kind: BatchKind,
    rows: Vec<(Identity, Vec<Pending>)>,
    index: HashMap<Identity, usize>,
    /// An upper estimate of the encoded size (the exact split happens on closing).
    bytes: usize,
    opened_at: Instant,
}

/// A batch on its way: submitted or being polled.
struct SealedBatch {
    batch: Arc<EncodedBatch>,
    rows: Vec<(Identity, Vec<Pending>)>,
    /// Its events were already finished (`commit_on = "submitted"`).
    settled: bool,
}

/// The batches of a coordinator.
pub(super) struct Batches {
    delivery: BulkDelivery,
    open: Vec<OpenBatch>,
    sealed: HashMap<u64, SealedBatch>,
    next_id: u64,
}

impl Batches {
    pub(super) fn new(delivery: BulkDelivery) -> Batches {
        Batches {
            delivery,
            open: Vec::new(),
            sealed: HashMap::new(),
            next_id: 0,
        }
    }

    /// Whether `profile` has a row in an open batch (its later events join it).
    pub(super) fn has_open_row(&self, profile: &Identity) -> bool {
        self.open
            .iter()
            .any(|open| open.index.contains_key(profile))
    }

    /// Adds a profile's events to the open batch of its kind: to its row if
    /// it has one, else as a new row (opening the batch at `now` if none is
    /// open). Returns the kind when the batch reached `bulk.max_rows` or
    /// `bulk.max_bytes` and must be sealed.
    fn add(&mut self, profile: Identity, items: Vec<Pending>, now: Instant) -> Option<BatchKind> {
        let kind = BatchKind::of(&profile);
        let limits = self.delivery.limits;
        let open = match self.open.iter().position(|b| b.kind == kind) {
            Some(index) => &mut self.open[index],
            None => {
                self.open.push(OpenBatch {
                    kind,
                    rows: Vec::new(),
                    index: HashMap::new(),
                    bytes: 0,
                    opened_at: now,
                });
                let last = self.open.len() - 1;
                &mut self.open[last]
            }
        };
        if let Some(&row) = open.index.get(&profile) {
            open.rows[row].1.extend(items);
            return None;
        }
        let scratch = BatchEncoder::new(kind);
        open.bytes += scratch.size_with(&items[0].update).unwrap_or(0);
        open.index.insert(profile.clone(), open.rows.len());
        open.rows.push((profile, items));
        (open.rows.len() >= limits.max_rows || open.bytes >= limits.max_bytes).then_some(kind)
    }

    /// The kinds whose open batch is older than `bulk.max_age_ms` at `now`
    /// (every open one when `force`).
    fn due(&self, now: Instant, force: bool) -> Vec<BatchKind> {
        let max_age = self.delivery.max_age;
        self.open
            .iter()
            .filter(|open| force || open.opened_at + max_age <= now)
            .map(|open| open.kind)
            .collect()
    }

    /// When the oldest open batch comes of age.
    fn next_due(&self) -> Option<Instant> {
        let max_age = self.delivery.max_age;
        self.open.iter().map(|o| o.opened_at + max_age).min()
    }

    /// Takes the open batch of `kind` out, to seal it.
    fn take_open(&mut self, kind: BatchKind) -> Option<OpenBatch> {
        let position = self.open.iter().position(|b| b.kind == kind)?;
        Some(self.open.swap_remove(position))
    }

    /// Registers a closed batch under a new id.
    fn seal(&mut self, batch: Arc<EncodedBatch>, rows: Vec<(Identity, Vec<Pending>)>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.sealed.insert(
            id,
            SealedBatch {
                batch,
                rows,
                settled: false,
            },
        );
        id
    }

    /// Target accepted batch `id` for processing. With `commit_on =
    /// "submitted"` its events are done now, once: returns them the first
    /// time, nothing after (a batch sent again is accepted again).
    fn settle_on_submit(&mut self, id: u64) -> Vec<EventRef> {
        if self.delivery.commit_on != CommitOn::Submitted {
            return Vec::new();
        }
        match self.sealed.get_mut(&id) {
            Some(sealed) if !sealed.settled => {
                sealed.settled = true;
                sealed
                    .rows
                    .iter()
                    .flat_map(|(_, items)| items.iter().map(|i| i.event.clone()))
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

impl DeliveryState {
    /// Moves every profile that may send into the open batches: a new row,
    /// or more events for the profile's row.
    pub(super) fn fill_batches(&mut self) {
        if self.batches.is_none() {
            return;
        }
        while let Some((profile, items)) = self.queues.next_ready(usize::MAX) {
            // Not in flight while its batch is open: later events join the row.
            self.queues.finish(&profile);
            for item in &items {
                if let Some(p) = self.partition(&item.event) {
                    p.in_flight += 1;
                }
            }
            self.add_to_batch(profile, items);
        }
    }

    /// Adds a profile's events to its open batch (a new row, or its row);
    /// seals the batch when that fills it.
    pub(super) fn add_to_batch(&mut self, profile: Identity, items: Vec<Pending>) {
        let now = self.now;
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        if let Some(full) = batches.add(profile, items, now) {
            self.seal_kind(full);
        }
    }

    /// Seals open batches older than `bulk.max_age_ms` (all of them when
    /// `force`), and sets the wake-up for the next one due.
    pub(super) fn seal_due_batches(&mut self, force: bool) {
        let Some(batches) = self.batches.as_ref() else {
            return;
        };
        for kind in batches.due(self.now, force) {
            self.seal_kind(kind);
        }
        let next = self.batches.as_ref().and_then(Batches::next_due);
        if let Some(next) = next {
            self.wake_at(next);
        }
    }

    /// Closes the open batch of `kind`: merges each row, encodes as many
    /// batches as the limits need, holds their profiles and submits them.
    fn seal_kind(&mut self, kind: BatchKind) {
        let Some(open) = self.batches.as_mut().and_then(|b| b.take_open(kind)) else {
            return;
        };
        self.seal_rows(kind, open.rows);
    }

    /// Merges each row, encodes as many batches as the limits need, holds
    /// their profiles and submits them.
    fn seal_rows(&mut self, kind: BatchKind, open_rows: Vec<(Identity, Vec<Pending>)>) {
        let Some(batches) = self.batches.as_ref() else {
            return;
        };
        let limits = batches.delivery.limits;
        let mut encoder = BatchEncoder::new(kind);
        let mut rows = Vec::new();
        let mut refused = Vec::new();
        for (profile, items) in open_rows {
            let Some(update) = self.current_update(&items) else {
                // Newer events delivered every attribute: nothing to send.
                self.superseded(profile, items);
                continue;
            };
            let mut admission = encoder.push_within(&update, limits);
            if admission == Ok(Admission::Full) && !rows.is_empty() {
                let full = std::mem::replace(&mut encoder, BatchEncoder::new(kind));
                self.submit_new(full, std::mem::take(&mut rows));
                admission = encoder.push_within(&update, limits);
            }
            match admission {
                Ok(Admission::Added { .. }) => rows.push((profile, items)),
                Ok(Admission::Full) => refused.push((
                    profile,
                    items,
                    "the update alone is larger than bulk.max_bytes".to_owned(),
                )),
                Err(error) => refused.push((
                    profile,
                    items,
                    format!("the update cannot be a batch row: {error}"),
                )),
            }
        }
        if !rows.is_empty() {
            self.submit_new(encoder, rows);
        }
        for (_, items, reason) in refused {
            for item in items {
                let letter =
                    dead_letter_of(&item, DeadLetterClass::TargetRejected, reason.clone(), None);
                self.spawn_dead_letter(item.event, letter, item.span, false);
            }
        }
    }

    /// Registers an encoded batch, holds its profiles, and submits it.
    fn submit_new(&mut self, encoder: BatchEncoder, rows: Vec<(Identity, Vec<Pending>)>) {
        for (profile, _) in &rows {
            self.queues.hold(profile.clone());
        }
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        let batch = Arc::new(encoder.finish());
        let events = rows.iter().map(|(_, items)| items.len()).sum::<usize>();
        let id = batches.seal(batch.clone(), rows);
        tracing::info!(
            batch = id,
            rows = batch.rows(),
            events,
            bytes = batch.body().len(),
            "Bulk batch closed; submitting."
        );
        self.spawn_submit(id, batch);
    }

    fn spawn_submit(&mut self, id: u64, batch: Arc<EncodedBatch>) {
        let Some(batches) = self.batches.as_ref() else {
            return;
        };
        let task = Task::Submit {
            sender: batches.delivery.sender.clone(),
            batch,
            cancel: self.abandon.clone(),
        };
        self.start(Work::BatchSubmit { id }, task);
    }

    /// Sends a sealed batch again (stuck, forgotten, or its task failed).
    /// Rows of partitions given up since leave it: the batch is encoded
    /// again without them, so no stale row lands after the new owner's
    /// updates. (Committed events, `commit_on = "submitted"`, all go again:
    /// the batch is their only delivery.)
    pub(super) fn resubmit_batch(&mut self, id: u64) {
        let Some(sealed) = self.batches.as_ref().and_then(|b| b.sealed.get(&id)) else {
            return;
        };
        let all_live = sealed.settled
            || sealed
                .rows
                .iter()
                .flat_map(|(_, items)| items)
                .all(|item| self.is_live(&item.event));
        if all_live {
            let batch = sealed.batch.clone();
            self.spawn_submit(id, batch);
            return;
        }
        let Some(sealed) = self.batches.as_mut().and_then(|b| b.sealed.remove(&id)) else {
            return;
        };
        let mut rows = Vec::new();
        for (profile, items) in sealed.rows {
            let live = self.drop_gone(items);
            if live.is_empty() {
                self.queues.finish(&profile);
            } else {
                rows.push((profile, live));
            }
        }
        tracing::info!(
            batch = id,
            rows = rows.len(),
            "Bulk batch sent again without the rows of partitions given up."
        );
        if let Some((profile, _)) = rows.first() {
            let kind = BatchKind::of(profile);
            self.seal_rows(kind, rows);
        }
    }

    /// Polls a submitted batch's status until it ends.
    pub(super) fn spawn_poll(&mut self, id: u64, status_url: String) {
        let Some(batches) = self.batches.as_ref() else {
            return;
        };
        let task = Task::Poll {
            sender: batches.delivery.sender.clone(),
            status_url: status_url.clone(),
            cancel: self.abandon.clone(),
        };
        self.start(Work::BatchPoll { id, status_url }, task);
    }

    /// A submission ended: poll it, or give its events up.
    pub(super) fn on_batch_submitted(&mut self, id: u64, submission: Submission) {
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        match submission {
            Submission::Submitted { status_url } => {
                self.metrics.count_batch(BatchStatus::Submitted);
                tracing::info!(batch = id, "Bulk batch submitted; polling its status.");
                for event in &batches.settle_on_submit(id) {
                    self.finish(event);
                }
                self.spawn_poll(id, status_url);
            }
            Submission::Rejected { status, message } => {
                self.metrics.count_batch(BatchStatus::Rejected);
                tracing::warn!(batch = id, status, message = %message, "Target rejected a bulk batch; dead-lettering its events.");
                let reason = match status {
                    Some(status) => {
                        format!("Target rejected the bulk batch with HTTP {status}: {message}")
                    }
                    None => format!("Target rejected the bulk batch: {message}"),
                };
                self.close_batch(id, |_| Some(reason.clone()), status);
            }
            Submission::Abandoned => self.abandon_batch(id),
        }
    }

    /// Polling ended: the batch is complete, must be sent again, or is abandoned.
    pub(super) fn on_batch_completed(&mut self, id: u64, completion: Completion) {
        match completion {
            Completion::Complete {
                failed_ids,
                failed_updates,
            } => {
                self.metrics.count_batch(BatchStatus::Complete);
                let Some(sealed) = self.batches.as_ref().and_then(|b| b.sealed.get(&id)) else {
                    return;
                };
                let rows = sealed.rows.len();
                let failed = match sealed.batch.failed_rows(&failed_ids, failed_updates) {
                    Ok(failed) => failed,
                    Err(unmatched) => {
                        // Never a success: no row can be confirmed applied.
                        tracing::error!(batch = id, rows, error = %unmatched, "Bulk batch complete, but its failures cannot be tied to rows; dead-lettering all its events.");
                        self.metrics
                            .count_bulk_rows(RowOutcome::Failed, rows as u64);
                        let reason = unmatched.to_string();
                        self.close_batch(id, |_| Some(reason.clone()), None);
                        return;
                    }
                };
                self.metrics
                    .count_bulk_rows(RowOutcome::Applied, (rows - failed.len().min(rows)) as u64);
                self.metrics
                    .count_bulk_rows(RowOutcome::Failed, failed.len() as u64);
                tracing::info!(
                    batch = id,
                    rows,
                    failed = failed.len(),
                    "Bulk batch complete."
                );
                let reason = "Target reported the bulk batch row failed".to_owned();
                self.close_batch(
                    id,
                    |row| failed.contains(&row).then(|| reason.clone()),
                    None,
                );
            }
            Completion::Resubmit { why } => {
                self.metrics.count_batch(BatchStatus::Stuck);
                tracing::warn!(batch = id, why = %why, "Sending a bulk batch again.");
                self.resubmit_batch(id);
            }
            Completion::Abandoned => self.abandon_batch(id),
        }
    }

    /// Ends a batch: rows for which `rejected(row)` gives a reason are
    /// dead-lettered, the others' events are done; its profiles may send again.
    fn close_batch(
        &mut self,
        id: u64,
        rejected: impl Fn(usize) -> Option<String>,
        status: Option<u16>,
    ) {
        let Some(sealed) = self.batches.as_mut().and_then(|b| b.sealed.remove(&id)) else {
            return;
        };
        for (row, (profile, items)) in sealed.rows.into_iter().enumerate() {
            self.queues.finish(&profile);
            match rejected(row) {
                Some(reason) => {
                    // Committed events (`commit_on = "submitted"`) have no
                    // other record; the others are their partition's new
                    // owner's to dead-letter when it was given up meanwhile.
                    let items = if sealed.settled {
                        items
                    } else {
                        self.drop_gone(items)
                    };
                    for item in items {
                        let letter = dead_letter_of(
                            &item,
                            DeadLetterClass::TargetRejected,
                            reason.clone(),
                            status,
                        );
                        self.spawn_dead_letter(item.event, letter, item.span, sealed.settled);
                    }
                }
                None => {
                    self.delivered(&items);
                    for item in items {
                        self.metrics.events_accepted.inc();
                        if let Some(verify) = &self.settings.verify {
                            verify.offer(&item.update);
                        }
                        if !sealed.settled {
                            self.finish(&item.event);
                        }
                        item.span.finish(Outcome::Accepted);
                    }
                }
            }
        }
    }

    /// The drain gave up on a batch: its unsettled events stay uncommitted.
    pub(super) fn abandon_batch(&mut self, id: u64) {
        let Some(sealed) = self.batches.as_mut().and_then(|b| b.sealed.remove(&id)) else {
            return;
        };
        for (profile, items) in sealed.rows {
            self.queues.finish(&profile);
            for item in items {
                if !sealed.settled {
                    if let Some(p) = self.partition(&item.event) {
                        p.in_flight -= 1;
                    }
                }
                item.span.finish(Outcome::Abandoned);
            }
        }
    }

    /// Partitions given up (revoke deadline, loss): their events leave the
    /// open batches unfinished, as their backoffs do; their new owner reads
    /// them again. A row left without events goes, and so does a batch left
    /// without rows. (A sealed batch is on its way: see `close_batch` and
    /// `resubmit_batch`.)
    pub(super) fn drop_open_rows_of(&mut self, gone: &[TopicPartition]) {
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        for open in &mut batches.open {
            for (_, items) in &mut open.rows {
                let (dropped, kept) = std::mem::take(items)
                    .into_iter()
                    .partition(|item: &Pending| gone.contains(&item.event.tp));
                *items = kept;
                for item in dropped {
                    item.span.finish(Outcome::Abandoned);
                }
            }
            open.rows.retain(|(_, items)| !items.is_empty());
            open.index = open
                .rows
                .iter()
                .enumerate()
                .map(|(row, (profile, _))| (profile.clone(), row))
                .collect();
        }
        batches.open.retain(|open| !open.rows.is_empty());
    }

    /// Shutdown: open batches are not sent; their events stay uncommitted.
    pub(super) fn drop_open_batches(&mut self) {
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        for open in std::mem::take(&mut batches.open) {
            for (_, items) in open.rows {
                for item in items {
                    // No longer out: a revoke during the drain is answered
                    // when the rest of its partition is done.
                    if let Some(p) = self.partition(&item.event) {
                        p.in_flight -= 1;
                    }
                    item.span.finish(Outcome::Abandoned);
                }
            }
        }
    }

    /// Overflow routing: re-decides from the backlog and the daily quota.
    pub(super) fn update_route(&mut self) {
        if !self.router.adapts() {
            return;
        }
        let minute = current_minute();
        let fraction = self.owned_fraction();
        let inputs = RouteInputs {
            backlog: self.backlog(),
            per_second: self.share.per_second,
            quota_left: self.settings.daily_quota as f64 * fraction
                - self.daily.total(minute) as f64,
        };
        self.metrics.route_backlog.set(inputs.backlog as i64);
        if let Some(route) = self.router.update(inputs) {
            if route == Route::Single {
                // Rows still open go now and hold their profiles, so no single
                // update overtakes an older event waiting in a batch.
                self.seal_due_batches(true);
            }
            self.metrics.set_route(route.as_str());
            tracing::info!(
                route = route.as_str(),
                backlog = inputs.backlog,
                per_second = inputs.per_second,
                quota_left = inputs.quota_left as i64,
                "Updates now go as {}.",
                match route {
                    Route::Single => "single updates",
                    Route::Batch => "bulk batches",
                }
            );
        }
    }

    /// Events of owned partitions not finished yet: read and waiting, or not read.
    fn backlog(&self) -> u64 {
        self.partitions
            .iter()
            .filter(|(_, state)| !state.revoking)
            .map(|(tp, state)| {
                let reported = self.reported.get(tp);
                let done = state
                    .watermark
                    .committable()
                    .or(state.last_committed)
                    .or(reported.and_then(|r| r.fetching));
                match (done, reported) {
                    (Some(done), Some(reported)) => (reported.high - done).max(0) as u64,
                    // Where it stands is not known yet: nothing counted.
                    _ => 0,
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_AGE: Duration = Duration::from_secs(10);

    fn batches(max_rows: usize, commit_on: CommitOn) -> Batches {
        Batches::new(crate::delivery::coordinator::fixtures::bulk_delivery(
            max_rows, MAX_AGE, commit_on,
        ))
    }

    /// The pending event at `offset` of a purchase by `customer`.
    fn pending(customer: &str, offset: i64) -> Pending {
        let json = format!(
            r#"{{"event_id":"e{offset}","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z",
            "store_id":"S1","customer":{{"third_party_id":"{customer}"}},"currency":"EUR",
            "total":"12.50","items":[]}}"#
        );
        let Decision::Update(update) = crate::mapping::Mapping::default().decide(json.as_bytes())
        else {
            panic!("not an update")
        };
        Pending {
            event: EventRef {
                tp: TopicPartition {
                    topic: "pos.purchases".into(),
                    partition: 0,
                },
                epoch: 1,
                offset,
            },
            update,
            key: None,
            payload: Vec::new(),
            timestamp_ms: None,
            replayed_from: None,
            received_at: Instant::now(),
            span: EventSpan::default(),
        }
    }

    fn add(batches: &mut Batches, customer: &str, offset: i64, at: Instant) -> Option<BatchKind> {
        let item = pending(customer, offset);
        batches.add(item.update.identity.clone(), vec![item], at)
    }

    #[test]
    fn a_profiles_later_events_join_its_row_and_a_batch_is_full_at_max_rows() {
        let now = Instant::now();
        let mut batches = batches(2, CommitOn::Complete);
        assert_eq!(add(&mut batches, "CRM-1", 0, now), None);
        assert_eq!(add(&mut batches, "CRM-1", 1, now), None, "the same row");
        let first = pending("CRM-1", 0).update.identity;
        assert!(batches.has_open_row(&first));
        assert_eq!(
            add(&mut batches, "CRM-2", 2, now),
            Some(BatchKind::of(&first)),
            "two rows: full"
        );
        let open = batches.take_open(BatchKind::of(&first)).unwrap();
        let events: Vec<usize> = open.rows.iter().map(|(_, items)| items.len()).collect();
        assert_eq!(events, [2, 1]);
        assert!(!batches.has_open_row(&first));
        assert!(batches.take_open(BatchKind::of(&first)).is_none());
    }

    #[test]
    fn an_open_batch_is_due_at_its_age_or_when_forced() {
        let opened = Instant::now();
        let mut batches = batches(100, CommitOn::Complete);
        assert_eq!(batches.next_due(), None);
        add(&mut batches, "CRM-1", 0, opened);
        assert_eq!(batches.next_due(), Some(opened + MAX_AGE));
        assert!(batches.due(opened + MAX_AGE / 2, false).is_empty());
        assert_eq!(batches.due(opened + MAX_AGE / 2, true).len(), 1);
        assert_eq!(batches.due(opened + MAX_AGE, false).len(), 1);
    }

    #[test]
    fn events_of_a_batch_are_settled_on_submit_once_and_only_when_configured() {
        for (commit_on, settled) in [(CommitOn::Submitted, 2), (CommitOn::Complete, 0)] {
            let mut batches = batches(100, commit_on);
            let rows = vec![
                (
                    pending("CRM-1", 0).update.identity,
                    vec![pending("CRM-1", 0)],
                ),
                (
                    pending("CRM-2", 1).update.identity,
                    vec![pending("CRM-2", 1)],
                ),
            ];
            let mut encoder = BatchEncoder::new(BatchKind::of(&rows[0].0));
            for (_, items) in &rows {
                encoder
                    .push_within(&items[0].update, batches.delivery.limits)
                    .unwrap();
            }
            let id = batches.seal(Arc::new(encoder.finish()), rows);
            assert_eq!(batches.settle_on_submit(id).len(), settled, "{commit_on:?}");
            // Sent again and accepted again: nothing more to finish.
            assert!(batches.settle_on_submit(id).is_empty());
            assert!(batches.settle_on_submit(id + 1).is_empty());
        }
    }
}
