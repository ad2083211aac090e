//! The coordinator: one task that owns the delivery state and moves events
//! between Kafka and Target. It tracks every consumed offset in its
//! partition's [`CommitWatermark`], queues updates per profile
//! ([`ProfileQueues`]), starts senders up to the adaptive concurrency limit
//! (at most `delivery.max_in_flight`; the rest waits in the queues, where it
//! can still coalesce),
//! dead-letters what must be, commits the watermarks on a short interval,
//! drains revoked partitions before they go, and on shutdown finishes or
//! abandons in-flight work within the drain deadline and commits.

use super::queues::ProfileQueues;
use super::sender::{DeliveryOutcome, Sender};
use super::spans::{EventSpan, Outcome, RequestTrace};
use super::watermark::CommitWatermark;
use crate::event::Identity;
use crate::kafka::consumer::PipelineConsumer;
use crate::kafka::dead_letter::{DeadLetter, DeadLetterWriter};
use crate::kafka::{ConsumerEvent, Record, TopicPartition};
use crate::mapping::{merge_updates, Decision, ProfileUpdate};
use crate::ops::health::Health;
use crate::ops::metrics::{Metrics, PartitionLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Settings the coordinator needs.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// Records held per partition before it is paused.
    pub max_buffered_per_partition: usize,
    /// Records held by the pod before the partition that grows is paused.
    pub max_buffered: usize,
    /// How often watermarks are committed.
    pub commit_interval: Duration,
    /// Time to finish in-flight work on revoke and shutdown.
    pub drain_timeout: Duration,
    /// The group budget, split by assignment.
    pub per_second: f64,
    /// The group burst, split likewise.
    pub burst: u32,
    /// Single updates per rolling 24 h for the group, split likewise.
    pub daily_quota: u64,
    /// `delivery.coalesce_window_ms`; zero sends one update per event.
    pub coalesce_window: Duration,
    /// `kafka.group_id`, for the event spans.
    pub group_id: Arc<str>,
    /// `bulk.mode`.
    pub bulk_mode: crate::ops::config::BulkMode,
    /// `bulk.overflow_after_seconds`.
    pub overflow_after_seconds: u64,
    /// How to send batches; `None` with `bulk.mode = "off"`.
    pub bulk: Option<BulkDelivery>,
}

/// An event's place: partition, assignment epoch, offset. Completions from an
/// earlier epoch (a partition revoked and assigned again) are ignored.
#[derive(Debug, Clone)]
struct EventRef {
    tp: TopicPartition,
    epoch: u64,
    offset: i64,
}

/// An update waiting for its turn, with what a dead letter would need.
#[derive(Debug)]
struct Pending {
    event: EventRef,
    update: ProfileUpdate,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    timestamp_ms: Option<i64>,
    /// When the coordinator received it (the coalescing window starts here).
    received_at: Instant,
    span: EventSpan,
}

enum TaskDone {
    Update {
        profile: Identity,
        items: Vec<Pending>,
        outcome: DeliveryOutcome,
    },
    DeadLetter {
        event: EventRef,
        written: bool,
        span: EventSpan,
        /// The event was finished before (a batch committed on submission).
        settled: bool,
    },
    BatchSubmitted {
        id: u64,
        submission: crate::delivery::batch_sender::Submission,
    },
    BatchCompleted {
        id: u64,
        completion: crate::delivery::batch_sender::Completion,
    },
}

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    watermark: CommitWatermark,
    /// Events of this partition inside running tasks.
    in_flight: usize,
    paused: bool,
    revoking: bool,
    last_committed: Option<i64>,
}

struct PendingRevoke {
    partitions: Vec<TopicPartition>,
    reply: std::sync::mpsc::SyncSender<Vec<(TopicPartition, i64)>>,
    deadline: Instant,
}

/// Counters resolved once.
struct Counters {
    update: Counter,
    skip: Counter,
    invalid: HashMap<&'static str, Counter>,
    age_from_kafka: Histogram,
    age_from_occurred_at: Histogram,
}

/// The delivery state and its loop.
pub struct Coordinator {
    settings: CoordinatorSettings,
    consumer: Arc<PipelineConsumer>,
    events: mpsc::Receiver<ConsumerEvent>,
    sender: Sender,
    dead_letters: Arc<DeadLetterWriter>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    partitions: HashMap<TopicPartition, PartitionState>,
    queues: ProfileQueues<Identity, Pending>,
    tasks: JoinSet<TaskDone>,
    updates_in_flight: usize,
    next_epoch: u64,
    revokes: Vec<PendingRevoke>,
    /// Cancelled at the shutdown drain deadline: in-flight work is abandoned.
    abandon: CancellationToken,
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
    /// Open batches were closed because the pod's buffer filled; not again
    /// until partitions resume.
    sealed_when_full: bool,
}

/// What a commit attempted and whether the broker took it.
type CommitResult = (Vec<(TopicPartition, u64, i64)>, Result<(), String>);

