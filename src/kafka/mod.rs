//! Kafka: the consumer (a thread that polls and serves rebalances), the
//! dead-letter producer, and the client settings both share.

pub mod consumer;
pub mod dead_letter;

use crate::mapping::Decision;
use crate::ops::config::KafkaSettings;
use rdkafka::ClientConfig;
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
}

/// What the consumer thread tells the coordinator.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// A record to process.
    Record(Record),
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
    /// This pod's assigned partitions out of all partitions of its topics.
    Share {
        /// Partitions this pod has.
        assigned: usize,
        /// Partitions the topics have.
        total: usize,
    },
    /// Last known high watermarks, for lag.
    HighWatermarks(Vec<(TopicPartition, i64)>),
}

/// Properties common to every client: brokers plus `[kafka.properties]`
/// (with `_file` indirections resolved).
pub fn base_config(settings: &KafkaSettings) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in settings.client_properties()? {
        config.set(key, value);
    }
    Ok(config)
}
