//! The coordinator: one task that owns the delivery state and moves events
//! between Kafka and Target. It tracks every consumed offset in its
//! partition's [`CommitWatermark`](crate::delivery::watermark::CommitWatermark), queues updates per profile
//! ([`ProfileQueues`]), starts update attempts up to the adaptive concurrency limit
//! (at most `delivery.max_in_flight`; the rest waits in the queues, where it
//! can still coalesce),
//! dead-letters what must be, commits the watermarks on a short interval,
//! drains revoked partitions before they go, and on shutdown finishes or
//! abandons in-flight work within the drain deadline and commits.

use super::attempt::{AttemptOutcome, UpdateAttempts};
use super::existence::{Knowledge, ProfileDirectory};
use super::freshness::{attribute_times, Freshness};
use super::queues::ProfileQueues;
use super::spans::{EventSpan, Outcome, RequestTrace};
use crate::event::Identity;
use crate::kafka::consumer::PipelineConsumer;
use crate::kafka::dead_letter::{DeadLetter, DeadLetterClass, DeadLetterWriter};
use crate::kafka::{ConsumerEvent, Record, TopicPartition};
use crate::mapping::{merge_updates, Decision, ProfileUpdate};
use crate::ops::config::{ExistencePolicy, TimeOrder};
use crate::ops::health::Health;
use crate::ops::metrics::{AgeSource, ConsumedOutcome, Metrics, PartitionLabels};
use crate::retry::RetrySchedule;
use foldhash::{HashMap, HashMapExt as _};
use partitions::{CommitOffset, PartitionState, Partitions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the pause state is told to librdkafka again (see `reconcile_pauses`).
const RECONCILE_PAUSES_EVERY: Duration = Duration::from_secs(5);

/// Events from the consumer thread taken in one turn of the loop at most,
/// so that finished requests and commits are not kept waiting behind a
/// long backlog of records.
const EVENTS_AT_ONCE: usize = 256;

/// The consumer stopped while the service was running: nothing is read any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Kafka consumer stopped unexpectedly; nothing more would be read")]
pub struct ConsumerStopped;

/// The delivery state and its loop.
pub struct Coordinator {
    settings: CoordinatorSettings,
    consumer: Arc<PipelineConsumer>,
    events: mpsc::Receiver<ConsumerEvent>,
    updates: UpdateAttempts,
    dead_letters: Arc<DeadLetterWriter>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    partitions: Partitions,
    queues: ProfileQueues<Identity, Pending>,
    tasks: JoinSet<TaskDone>,
    /// What each running task is doing, by task id.
    running: HashMap<tokio::task::Id, Work>,
    /// Profiles waiting out a retry backoff, soonest first.
    backoffs: Backoffs<Backoff>,
    /// Update attempts under way: the one count held against the adaptive limit.
    updates_in_flight: usize,
    /// Profile fetches under way.
    fetches_in_flight: usize,
    /// Which profiles Target has, as far as this pod knows.
    directory: ProfileDirectory,
    /// The newest delivered `occurred_at` per profile and attribute.
    freshness: Freshness,
    revokes: Vec<PendingRevoke>,
    /// Cancelled at the shutdown drain deadline: in-flight work is abandoned.
    abandon: CancellationToken,
    /// Cancelled when the consumer thread ends (see [`Coordinator::watch_consumer`]).
    consumer_stopped: CancellationToken,
    draining: bool,
    counters: Counters,
    high_watermarks: HashMap<TopicPartition, i64>,
    /// The commit under way, if any: one at a time, and a partition's offset
    /// counts as committed only once the broker confirmed it.
    commit: Option<tokio::task::JoinHandle<CommitResult>>,
    /// Partitions of all subscribed topics (from metadata), for the share.
    total_partitions: usize,
    /// Updates accepted in the last 24 hours.
    daily: crate::delivery::quota::RollingDay,
    /// When the oldest coalescing profile may send, or the oldest open batch closes.
    next_wake: Option<Instant>,
    /// Bulk batches, unless `bulk.mode = "off"`.
    batches: Option<batches::Batches>,
    /// Single updates or batches.
    router: crate::delivery::routing::Router,
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
        let counters = Counters {
            update: metrics.consumed_counter(ConsumedOutcome::Update, ""),
            skip: metrics.consumed_counter(ConsumedOutcome::Skip, ""),
            invalid: ["invalid_json", "schema_violation", "unsupported_version"]
                .into_iter()
                .map(|class| {
                    (
                        class,
                        metrics.consumed_counter(ConsumedOutcome::DeadLetter, class),
                    )
                })
                .collect(),
            age_from_kafka: metrics.age_histogram(AgeSource::KafkaTimestamp),
            age_from_occurred_at: metrics.age_histogram(AgeSource::OccurredAt),
        };
        let batches = settings.bulk.clone().map(batches::Batches::new);
        let freshness = Freshness::new(settings.existence.max_profiles);
        let directory = ProfileDirectory::new(
            settings.existence.confirmed_ttl,
            settings.existence.max_profiles,
        );
        let router = crate::delivery::routing::Router::new(
            settings.bulk_mode,
            settings.overflow_after_seconds,
        );
        metrics.set_route(router.route().as_str());
        Coordinator {
            settings,
            consumer,
            events,
            updates,
            dead_letters,
            metrics,
            health,
            partitions: Partitions::default(),
            queues: ProfileQueues::default(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            backoffs: Backoffs::default(),
            updates_in_flight: 0,
            fetches_in_flight: 0,
            directory,
            freshness,
            revokes: Vec::new(),
            abandon: CancellationToken::new(),
            consumer_stopped: CancellationToken::new(),
            draining: false,
            counters,
            high_watermarks: HashMap::new(),
            commit: None,
            total_partitions: 0,
            daily: crate::delivery::quota::RollingDay::default(),
            next_wake: None,
            batches,
            router,
        }
    }

    /// Runs until `shutdown`, then drains within the deadline and commits.
    /// A consumer that stops on its own (its thread panicked) is an error:
    /// the coordinator drains, commits and returns [`ConsumerStopped`], so
    /// the process exits non-zero instead of staying up, ready and idle.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ConsumerStopped> {
        let mut commit_tick = tokio::time::interval(self.settings.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // librdkafka's resume waits for each partition's broker thread: not
        // on every commit tick, only often enough to catch a stale pause.
        let mut reconcile_tick = tokio::time::interval(RECONCILE_PAUSES_EVERY);
        reconcile_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consumer_stopped = self.consumer_stopped.clone();
        let mut result = Ok(());
        loop {
            self.dispatch();
            let revoke_deadline = self.revokes.iter().map(|r| r.deadline).min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = consumer_stopped.cancelled() => {
                    tracing::error!("The Kafka consumer stopped on its own; draining and exiting.");
                    self.health.consumer_stopped.store(true, Ordering::Release);
                    result = Err(ConsumerStopped);
                    break;
                }
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.on_task(done),
                event = self.events.recv() => match event {
                    Some(event) => {
                        self.on_event(event);
                        self.take_waiting_events();
                    }
                    None => {
                        tracing::error!("The Kafka consumer stopped; draining and exiting.");
                        self.health.consumer_stopped.store(true, Ordering::Release);
                        result = Err(ConsumerStopped);
                        break;
                    }
                },
                _ = commit_tick.tick() => {
                    self.start_commit();
                    self.update_route();
                }
                _ = reconcile_tick.tick() => self.reconcile_pauses(),
                result = wait_commit(&mut self.commit), if self.commit.is_some() => {
                    self.commit = None;
                    self.on_commit(result);
                }
                _ = sleep_until_opt(revoke_deadline), if revoke_deadline.is_some() => {}
                _ = sleep_until_opt(self.next_wake), if self.next_wake.is_some() => {}
            }
            self.check_revokes();
        }
        self.drain().await;
        result
    }

    /// Takes what else the consumer thread has handed over already, up to
    /// [`EVENTS_AT_ONCE`], before the loop dispatches and waits again: in
    /// the same order, with one turn of the loop per handful of records
    /// instead of per record.
    fn take_waiting_events(&mut self) {
        for _ in 1..EVENTS_AT_ONCE {
            match self.events.try_recv() {
                Ok(event) => self.on_event(event),
                // Empty, or closed: the next `recv` says so.
                Err(_) => break,
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

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

mod backoffs;
mod batches;
mod commits;
mod dispatch;
mod existence;
mod intake;
mod outcomes;
mod partitions;
mod publish;
mod rebalance;
mod settings;
mod state;
#[cfg(test)]
mod tests;
mod updates;

use backoffs::Backoffs;
pub use batches::BulkDelivery;
use commits::wait_commit;
use dispatch::current_minute;
pub use settings::{CoordinatorSettings, ExistenceRouting};
use state::*;
