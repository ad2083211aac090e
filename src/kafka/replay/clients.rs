//! The replay's Kafka clients and what it asks the brokers before reading:
//! a consumer that never creates topics and commits only when told, an
//! idempotent `acks=all` producer with one request in flight, the partitions
//! of a topic (or that it is missing), and each partition's span.

use super::rules::Span;
use super::{ReplayError, ReplayPlan, REQUEST_TIMEOUT};
use crate::kafka::{base_config, ClientRole, TracingContext};
use crate::ops::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

pub(super) fn consumer(
    kafka: &KafkaSettings,
    group: &str,
) -> Result<BaseConsumer<TracingContext>, ReplayError> {
    let mut config = base_config(kafka, ClientRole::Consumer)
        .map_err(|error| ReplayError::Kafka(error.to_string()))?;
    // The service's static membership id belongs to its pods, not to this group.
    config
        .remove("group.instance.id")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    config.create_with_context(TracingContext).map_err(|error| {
        ReplayError::Kafka(kafka.redact(&format!("cannot create the replay consumer: {error}")))
    })
}

pub(super) fn producer(
    kafka: &KafkaSettings,
) -> Result<FutureProducer<TracingContext>, ReplayError> {
    let mut config = base_config(kafka, ClientRole::Producer)
        .map_err(|error| ReplayError::Kafka(error.to_string()))?;
    for (key, value) in [("linger.ms", "5"), ("message.timeout.ms", "60000")] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    // One request in flight, as for dead letters: the producer itself keeps
    // replayed records in order.
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1");
    config.create_with_context(TracingContext).map_err(|error| {
        ReplayError::Kafka(kafka.redact(&format!("cannot create the replay producer: {error}")))
    })
}

/// The partitions of `topic`, asked with the consumer (which never creates topics).
pub(super) fn partitions(
    consumer: &BaseConsumer<TracingContext>,
    topic: &str,
    kafka: &KafkaSettings,
) -> Result<Vec<i32>, ReplayError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|error| {
            ReplayError::Kafka(format!(
                "cannot read the metadata of {topic} from {} ({error}); check the brokers and the TLS/SASL [kafka.properties]",
                kafka.brokers
            ))
        })?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    match found.map(|t| (t.error().map(RDKafkaErrorCode::from), t.partitions())) {
        Some((None, partitions)) if !partitions.is_empty() => {
            Ok(partitions.iter().map(|p| p.id()).collect())
        }
        None | Some((None, _)) | Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), _)) => {
            Err(ReplayError::MissingTopic {
                topic: topic.to_owned(),
                hint: "create it first (replay creates no topics) or check --to",
            })
        }
        Some((Some(code), _)) => Err(ReplayError::Kafka(format!(
            "the brokers refused the metadata of {topic}: {code}"
        ))),
    }
}

/// What each dead-letter partition is read from and up to.
pub(super) fn spans(
    consumer: &BaseConsumer<TracingContext>,
    plan: &ReplayPlan,
    partitions: &[i32],
) -> Result<Vec<Span>, ReplayError> {
    let topic = &plan.dlq_topic;
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(list, REQUEST_TIMEOUT)
        .map_err(|error| {
            ReplayError::Kafka(format!(
                "cannot read the committed offsets of group {} on {topic}: {error}",
                plan.group
            ))
        })?;
    let mut spans = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let marks = consumer
            .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)
            .map_err(|error| {
                ReplayError::Kafka(format!(
                    "cannot read the end offsets of {topic}/{partition}: {error}"
                ))
            })?;
        let position = match committed
            .find_partition(topic, *partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(offset)) if offset >= 0 => Some(offset),
            _ => None,
        };
        spans.push(Span::new(
            *partition,
            marks,
            position,
            plan.filter.until_offset,
        ));
    }
    Ok(spans)
}
