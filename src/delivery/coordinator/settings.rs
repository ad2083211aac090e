//! What the coordinator is configured with, resolved from the settings by
//! the service.

use crate::delivery::batch_sender::BatchSender;
use crate::ops::config::{CommitOn, ExistencePolicy, TimeOrder};
use crate::target::bulk::BatchLimits;
use std::sync::Arc;
use std::time::Duration;

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

/// What the coordinator needs to send batches.
#[derive(Debug, Clone)]
pub struct BulkDelivery {
    /// Submits and polls.
    pub sender: BatchSender,
    /// `bulk.max_rows`, `bulk.max_bytes`.
    pub limits: BatchLimits,
    /// `bulk.max_age_ms`.
    pub max_age: Duration,
    /// `bulk.commit_on`.
    pub commit_on: CommitOn,
}
