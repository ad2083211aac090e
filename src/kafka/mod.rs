//! Kafka: the consumer (a thread that polls and serves rebalances), the
//! dead-letter producer, the dead-letter replay, and the client settings
//! they share.

pub mod consumer;
pub mod dead_letter;
pub mod inspect;
pub mod replay;
pub mod trace_context;

use crate::mapping::Decision;
use crate::ops::config::{ConfigError, KafkaSettings, Settings};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};
use std::fmt;
use std::sync::Arc;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A consumed record, already decided upon (parsed and mapped) on the consumer thread.
#[derive(Debug)]
pub struct Record {
    /// Where it came from.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// The original key, for dead letters.
    pub key: Option<Vec<u8>>,
    /// The original value, for dead letters.
    pub payload: Vec<u8>,
    /// The Kafka timestamp (ms since the epoch), when set.
    pub timestamp_ms: Option<i64>,
    /// What to do with it.
    pub decision: Decision,
    /// The W3C trace context of its headers, read only while traces are
    /// exported: the event's span continues that trace.
    pub trace_context: Option<Box<opentelemetry::trace::SpanContext>>,
    /// Its `pps-replayed-from` header (`dlq replay` put it there): a dead
    /// letter of this record carries it on, so a replay can tell.
    pub replayed_from: Option<Box<str>>,
}

/// What the consumer thread tells the coordinator.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// Records to process, in the order they were read: handed over in
    /// batches of what the client had ready (at most
    /// [`consumer::HANDOVER_BATCH`]), so the coordinator is woken once per
    /// batch, not once per record.
    Records(Vec<Record>),
    /// Partitions newly assigned to this pod.
    Assigned(Vec<TopicPartition>),
    /// Partitions being taken away: drain them, then answer with the
    /// offsets to commit (empty when `lost`: another pod owns them already).
    Revoked {
        /// The revoked partitions.
        partitions: Vec<TopicPartition>,
        /// Lost without a clean revoke (session timeout): commit nothing.
        lost: bool,
        /// The offsets to commit before the partitions go.
        reply: std::sync::mpsc::SyncSender<Vec<(TopicPartition, i64)>>,
    },
    /// Partitions of all subscribed topics (the coordinator counts its own
    /// share of them).
    PartitionCount(usize),
    /// Partitions' offsets as the client last reported them, for lag and
    /// the overflow route's backlog.
    Offsets(Vec<(TopicPartition, ReportedOffsets)>),
}

/// A partition's offsets from the Kafka client's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedOffsets {
    /// The broker's high watermark: the offset its next record will get.
    pub high: i64,
    /// The next offset the client fetches, when it has one: where the pod
    /// stands on a partition it has read nothing of yet (at its end when
    /// there is nothing to read).
    pub fetching: Option<i64>,
}

/// Why a Kafka client could not be set up. Each message names what to fix;
/// the values of secret properties are cut out of librdkafka's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaSetupError {
    /// A `NAME_file` property's file cannot be read (the message names it).
    #[error("{0}")]
    Property(String),
    /// librdkafka refuses the settings of a client the service would build.
    #[error("kafka.properties: librdkafka refuses the {client} settings: {reason}")]
    Refused {
        /// `consumer` or `producer`.
        client: &'static str,
        /// librdkafka's words, secrets cut out.
        reason: String,
    },
    /// A client could not be created.
    #[error("cannot create the {client}: {reason}")]
    Create {
        /// Which client.
        client: &'static str,
        /// librdkafka's words, secrets cut out.
        reason: String,
    },
    /// The consumer could not subscribe to the topics.
    #[error("cannot subscribe to {topics:?}: {reason}")]
    Subscribe {
        /// `kafka.topics`.
        topics: Vec<String>,
        /// librdkafka's words.
        reason: String,
    },
    /// The consumer's polling thread could not start.
    #[error("cannot start the consumer thread: {0}")]
    Thread(String),
}

/// librdkafka properties that only a consumer understands; the dead-letter
/// producer leaves them out instead of warning about each.
const CONSUMER_ONLY: &[&str] = &[
    "allow.auto.create.topics",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "session.timeout.ms",
];

/// Which client a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// The group member.
    Consumer,
    /// The dead-letter (or replay) producer.
    Producer,
}

/// Properties common to every client: brokers plus `[kafka.properties]`
/// (with `_file` indirections resolved), less what the role does not use.
pub fn base_config(
    settings: &KafkaSettings,
    role: ClientRole,
) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in settings
        .client_properties()
        .map_err(KafkaSetupError::Property)?
    {
        if role == ClientRole::Producer && CONSUMER_ONLY.contains(&key.as_str()) {
            continue;
        }
        config.set(key, value);
    }
    Ok(config)
}

/// The group member's configuration: brokers, `[kafka.properties]`, and the
/// settings the service owns (no automatic offset handling, cooperative
/// rebalancing).
pub fn consumer_config(settings: &KafkaSettings) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = base_config(settings, ClientRole::Consumer)?;
    // Our defaults first; [kafka.properties] may change them.
    let defaults = [
        ("queued.max.messages.kbytes", "16384"),
        ("statistics.interval.ms", "5000"),
        ("enable.partition.eof", "false"),
    ];
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
        .set("group.id", &settings.group_id)
        .set("auto.offset.reset", settings.start_from.as_str())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    Ok(config)
}

