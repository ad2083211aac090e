//! Dead-letter replay: re-publishes dead letters, key, value and headers
//! byte for byte plus `pps-replayed-from`, to their source topic or another
//! one. The replay reads with its own consumer group from its committed
//! position up to the end offsets seen at start, and commits a batch only
//! after every replayed record of it was acknowledged (`acks=all`,
//! idempotent, one request in flight), so an interrupted or failed replay
//! resumes where it stopped and a finished one is not repeated. The
//! decisions live in [`rules`], the clients in `clients`; this module moves
//! the records.

mod clients;
pub mod rules;

use self::clients::{consumer, partitions, producer, spans};
use self::rules::{
    destination, positions, Destination, Filter, Provenance, ReplayReport, Span, Verdict,
    REPLAYED_FROM,
};
use super::TracingContext;
use crate::ops::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Dead letters produced, awaited and committed together.
const BATCH: usize = 500;
/// Metadata, watermark and committed-offset requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No record for this long while offsets remain: Kafka is not answering.
const STALL: Duration = Duration::from_secs(60);

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    /// The dead-letter topic read.
    pub dlq_topic: String,
    /// The consumer group that keeps the replay's position.
    pub group: String,
    /// Where replayed records go.
    pub destination: Destination,
    /// Which dead letters move.
    pub filter: Filter,
    /// Count only: produce and commit nothing.
    pub dry_run: bool,
}

/// Why a replay stopped early; what was committed before stays committed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A topic the options name does not exist: the command is to be fixed.
    #[error("topic {topic} does not exist; {hint}")]
    MissingTopic {
        /// The topic.
        topic: String,
        /// What to check.
        hint: &'static str,
    },
    /// Kafka could not be reached or refused a request.
    #[error("{0}")]
    Kafka(String),
    /// A dead letter cannot move as asked; the replay stopped before it.
    #[error("dead letter {at} cannot be replayed: {reason}")]
    Unreplayable {
        /// `<dlq topic>/<partition>/<offset>`.
        at: String,
        /// Why, and what to do.
        reason: String,
    },
}

/// How a run ended.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// What was read and done, up to the end or the stop.
    pub report: ReplayReport,
    /// Stopped by a signal after committing what was acknowledged.
    pub interrupted: bool,
    /// Why it stopped early, if it did.
    pub result: Result<(), ReplayError>,
}

/// Runs the replay (blocking); `stop` ends it after the current batch.
pub fn run(kafka: &KafkaSettings, plan: &ReplayPlan, stop: &CancellationToken) -> ReplayOutcome {
    let mut replay = Replay {
        plan,
        kafka,
        sources: BTreeMap::new(),
        report: ReplayReport::default(),
        interrupted: false,
    };
    let result = replay.run(kafka, stop);
    ReplayOutcome {
        report: replay.report,
        interrupted: replay.interrupted,
        result,
    }
}

struct Replay<'a> {
    plan: &'a ReplayPlan,
    kafka: &'a KafkaSettings,
    /// The partitions of each source topic a dead letter named, as first seen.
    sources: BTreeMap<String, Vec<i32>>,
    report: ReplayReport,
    interrupted: bool,
}

/// One dead letter of a batch, once handed to the producer (or skipped).
struct Handled {
    partition: i32,
    offset: i64,
    class: String,
    verdict: Verdict,
    delivery: Option<(String, DeliveryFuture)>,
}

