//! The delivery state machine: everything the coordinator knows about its
//! partitions and their events, and every decision it takes, without doing
//! any of the I/O itself.
//!
//! [`DeliveryState`] takes what happens (a consumer event, a finished task,
//! a commit's answer, a tick) together with the current time, and answers
//! with [`Action`]s: start a task (an update attempt, a profile fetch, a
//! dead-letter write, a batch submission or poll), pause or resume
//! partitions, set the rate share, answer a revoke, commit offsets. The
//! coordinator task (`coordinator/mod.rs`) carries the actions out and feeds
//! the results back. Tasks are named by a [`WorkId`]; the work a task
//! carries (its events, its retry state) stays here, so a task that panics
//! or is aborted loses nothing.
//!
//! Every decision reads the time it is given, never a clock of its own.
//! Observations (metrics, `/readyz`'s assignment count, trace spans, logs)
//! are written from here directly and change no decision; so are the wall
//! clock readings behind the event-age metrics and the rolling daily count
//! (the one the overflow route weighs against `rate_limit.daily_quota`).

use super::settings::CoordinatorSettings;
use crate::delivery::attempt::AttemptOutcome;
use crate::delivery::batch_sender::BatchSender;
use crate::delivery::existence::{Knowledge, ProfileDirectory};
use crate::delivery::fetch_budget::ProfileFetcher;
use crate::delivery::freshness::{attribute_times, Freshness};
use crate::delivery::gate::RateShare;
use crate::delivery::queues::ProfileQueues;
use crate::delivery::spans::{ChildSpan, EventSpan, Outcome, RequestTrace};
use crate::event::Identity;
use crate::kafka::dead_letter::{DeadLetter, DeadLetterClass};
use crate::kafka::{ConsumerEvent, Record, ReportedOffsets, TopicPartition};
use crate::mapping::{merge_updates, Decision, ProfileUpdate};
use crate::ops::config::{ExistencePolicy, TimeOrder};
use crate::ops::health::Health;
use crate::ops::metrics::{AgeSource, ConsumedOutcome, Metrics, PartitionLabels};
use crate::retry::{RetryPolicy, RetrySchedule};
use crate::target::bulk::EncodedBatch;
use crate::target::request::UpdateRequest;
use crate::target::TargetClient;
use foldhash::{HashMap, HashMapExt as _};
use partitions::{PartitionState, Partitions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Names a task the coordinator runs for this state: the answer comes back
/// under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(in crate::delivery::coordinator) struct WorkId(u64);

#[cfg(test)]
impl WorkId {
    /// An id made up by a test.
    pub(in crate::delivery::coordinator) fn for_tests(number: u64) -> WorkId {
        WorkId(number)
    }

    /// The id's number.
    pub(in crate::delivery::coordinator) fn number(self) -> u64 {
        self.0
    }
}

/// What the coordinator is to do.
#[derive(Debug)]
pub(in crate::delivery::coordinator) enum Action {
    /// Run `task`; its result comes back with [`DeliveryState::on_task_done`].
    Start { work: WorkId, task: Task },
    /// Stop these update attempts now (their partition went, or the drain
    /// ended): each comes back at once as [`Ended::Cancelled`]. Update
    /// attempts watch no cancel token; the other tasks do.
    Abort(Vec<WorkId>),
    /// Stop fetching a partition: its buffer (or the pod's) is full.
    Pause(TopicPartition),
    /// Fetch these partitions again: their buffers have room.
    Resume(Vec<TopicPartition>),
    /// Confirm that these partitions may be fetched (resuming is idempotent:
    /// this catches a pause librdkafka kept across a rebalance).
    ConfirmFetching(Vec<TopicPartition>),
    /// Commit these offsets, and answer with [`DeliveryState::on_commit`].
    /// One commit at a time: the next is asked for only after that answer.
    Commit(Vec<CommitOffset>),
    /// This pod's share of the group's rate budget.
    SetShare(RateShare),
    /// This pod's fraction of the partitions, for the bulk call budget.
    SetBatchFraction(f64),
    /// A profile fetch was refused for its credentials: the gate pauses.
    AuthFailed(u16),
    /// Answer a revoke with the offsets to commit before the partitions go.
    AnswerRevoke {
        reply: std::sync::mpsc::SyncSender<Vec<(TopicPartition, i64)>>,
        offsets: Vec<(TopicPartition, i64)>,
    },
}

/// The I/O of a task.
#[derive(Debug)]
pub(in crate::delivery::coordinator) enum Task {
    /// Attempt number `attempt` of a single update.
    Update {
        request: UpdateRequest,
        trace: RequestTrace,
        attempt: u32,
    },
    /// Write a dead letter.
    DeadLetter {
        letter: Arc<DeadLetter>,
        cancel: CancellationToken,
        span: ChildSpan,
    },
    /// Ask Target whether it has a profile.
    Fetch {
        fetcher: ProfileFetcher,
        profile: Identity,
        cancel: CancellationToken,
    },
    /// Submit an encoded bulk batch.
    Submit {
        sender: BatchSender,
        batch: Arc<EncodedBatch>,
        cancel: CancellationToken,
    },
    /// Poll a submitted batch's status until it ends.
    Poll {
        sender: BatchSender,
        status_url: String,
        cancel: CancellationToken,
    },
}

/// A task that ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::delivery::coordinator) enum Ended {
    /// Aborted: at the end of the shutdown drain, or (an update attempt)
    /// when its partition was given up.
    Cancelled,
    /// It panicked: a bug, not Target's answer.
    Panicked(String),
}

