//! The coordinator: one task that owns the delivery state and moves events
//! between Kafka and Target. It tracks every consumed offset in its
//! partition's [`CommitWatermark`], queues updates per profile
//! ([`ProfileQueues`]), starts senders up to the adaptive concurrency limit
//! (at most `delivery.max_in_flight`; the rest waits in the queues, where it
//! can still coalesce),
//! dead-letters what must be, commits the watermarks on a short interval,
//! drains revoked partitions before they go, and on shutdown finishes or
//! abandons in-flight work within the drain deadline and commits.

use super::existence::{Knowledge, ProfileDirectory};
use super::freshness::{attribute_times, Freshness};
use super::queues::ProfileQueues;
use super::sender::{AttemptOutcome, Sender};
use super::spans::{EventSpan, Outcome, RequestTrace};
use crate::event::Identity;
use crate::kafka::consumer::PipelineConsumer;
use crate::kafka::dead_letter::{DeadLetter, DeadLetterClass, DeadLetterWriter};
use crate::kafka::{ConsumerEvent, Record, TopicPartition};
use crate::mapping::{merge_updates, Decision, ProfileUpdate};
use crate::ops::config::{ExistencePolicy, TimeOrder};
use crate::ops::health::Health;
use crate::ops::metrics::{Metrics, PartitionLabels};
use crate::retry::RetrySchedule;
use foldhash::{HashMap, HashMapExt as _};
use partitions::{CommitOffset, PartitionState, Partitions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
    /// Read-back verification, offered every accepted update; `None` when off.
    pub verify: Option<Arc<crate::delivery::verify::Verifier>>,
    /// Whether Target has a profile before a single update goes to it.
    pub existence: ExistenceRouting,
    /// `delivery.time_order`.
    pub time_order: TimeOrder,
}

/// How single updates are kept from profiles Target does not have
/// (`docs/contract.md`, section 13).
#[derive(Debug, Clone)]
pub struct ExistenceRouting {
    /// `existence.policy`.
    pub policy: ExistencePolicy,
    /// Fetches profiles within their own budget; `None` with `trust`.
    pub fetcher: Option<crate::delivery::fetch_budget::ProfileFetcher>,
    /// `existence.confirmed_ttl_ms`.
    pub confirmed_ttl: Duration,
    /// `existence.max_profiles`.
    pub max_profiles: usize,
    /// Fetches under way at most (`delivery.max_in_flight`).
    pub max_fetches: usize,
}

impl ExistenceRouting {
    /// Every 2xx counts, as before the policy existed.
    pub fn trust() -> ExistenceRouting {
        ExistenceRouting {
            policy: ExistencePolicy::Trust,
            fetcher: None,
            confirmed_ttl: Duration::from_secs(86_400),
            max_profiles: 1,
            max_fetches: 1,
        }
    }
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

/// What a task hands back; the work it was doing stays in
/// [`Coordinator::running`], so a task that panics loses nothing.
enum TaskDone {
    /// One attempt of a single update.
    Update(AttemptOutcome),
    /// A dead-letter write: acknowledged, or abandoned.
    DeadLetter { written: bool },
    /// A batch submission ended.
    BatchSubmitted(crate::delivery::batch_sender::Submission),
    /// Polling a batch ended.
    BatchCompleted(crate::delivery::batch_sender::Completion),
    /// A profile fetch ended (`None`: cancelled first).
    Fetched(Option<crate::target::fetch::FetchOutcome>),
}

/// The work of a running task, kept beside it.
enum Work {
    /// A profile's update: its events and its retry state.
    Update {
        profile: Identity,
        items: Vec<Pending>,
        retry: RetryState,
    },
    /// A dead letter being written.
    DeadLetter {
        event: EventRef,
        letter: Arc<DeadLetter>,
        span: EventSpan,
        /// The event was finished before (a batch committed on submission).
        settled: bool,
    },
    /// Bulk batch `id` being submitted.
    BatchSubmit { id: u64 },
    /// Bulk batch `id` being polled at `status_url`.
    BatchPoll { id: u64, status_url: String },
    /// A profile being fetched before its update goes anywhere.
    Fetch {
        profile: Identity,
        items: Vec<Pending>,
        retry: RetryState,
    },
}

/// Where a profile's update stands in its retries.
struct RetryState {
    /// Attempts made.
    attempts: u32,
    /// Retryable failures so far (`delivery.max_attempts` counts these).
    failures: u32,
    schedule: RetrySchedule,
}

/// A profile waiting out a retry backoff. It holds no task and no place
/// under the concurrency limit; it stays in flight in the queues, so its
/// later events wait behind it.
struct Backoff {
    profile: Identity,
    items: Vec<Pending>,
    retry: RetryState,
    /// What the next attempt is.
    next: Next,
}

/// The call a profile in backoff makes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Its update.
    Update,
    /// A fetch, to learn whether Target has it.
    Fetch,
}

