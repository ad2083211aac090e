//! What becomes of sent updates and dead-letter writes: events finish (and
//! may be committed), are dead-lettered, or are abandoned.

use super::*;

impl DeliveryState {
    /// Writes a dead letter in the background; the event finishes once Kafka acknowledges it.
    pub(super) fn spawn_dead_letter(
        &mut self,
        event: EventRef,
        letter: DeadLetter,
        span: EventSpan,
        settled: bool,
    ) {
        self.write_dead_letter(event, Arc::new(letter), span, settled);
    }

    fn write_dead_letter(
        &mut self,
        event: EventRef,
        letter: Arc<DeadLetter>,
        span: EventSpan,
        settled: bool,
    ) {
        // A committed event's letter is its only record: a rebalance does
        // not stop it, only the pod's own end does.
        let cancel = if settled {
            self.abandon.clone()
        } else {
            self.cancel_token_of(&event)
        };
        let write_span = span.dead_letter_write(&self.dead_letter_topic, letter.class.as_str());
        let task = Task::DeadLetter {
            letter: letter.clone(),
            cancel,
            span: write_span,
        };
        self.start(
            Work::DeadLetter {
                event,
                letter,
                span,
                settled,
            },
            task,
        );
    }

    /// A task ended: carry its work on with what it came to.
    pub(super) fn handle_task(&mut self, id: WorkId, done: Result<TaskDone, Ended>) {
        let Some(work) = self.running.remove(&id) else {
            return;
        };
        match (work, done) {
            (
                Work::Update {
                    profile,
                    items,
                    retry,
                },
                Ok(TaskDone::Update(outcome)),
            ) => self.on_update_done(profile, items, retry, outcome),
            (
                Work::DeadLetter {
                    event,
                    span,
                    settled,
                    ..
                },
                Ok(TaskDone::DeadLetter { written }),
            ) => self.on_dead_letter_done(event, span, settled, written),
            (Work::BatchSubmit { id }, Ok(TaskDone::BatchSubmitted(submission))) => {
                self.on_batch_submitted(id, submission)
            }
            (Work::BatchPoll { id, .. }, Ok(TaskDone::BatchCompleted(completion))) => {
                self.on_batch_completed(id, completion)
            }
            (
                Work::Fetch {
                    profile,
                    items,
                    retry,
                },
                Ok(TaskDone::Fetched(outcome)),
            ) => self.on_fetch_done(profile, items, retry, outcome),
            (work, Ok(_)) => {
                // Cannot happen: each kind of work spawns its own kind of task.
                tracing::error!("A delivery task answered for other work; retrying that work.");
                self.retry_failed_task(work);
            }
            (work, Err(Ended::Cancelled)) => self.abandon_work(work),
            (work, Err(Ended::Panicked(error))) => {
                // A bug, not Target's answer: the work is kept, so nothing is
                // lost or stuck; it is tried again like a retryable failure.
                tracing::error!(error = %error, "A delivery task panicked; trying its work again.");
                self.retry_failed_task(work);
            }
        }
    }

    /// Starts work again whose task failed without an outcome.
    fn retry_failed_task(&mut self, work: Work) {
        match work {
            Work::Update {
                profile,
                items,
                retry,
            } => {
                // Counted like a retryable failure (max_attempts applies).
                self.on_update_done(
                    profile,
                    items,
                    retry,
                    AttemptOutcome::Retry {
                        status: None,
                        retry_after: None,
                    },
                );
            }
            Work::DeadLetter {
                event,
                letter,
                span,
                settled,
            } => {
                if settled || self.is_live(&event) {
                    self.write_dead_letter(event, letter, span, settled);
                } else {
                    // Its partition was given up: the new owner's to write.
                    span.finish(Outcome::Abandoned);
                }
            }
            Work::BatchSubmit { id } => self.resubmit_batch(id),
            Work::BatchPoll { id, status_url } => self.spawn_poll(id, status_url),
            Work::Fetch {
                profile,
                items,
                retry,
            } => self.on_fetch_done(
                profile,
                items,
                retry,
                Some(crate::target::fetch::FetchOutcome::Retry {
                    status: None,
                    retry_after: None,
                }),
            ),
        }
    }

    /// Work whose task was aborted: at the end of the shutdown drain, or (an
    /// update attempt) when its partition was given up.
    fn abandon_work(&mut self, work: Work) {
        match work {
            Work::Update {
                profile,
                items,
                retry,
            } => {
                self.on_update_done(profile, items, retry, AttemptOutcome::Abandoned);
            }
            Work::DeadLetter {
                event,
                span,
                settled,
                ..
            } => self.on_dead_letter_done(event, span, settled, false),
            Work::BatchSubmit { id } | Work::BatchPoll { id, .. } => self.abandon_batch(id),
            Work::Fetch {
                profile,
                items,
                retry,
            } => self.on_fetch_done(profile, items, retry, None),
        }
    }

    /// A dead-letter write ended.
    fn on_dead_letter_done(
        &mut self,
        event: EventRef,
        span: EventSpan,
        settled: bool,
        written: bool,
    ) {
        tracing::debug!(partition = %event.tp, offset = event.offset, written, "Dead letter done.");
        if settled {
            // Committed before (on submission); the letter is its only record.
            if written {
                span.finish(Outcome::DeadLettered);
            } else {
                tracing::error!(partition = %event.tp, offset = event.offset, "A bulk row failed after its event was committed (bulk.commit_on = \"submitted\"), and the pod stopped before its dead letter was written: nothing records the failure.");
                span.finish(Outcome::Abandoned);
            }
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

    /// A profile's events all become dead letters of `class` with `reason`;
    /// the profile may send again.
    pub(super) fn dead_letter_all(
        &mut self,
        profile: &Identity,
        items: Vec<Pending>,
        class: DeadLetterClass,
        reason: &str,
        status: Option<u16>,
    ) {
        // A partition given up meanwhile: its new owner dead-letters its
        // events if they fail there too.
        let Some(items) = self.keep_live(profile, items) else {
            return;
        };
        self.queues.finish(profile);
        for item in items {
            let letter = dead_letter_of(&item, class, reason.to_owned(), status);
            self.spawn_dead_letter(item.event, letter, item.span, false);
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
    pub(super) fn resume_if_room(&mut self) {
        let resumed = self.partitions.resume_if_room(
            self.settings.max_buffered_per_partition,
            self.settings.max_buffered,
        );
        if resumed.is_empty() {
            return;
        }
        self.actions.push(Action::Resume(resumed));
        self.publish_paused();
    }
}

/// The dead letter of an update Target did not take.
pub(super) fn dead_letter_of(
    item: &Pending,
    class: DeadLetterClass,
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
        replayed_from: item.replayed_from.clone(),
    }
}