/// The delivery state: partitions and their watermarks, per-profile queues,
/// work under way, backoffs, what Target is known to have, revokes, batches
/// and the route.
pub(in crate::delivery::coordinator) struct DeliveryState {
    settings: CoordinatorSettings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Builds update requests (no I/O).
    client: Arc<TargetClient>,
    /// Retry delays.
    retry: RetryPolicy,
    /// Retryable failures before an update is dead-lettered; 0: never.
    max_attempts: u32,
    /// The rate share last set.
    share: RateShare,
    /// The dead-letter topic, for the write spans.
    dead_letter_topic: Arc<str>,
    /// The time of the input being handled.
    now: Instant,
    partitions: Partitions,
    queues: ProfileQueues<Identity, Pending>,
    /// The work of each task under way.
    running: HashMap<WorkId, Work>,
    next_work: u64,
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
    /// `abandon` was cancelled: no event is live any more.
    abandoned: bool,
    draining: bool,
    /// A commit was asked for and not answered yet.
    committing: bool,
    counters: Counters,
    /// What the client last reported of each owned partition's offsets.
    reported: HashMap<TopicPartition, ReportedOffsets>,
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
    /// What is to be done, in order.
    actions: Vec<Action>,
}

/// What the state needs besides its settings.
pub(in crate::delivery::coordinator) struct StateParts {
    /// Builds update requests.
    pub client: Arc<TargetClient>,
    /// Retry delays.
    pub retry: RetryPolicy,
    /// `delivery.max_attempts`.
    pub max_attempts: u32,
    /// The gate's share before the first assignment.
    pub share: RateShare,
    /// The dead-letter topic.
    pub dead_letter_topic: Arc<str>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl DeliveryState {
    /// An empty state: no partitions, no work.
    pub(in crate::delivery::coordinator) fn new(
        settings: CoordinatorSettings,
        parts: StateParts,
        now: Instant,
    ) -> DeliveryState {
        let StateParts {
            client,
            retry,
            max_attempts,
            share,
            dead_letter_topic,
            metrics,
            health,
        } = parts;
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
        DeliveryState {
            settings,
            metrics,
            health,
            client,
            retry,
            max_attempts,
            share,
            dead_letter_topic,
            now,
            partitions: Partitions::default(),
            queues: ProfileQueues::default(),
            running: HashMap::new(),
            next_work: 0,
            backoffs: Backoffs::default(),
            updates_in_flight: 0,
            fetches_in_flight: 0,
            directory,
            freshness,
            revokes: Vec::new(),
            abandon: CancellationToken::new(),
            abandoned: false,
            draining: false,
            committing: false,
            counters,
            reported: HashMap::new(),
            total_partitions: 0,
            daily: crate::delivery::quota::RollingDay::default(),
            next_wake: None,
            batches,
            router,
            actions: Vec::new(),
        }
    }

    /// The settings the state was made with.
    pub(in crate::delivery::coordinator) fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    /// Swaps the actions decided so far into `out` (which must be empty):
    /// both vectors keep their capacity.
    pub(in crate::delivery::coordinator) fn take_actions(&mut self, out: &mut Vec<Action>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut self.actions, out);
    }

    /// One message from the consumer thread.
    pub(in crate::delivery::coordinator) fn on_event(
        &mut self,
        event: ConsumerEvent,
        now: Instant,
    ) {
        self.now = now;
        self.handle_event(event);
    }

    /// A task ended: its work carries on with what it came to.
    pub(in crate::delivery::coordinator) fn on_task_done(
        &mut self,
        work: WorkId,
        done: Result<TaskDone, Ended>,
        now: Instant,
    ) {
        self.now = now;
        self.handle_task(work, done);
    }

    /// Starts what may start now: updates up to `limit` in flight (the
    /// adaptive concurrency limit), fetches, batch rows, and batches due.
    pub(in crate::delivery::coordinator) fn dispatch(&mut self, now: Instant, limit: usize) {
        self.now = now;
        self.start_ready(limit);
    }

    /// The commit tick: offsets and lag are published, changed watermarks
    /// committed (unless a commit is under way), the route decided again.
    pub(in crate::delivery::coordinator) fn on_commit_tick(&mut self, now: Instant) {
        self.now = now;
        self.publish_offsets();
        if !self.committing {
            let offsets = self.partitions.changed_offsets();
            if !offsets.is_empty() {
                self.committing = true;
                self.actions.push(Action::Commit(offsets));
            }
        }
        self.update_route();
    }

