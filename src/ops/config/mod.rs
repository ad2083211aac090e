//! Configuration: a TOML file, then `PPS_SECTION__KEY` environment variables
//! over it (figment does the layering), unknown keys rejected with their name,
//! and every value validated at start-up with a message saying what to fix.

use crate::mapping::{Mapping, MappingSettings};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod existence;
pub use existence::{ExistencePolicy, ExistenceSettings, VerifySettings, ADOBE_PROFILE_LIFETIME};

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

const ENV_PREFIX: &str = "PPS_";
const PROPERTIES_ENV: &str = "kafka__properties__";

impl Settings {
    /// Loads defaults, then the file (if any), then `PPS_` environment
    /// variables; checks keys and types but not values (see [`Settings::value_problems`]).
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::one(format!(
                    "--config {}: no such file; pass the path of a TOML file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::extract_with_env(figment)
    }

    /// [`Settings::load`] with the file's text given instead of its path
    /// (environment variables still apply): the same layering and errors.
    pub fn load_text(toml: &str) -> Result<Settings, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml));
        Self::extract_with_env(figment)
    }

    fn extract_with_env(mut figment: Figment) -> Result<Settings, ConfigError> {
        let unreadable = environment_problems();
        if !unreadable.is_empty() {
            return Err(ConfigError {
                problems: unreadable,
            });
        }
        // Only `PPS_SECTION__KEY` names are configuration (so `PPS_BIN` and
        // the like are left alone); unknown ones are errors.
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    key.contains("__") && !key.starts_with(PROPERTIES_ENV)
                })
                .split("__"),
        );
        // librdkafka property names have dots, which an environment variable
        // cannot carry: `PPS_KAFKA__PROPERTIES__SECURITY_PROTOCOL` stands for
        // `security.protocol` (a `_file` suffix keeps its underscore).
        let properties: BTreeMap<String, figment::value::Value> = std::env::vars_os()
            .filter_map(|(key, value)| {
                let (key, value) = (key.into_string().ok()?, value.into_string().ok()?);
                let key = key.to_ascii_lowercase();
                let name = key
                    .strip_prefix(&ENV_PREFIX.to_ascii_lowercase())?
                    .strip_prefix(PROPERTIES_ENV)?;
                let value = value.parse().unwrap_or_else(|_| value.clone().into());
                Some((property_name_from_env(name), value))
            })
            .collect();
        if !properties.is_empty() {
            figment = figment.merge(Serialized::default("kafka.properties", properties));
        }
        figment.extract().map_err(|error| ConfigError {
            problems: error.into_iter().map(describe_figment_error).collect(),
        })
    }

    /// Every value checked, for the `run` job: client code, addresses,
    /// budgets, deadlines, mapping; one line per problem, all at once.
    /// librdkafka's own verdict on the Kafka properties needs clients built:
    /// the Kafka side adds it (`kafka::validate` checks both).
    pub fn value_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        let k = &self.kafka;
        need(
            !k.brokers.trim().is_empty(),
            "kafka.brokers: empty; give the bootstrap servers, e.g. \"kafka-0:9092,kafka-1:9092\"",
        );
        need(
            !k.topics.is_empty() && k.topics.iter().all(|t| !t.trim().is_empty()),
            "kafka.topics: give at least one non-empty topic name",
        );
        need(
            !k.group_id.trim().is_empty(),
            "kafka.group_id: empty; every replica must share one consumer group id",
        );
        need(
            !k.dlq_topic.trim().is_empty(),
            "kafka.dlq_topic: empty; dead letters need a topic",
        );
        need(!k.topics.contains(&k.dlq_topic), "kafka.dlq_topic: must not be one of kafka.topics (dead letters would be consumed again)");
        need(!k.properties.contains_key("auto.offset.reset"), "kafka.properties.auto.offset.reset: set kafka.start_from (\"earliest\" or \"latest\") instead");
        for reserved in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "group.id",
            "bootstrap.servers",
        ] {
            need(!k.properties.contains_key(reserved), &format!("kafka.properties.{reserved}: set by the service itself (offsets are committed only after Target accepted); remove it"));
        }
        problems.extend(kafka_security_problems(&k.properties));
        let mut need = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        let t = &self.target;
        need(!t.client_code.trim().is_empty(), "target.client_code: required; set your Adobe Target client code (PPS_TARGET__CLIENT_CODE)");
        need(
            t.client_code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "target.client_code: only letters, digits, '-' and '_'",
        );
        if !t.base_url.is_empty() {
            need(reqwest::Url::parse(&t.base_url).map(|u| matches!(u.scheme(), "http" | "https")).unwrap_or(false), "target.base_url: must be an http:// or https:// URL, or empty for https://{client_code}.tt.omtrdc.net");
        }
        if let Some(path) = t.token_path() {
            need(std::fs::read_to_string(&path).is_ok(), &format!("target.token_file: cannot read {}; mount the token Secret there or leave the key empty", path.display()));
        }
        if let Err(problem) = t.ca_certificates() {
            problems.push(problem);
        }
        let mut need = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        need(t.timeout_ms > 0, "target.timeout_ms: must be above 0");
        let r = &self.rate_limit;
        need(
            r.per_second.is_finite() && r.per_second > 0.0,
            "rate_limit.per_second: must be a number above 0 (the whole group's budget per second)",
        );
        need(r.burst >= 1, "rate_limit.burst: must be at least 1");
        need(
            r.daily_quota >= 1,
            "rate_limit.daily_quota: must be at least 1",
        );
        let d = &self.delivery;
        need(
            (1..=65_536).contains(&d.max_in_flight),
            "delivery.max_in_flight: must be 1 to 65536",
        );
        need(
            d.drain_timeout_ms > 0,
            "delivery.drain_timeout_ms: must be above 0",
        );
        let session = self.session_timeout_ms();
        need(d.drain_timeout_ms < session, &format!("delivery.drain_timeout_ms: {} must be below the session timeout ({session} ms, kafka.properties.\"session.timeout.ms\"), or the group evicts the pod while it drains", d.drain_timeout_ms));
        need(
            d.commit_interval_ms > 0,
            "delivery.commit_interval_ms: must be above 0",
        );
        need(
            d.retry_initial_ms > 0 && d.retry_initial_ms <= d.retry_max_ms,
            "delivery.retry_initial_ms: must be above 0 and at most delivery.retry_max_ms",
        );
        need(
            d.max_buffered_per_partition >= 1,
            "delivery.max_buffered_per_partition: must be at least 1",
        );
        need(
            d.max_buffered >= 1,
            "delivery.max_buffered: must be at least 1",
        );
        let b = &self.bulk;
        need(
            (1..=500_000).contains(&b.max_rows),
            "bulk.max_rows: must be 1 to 500000 (Adobe's limit per batch)",
        );
        need(
            (1..=50_000_000).contains(&b.max_bytes),
            "bulk.max_bytes: must be 1 to 50000000 (Adobe's limit per batch)",
        );
        need(b.max_age_ms > 0, "bulk.max_age_ms: must be above 0");
        need(
            b.calls_per_minute >= 1,
            "bulk.calls_per_minute: must be at least 1",
        );
        need(
            b.overflow_after_seconds >= 1,
            "bulk.overflow_after_seconds: must be at least 1",
        );
        problems.extend(self.existence.problems());
        problems.extend(self.verify.problems());
        let mut need = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        need(
            self.server.listen.parse::<std::net::SocketAddr>().is_ok(),
            "server.listen: must be an address such as 0.0.0.0:9464",
        );
        if let Err(mapping) = Mapping::from_settings(&self.mapping) {
            problems.extend(mapping);
        }
        problems
    }

    /// The session timeout the consumer will use.
    pub fn session_timeout_ms(&self) -> u64 {
        self.kafka
            .properties
            .get("session.timeout.ms")
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or(DEFAULT_SESSION_TIMEOUT_MS)
    }

    /// Warnings that do not stop the service.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let daily_rate = ADOBE_DAILY_CAP as f64 / 86_400.0;
        if self.rate_limit.per_second > daily_rate {
            warnings.push(format!(
                "rate_limit.per_second = {} is above {daily_rate:.2}/s: sustained, it would pass Adobe's documented cap of one million single updates per rolling 24 hours",
                self.rate_limit.per_second
            ));
        }
        if self.bulk.mode != BulkMode::Off && self.bulk.commit_on == CommitOn::Submitted {
            warnings.push("bulk.commit_on = \"submitted\" commits a batch's events before Adobe reports its rows: rows Adobe fails later are dead-lettered only if this pod is still running then (a crash in between loses those dead letters); \"complete\" keeps at-least-once".to_owned());
        }
        warnings
    }

    /// The effective settings as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for (key, value) in shown.kafka.properties.iter_mut() {
            if is_secret_property(key) {
                *value = PropertyValue::Text("********".into());
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

impl KafkaSettings {
    /// The properties handed to librdkafka, with `NAME_file` indirections read.
    pub fn client_properties(&self) -> Result<Vec<(String, String)>, String> {
        let mut resolved = Vec::with_capacity(self.properties.len());
        for (key, value) in &self.properties {
            match key.strip_suffix("_file") {
                Some(name) => {
                    let path = value.to_string();
                    let content = std::fs::read_to_string(&path).map_err(|error| {
                        format!("kafka.properties.{key}: cannot read {path} ({error}); it holds the value of {name}")
                    })?;
                    resolved.push((name.to_owned(), content.trim().to_owned()));
                }
                None => resolved.push((key.clone(), value.to_string())),
            }
        }
        Ok(resolved)
    }
}

impl KafkaSettings {
    /// `text` with the value of every secret property (inline or read through
    /// `_file`) replaced by `********`: librdkafka quotes values in its errors.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let Ok(properties) = self.client_properties() else {
            return text;
        };
        for (key, value) in properties {
            if is_secret_property(&key) && !value.is_empty() {
                text = text.replace(&value, "********");
            }
        }
        text
    }
}

