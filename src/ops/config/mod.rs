//! Configuration: a TOML file, then `PPS_SECTION__KEY` environment variables
//! over it (figment does the layering), unknown keys rejected with their name,
//! and every value validated at start-up with a message saying what to fix.
//!
//! This file holds the schema (one struct per section, with typed accessors
//! for its durations and paths) and the error; loading (`load`), validation
//! (`validate`) and secret handling (`secrets`) have files of their own.

use crate::mapping::{Mapping, MappingSettings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod existence;
mod load;
mod secrets;
mod validate;
pub use existence::{ExistencePolicy, ExistenceSettings, VerifySettings, ADOBE_PROFILE_LIFETIME};
pub use secrets::is_secret_property;

/// Adobe's cap on single profile updates: one million per rolling 24 hours.
pub const ADOBE_DAILY_CAP: u64 = 1_000_000;
/// librdkafka's default `session.timeout.ms`.
const DEFAULT_SESSION_TIMEOUT_MS: u64 = 45_000;

/// Every setting of the service (contract section 3, plus the `[mapping]`,
/// `[log]` and extra `[delivery]` keys documented in the README).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where events come from and dead letters go.
    pub kafka: KafkaSettings,
    /// Where updates go.
    pub target: TargetSettings,
    /// The group-wide budget.
    pub rate_limit: RateLimitSettings,
    /// Concurrency, retries, coalescing, draining.
    pub delivery: DeliverySettings,
    /// Adobe's bulk batch API.
    pub bulk: BulkSettings,
    /// Whether Target has a profile, and the fetch budget that finds out.
    pub existence: ExistenceSettings,
    /// Read-back verification of accepted updates.
    pub verify: VerifySettings,
    /// The metrics and probes endpoint.
    pub server: ServerSettings,
    /// Changes to the default attribute table.
    pub mapping: MappingSettings,
    /// Log output.
    pub log: LogSettings,
}

/// `[kafka]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Topics carrying `pos.purchase.v1` events.
    pub topics: Vec<String>,
    /// Consumer group shared by all replicas.
    pub group_id: String,
    /// Where dead letters are written.
    pub dlq_topic: String,
    /// Where a partition with no committed offset starts (librdkafka's
    /// `auto.offset.reset`): a new group, a new topic, offsets expired.
    pub start_from: StartFrom,
    /// Any librdkafka property, passed as is; `NAME_file` reads NAME's value
    /// from a file so no secret sits in the configuration.
    pub properties: BTreeMap<String, PropertyValue>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "localhost:9092".into(),
            topics: vec!["pos.purchases".into()],
            group_id: "pos-profile-sync".into(),
            dlq_topic: "pos.purchases.dlq".into(),
            start_from: StartFrom::Earliest,
            properties: BTreeMap::new(),
        }
    }
}

/// `kafka.start_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest event the topic still holds: its whole retention is sent.
    Earliest,
    /// Only events published after the group first reads the partition.
    Latest,
}

impl StartFrom {
    /// The `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// A librdkafka property value: TOML strings, numbers and booleans all work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Anything else.
    Text(String),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::Bool(v) => write!(f, "{v}"),
            PropertyValue::Int(v) => write!(f, "{v}"),
            PropertyValue::Float(v) => write!(f, "{v}"),
            PropertyValue::Text(v) => f.write_str(v),
        }
    }
}

/// `[target]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetSettings {
    /// Adobe Target client code (required for `run`).
    pub client_code: String,
    /// Default `https://{client_code}.tt.omtrdc.net`.
    pub base_url: String,
    /// Optional bearer token file, re-read when it changes.
    pub token_file: String,
    /// Optional PEM bundle of certificates trusted for HTTPS, on top of the
    /// built-in public roots (a private CA, or a test endpoint's own).
    pub ca_file: String,
    /// Per-request timeout.
    pub timeout_ms: u64,
}

impl Default for TargetSettings {
    fn default() -> Self {
        TargetSettings {
            client_code: String::new(),
            base_url: String::new(),
            token_file: String::new(),
            ca_file: String::new(),
            timeout_ms: 10_000,
        }
    }
}

impl TargetSettings {
    /// The base URL in force, without a trailing slash.
    pub fn effective_base_url(&self) -> String {
        if self.base_url.is_empty() {
            format!("https://{}.tt.omtrdc.net", self.client_code)
        } else {
            self.base_url.trim_end_matches('/').to_owned()
        }
    }

    /// The token file, when one is configured.
    pub fn token_path(&self) -> Option<PathBuf> {
        (!self.token_file.is_empty()).then(|| PathBuf::from(&self.token_file))
    }

    /// The CA bundle, when one is configured.
    pub fn ca_path(&self) -> Option<PathBuf> {
        (!self.ca_file.is_empty()).then(|| PathBuf::from(&self.ca_file))
    }