/// The dead-letter producer's configuration: idempotent, `acks=all`.
pub fn dead_letter_producer_config(
    settings: &KafkaSettings,
) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = base_config(settings, ClientRole::Producer)?;
    // One request in flight: the producer itself keeps dead letters in
    // order instead of relying on the broker to refuse out-of-order
    // batches (librdkafka's idempotent producer with several batches in
    // flight assumes that; a broker or mock that does not check producer
    // sequences then silently loses a retried batch). Letters are batched
    // (a storm of bad events needs thousands a second); a batch the broker
    // refuses for its size is sorted out letter by letter through
    // [`alone`]. The topic is never created here: a missing or mistyped
    // `dlq_topic` would get the broker's defaults (one replica, short
    // retention) and lose letters.
    config
        .set("enable.idempotence", "true")
        .set("allow.auto.create.topics", "false")
        .set("max.in.flight.requests.per.connection", "1")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    Ok(config)
}

/// The same configuration for one letter a batch: the broker judges a
/// produce request's size by whole batches, so a size refusal of a batch
/// may be about the letters batched with a letter; sent alone, it is about
/// that letter only.
pub fn alone(mut config: ClientConfig) -> ClientConfig {
    config.set("batch.num.messages", "1");
    config
}

/// Every problem with `settings` for the `run` job, listed at once: the
/// values ([`Settings::value_problems`]) and librdkafka's own verdict on the
/// Kafka properties ([`check_clients`]).
pub fn validate(settings: &Settings) -> Result<(), ConfigError> {
    let mut problems = settings.value_problems();
    if let Err(error) = check_clients(&settings.kafka) {
        problems.push(error.to_string());
    }
    ConfigError::from_problems(problems)
}

/// Builds, without using them, the consumer and producer the service would
/// run, so librdkafka refuses unknown properties, unsupported values (such as
/// a security protocol the build lacks) and unreadable certificate files at
/// start-up, with a message naming them, not at the first connection.
pub fn check_clients(settings: &KafkaSettings) -> Result<(), KafkaSetupError> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::FutureProducer;
    let consumer: BaseConsumer<TracingContext> = consumer_config(settings)?
        .create_with_context(TracingContext)
        .map_err(|error| KafkaSetupError::Refused {
            client: "consumer",
            reason: settings.redact(&error.to_string()),
        })?;
    drop(consumer);
    let producer: FutureProducer<TracingContext> = dead_letter_producer_config(settings)?
        .create_with_context(TracingContext)
        .map_err(|error| KafkaSetupError::Refused {
            client: "producer",
            reason: settings.redact(&error.to_string()),
        })?;
    drop(producer);
    Ok(())
}

/// librdkafka's log lines, as tracing events.
pub fn log_to_tracing(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
    }
}

/// A client context that logs through tracing (producers and the replay's
/// consumer use it).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingContext;

impl rdkafka::consumer::ConsumerContext for TracingContext {}

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "Kafka client error: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::config::PropertyValue;

    fn settings(properties: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), PropertyValue::Text((*v).to_owned())))
                .collect(),
            ..KafkaSettings::default()
        }
    }

    #[test]
    fn tls_and_sasl_settings_are_accepted_by_this_build() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let result = check_clients(&settings(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "svc"),
                ("sasl.password", "secret"),
            ]));
            assert_eq!(result, Ok(()), "{mechanism}");
        }
        assert_eq!(
            check_clients(&settings(&[("security.protocol", "SSL")])),
            Ok(())
        );
    }

    #[test]
    fn librdkafka_refuses_unknown_properties_and_missing_certificates_at_start_up() {
        let error = check_clients(&settings(&[("fetch.mn.bytes", "1")])).unwrap_err();
        assert!(
            matches!(
                error,
                KafkaSetupError::Refused {
                    client: "consumer",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = error.to_string();
        assert!(error.contains("fetch.mn.bytes"), "{error}");
        let error = check_clients(&settings(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/ca.pem"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("kafka.properties"), "{error}");
    }

    #[test]
    fn the_start_position_is_the_consumers_offset_reset_and_earliest_when_unset() {
        let unset = consumer_config(&settings(&[])).unwrap();
        assert_eq!(unset.get("auto.offset.reset"), Some("earliest"));
        let latest = KafkaSettings {
            start_from: crate::ops::config::StartFrom::Latest,
            ..settings(&[])
        };
        let config = consumer_config(&latest).unwrap();
        assert_eq!(config.get("auto.offset.reset"), Some("latest"));
    }

    #[test]
    fn a_start_position_given_as_a_property_is_refused_in_favour_of_start_from() {
        let mut all = crate::ops::config::Settings::default();
        all.target.client_code = "acme".into();
        all.kafka = settings(&[("auto.offset.reset", "latest")]);
        let problems = all.value_problems().join("\n");
        assert!(
            problems.contains("kafka.properties.auto.offset.reset: set kafka.start_from"),
            "{problems}"
        );
    }

    #[test]
    fn producers_do_not_get_consumer_only_properties() {
        let config = dead_letter_producer_config(&settings(&[
            ("session.timeout.ms", "6000"),
            ("socket.keepalive.enable", "true"),
        ]))
        .unwrap();
        assert_eq!(config.get("session.timeout.ms"), None);
        assert_eq!(config.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(
            config.get("max.in.flight.requests.per.connection"),
            Some("1")
        );
    }
}