/// Whether a librdkafka property holds a secret (never printed or logged).
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_file")
        && [
            "password",
            "secret",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
            "sasl.jaas",
        ]
        .iter()
        .any(|needle| key.contains(needle))
}

/// The most `[` and `{` one environment value may hold: figment parses them
/// recursively without a limit, so thousands of them overflow the stack.
const MAX_ENV_BRACKETS: usize = 64;

/// `PPS_SECTION__KEY` variables whose values cannot be read faithfully: not
/// UTF-8, nested without bound (see [`MAX_ENV_BRACKETS`]), or a quoted string
/// holding both a backslash escape and a non-ASCII character, which figment's
/// value parser slices by character count as if it were a byte offset (a
/// panic, or a silently shortened value).
fn environment_problems() -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else {
            continue;
        };
        let lower = key.to_ascii_lowercase();
        if !lower.starts_with(&ENV_PREFIX.to_ascii_lowercase()) || !lower.contains("__") {
            continue;
        }
        match value.to_str() {
            None => problems.push(format!("{key}: the value is not UTF-8")),
            Some(value) if value.matches(['[', '{']).count() > MAX_ENV_BRACKETS => {
                problems.push(format!(
                    "{key}: more than {MAX_ENV_BRACKETS} '[' and '{{' in one value; set it in the configuration file instead"
                ))
            }
            Some(value) if value.contains('"') && value.contains('\\') && !value.is_ascii() => {
                problems.push(format!(
                    "{key}: a quoted value with both a backslash escape and a non-ASCII character cannot be read reliably; set it in the configuration file instead"
                ))
            }
            Some(_) => {}
        }
    }
    problems
}

