//! The coordinator: one task that moves events between Kafka and Target.
//!
//! What it knows and decides is the [`DeliveryState`](machine::DeliveryState)
//! (`machine/`): every consumed offset in its partition's watermark, updates
//! queued per profile, attempts up to the adaptive concurrency limit (the
//! rest waits in the queues, where it can still coalesce), dead letters,
//! revokes drained before they go. This file is its loop: it feeds the state
//! what happens (consumer events, finished tasks, commit answers, ticks)
//! with the time, and carries out the actions the state answers with
//! (`effects.rs`). On shutdown it drains within the deadline and commits
//! (`drain.rs`).

use super::attempt::UpdateAttempts;
use crate::delivery::batch_sender::BatchSender;
use crate::kafka::consumer::PipelineConsumer;
use crate::kafka::dead_letter::DeadLetterWriter;
use crate::kafka::ConsumerEvent;
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use machine::{Action, CommitResult, DeliveryState, StateParts};
use running::Running;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the pause state is told to librdkafka again (see
/// `DeliveryState::reconcile_pauses`).
const RECONCILE_PAUSES_EVERY: Duration = Duration::from_secs(5);

/// Records (and other events) from the consumer thread taken in one turn of
/// the loop at most, so that finished requests and commits are not kept
/// waiting behind a long backlog of records, and a partition whose buffer
/// filled is paused (at the end of the turn) before much more of it came in.
const EVENTS_AT_ONCE: usize = 256;

/// Finished tasks taken in one turn of the loop at most: one look at the
/// state per handful of answers under load, and the loop's other branches
/// still served in between.
const TASKS_AT_ONCE: usize = 64;

/// Why the service stopped on its own, not on a stop signal: it drained and
/// committed what it could, and the process exits non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Halted {
    /// The consumer stopped while the service was running: nothing is read any more.
    #[error("the Kafka consumer stopped unexpectedly; nothing more would be read")]
    ConsumerStopped,
    /// The dead-letter producer failed for good: no bad event could be set
    /// aside, so its partition could commit nothing more.
    #[error("the dead-letter producer failed for good (a fatal Kafka client error); a restart makes a new one")]
    DeadLettersFailed,
}

/// How a drain ended: what the process may say of its own stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Drained {
    /// Updates, fetches and batches given up at the drain deadline (their
    /// events are re-read by the next owner).
    pub abandoned: usize,
    /// Whether every accepted offset was committed. When false the next
    /// owner re-reads from the last commit: duplicates, nothing lost.
    pub committed: bool,
}

impl Drained {
    /// Nothing given up and everything accepted committed.
    pub fn is_clean(&self) -> bool {
        self.abandoned == 0 && self.committed
    }
}

/// The delivery loop: the state, and what carries its actions out.
pub struct Coordinator {
    state: DeliveryState,
    consumer: Arc<PipelineConsumer>,
    events: mpsc::Receiver<ConsumerEvent>,
    /// Shared with every update task: one count to bump per task.
    updates: Arc<UpdateAttempts>,
    dead_letters: Arc<DeadLetterWriter>,
    /// The bulk call budget's owner, told this pod's fraction.
    batch_sender: Option<BatchSender>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// The running tasks, polled on this task (see `running.rs`).
    tasks: Running,
    /// The actions being carried out (kept for its capacity).
    outbox: Vec<Action>,
    /// The commit under way, if any: one at a time, and a partition's offset
    /// counts as committed only once the broker confirmed it.
    commit: Option<tokio::task::JoinHandle<CommitResult>>,
    /// Cancelled when the consumer thread ends (see [`Coordinator::watch_consumer`]).
    consumer_stopped: CancellationToken,
}

