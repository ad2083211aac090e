//! What becomes of sent updates and dead-letter writes: events finish (and
//! may be committed), are dead-lettered, or are abandoned.

use super::*;

impl Coordinator {
    /// Writes a dead letter in the background; the event finishes once Kafka acknowledges it.
    pub(super) fn spawn_dead_letter(
        &mut self,
        event: EventRef,
        letter: DeadLetter,
        span: EventSpan,
        settled: bool,
    ) {
        let writer = self.dead_letters.clone();
        let abandon = self.abandon.clone();
        let write_span = span.dead_letter_write(writer.topic(), letter.class);
        self.tasks.spawn(async move {
            let written = writer.write(&letter, &abandon).await;
            write_span.written(written);
            TaskDone::DeadLetter {
                event,
                written,
                span,
                settled,
            }
        });
    }

    /// A sender or dead-letter task ended: finish, dead-letter or abandon its events.
    pub(super) fn on_task(&mut self, done: Result<TaskDone, tokio::task::JoinError>) {
        let done = match done {
            Ok(done) => done,
            Err(error) => {
                // A panicking task loses nothing: its events stay unfinished,
                // so their offsets are never committed and are read again.
                tracing::error!(error = %error, "A delivery task failed; its events will be re-read after a restart.");
                return;
            }
        };
        match done {
            TaskDone::Update {
                profile,
                items,
                outcome,
            } => {
                self.updates_in_flight -= 1;
                self.queues.finish(&profile);
                match outcome {
                    DeliveryOutcome::Accepted => {
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
                            self.counters.age_from_occurred_at.observe(
                                (now - item.update.occurred_at.unix_seconds_f64()).max(0.0),
                            );
                            self.finish(&item.event);
                            item.span.finish(Outcome::Accepted);
                        }
                    }
                    DeliveryOutcome::Rejected { status } => {
                        for item in items {
                            let letter = dead_letter_of(
                                &item,
                                "target_rejected",
                                format!("Target rejected the update with HTTP {status}"),
                                Some(status),
                            );
                            self.spawn_dead_letter(item.event, letter, item.span, false);
                        }
                    }
                    DeliveryOutcome::Exhausted { last_status } => {
                        for item in items {
                            let reason = match last_status {
                                Some(status) => format!("gave up after delivery.max_attempts retryable failures; last HTTP {status}"),
                                None => "gave up after delivery.max_attempts retryable failures; last attempt got no response".to_owned(),
                            };
                            let letter =
                                dead_letter_of(&item, "retries_exhausted", reason, last_status);
                            self.spawn_dead_letter(item.event, letter, item.span, false);
                        }
                    }
                    DeliveryOutcome::Abandoned => {
                        for item in items {
                            if let Some(p) = self.partition(&item.event) {
                                p.in_flight -= 1;
                            }
                            item.span.finish(Outcome::Abandoned);
                        }
                    }
                }
            }
            TaskDone::BatchSubmitted { id, submission } => self.on_batch_submitted(id, submission),
            TaskDone::BatchCompleted { id, completion } => self.on_batch_completed(id, completion),
            TaskDone::DeadLetter {
                event,
                written,
                span,
                settled,
            } => {
                tracing::debug!(partition = %event.tp, offset = event.offset, written, "Dead letter done.");
                if settled {
                    // Committed before (on submission); the letter is a record only.
                    span.finish(Outcome::DeadLettered);
                } else if written {
                    self.finish(&event);
                    span.finish(Outcome::DeadLettered);
                } else {
                    if let Some(p) = self.partition(&event) {
                        p.in_flight -= 1;
                    }
                    span.finish(Outcome::Abandoned);
                }
            }
        }
    }

    /// An event is done (accepted or dead-lettered): its offset may be committed.
    pub(super) fn finish(&mut self, event: &EventRef) {
        let Some(state) = self.partition(event) else {
            return;
        };
        state.in_flight -= 1;
        state.watermark.finish(event.offset);
        self.resume_if_room();
    }

    /// Resumes paused partitions once both their own buffer and the pod's
    /// are down to half their limits (so fetching does not flap).
    fn resume_if_room(&mut self) {
        if !self.partitions.values().any(|p| p.paused && !p.revoking)
            || self.buffered() > self.settings.max_buffered / 2
        {
            return;
        }
        let limit = self.settings.max_buffered_per_partition;
        let mut list = TopicPartitionList::new();
        for (tp, state) in &mut self.partitions {
            if state.paused && !state.revoking && state.watermark.buffered() <= limit / 2 {
                state.paused = false;
                let _ = list.add_partition(&tp.topic, tp.partition);
            }
        }
        if list.count() == 0 {
            return;
        }
        self.sealed_when_full = false;
        if let Err(error) = self.consumer.resume(&list) {
            tracing::warn!(error = %error, "Could not resume partitions.");
        } else {
            tracing::info!(partitions = list.count(), "Partitions resumed.");
        }
        self.publish_paused();
    }
}

/// The dead letter of an update Target did not take.
pub(super) fn dead_letter_of(
    item: &Pending,
    class: &'static str,
    reason: String,
    target_status: Option<u16>,
) -> DeadLetter {
    DeadLetter {
        key: item.key.clone(),
        payload: item.payload.clone(),
        class,
        reason,
        source: item.event.tp.clone(),
        offset: item.event.offset,
        target_status,
    }
}