    /// The certificates of `ca_file` (none when the key is empty), or a
    /// problem naming the file.
    pub fn ca_certificates(&self) -> Result<Vec<reqwest::Certificate>, String> {
        let Some(path) = self.ca_path() else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read(&path).map_err(|error| {
            format!(
                "target.ca_file: cannot read {} ({error}); mount the CA bundle there or leave the key empty",
                path.display()
            )
        })?;
        let invalid = || {
            format!(
                "target.ca_file: {} is not a PEM bundle of certificates (-----BEGIN CERTIFICATE-----)",
                path.display()
            )
        };
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| invalid())?;
        if certificates.is_empty() {
            return Err(invalid());
        }
        Ok(certificates)
    }

    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `[rate_limit]`: the budget of the whole consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Target calls per second for the whole group.
    pub per_second: f64,
    /// Group-wide burst.
    pub burst: u32,
    /// Single updates per rolling 24 h for the whole group.
    pub daily_quota: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            per_second: 10.0,
            burst: 10,
            daily_quota: ADOBE_DAILY_CAP,
        }
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Concurrent Target requests per pod.
    pub max_in_flight: u32,
    /// 0: one update per event; else merge a profile's events within this window.
    pub coalesce_window_ms: u64,
    /// 0: retry retryable failures forever.
    pub max_attempts: u32,
    /// SIGTERM and revoke: time to finish in-flight work.
    pub drain_timeout_ms: u64,
    /// How often accepted progress is committed.
    pub commit_interval_ms: u64,
    /// First retry delay (full jitter below it).
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Records held per partition before fetching it pauses.
    pub max_buffered_per_partition: u32,
    /// Records held by the whole pod before the partition that grows pauses:
    /// memory stays flat whatever the backlog and the partition count.
    pub max_buffered: u32,
    /// Which event's attributes win across updates of a profile.
    pub time_order: TimeOrder,
}

/// `delivery.time_order`: what decides between a profile's events across updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeOrder {
    /// Each update as its events arrive (the partition's order): a late
    /// upload overwrites what newer events delivered.
    #[default]
    Arrival,
    /// An attribute from an older event (`occurred_at`) never overwrites a
    /// newer value the pod delivered (bounded memory per pod).
    OccurredAt,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_in_flight: 256,
            coalesce_window_ms: 0,
            max_attempts: 0,
            drain_timeout_ms: 10_000,
            commit_interval_ms: 1_000,
            retry_initial_ms: 100,
            retry_max_ms: 30_000,
            max_buffered_per_partition: 10_000,
            time_order: TimeOrder::Arrival,
            max_buffered: 50_000,
        }
    }
}

impl DeliverySettings {
    /// `coalesce_window_ms`: zero sends one update per event.
    pub fn coalesce_window(&self) -> Duration {
        Duration::from_millis(self.coalesce_window_ms)
    }

    /// `drain_timeout_ms`.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// `commit_interval_ms`.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    /// `retry_initial_ms` and `retry_max_ms` as the retry policy.
    pub fn retry(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            initial: Duration::from_millis(self.retry_initial_ms),
            max: Duration::from_millis(self.retry_max_ms),
        }
    }
}

/// `[bulk]`: Adobe's bulk profile update API v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkSettings {
    /// When batches are used.
    pub mode: BulkMode,
    /// A batch closes at this many rows...
    pub max_rows: u64,
    /// ...or this many bytes...
    pub max_bytes: u64,
    /// ...or this age, whichever first.
    pub max_age_ms: u64,
    /// When a batch's events become committable.
    pub commit_on: CommitOn,
    /// Adobe's shared limit for bulk and admin calls.
    pub calls_per_minute: u32,
    /// `overflow`: batches take over when single updates would need longer
    /// than this to clear the backlog, or the daily quota would run out
    /// within it (an addition to the contract's keys).
    pub overflow_after_seconds: u64,
}

impl BulkSettings {
    /// `max_age_ms`: how long a batch stays open at most.
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age_ms)
    }
}

impl Default for BulkSettings {
    fn default() -> Self {
        BulkSettings {
            mode: BulkMode::Off,
            max_rows: 500_000,
            max_bytes: 50_000_000,
            max_age_ms: 60_000,
            commit_on: CommitOn::Complete,
            calls_per_minute: 50,
            overflow_after_seconds: 600,
        }
    }
}

/// `bulk.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkMode {
    /// Single updates only.
    Off,
    /// Single updates while the quota and lag allow, batches for the rest.
    Overflow,
    /// Batches only.
    Always,
}

/// `bulk.commit_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitOn {
    /// When `batchStatus` says `complete`.
    Complete,
    /// When the batch was accepted for processing.
    Submitted,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "0.0.0.0:9464".into(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem, each naming the key and what to do.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// `Ok` when there is no problem, else every problem at once.
    pub fn from_problems(problems: Vec<String>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    fn one(problem: String) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
}

#[cfg(test)]
mod tests;