impl Coordinator {
    /// A coordinator over a started consumer.
    pub fn new(
        settings: CoordinatorSettings,
        consumer: Arc<PipelineConsumer>,
        events: mpsc::Receiver<ConsumerEvent>,
        updates: UpdateAttempts,
        dead_letters: Arc<DeadLetterWriter>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Coordinator {
        let batch_sender = settings.bulk.as_ref().map(|bulk| bulk.sender.clone());
        let parts = StateParts {
            client: updates.client.clone(),
            retry: updates.retry,
            max_attempts: updates.max_attempts,
            share: updates.gate.share(),
            dead_letter_topic: Arc::from(dead_letters.topic()),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        Coordinator {
            state: DeliveryState::new(settings, parts, Instant::now()),
            consumer,
            events,
            updates: Arc::new(updates),
            dead_letters,
            batch_sender,
            metrics,
            health,
            tasks: Running::default(),
            outbox: Vec::new(),
            commit: None,
            consumer_stopped: CancellationToken::new(),
        }
    }

    /// Runs until `shutdown`, then drains within the deadline and commits.
    /// A consumer that stops on its own (its thread panicked) is an error:
    /// the coordinator drains, commits and returns [`Halted::ConsumerStopped`],
    /// so the process exits non-zero instead of staying up, ready and idle;
    /// likewise a dead-letter producer that failed for good.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Drained, Halted> {
        let mut commit_tick = tokio::time::interval(self.state.settings().commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // librdkafka's resume waits for each partition's broker thread: not
        // on every commit tick, only often enough to catch a stale pause.
        let mut reconcile_tick = tokio::time::interval(RECONCILE_PAUSES_EVERY);
        reconcile_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consumer_stopped = self.consumer_stopped.clone();
        let dead_letters_failed = self.dead_letters.failed().clone();
        let mut halted = None;
        // One timer for the state's next wake, moved when that changes
        // rather than made anew on every turn.
        let wake_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(wake_timer);
        let mut armed: Option<Instant> = None;
        loop {
            let wake = self.start_ready();
            if let Some(at) = wake.filter(|&at| armed != Some(at)) {
                wake_timer.as_mut().reset(at);
                armed = Some(at);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = consumer_stopped.cancelled() => {
                    tracing::error!("The Kafka consumer stopped on its own; draining and exiting.");
                    halted = Some(Halted::ConsumerStopped);
                    break;
                }
                _ = dead_letters_failed.cancelled() => {
                    tracing::error!("The dead-letter producer failed; draining and exiting.");
                    halted = Some(Halted::DeadLettersFailed);
                    break;
                }
                Some(done) = self.tasks.next(), if !self.tasks.is_empty() => {
                    self.on_task(done);
                    self.on_more_tasks();
                }
                event = self.events.recv() => match event {
                    Some(event) => self.on_events(event),
                    None => {
                        tracing::error!("The Kafka consumer stopped; draining and exiting.");
                        halted = Some(Halted::ConsumerStopped);
                        break;
                    }
                },
                _ = commit_tick.tick() => {
                    self.state.on_commit_tick(Instant::now());
                    self.publish_gate();
                }
                _ = reconcile_tick.tick() => self.state.reconcile_pauses(),
                result = effects::wait_commit(&mut self.commit), if self.commit.is_some() => {
                    self.commit = None;
                    self.state.on_commit(result);
                }
                _ = &mut wake_timer, if wake.is_some() => armed = None,
            }
            self.state.check_revokes(Instant::now());
            self.carry_out();
        }
        if halted == Some(Halted::ConsumerStopped) {
            self.health.consumer_stopped.store(true, Ordering::Release);
        }
        let drained = self.drain().await;
        match halted {
            Some(halted) => Err(halted),
            None => Ok(drained),
        }
    }

    /// Starts what the state says may start now, under the adaptive
    /// concurrency limit; returns when the state wants to be looked at again.
    fn start_ready(&mut self) -> Option<Instant> {
        self.state
            .dispatch(Instant::now(), self.updates.concurrency.limit());
        self.carry_out();
        self.state.next_wake()
    }

    /// Hands `first`, and what else the consumer thread has handed over
    /// already (up to [`EVENTS_AT_ONCE`] records and events), to the state,
    /// in order: one turn of the loop per handful of records instead of per
    /// record.
    fn on_events(&mut self, first: ConsumerEvent) {
        let now = Instant::now();
        let mut taken = weight(&first);
        self.state.on_event(first, now);
        while taken < EVENTS_AT_ONCE {
            match self.events.try_recv() {
                Ok(event) => {
                    taken += weight(&event);
                    self.state.on_event(event, now);
                }
                // Empty, or closed: the next `recv` says so.
                Err(_) => break,
            }
        }
    }

    /// Hands the state the tasks that finished meanwhile too (up to
    /// [`TASKS_AT_ONCE`]), so that it dispatches once for all of them.
    fn on_more_tasks(&mut self) {
        for _ in 1..TASKS_AT_ONCE {
            match self.tasks.try_next() {
                Some(done) => self.on_task(done),
                None => break,
            }
        }
    }

    /// Watches the consumer thread: when `stopped` is cancelled while the
    /// coordinator runs, the consumer died.
    pub fn watch_consumer(mut self, stopped: CancellationToken) -> Coordinator {
        self.consumer_stopped = stopped;
        self
    }
}

/// How much of a turn's [`EVENTS_AT_ONCE`] an event takes: a batch of
/// records one per record, any other event one.
fn weight(event: &ConsumerEvent) -> usize {
    match event {
        ConsumerEvent::Records(records) => records.len().max(1),
        _ => 1,
    }
}

mod drain;
mod effects;
#[cfg(test)]
mod fixtures;
mod machine;
mod running;
mod settings;
#[cfg(test)]
mod tests;

pub use settings::{BulkDelivery, CoordinatorSettings, ExistenceRouting};