impl Coordinator {
    /// A coordinator over a started consumer.
    pub fn new(
        settings: CoordinatorSettings,
        consumer: Arc<PipelineConsumer>,
        events: mpsc::Receiver<ConsumerEvent>,
        sender: Sender,
        dead_letters: Arc<DeadLetterWriter>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Coordinator {
        let counters = Counters {
            update: metrics.consumed_counter("update", ""),
            skip: metrics.consumed_counter("skip", ""),
            invalid: ["invalid_json", "schema_violation", "unsupported_version"]
                .into_iter()
                .map(|class| (class, metrics.consumed_counter("dead_letter", class)))
                .collect(),
            age_from_kafka: metrics.age_histogram("kafka_timestamp"),
            age_from_occurred_at: metrics.age_histogram("occurred_at"),
        };
        let batches = settings.bulk.clone().map(batches::Batches::new);
        let router = crate::delivery::routing::Router::new(
            settings.bulk_mode,
            settings.overflow_after_seconds,
        );
        metrics.set_route(router.route().as_str());
        Coordinator {
            settings,
            consumer,
            events,
            sender,
            dead_letters,
            metrics,
            health,
            partitions: HashMap::new(),
            queues: ProfileQueues::default(),
            tasks: JoinSet::new(),
            updates_in_flight: 0,
            next_epoch: 0,
            revokes: Vec::new(),
            abandon: CancellationToken::new(),
            draining: false,
            counters,
            high_watermarks: HashMap::new(),
            commit: None,
            total_partitions: 0,
            daily: crate::delivery::quota::RollingDay::default(),
            next_wake: None,
            batches,
            router,
            sealed_when_full: false,
        }
    }

    /// Runs until `shutdown`, then drains within the deadline and commits.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut commit_tick = tokio::time::interval(self.settings.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.dispatch();
            let revoke_deadline = self.revokes.iter().map(|r| r.deadline).min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.on_task(done),
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => {
                        tracing::error!("The Kafka consumer stopped; shutting down.");
                        break;
                    }
                },
                _ = commit_tick.tick() => {
                    self.start_commit();
                    self.update_route();
                    self.reconcile_pauses();
                }
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
    }

    /// Starts senders while there is room under the concurrency limit and
    /// work. With a coalescing
    /// window, a profile sends once its oldest waiting event has waited the
    /// window, and everything it has waiting goes as one merged update.
    fn dispatch(&mut self) {
        let window = self.settings.coalesce_window;
        self.next_wake = None;
        let now = Instant::now();
        if self.router.route() == crate::delivery::routing::Route::Batch {
            self.fill_batches(now);
        } else {
            self.dispatch_single(window, now);
        }
        self.seal_due_batches(now, false);
    }

    /// Starts single-update senders.
    fn dispatch_single(&mut self, window: Duration, now: Instant) {
        let limit = self.sender.concurrency.limit();
        while self.updates_in_flight < limit {
            if !window.is_zero() {
                match self.queues.peek_next() {
                    None => break,
                    Some(head) if head.received_at + window > now => {
                        // Oldest first is also ready-time order: nobody else is ready.
                        self.next_wake = Some(head.received_at + window);
                        break;
                    }
                    Some(_) => {}
                }
            }
            let batch = if window.is_zero() { 1 } else { usize::MAX };
            let Some((profile, items)) = self.queues.next_ready(batch) else {
                break;
            };
            let Some(update) = merged_update(&items) else {
                break;
            };
            for item in &items {
                if let Some(p) = self.partition(&item.event) {
                    p.in_flight += 1;
                }
            }
            self.updates_in_flight += 1;
            let sender = self.sender.clone();
            let abandon = self.abandon.clone();
            let trace = RequestTrace::of(items.iter().map(|i| &i.span));
            self.tasks.spawn(async move {
                let outcome = sender.deliver(&update, &abandon, &trace).await;
                TaskDone::Update {
                    profile,
                    items,
                    outcome,
                }
            });
        }
    }

    /// This pod's fraction of its topics' partitions (those it owns and is not giving up).
    fn owned_fraction(&self) -> f64 {
        let owned = self.partitions.values().filter(|p| !p.revoking).count();
        if self.total_partitions == 0 {
            0.0
        } else {
            owned as f64 / self.total_partitions as f64
        }
    }

    /// The state of an event's partition, if it is still owned in the same assignment.
    fn partition(&mut self, event: &EventRef) -> Option<&mut PartitionState> {
        self.partitions
            .get_mut(&event.tp)
            .filter(|p| p.epoch == event.epoch)
    }
}

/// One update for a profile's waiting events: the single one as is, several
/// merged (latest `(occurred_at, offset)` per attribute).
fn merged_update(items: &[Pending]) -> Option<ProfileUpdate> {
    match items {
        [one] => Some(one.update.clone()),
        _ => merge_updates(items.iter().map(|i| (&i.update, i.event.offset))),
    }
}

/// Minutes since the Unix epoch: the rolling day's clock.
fn current_minute() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 60
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

mod batches;
mod commits;
mod intake;
mod outcomes;
mod publish;
mod rebalance;

pub use batches::BulkDelivery;
use commits::wait_commit;