impl Replay<'_> {
    fn run(&mut self, kafka: &KafkaSettings, stop: &CancellationToken) -> Result<(), ReplayError> {
        let plan = self.plan;
        let consumer = consumer(kafka, &plan.group)?;
        let dlq_partitions =
            partitions(&consumer, &plan.dlq_topic, kafka).map_err(|error| match error {
                ReplayError::MissingTopic { topic, .. } => ReplayError::MissingTopic {
                    topic,
                    hint: "check kafka.dlq_topic in --config or --dlq-topic",
                },
                other => other,
            })?;
        if let Destination::Topic(topic) = &plan.destination {
            partitions(&consumer, topic, kafka)?;
        }
        self.report.spans = spans(&consumer, plan, &dlq_partitions)?;
        let mut todo: BTreeMap<i32, Span> = self
            .report
            .spans
            .iter()
            .filter(|span| !span.is_empty())
            .map(|span| (span.partition, *span))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let producer = if plan.dry_run {
            None
        } else {
            Some(producer(kafka)?)
        };
        let mut assignment = TopicPartitionList::new();
        for span in todo.values() {
            tracing::info!(
                topic = %plan.dlq_topic,
                partition = span.partition,
                from = span.start,
                until = span.stop,
                "Reading dead letters."
            );
            assignment
                .add_partition_offset(&plan.dlq_topic, span.partition, Offset::Offset(span.start))
                .map_err(|error| ReplayError::Kafka(format!("cannot assign: {error}")))?;
        }
        consumer.assign(&assignment).map_err(|error| {
            ReplayError::Kafka(format!("cannot assign {}: {error}", plan.dlq_topic))
        })?;
        let mut batch = Vec::new();
        let mut last_record = Instant::now();
        while !todo.is_empty() {
            if stop.is_cancelled() {
                self.interrupted = true;
                break;
            }
            let idle = match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    last_record = Instant::now();
                    let partition = message.partition();
                    if let Some(span) = todo.get(&partition) {
                        let offset = message.offset();
                        if offset < span.stop {
                            batch.push(message.detach());
                        }
                        if offset + 1 >= span.stop {
                            todo.remove(&partition);
                        }
                    }
                    false
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    todo.remove(&partition);
                    false
                }
                Some(Err(error)) => {
                    tracing::warn!(error = %error, "Reading dead letters failed; retrying.");
                    true
                }
                None => true,
            };
            if batch.len() >= BATCH || (!batch.is_empty() && (idle || todo.is_empty())) {
                self.move_batch(&consumer, producer.as_ref(), std::mem::take(&mut batch))?;
                // Waiting for acknowledgements is not Kafka going quiet.
                last_record = Instant::now();
            }
            if !todo.is_empty() && last_record.elapsed() > STALL {
                return Err(ReplayError::Kafka(format!(
                    "no dead letters arrived from {} for {} s while offsets remain; check that the brokers at {} are reachable",
                    plan.dlq_topic,
                    STALL.as_secs(),
                    kafka.brokers
                )));
            }
        }
        self.move_batch(&consumer, producer.as_ref(), batch)
    }

    /// Produces what the filter lets through, waits for every
    /// acknowledgement, counts, then commits past what was handled.
    fn move_batch(
        &mut self,
        consumer: &BaseConsumer<TracingContext>,
        producer: Option<&FutureProducer<TracingContext>>,
        batch: Vec<OwnedMessage>,
    ) -> Result<(), ReplayError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut failure = None;
        let mut handled = Vec::with_capacity(batch.len());
        for message in &batch {
            match self.hand_over(consumer, producer, message) {
                Ok(one) => handled.push(one),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let mut acknowledged = Vec::with_capacity(handled.len());
        for one in handled {
            let ok = match one.delivery {
                None => true,
                Some((topic, delivery)) => {
                    let at = format!("{}/{}/{}", self.plan.dlq_topic, one.partition, one.offset);
                    match futures::executor::block_on(delivery) {
                        Ok(Ok(_)) => true,
                        Ok(Err((error, _))) => {
                            failure.get_or_insert(ReplayError::Kafka(format!(
                                "replaying {at} to {topic} failed: {error}"
                            )));
                            false
                        }
                        Err(_) => {
                            failure.get_or_insert(ReplayError::Kafka(format!(
                                "replaying {at} to {topic}: the producer stopped before an answer"
                            )));
                            false
                        }
                    }
                }
            };
            if ok {
                self.report.count(&one.class, one.verdict);
            }
            acknowledged.push((one.partition, one.offset, ok));
        }
        if !self.plan.dry_run {
            self.commit(consumer, positions(acknowledged))?;
        }
        failure.map_or(Ok(()), Err)
    }

    /// Decides one dead letter and, when it moves, hands it to the producer.
    fn hand_over(
        &mut self,
        consumer: &BaseConsumer<TracingContext>,
        producer: Option<&FutureProducer<TracingContext>>,
        message: &OwnedMessage,
    ) -> Result<Handled, ReplayError> {
        let plan = self.plan;
        let (partition, offset) = (message.partition(), message.offset());
        let provenance = Provenance::from_headers(
            message
                .headers()
                .into_iter()
                .flat_map(|headers| headers.iter().map(|h| (h.key, h.value))),
        );
        let verdict = plan.filter.verdict(offset, &provenance);
        let at = format!("{}/{partition}/{offset}", plan.dlq_topic);
        let mut delivery = None;
        if verdict == Verdict::SkipIncomplete {
            tracing::warn!(
                letter = %at,
                source_topic = provenance.source_topic.as_deref().unwrap_or("?"),
                source_partition = ?provenance.source_partition,
                "Skipping a dead letter without its value (too large for the dead-letter topic); the record is at its pps-source-offset in its source topic."
            );
        }
        if verdict == Verdict::Replay {
            let (topic, to_partition) =
                destination(&plan.destination, &provenance, &plan.dlq_topic).map_err(|reason| {
                    ReplayError::Unreplayable {
                        at: at.clone(),
                        reason,
                    }
                })?;
            if let Some(to_partition) = to_partition {
                self.check_source(consumer, &topic, to_partition)?
                    .map_err(|reason| ReplayError::Unreplayable {
                        at: at.clone(),
                        reason,
                    })?;
            }
            if let Some(producer) = producer {
                let headers = message
                    .headers()
                    .cloned()
                    .unwrap_or_else(OwnedHeaders::new)
                    .insert(Header {
                        key: REPLAYED_FROM,
                        value: Some(&at),
                    });
                let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                if let Some(payload) = message.payload() {
                    record = record.payload(payload);
                }
                if let Some(to_partition) = to_partition {
                    record = record.partition(to_partition);
                }
                let future = loop {
                    match producer.send_result(record) {
                        Ok(future) => break future,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err((error, _)) => {
                            return Err(ReplayError::Kafka(format!(
                                "cannot hand {at} to the producer for {topic}: {error}"
                            )))
                        }
                    }
                };
                delivery = Some((topic, future));
            }
        }
        Ok(Handled {
            partition,
            offset,
            class: provenance.class_label().to_owned(),
            verdict,
            delivery,
        })
    }

    /// Whether `partition` of the source topic `topic` exists (the topic's
    /// partitions are read once a run). A missing topic stops the run: the
    /// producer must not create it, nor wait for it until its timeout.
    fn check_source(
        &mut self,
        consumer: &BaseConsumer<TracingContext>,
        topic: &str,
        partition: i32,
    ) -> Result<Result<(), String>, ReplayError> {
        if !self.sources.contains_key(topic) {
            let found = partitions(consumer, topic, self.kafka).map_err(|error| match error {
                ReplayError::MissingTopic { topic, .. } => ReplayError::MissingTopic {
                    topic,
                    hint: "it is the pps-source-topic of a dead letter; create it, or pass --to TOPIC",
                },
                other => other,
            })?;
            self.sources.insert(topic.to_owned(), found);
        }
        let known = &self.sources[topic];
        Ok(if known.contains(&partition) {
            Ok(())
        } else {
            Err(format!(
                "its pps-source-partition {partition} is not a partition of {topic} (it has {}); pass --to TOPIC",
                known.len()
            ))
        })
    }

    fn commit(
        &self,
        consumer: &BaseConsumer<TracingContext>,
        positions: BTreeMap<i32, i64>,
    ) -> Result<(), ReplayError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &positions {
            list.add_partition_offset(&self.plan.dlq_topic, *partition, Offset::Offset(*offset))
                .map_err(|error| ReplayError::Kafka(format!("cannot commit: {error}")))?;
        }
        consumer.commit(&list, CommitMode::Sync).map_err(|error| {
            ReplayError::Kafka(format!(
                "the replayed records were acknowledged but group {} could not commit its position ({error}); a rerun replays them again",
                self.plan.group
            ))
        })
    }
}