    /// The broker answered a commit: only now do the offsets count as committed.
    pub(in crate::delivery::coordinator) fn on_commit(&mut self, result: CommitResult) {
        self.committing = false;
        let CommitResult { offsets, result } = result;
        match result {
            Ok(()) => self.partitions.committed(&offsets),
            // Typically a rebalance in progress; the next tick tries again.
            Err(error) => {
                tracing::debug!(error = %error, "Offset commit failed; retrying on the next tick.")
            }
        }
        self.publish_offsets();
    }

    /// Answers revokes whose partitions are drained or whose deadline passed.
    pub(in crate::delivery::coordinator) fn check_revokes(&mut self, now: Instant) {
        self.now = now;
        self.answer_drained_revokes();
    }

    /// Tells the consumer again that every owned partition the state does
    /// not hold back may be fetched. Resuming is idempotent, and this makes
    /// the pause state level-triggered: a partition that comes back from a
    /// rebalance still paused inside librdkafka (rarely, the resume on
    /// assignment does not take) is fetched again at the next reconcile
    /// instead of never.
    pub(in crate::delivery::coordinator) fn reconcile_pauses(&mut self) {
        let fetchable: Vec<TopicPartition> = self.partitions.fetchable().cloned().collect();
        if !fetchable.is_empty() {
            self.actions.push(Action::ConfirmFetching(fetchable));
        }
    }

    /// When the state must be looked at again even if nothing happens: a
    /// coalescing window or a backoff ends, a batch is due, a revoke's deadline.
    pub(in crate::delivery::coordinator) fn next_wake(&self) -> Option<Instant> {
        let revoke = self.revokes.iter().map(|r| r.deadline).min();
        match (self.next_wake, revoke) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The offsets that changed since the last confirmed commit.
    pub(in crate::delivery::coordinator) fn changed_offsets(&self) -> Vec<CommitOffset> {
        self.partitions.changed_offsets()
    }

    /// Work under way: tasks, and profiles waiting out a backoff.
    pub(in crate::delivery::coordinator) fn work_in_flight(&self) -> usize {
        self.running.len() + self.backoffs.len()
    }

    /// The start of the shutdown drain: nothing new is read or sent, waiting
    /// work and open batches are dropped (unfinished, so re-read); returns
    /// how many waiting events were dropped.
    pub(in crate::delivery::coordinator) fn begin_drain(&mut self, now: Instant) -> usize {
        self.now = now;
        self.draining = true;
        let waiting = self.queues.remove_where(|_| true).len();
        self.drop_open_batches();
        waiting
    }

    /// The drain deadline passed: every task is cancelled (its work is
    /// abandoned when it answers) and the backoffs are dropped.
    pub(in crate::delivery::coordinator) fn abandon_all(&mut self) {
        self.abandon.cancel();
        self.abandoned = true;
        self.abort_updates(|_| true);
        for backoff in self.backoffs.take_all() {
            for item in backoff.items {
                item.span.finish(Outcome::Abandoned);
            }
        }
    }

    /// The end of the drain: revokes still open are answered with what
    /// their partitions finished.
    pub(in crate::delivery::coordinator) fn answer_all_revokes(&mut self) {
        for revoke in std::mem::take(&mut self.revokes) {
            let offsets = self.give_up(&revoke.partitions);
            self.actions.push(Action::AnswerRevoke {
                reply: revoke.reply,
                offsets,
            });
        }
    }

    /// Sets the wake-up to `at` at the latest.
    fn wake_at(&mut self, at: Instant) {
        self.next_wake = Some(self.next_wake.map_or(at, |wake| wake.min(at)));
    }

    /// Starts `task` for `work`.
    fn start(&mut self, work: Work, task: Task) {
        let id = WorkId(self.next_work);
        self.next_work += 1;
        self.running.insert(id, work);
        self.actions.push(Action::Start { work: id, task });
    }

    /// Stops the running update attempts whose first event `stops`
    /// (the event whose partition's token cancels the other kinds of task):
    /// they come back as cancelled, and their work is abandoned.
    fn abort_updates(&mut self, mut stops: impl FnMut(&EventRef) -> bool) {
        let mut works: Vec<WorkId> = self
            .running
            .iter()
            .filter_map(|(id, work)| match work {
                Work::Update { items, .. } if items.first().is_some_and(|i| stops(&i.event)) => {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        if !works.is_empty() {
            works.sort_unstable();
            self.actions.push(Action::Abort(works));
        }
    }
}

mod backoffs;
mod batches;
mod dispatch;
mod existence;
mod intake;
mod outcomes;
mod partitions;
mod publish;
mod rebalance;
mod state;
#[cfg(test)]
mod tests;
mod updates;

use backoffs::Backoffs;
use dispatch::current_minute;
pub(in crate::delivery::coordinator) use partitions::CommitOffset;
use state::*;
pub(in crate::delivery::coordinator) use state::{CommitResult, TaskDone};
