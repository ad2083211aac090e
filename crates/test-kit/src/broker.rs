//! The Kafka broker of a test or bench, with its topics, its own producer and
//! the read-backs the assertions need (committed and end offsets, records).

use crate::tansu::{self, Tansu, TansuOptions};
use crate::{DLQ, TOPIC};
use anyhow::{bail, ensure};
use pos_profile_sync::generator::GeneratedEvent;
use pos_profile_sync::kafka::inspect::{Inspector, StoredRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::time::Duration;

/// The environment variable choosing the broker: `mock` (the default) or
/// `tansu` (its binary in `PPS_TANSU_BIN`).
pub const TEST_BROKER: &str = "PPS_TEST_BROKER";

/// Brokers of the mock cluster (and replicas of its topics).
const MOCK_BROKERS: i32 = 3;

/// Whether `PPS_TEST_BROKER` asks for the separate tansu broker.
pub fn separate_broker() -> anyhow::Result<bool> {
    match std::env::var(TEST_BROKER).as_deref() {
        Err(_) | Ok("") | Ok("mock") => Ok(false),
        Ok("tansu") => Ok(true),
        Ok(other) => bail!("{TEST_BROKER}={other}: use mock (the default) or tansu"),
    }
}

/// What runs the broker; dropping it stops the broker.
enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu(Tansu),
    /// A real cluster started elsewhere.
    External,
}

/// A Kafka cluster with the dead-letter topic, and the source topic when
/// [`Kafka::start`] made it.
pub struct Kafka {
    broker: Broker,
    /// Its bootstrap servers.
    pub bootstrap: String,
    /// Partitions of the source topic (0 when it was not created).
    pub partitions: i32,
    /// librdkafka properties of the kit's own clients (TLS, SASL).
    pub client_properties: Vec<(String, String)>,
}

impl Kafka {
    /// The broker `PPS_TEST_BROKER` names (three mock brokers, or a tansu
    /// process) with a one-partition dead-letter topic and no source topic.
    pub fn from_env() -> anyhow::Result<Kafka> {
        let kafka = if separate_broker()? {
            Kafka::over(Broker::Tansu(Tansu::start(TansuOptions::default())))
        } else {
            Kafka::over(Broker::Mock(MockCluster::new(MOCK_BROKERS)?))
        };
        kafka.create_topic(DLQ, 1)?;
        Ok(kafka)
    }

    /// The same with a source topic of `partitions` partitions. Panics on
    /// failure: for the tests.
    pub fn start(partitions: i32) -> Kafka {
        let mut kafka = Kafka::from_env().expect("a broker");
        kafka.create_topic(TOPIC, partitions).expect("source topic");
        kafka.partitions = partitions;
        kafka
    }

    /// The test topics on a tansu broker, which this then owns.
    pub fn on_tansu(broker: Tansu, partitions: i32) -> Kafka {
        broker.create_topic(TOPIC, partitions);
        broker.create_topic(DLQ, 1);
        Kafka {
            partitions,
            ..Kafka::over(Broker::Tansu(broker))
        }
    }

    /// A real cluster at `bootstrap`: creates the source topic with
    /// `partitions` partitions and a one-partition dead-letter topic.
    pub async fn external(bootstrap: String, partitions: i32) -> Kafka {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin client");
        let topics = [
            NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(DLQ, 1, TopicReplication::Fixed(1)),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin
            .create_topics(&topics, &options)
            .await
            .expect("create topics")
        {
            result.expect("topic created");
        }
        Kafka {
            bootstrap,
            partitions,
            ..Kafka::over(Broker::External)
        }
    }

    fn over(broker: Broker) -> Kafka {
        let bootstrap = match &broker {
            Broker::Mock(cluster) => cluster.bootstrap_servers(),
            Broker::Tansu(tansu) => tansu.bootstrap.clone(),
            Broker::External => String::new(),
        };
        Kafka {
            broker,
            bootstrap,
            partitions: 0,
            client_properties: Vec::new(),
        }
    }

    /// Which broker this is, for reports.
    pub fn describe(&self) -> String {
        match &self.broker {
            Broker::Mock(_) => format!("librdkafka mock cluster ({MOCK_BROKERS} brokers)"),
            Broker::Tansu(_) => "tansu 0.6 (separate process, memory storage)".into(),
            Broker::External => format!("a Kafka cluster at {}", self.bootstrap),
        }
    }

    /// Whether this is librdkafka's mock cluster.
    pub fn is_mock(&self) -> bool {
        matches!(self.broker, Broker::Mock(_))
    }

    /// The mock cluster, for fault injection.
    pub fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        match &self.broker {
            Broker::Mock(cluster) => cluster,
            _ => panic!("fault injection needs librdkafka's mock cluster"),
        }
    }

