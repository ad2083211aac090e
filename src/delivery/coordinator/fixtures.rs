//! What the coordinator's tests share: records of purchases, settings,
//! bulk delivery without a Target behind it.

use super::machine::{Action, Task, WorkId};
use super::*;
use crate::delivery::batch_sender::{BatchSender, CallBudget};
use crate::delivery::gate::{RateShare, SendGate};
use crate::kafka::{Record, TopicPartition};
use crate::mapping::Mapping;
use crate::ops::config::{BulkMode, CommitOn, TargetSettings, TimeOrder};
use crate::retry::RetryPolicy;
use crate::target::bulk::{BatchLimits, BulkClient};

/// The topic the tests read.
pub(super) const TOPIC: &str = "pos.purchases";

/// Coordinator settings for the tests: a short drain, no coalescing.
pub(super) fn settings(drain: Duration, max_buffered: usize) -> CoordinatorSettings {
    CoordinatorSettings {
        max_buffered_per_partition: 10_000,
        max_buffered,
        commit_interval: Duration::from_millis(100),
        drain_timeout: drain,
        per_second: 1_000_000.0,
        burst: 1_000,
        daily_quota: 1_000_000,
        coalesce_window: Duration::ZERO,
        group_id: Arc::from("coordinator-tests"),
        bulk_mode: BulkMode::Off,
        overflow_after_seconds: 60,
        bulk: None,
        verify: None,
        existence: ExistenceRouting::trust(),
        time_order: TimeOrder::Arrival,
    }
}

/// A sale of `customer` (or an anonymous one) at `offset` of `partition`.
pub(super) fn record(
    mapping: &Mapping,
    partition: i32,
    offset: i64,
    customer: Option<&str>,
) -> Record {
    record_of(mapping, partition, offset, customer, sale(offset, customer))
}

/// A record of `partition` at `offset` carrying `json`.
pub(super) fn record_of(
    mapping: &Mapping,
    partition: i32,
    offset: i64,
    customer: Option<&str>,
    json: String,
) -> Record {
    let payload = json.into_bytes();
    Record {
        tp: tp(partition),
        offset,
        key: customer.map(|c| c.as_bytes().to_vec()),
        decision: mapping.decide(&payload),
        payload,
        timestamp_ms: None,
        trace_context: None,
        replayed_from: None,
    }
}

/// Partition `partition` of the tests' topic.
pub(super) fn tp(partition: i32) -> TopicPartition {
    TopicPartition {
        topic: Arc::from(TOPIC),
        partition,
    }
}

/// The JSON of a sale at `offset` by `customer` (or an anonymous one).
pub(super) fn sale(offset: i64, customer: Option<&str>) -> String {
    let customer = match customer {
        Some(id) => format!(r#"{{"third_party_id":"{id}"}}"#),
        None => "{}".to_owned(),
    };
    format!(
        r#"{{"event_id":"e{offset}","event_type":"sale","occurred_at":"2026-11-28T10:15:{:02}Z","store_id":"S{offset}","customer":{customer},"currency":"EUR","total":"1.00","items":[]}}"#,
        offset % 60
    )
}

/// Bulk delivery with at most `max_rows` rows a batch, closing at
/// `max_age`; its client points nowhere (tests that use it make no call).
pub(super) fn bulk_delivery(
    max_rows: usize,
    max_age: Duration,
    commit_on: CommitOn,
) -> BulkDelivery {
    let retry = RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let share = RateShare::of_group(10.0, 10, 1, 1);
    BulkDelivery {
        sender: BatchSender {
            client: Arc::new(BulkClient::new(&TargetSettings::default()).expect("bulk client")),
            calls: Arc::new(CallBudget::new(60)),
            retry,
            poll: retry,
            gate: Arc::new(SendGate::new(share, retry)),
            metrics: Arc::new(Metrics::new()),
            resubmissions: Arc::default(),
        },
        limits: BatchLimits {
            max_rows,
            max_bytes: 1 << 20,
        },
        max_age,
        commit_on,
    }
}

/// The update attempts started.
pub(super) fn updates(actions: &[Action]) -> Vec<WorkId> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Start {
                work,
                task: Task::Update { .. },
            } => Some(*work),
            _ => None,
        })
        .collect()
}

/// The update attempts stopped.
pub(super) fn aborted(actions: &[Action]) -> Vec<WorkId> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Abort(works) => Some(works.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The one update attempt started.
pub(super) fn one_update(actions: &[Action]) -> WorkId {
    match updates(actions).as_slice() {
        [work] => *work,
        other => panic!("expected one update, got {}: {actions:?}", other.len()),
    }
}
