//! The coordinator's records: an event's place, a pending update, the work
//! of a running task and what it hands back, retry and revoke state.

use super::*;

/// An event's place: partition, assignment epoch, offset. Completions from an
/// earlier epoch (a partition revoked and assigned again) are ignored.
#[derive(Debug, Clone)]
pub(super) struct EventRef {
    pub(super) tp: TopicPartition,
    pub(super) epoch: u64,
    pub(super) offset: i64,
}

/// An update waiting for its turn, with what a dead letter would need.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) event: EventRef,
    pub(super) update: ProfileUpdate,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) timestamp_ms: Option<i64>,
    /// The record's `pps-replayed-from`, for its dead letter.
    pub(super) replayed_from: Option<Box<str>>,
    /// When the coordinator received it (the coalescing window starts here).
    pub(super) received_at: Instant,
    pub(super) span: EventSpan,
}

/// What a task hands back; the work it was doing stays in
/// [`DeliveryState`]'s `running`, so a task that panics loses nothing.
pub(in crate::delivery::coordinator) enum TaskDone {
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
pub(super) enum Work {
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
pub(super) struct RetryState {
    /// Attempts made.
    pub(super) attempts: u32,
    /// Retryable failures so far (`delivery.max_attempts` counts these).
    pub(super) failures: u32,
    pub(super) schedule: RetrySchedule,
}

/// A profile waiting out a retry backoff. It holds no task and no place
/// under the concurrency limit; it stays in flight in the queues, so its
/// later events wait behind it.
pub(super) struct Backoff {
    pub(super) profile: Identity,
    pub(super) items: Vec<Pending>,
    pub(super) retry: RetryState,
    /// What the next attempt is.
    pub(super) next: Next,
}

/// The call a profile in backoff makes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Its update.
    Update,
    /// A fetch, to learn whether Target has it.
    Fetch,
}

/// Where a profile's ready update goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Way {
    /// A single update (Target has the profile, or the policy trusts it does).
    Single,
    /// A fetch first.
    Fetch,
    /// A bulk v2 batch, which creates the profile.
    Batch,
    /// A dead letter, `profile_not_found`.
    NotFound,
}

pub(super) struct PendingRevoke {
    /// Each partition with the assignment epoch the revoke is for: a later
    /// assignment of the same partition is not touched by a late answer.
    pub(super) partitions: Vec<(TopicPartition, u64)>,
    pub(super) reply: std::sync::mpsc::SyncSender<Vec<(TopicPartition, i64)>>,
    pub(super) deadline: Instant,
}

/// Counters resolved once.
pub(super) struct Counters {
    pub(super) update: Counter,
    pub(super) skip: Counter,
    pub(super) invalid: HashMap<&'static str, Counter>,
    pub(super) age_from_kafka: Histogram,
    pub(super) age_from_occurred_at: Histogram,
}

/// What a commit attempted and whether the broker took it.
pub(in crate::delivery::coordinator) struct CommitResult {
    /// The offsets the commit carried.
    pub(in crate::delivery::coordinator) offsets: Vec<CommitOffset>,
    /// The broker's answer (or why there was none).
    pub(in crate::delivery::coordinator) result: Result<(), String>,
}
