//! Looking at topics and groups from the outside: end offsets, a group's
//! committed offsets, every record of a topic. Used by `demo` to verify a
//! run the way an operator would, and by tests.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A record as read back.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers (values as text).
    pub headers: BTreeMap<String, String>,
}

impl StoredRecord {
    /// A consumed message as read back: its bytes, and its headers as text.
    pub fn of(message: &impl Message) -> StoredRecord {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        let value = header.value.unwrap_or_default();
                        (
                            header.key.to_owned(),
                            String::from_utf8_lossy(value).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        StoredRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }
}

/// A read-only view of a cluster.
pub struct Inspector {
    consumer: BaseConsumer,
    config: ClientConfig,
}

impl Inspector {
    /// Connects to these bootstrap servers (with extra properties, e.g. TLS).
    pub fn new(brokers: &str, properties: &[(String, String)]) -> Result<Inspector, String> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (key, value) in properties {
            config.set(key, value);
        }
        let consumer = config
            .create()
            .map_err(|error| format!("cannot connect to {brokers}: {error}"))?;
        Ok(Inspector { consumer, config })
    }

    /// Partitions of a topic; an error when the topic does not exist.
    pub fn partitions(&self, topic: &str) -> Result<usize, String> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|error| format!("cannot read metadata of {topic}: {error}"))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty());
        found
            .map(|t| t.partitions().len())
            .ok_or_else(|| format!("topic {topic} does not exist"))
    }

    /// End offset of every partition.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, String> {
        (0..self.partitions(topic)? as i32)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(topic, p, TIMEOUT)
                    .map(|(_, high)| high)
                    .map_err(|error| format!("cannot read offsets of {topic}/{p}: {error}"))
            })
            .collect()
    }

    /// The group's committed offset per partition (-1 where none).
    pub fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: usize,
    ) -> Result<Vec<i64>, String> {
        // The inspector's own consumer serves its group; another group needs one of its own.
        let own;
        let consumer = if self.config.get("group.id") == Some(group) {
            &self.consumer
        } else {
            let mut config = self.config.clone();
            config.set("group.id", group);
            own = config
                .create::<BaseConsumer>()
                .map_err(|error| error.to_string())?;
            &own
        };
        let mut list = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            list.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(list, TIMEOUT)
            .map_err(|error| format!("cannot read committed offsets of {group}: {error}"))?;
        Ok((0..partitions as i32)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect())
    }

    /// Every record of a topic up to its current end.
    pub fn read_all(&self, topic: &str) -> Result<Vec<StoredRecord>, String> {
        let ends = self.end_offsets(topic)?;
        let mut list = TopicPartitionList::new();
        let mut remaining: HashMap<i32, i64> = HashMap::new();
        for (p, end) in ends.iter().enumerate() {
            let (low, _) = self
                .consumer
                .fetch_watermarks(topic, p as i32, TIMEOUT)
                .map_err(|error| error.to_string())?;
            if *end > low {
                remaining.insert(p as i32, *end);
                list.add_partition_offset(topic, p as i32, Offset::Beginning)
                    .map_err(|error| error.to_string())?;
            }
        }
        let mut out = Vec::new();
        if remaining.is_empty() {
            return Ok(out);
        }
        let mut config = self.config.clone();
        config
            .set("group.id", "pos-profile-sync-inspector")
            .set("enable.auto.commit", "false");
        let reader: BaseConsumer = config.create().map_err(|error| error.to_string())?;
        reader.assign(&list).map_err(|error| error.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !remaining.is_empty() {
            if Instant::now() > deadline {
                return Err(format!("could not read all of {topic}: {remaining:?} left"));
            }
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    if remaining.get(&message.partition()) == Some(&(message.offset() + 1)) {
                        remaining.remove(&message.partition());
                    }
                    out.push(StoredRecord::of(&message));
                }
                Some(Err(error)) => return Err(format!("reading {topic}: {error}")),
                None => {}
            }
        }
        Ok(out)
    }
}