    /// Creates `topic` (on the mock cluster with a replica on each broker).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        match &self.broker {
            Broker::Mock(cluster) => cluster.create_topic(topic, partitions, MOCK_BROKERS)?,
            Broker::Tansu(tansu) => tansu.create_topic(topic, partitions),
            Broker::External => bail!("topics of an external cluster are made by `external`"),
        }
        Ok(())
    }

    /// A client configuration for this broker, with [`Kafka::client_properties`].
    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in &self.client_properties {
            config.set(key, value);
        }
        config
    }

    /// A producer as POS systems would run one: lz4, idempotent, 5 ms linger.
    pub fn producer(&self) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
        Ok(self
            .config()
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("enable.idempotence", "true")
            .create()?)
    }

    /// Produces the events (keyed by customer) to the source topic and
    /// waits for every ack.
    pub fn produce(&self, events: &[GeneratedEvent]) {
        self.produce_with_headers(events, |_| Vec::new());
    }

    /// Produces the events with the headers `headers(index)` gives each, in
    /// order on their partitions, and waits for every ack.
    pub fn produce_with_headers(
        &self,
        events: &[GeneratedEvent],
        headers: impl Fn(usize) -> Vec<(&'static str, String)>,
    ) {
        let producer = self.producer().expect("producer");
        for (index, event) in events.iter().enumerate() {
            let pairs = headers(index);
            let mut record = BaseRecord::to(TOPIC)
                .key(&event.key[..])
                .payload(&event.payload[..]);
            if !pairs.is_empty() {
                let owned = pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(value.as_str()),
                    })
                });
                record = record.headers(owned);
            }
            send_record(&producer, record);
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Creates `topic`, produces the events into it (keyed as generated),
    /// waits for every ack and checks the end offsets; returns them.
    pub fn backlog(
        &self,
        topic: &str,
        partitions: i32,
        events: impl Iterator<Item = GeneratedEvent>,
    ) -> anyhow::Result<Vec<i64>> {
        self.create_topic(topic, partitions)?;
        let producer = self.producer()?;
        let mut produced = 0usize;
        for event in events {
            send(&producer, topic, &event.key, &event.payload);
            produced += 1;
        }
        producer.flush(Duration::from_secs(120))?;
        self.verified_end_offsets(topic, partitions, produced)
    }

    /// End offsets of `topic`, after checking that the broker dropped nothing
    /// of the `produced` records.
    pub fn verified_end_offsets(
        &self,
        topic: &str,
        partitions: i32,
        produced: usize,
    ) -> anyhow::Result<Vec<i64>> {
        if let Broker::Tansu(_) = self.broker {
            // tansu's ListOffsets is wrong: the ends come from the records.
            let ends = tansu::ends_by_reading(self.config(), topic, partitions);
            let total: i64 = ends.iter().sum();
            ensure!(
                total == produced as i64,
                "{topic}: {total} records read back, but {produced} events were produced"
            );
            return Ok(ends);
        }
        let consumer: BaseConsumer = self.config().create()?;
        let mut ends = Vec::new();
        for partition in 0..partitions {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            ensure!(low == 0, "{topic}/{partition} starts at {low}: the mock cluster dropped batches; use more partitions");
            ends.push(high);
        }
        let total: i64 = ends.iter().sum();
        ensure!(
            total == produced as i64,
            "{topic}: end offsets add up to {total}, but {produced} events were produced"
        );
        Ok(ends)
    }

    fn inspector(&self) -> Inspector {
        Inspector::new(&self.bootstrap, &self.client_properties).expect("inspector")
    }

    /// The committed offset of every source partition for a group (-1 when none).
    pub fn committed(&self, group: &str) -> Vec<i64> {
        self.inspector()
            .committed(group, TOPIC, self.partitions as usize)
            .expect("committed offsets")
    }

    /// The committed offset of every partition of `topic` for `group` (-1 when none).
    pub fn committed_on(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create()?;
        committed_offsets(&consumer, topic, partitions)
    }

    /// Whether `group` has committed every partition of `topic` at `ends`.
    pub fn all_committed(&self, group: &str, topic: &str, ends: &[i64]) -> bool {
        self.committed_on(group, topic, ends.len() as i32)
            .is_ok_and(|committed| committed == ends)
    }

    /// The end offset of every source partition.
    pub fn end_offsets(&self) -> Vec<i64> {
        if let Broker::Tansu(_) = self.broker {
            return tansu::ends_by_reading(self.config(), TOPIC, self.partitions);
        }
        self.inspector().end_offsets(TOPIC).expect("end offsets")
    }

    /// Every record of a topic.
    pub fn read_all(&self, topic: &str) -> Vec<StoredRecord> {
        if let Broker::Tansu(_) = self.broker {
            let partitions = self.inspector().partitions(topic).expect("partitions") as i32;
            return tansu::read_to_idle(self.config(), topic, partitions);
        }
        self.inspector().read_all(topic).expect("read the topic")
    }
}

/// The committed offset of every partition of `topic` for `consumer`'s group
/// (-1 when none).
pub fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect())
}

/// Sends one record, waiting while the producer's queue is full.
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
) {
    send_record(producer, BaseRecord::to(topic).key(key).payload(payload));
}

fn send_record(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) {
    while let Err((_, returned)) = producer.send(record) {
        record = returned;
        std::thread::sleep(Duration::from_millis(5));
    }
}
