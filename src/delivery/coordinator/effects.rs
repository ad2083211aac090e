//! Carrying out the state's actions: tasks (update attempts, fetches,
//! dead-letter writes, batch submissions and polls, polled on the
//! coordinator's task: `running.rs`), pauses and
//! resumes on the consumer, the gate's share, revoke answers, and commits
//! (one at a time, on a blocking thread, counted only once the broker
//! confirmed them).

use super::machine::{CommitOffset, Task, TaskDone, WorkId};
use super::running::Finished;
use super::*;
use crate::ops::metrics::advance_to;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

impl Coordinator {
    /// Carries out every action the state has decided, in order.
    /// Aborted tasks answer at once, and what the state decides on those
    /// answers is carried out too.
    pub(super) fn carry_out(&mut self) {
        let mut actions = std::mem::take(&mut self.outbox);
        loop {
            self.state.take_actions(&mut actions);
            if actions.is_empty() {
                break;
            }
            for action in actions.drain(..) {
                self.carry_out_one(action);
            }
        }
        self.outbox = actions;
    }

    fn carry_out_one(&mut self, action: Action) {
        match action {
            Action::Start { work, task } => self.start(work, task),
            Action::Abort(works) => {
                for done in self.tasks.abort(&works) {
                    self.on_task(done);
                }
            }
            Action::Pause(tp) => {
                let list = partition_list([&tp]);
                if let Err(error) = self.consumer.pause(&list) {
                    tracing::warn!(error = %error, "Could not pause a partition.");
                }
            }
            Action::Resume(partitions) => {
                let list = partition_list(&partitions);
                if let Err(error) = self.consumer.resume(&list) {
                    tracing::warn!(error = %error, "Could not resume partitions.");
                } else {
                    tracing::info!(partitions = list.count(), "Partitions resumed.");
                }
            }
            Action::ConfirmFetching(partitions) => {
                let list = partition_list(&partitions);
                if let Err(error) = self.consumer.resume(&list) {
                    tracing::debug!(error = %error, "Could not confirm resumed partitions.");
                }
            }
            Action::Commit(offsets) => {
                debug_assert!(self.commit.is_none(), "one commit at a time");
                let consumer = self.consumer.clone();
                self.commit = Some(tokio::task::spawn_blocking(move || {
                    let result = commit_sync(&consumer, &offsets);
                    CommitResult { offsets, result }
                }));
            }
            Action::SetShare(share) => self.updates.gate.set_share(share),
            Action::SetBatchFraction(fraction) => {
                if let Some(sender) = &self.batch_sender {
                    sender.calls.set_fraction(fraction);
                }
            }
            Action::AuthFailed(status) => self.updates.gate.auth_failed(status, false),
            Action::AnswerRevoke { reply, offsets } => {
                // The consumer thread may have stopped waiting.
                let _ = reply.send(offsets);
            }
        }
    }

    /// Starts a task's I/O, as the task of `work`.
    fn start(&mut self, work: WorkId, task: Task) {
        let tasks = &mut self.tasks;
        match task {
            Task::Update {
                request,
                trace,
                attempt,
            } => {
                let updates = self.updates.clone();
                tasks.start(work, async move {
                    TaskDone::Update(updates.attempt(request, &trace, attempt).await)
                })
            }
            Task::DeadLetter {
                letter,
                cancel,
                span,
            } => {
                let writer = self.dead_letters.clone();
                tasks.start(work, async move {
                    let written = writer.write(&letter, &cancel).await;
                    span.written(written);
                    TaskDone::DeadLetter { written }
                })
            }
            Task::Fetch {
                fetcher,
                profile,
                cancel,
            } => tasks.start(work, async move {
                let outcome = tokio::select! {
                        biased;
                        _ = cancel.cancelled() => None,
                        outcome = fetcher.fetch(&profile) => Some(outcome),
                };
                TaskDone::Fetched(outcome)
            }),
            Task::Submit {
                sender,
                batch,
                cancel,
            } => tasks.start(work, async move {
                TaskDone::BatchSubmitted(sender.submit(batch.body(), &cancel).await)
            }),
            Task::Poll {
                sender,
                status_url,
                cancel,
            } => tasks.start(work, async move {
                TaskDone::BatchCompleted(sender.await_completion(&status_url, &cancel).await)
            }),
        }
    }

    /// A task ended: the state carries its work on.
    pub(super) fn on_task(&mut self, (work, done): Finished) {
        if let Ok(TaskDone::Fetched(Some(outcome))) = &done {
            self.note_fetch(outcome);
        }
        self.state.on_task_done(work, done, Instant::now());
    }

    /// What a profile fetch's answer tells `/readyz`, as an update's does:
    /// whether Target answered at all, and (any answer but 401/403) that
    /// the credentials work again. With `existence.policy = "dead_letter"`
    /// and unknown customers, fetches may be the only calls made.
    fn note_fetch(&self, outcome: &crate::target::fetch::FetchOutcome) {
        use crate::target::fetch::FetchOutcome;
        let gate = &self.updates.gate;
        match outcome {
            FetchOutcome::Found { .. } | FetchOutcome::NotFound | FetchOutcome::Rejected { .. } => {
                gate.set_reachable(true);
                gate.auth_ok();
            }
            FetchOutcome::AuthFailed { .. } => gate.set_reachable(true),
            FetchOutcome::Retry { status, .. } => gate.set_reachable(status.is_some()),
        }
    }

    /// The gate's pauses and waits, as metrics.
    pub(super) fn publish_gate(&self) {
        let gate = &self.updates.gate;
        advance_to(&self.metrics.retry_after_pauses, gate.retry_after_pauses());
        self.metrics
            .auth_paused
            .set(i64::from(gate.is_auth_paused()));
        advance_to(
            &self.metrics.limiter_wait_seconds,
            gate.limiter_wait_seconds(),
        );
    }
}

/// A list of partitions, as librdkafka takes them.
fn partition_list<'a>(
    partitions: impl IntoIterator<Item = &'a crate::kafka::TopicPartition>,
) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for tp in partitions {
        let _ = list.add_partition(&tp.topic, tp.partition);
    }
    list
}

/// Commits offsets and waits for the broker's answer.
pub(super) fn commit_sync(
    consumer: &PipelineConsumer,
    offsets: &[CommitOffset],
) -> Result<(), String> {
    let mut list = TopicPartitionList::new();
    for CommitOffset { tp, offset, .. } in offsets {
        list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
            .map_err(|error| error.to_string())?;
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|error| error.to_string())
}

/// The result of the commit under way (pending forever when there is none).
pub(super) async fn wait_commit(
    commit: &mut Option<tokio::task::JoinHandle<CommitResult>>,
) -> CommitResult {
    match commit.as_mut() {
        Some(handle) => handle.await.unwrap_or_else(|error| CommitResult {
            offsets: Vec::new(),
            result: Err(error.to_string()),
        }),
        None => std::future::pending().await,
    }
}
