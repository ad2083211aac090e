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

use super::outcomes::dead_letter_of;
use super::*;
use crate::delivery::batch_sender::{BatchSender, Completion, Submission};
use crate::delivery::routing::{Route, RouteInputs};
use crate::ops::config::CommitOn;
use crate::target::bulk::{Admission, BatchEncoder, BatchKind, BatchLimits, EncodedBatch};

/// What the coordinator needs to send batches.
#[derive(Debug, Clone)]
pub struct BulkDelivery {
    /// Submits and polls.
    pub sender: BatchSender,
    /// `bulk.max_rows`, `bulk.max_bytes`.
    pub limits: BatchLimits,
    /// `bulk.max_age_ms`.
    pub max_age: Duration,
    /// `bulk.commit_on`.
    pub commit_on: CommitOn,
}

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

    /// The batch sender, for the share of calls.
    pub(super) fn sender(&self) -> &BatchSender {
        &self.delivery.sender
    }

    /// Whether `profile` has a row in an open batch (its later events join it).
    pub(super) fn has_open_row(&self, profile: &Identity) -> bool {
        self.open
            .iter()
            .any(|open| open.index.contains_key(profile))
    }
}

impl Coordinator {
    /// Moves every profile that may send into the open batches: a new row,
    /// or more events for the profile's row.
    pub(super) fn fill_batches(&mut self, now: Instant) {
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
            self.add_to_batch(profile, items, now);
        }
    }

    pub(super) fn add_to_batch(&mut self, profile: Identity, items: Vec<Pending>, now: Instant) {
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        let kind = BatchKind::of(&profile);
        let limits = batches.delivery.limits;
        let open = match batches.open.iter().position(|b| b.kind == kind) {
            Some(index) => &mut batches.open[index],
            None => {
                batches.open.push(OpenBatch {
                    kind,
                    rows: Vec::new(),
                    index: HashMap::new(),
                    bytes: 0,
                    opened_at: now,
                });
                let last = batches.open.len() - 1;
                &mut batches.open[last]
            }
        };
        if let Some(&row) = open.index.get(&profile) {
            open.rows[row].1.extend(items);
            return;
        }
        let scratch = BatchEncoder::new(kind);
        open.bytes += scratch.size_with(&items[0].update).unwrap_or(0);
        open.index.insert(profile.clone(), open.rows.len());
        open.rows.push((profile, items));
        if open.rows.len() >= limits.max_rows || open.bytes >= limits.max_bytes {
            self.seal_kind(kind);
        }
    }

    /// Seals open batches older than `bulk.max_age_ms` (all of them when
    /// `force`), and sets the wake-up for the next one due.
    pub(super) fn seal_due_batches(&mut self, now: Instant, force: bool) {
        let Some(batches) = self.batches.as_ref() else {
            return;
        };
        let max_age = batches.delivery.max_age;
        let due: Vec<BatchKind> = batches
            .open
            .iter()
            .filter(|open| force || open.opened_at + max_age <= now)
            .map(|open| open.kind)
            .collect();
        for kind in due {
            self.seal_kind(kind);
        }
        let next = self
            .batches
            .as_ref()
            .and_then(|b| b.open.iter().map(|o| o.opened_at + max_age).min());
        if let Some(next) = next {
            self.next_wake = Some(self.next_wake.map_or(next, |wake| wake.min(next)));
        }
    }

    /// Closes the open batch of `kind`: merges each row, encodes as many
    /// batches as the limits need, holds their profiles and submits them.
    fn seal_kind(&mut self, kind: BatchKind) {
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        let Some(position) = batches.open.iter().position(|b| b.kind == kind) else {
            return;
        };
        let open = batches.open.swap_remove(position);
        let limits = batches.delivery.limits;
        let mut encoder = BatchEncoder::new(kind);
        let mut rows = Vec::new();
        let mut refused = Vec::new();
        for (profile, items) in open.rows {
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
        let id = batches.next_id;
        batches.next_id += 1;
        tracing::info!(
            batch = id,
            rows = batch.rows(),
            events = rows.iter().map(|(_, items)| items.len()).sum::<usize>(),
            bytes = batch.body().len(),
            "Bulk batch closed; submitting."
        );
        batches.sealed.insert(
            id,
            SealedBatch {
                batch: batch.clone(),
                rows,
                settled: false,
            },
        );
        self.spawn_submit(id, batch);
    }

    fn spawn_submit(&mut self, id: u64, batch: Arc<EncodedBatch>) {
        let Some(batches) = self.batches.as_ref() else {
            return;
        };
        let sender = batches.delivery.sender.clone();
        let abandon = self.abandon.clone();
        let handle = self.tasks.spawn(async move {
            TaskDone::BatchSubmitted(sender.submit(batch.body(), &abandon).await)
        });
        self.running.insert(handle.id(), Work::BatchSubmit { id });
    }

    /// Sends a sealed batch again (stuck, forgotten, or its task failed).
    pub(super) fn resubmit_batch(&mut self, id: u64) {
        let batch = self
            .batches
            .as_ref()
            .and_then(|b| b.sealed.get(&id))
            .map(|s| s.batch.clone());
        if let Some(batch) = batch {
            self.spawn_submit(id, batch);
        }
    }

    /// Polls a submitted batch's status until it ends.
    pub(super) fn spawn_poll(&mut self, id: u64, status_url: String) {
        let Some(batches) = self.batches.as_ref() else {
            return;
        };
        let sender = batches.delivery.sender.clone();
        let abandon = self.abandon.clone();
        let url = status_url.clone();
        let handle = self.tasks.spawn(async move {
            TaskDone::BatchCompleted(sender.await_completion(&url, &abandon).await)
        });
        self.running
            .insert(handle.id(), Work::BatchPoll { id, status_url });
    }

    /// A submission ended: poll it, or give its events up.
    pub(super) fn on_batch_submitted(&mut self, id: u64, submission: Submission) {
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        let commit_on = batches.delivery.commit_on;
        match submission {
            Submission::Submitted { status_url } => {
                self.metrics.count_batch("submitted");
                tracing::info!(batch = id, "Bulk batch submitted; polling its status.");
                let settle = commit_on == CommitOn::Submitted
                    && batches.sealed.get(&id).is_some_and(|b| !b.settled);
                if settle {
                    let events: Vec<EventRef> =
                        batches.sealed.get_mut(&id).map_or_else(Vec::new, |b| {
                            b.settled = true;
                            b.rows
                                .iter()
                                .flat_map(|(_, items)| items.iter().map(|i| i.event.clone()))
                                .collect()
                        });
                    for event in &events {
                        self.finish(event);
                    }
                }
                self.spawn_poll(id, status_url);
            }
            Submission::Rejected { status, message } => {
                self.metrics.count_batch("rejected");
                tracing::warn!(batch = id, status, message = %message, "Target rejected a bulk batch; dead-lettering its events.");
                let reason =
                    format!("Target rejected the bulk batch with HTTP {status}: {message}");
                self.close_batch(id, |_| Some(reason.clone()), Some(status));
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
                self.metrics.count_batch("complete");
                let Some(sealed) = self.batches.as_ref().and_then(|b| b.sealed.get(&id)) else {
                    return;
                };
                let rows = sealed.rows.len();
                let failed = match sealed.batch.failed_rows(&failed_ids, failed_updates) {
                    Ok(failed) => failed,
                    Err(unmatched) => {
                        // Never a success: no row can be confirmed applied.
                        tracing::error!(batch = id, rows, error = %unmatched, "Bulk batch complete, but its failures cannot be tied to rows; dead-lettering all its events.");
                        self.metrics.count_bulk_rows("failed", rows as u64);
                        let reason = unmatched.to_string();
                        self.close_batch(id, |_| Some(reason.clone()), None);
                        return;
                    }
                };
                self.metrics
                    .count_bulk_rows("applied", (rows - failed.len().min(rows)) as u64);
                self.metrics.count_bulk_rows("failed", failed.len() as u64);
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
                self.metrics.count_batch("stuck");
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

    /// Shutdown: open batches are not sent; their events stay uncommitted.
    pub(super) fn drop_open_batches(&mut self) {
        let Some(batches) = self.batches.as_mut() else {
            return;
        };
        for open in std::mem::take(&mut batches.open) {
            for (_, items) in open.rows {
                for item in items {
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
            per_second: self.sender.gate.share().per_second,
            quota_left: self.settings.daily_quota as f64 * fraction
                - self.daily.total(minute) as f64,
        };
        self.metrics.route_backlog.set(inputs.backlog as i64);
        if let Some(route) = self.router.update(inputs) {
            if route == Route::Single {
                // Rows still open go now and hold their profiles, so no single
                // update overtakes an older event waiting in a batch.
                self.seal_due_batches(Instant::now(), true);
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
                let done = state
                    .watermark
                    .committable()
                    .or(state.last_committed)
                    .unwrap_or(0);
                let high = self.high_watermarks.get(tp).copied().unwrap_or(done);
                (high - done).max(0) as u64
            })
            .sum()
    }
}