/// librdkafka properties naming a file it reads when the clients are built.
const FILE_PROPERTIES: [&str; 6] = [
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
    "sasl.kerberos.keytab",
];
/// The SASL mechanisms librdkafka knows (GSSAPI needs a Kerberos build,
/// which librdkafka itself reports).
const SASL_MECHANISMS: [&str; 5] = [
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "OAUTHBEARER",
    "GSSAPI",
];

/// What librdkafka reports late or without a name: a certificate or key file
/// that cannot be read (its own message does not say which), and a SASL
/// mechanism it only refuses when connecting.
fn kafka_security_problems(properties: &BTreeMap<String, PropertyValue>) -> Vec<String> {
    let mut problems = Vec::new();
    for key in FILE_PROPERTIES {
        let Some(value) = properties.get(key) else {
            continue;
        };
        let path = value.to_string();
        // `ssl.ca.location` may be a directory of certificates, or `probe`.
        if key == "ssl.ca.location" && (path == "probe" || Path::new(&path).is_dir()) {
            continue;
        }
        if let Err(error) = std::fs::File::open(&path) {
            problems.push(format!(
                "kafka.properties.{key}: cannot read {path} ({error}); mount the file there"
            ));
        }
    }
    for key in ["sasl.mechanism", "sasl.mechanisms"] {
        if let Some(value) = properties.get(key) {
            let mechanism = value.to_string();
            if !SASL_MECHANISMS.contains(&mechanism.as_str()) {
                problems.push(format!(
                    "kafka.properties.{key}: unknown SASL mechanism {mechanism:?}; use one of {}",
                    SASL_MECHANISMS.join(", ")
                ));
            }
        }
    }
    problems
}

fn property_name_from_env(name: &str) -> String {
    match name.strip_suffix("_file") {
        Some(base) => format!("{}_file", base.replace('_', ".")),
        None => name.replace('_', "."),
    }
}

fn describe_figment_error(error: figment::Error) -> String {
    let path = error.path.join(".");
    let source = error
        .metadata
        .as_ref()
        .and_then(|m| m.source.as_ref())
        .map(|s| format!(" (in {s})"))
        .unwrap_or_default();
    let kind = error.kind.to_string();
    if path.is_empty() {
        format!("{kind}{source}")
    } else {
        format!("{path}: {kind}{source}")
    }
}

#[cfg(test)]
mod tests;
