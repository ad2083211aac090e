//! What comes from the consumer thread: records, assignments, the share of
//! the budget, high watermarks; and pausing partitions whose buffer is full.

use super::*;

impl DeliveryState {
    /// One message from the consumer thread.
    pub(super) fn handle_event(&mut self, event: ConsumerEvent) {
        match event {
            ConsumerEvent::Records(records) => {
                for record in records {
                    self.on_record(record);
                }
            }
            ConsumerEvent::Assigned(partitions) => {
                for tp in partitions {
                    let cancel = self.abandon.child_token();
                    if let Some(earlier) = self.partitions.assign(tp.clone(), cancel) {
                        // Assigned again before the revoke of its earlier
                        // assignment was answered (the consumer stopped
                        // waiting): that assignment's work is stale.
                        earlier.cancel.cancel();
                        self.abort_updates(|event| event.tp == tp && event.epoch == earlier.epoch);
                        self.drop_backoffs_of(std::slice::from_ref(&tp));
                    }
                }
                self.publish_assignment();
                self.update_share();
            }
            ConsumerEvent::Revoked {
                partitions,
                lost,
                reply,
            } => self.on_revoke(partitions, lost, reply),
            ConsumerEvent::PartitionCount(total) => {
                self.total_partitions = total;
                self.update_share();
            }
            ConsumerEvent::Offsets(marks) => {
                for (tp, offsets) in marks {
                    if self.partitions.contains(&tp) {
                        self.reported.insert(tp, offsets);
                    }
                }
                self.publish_offsets();
            }
        }
    }

    /// Sets this pod's share from the partitions it owns (and is not giving
    /// up). Called when partitions arrive (after their previous owner let go)
    /// and when a revoke starts (before they are handed over), so the pods'
    /// shares never add up to more than the group budget.
    pub(super) fn update_share(&mut self) {
        let owned = self.partitions.owned();
        let share = crate::delivery::gate::RateShare::of_group(
            self.settings.per_second,
            self.settings.burst,
            owned,
            self.total_partitions,
        );
        if self.batches.is_some() {
            let fraction = self.owned_fraction();
            self.actions.push(Action::SetBatchFraction(fraction));
        }
        if share != self.share {
            self.share = share;
            self.actions.push(Action::SetShare(share));
            self.metrics.rate_share.set(share.per_second);
            tracing::info!(
                owned,
                total = self.total_partitions,
                per_second = share.per_second,
                burst = share.burst,
                "Rate share set from the assignment."
            );
        }
    }

    /// A record: track its offset, then skip, dead-letter or queue it per profile.
    pub(super) fn on_record(&mut self, record: Record) {
        let Some(state) = self.partitions.get_mut(&record.tp) else {
            return;
        };
        let consumed_at = std::time::Instant::now();
        if state.revoking || self.draining || !state.watermark.track_at(record.offset, consumed_at)
        {
            // Not tracked, so never committed: a revoking or draining
            // partition's record is read again by its next owner. An offset
            // already tracked, or below them (Kafka reused offsets after a
            // log truncation, an unclean leader election), is skipped.
            tracing::debug!(partition = %record.tp, offset = record.offset, "Record not tracked.");
            return;
        }
        let span = EventSpan::start(
            &record.tp,
            record.offset,
            &self.settings.group_id,
            record.trace_context.as_deref(),
        );
        let tp = record.tp.clone();
        let event = EventRef {
            tp: record.tp,
            epoch: state.epoch,
            offset: record.offset,
        };
        match record.decision {
            Decision::Skip(_) => {
                self.counters.skip.inc();
                state.watermark.finish(event.offset);
                span.finish(Outcome::Skipped);
            }
            Decision::DeadLetter(error) => {
                tracing::debug!(partition = %event.tp, offset = event.offset, class = error.class.as_str(), "Dead-lettering a record.");
                if let Some(counter) = self.counters.invalid.get(error.class.as_str()) {
                    counter.inc();
                }
                state.in_flight += 1;
                let letter = DeadLetter {
                    key: record.key,
                    payload: record.payload,
                    class: error.class.into(),
                    reason: error.reason,
                    source: event.tp.clone(),
                    offset: event.offset,
                    target_status: None,
                    replayed_from: record.replayed_from,
                };
                self.spawn_dead_letter(event, letter, span, false);
            }
            Decision::Update(update) => {
                self.counters.update.inc();
                let profile = update.identity.clone();
                self.queues.push(
                    profile,
                    Pending {
                        event,
                        update,
                        key: record.key,
                        payload: record.payload,
                        timestamp_ms: record.timestamp_ms,
                        replayed_from: record.replayed_from,
                        received_at: self.now,
                        span,
                    },
                );
            }
        }
        self.pause_if_full(&tp);
    }

    /// Pauses the partition that just grew, if its buffer is full or the
    /// pod's is (only a record can fill one, so only its partition needs a look).
    pub(super) fn pause_if_full(&mut self, tp: &TopicPartition) {
        let (limit, pod_limit) = (
            self.settings.max_buffered_per_partition,
            self.settings.max_buffered,
        );
        let Some(paused) = self.partitions.pause_if_full(tp, limit, pod_limit) else {
            return;
        };
        let buffered = self
            .partitions
            .get(tp)
            .map_or(0, |s| s.watermark.buffered());
        tracing::info!(partition = %tp, buffered, "Partition paused: too much work buffered.");
        self.actions.push(Action::Pause(tp.clone()));
        self.publish_paused();
        if paused.seal_batches {
            self.seal_due_batches(true);
        }
    }
}