/// Where a profile's ready update goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// A single update (Target has the profile, or the policy trusts it does).
    Single,
    /// A fetch first.
    Fetch,
    /// A bulk v2 batch, which creates the profile.
    Batch,
    /// A dead letter, `profile_not_found`.
    NotFound,
}

/// Backoffs by the time they end (the number keeps equal times apart).
struct Due(Instant, u64, Backoff);

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

struct PendingRevoke {
    /// Each partition with the assignment epoch the revoke is for: a later
    /// assignment of the same partition is not touched by a late answer.
    partitions: Vec<(TopicPartition, u64)>,
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
    partitions: Partitions,
    queues: ProfileQueues<Identity, Pending>,
    tasks: JoinSet<TaskDone>,
    /// What each running task is doing, by task id.
    running: HashMap<tokio::task::Id, Work>,
    /// Profiles waiting out a retry backoff, soonest first.
    backoffs: BinaryHeap<Reverse<Due>>,
    /// Keeps equal backoff ends apart.
    backoff_seq: u64,
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

/// What a commit attempted and whether the broker took it.
type CommitResult = (Vec<CommitOffset>, Result<(), String>);

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
            sender,
            dead_letters,
            metrics,
            health,
            partitions: Partitions::default(),
            queues: ProfileQueues::default(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            backoffs: BinaryHeap::new(),
            backoff_seq: 0,
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

    /// Starts single-update attempts while there is room under the
    /// concurrency limit: first profiles whose retry backoff is over (their
    /// events are the oldest), then waiting work, each profile the way its
    /// existence at Target says (`route_of`).
    fn dispatch_single(&mut self, window: Duration, now: Instant) {
        let limit = self.sender.concurrency.limit();
        while let Some(Reverse(Due(at, _, backoff))) = self.backoffs.peek() {
            let room = match backoff.next {
                Next::Update => self.updates_in_flight < limit,
                Next::Fetch => self.fetches_in_flight < self.settings.existence.max_fetches,
            };
            if *at > now || !room {
                break;
            }
            let Some(Reverse(Due(_, _, backoff))) = self.backoffs.pop() else {
                break;
            };
            match backoff.next {
                Next::Update => self.start_update(backoff.profile, backoff.items, backoff.retry),
                Next::Fetch => self.start_fetch(backoff.profile, backoff.items, backoff.retry),
            }
        }
        if let Some(Reverse(Due(at, _, _))) = self.backoffs.peek() {
            self.wake_at(*at);
        }
        while self.updates_in_flight < limit {
            let (ready_at, way) = match self.queues.peek_next() {
                None => break,
                Some(head) => (head.received_at + window, head.update.identity.clone()),
            };
            if !window.is_zero() && ready_at > now {
                // Oldest first is also ready-time order: nobody else is ready.
                self.wake_at(ready_at);
                break;
            }
            let way = self.route_of(&way, now);
            if way == Way::Fetch && self.fetches_in_flight >= self.settings.existence.max_fetches {
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
                Way::Batch => self.send_through_batch(profile, items, now),
                Way::NotFound => self.not_found(profile, items),
            }
        }
    }

    fn fresh_retry(&self) -> RetryState {
        RetryState {
            attempts: 0,
            failures: 0,
            schedule: self.sender.retry.schedule(),
        }
    }

    /// Where a profile's ready update goes: a single update only to a
    /// profile Target has (or with `existence.policy = "trust"`); a profile
    /// with a row in an open batch joins it; one a fetch did not find goes
    /// to a batch or a dead letter, as the policy says; any other is fetched.
    fn route_of(&self, profile: &Identity, now: Instant) -> Way {
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

    /// Wakes the loop at `at` at the latest.
    fn wake_at(&mut self, at: Instant) {
        self.next_wake = Some(self.next_wake.map_or(at, |wake| wake.min(at)));
    }

    /// Starts one attempt of a profile's update; its events were counted in
    /// flight when they left the queue.
    fn start_update(&mut self, profile: Identity, items: Vec<Pending>, mut retry: RetryState) {
        // The request is built here, from the events' own update: the task
        // takes only the request, not a copy of the update.
        let (Some(request), Some(first)) = (
            self.current_update(&items)
                .map(|update| self.sender.client.request(&update)),
            items.first(),
        ) else {
            // Nothing to send (no events, or every attribute superseded).
            self.superseded(profile, items);
            return;
        };
        let cancel = self.cancel_token_of(&first.event);
        retry.attempts += 1;
        let attempt = retry.attempts;
        self.updates_in_flight += 1;
        let sender = self.sender.clone();
        let trace = RequestTrace::of(items.iter().map(|i| &i.span));
        let handle = self.tasks.spawn(async move {
            TaskDone::Update(sender.attempt(request, &cancel, &trace, attempt).await)
        });
        self.running.insert(
            handle.id(),
            Work::Update {
                profile,
                items,
                retry,
            },
        );
    }

    /// The token that cancels work of `event`'s partition (the shutdown
    /// token when the partition is no longer owned). A profile's events
    /// normally share one partition (the record key is the customer); work
    /// that spans several is cancelled with its first event's partition.
    fn cancel_token_of(&self, event: &EventRef) -> CancellationToken {
        self.partitions
            .current(&event.tp, event.epoch)
            .map_or_else(|| self.abandon.clone(), |p| p.cancel.clone())
    }

    /// This pod's fraction of its topics' partitions (those it owns and is not giving up).
    fn owned_fraction(&self) -> f64 {
        let owned = self.partitions.owned();
        if self.total_partitions == 0 {
            0.0
        } else {
            owned as f64 / self.total_partitions as f64
        }
    }

    /// The state of an event's partition, if it is still owned in the same assignment.
    fn partition(&mut self, event: &EventRef) -> Option<&mut PartitionState> {
        self.partitions.current_mut(&event.tp, event.epoch)
    }
}

impl Coordinator {
    /// The update a profile's events make now: merged, and with
    /// `delivery.time_order = "occurred_at"` less the attributes a newer event
    /// of the profile already delivered; `None` when nothing is left to send.
    fn current_update<'a>(&self, items: &'a [Pending]) -> Option<Cow<'a, ProfileUpdate>> {
        let update = merged_update(items)?;
        if self.settings.time_order == TimeOrder::Arrival {
            return Some(update);
        }
        let times = attribute_times(items.iter().map(|i| &i.update));
        self.freshness
            .current(update.into_owned(), &times)
            .map(Cow::Owned)
    }

    /// Target accepted the update of these events: their attributes are the
    /// newest delivered now.
    fn delivered(&mut self, items: &[Pending]) {
        if self.settings.time_order == TimeOrder::Arrival {
            return;
        }
        if let Some(update) = self.current_update(items) {
            let times = attribute_times(items.iter().map(|i| &i.update));
            self.freshness.delivered(&update, &times);
        }
    }

    /// Events with nothing left to send (newer events delivered every
    /// attribute they carry) are done, like accepted ones.
    fn superseded(&mut self, profile: Identity, items: Vec<Pending>) {
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
fn merged_update(items: &[Pending]) -> Option<Cow<'_, ProfileUpdate>> {
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
mod existence;
mod intake;
mod outcomes;
mod partitions;
mod publish;
mod rebalance;
#[cfg(test)]
mod tests;
mod updates;

pub use batches::BulkDelivery;
use commits::wait_commit;
