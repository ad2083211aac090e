//! How fast a pod sets bad events aside: a storm of malformed events is as
//! fast as the dead-letter producer.
//!
//! `PPS_BENCH_DLQ_LETTERS` [3000] letters of 400 bytes, each with its own key,
//! are handed to the service's `DeadLetterWriter` at once, as the coordinator
//! does in a storm, against a librdkafka mock cluster of 3 brokers whose every
//! answer takes `PPS_BENCH_DLQ_RTT_MS` [2] ms (a replicated `acks=all` write on
//! a real cluster takes about that or more); the topic has 6 partitions. The
//! baseline sends the same letters through a producer of the same
//! configuration with one letter a batch (what the writer does only for a
//! letter after a size refusal, and what it did for every letter before).
//! Each side gets a fresh cluster. The figure is letters per second.

use crate::common::env_or;
use pos_profile_sync::kafka::dead_letter::{DeadLetter, DeadLetterClass, DeadLetterWriter};
use pos_profile_sync::kafka::{self, TopicPartition};
use pos_profile_sync::ops::config::KafkaSettings;
use pos_profile_sync::ops::metrics::Metrics;
use pos_profile_sync::retry::RetryPolicy;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "pos.purchases.dlq";

/// A mock cluster whose brokers answer after `rtt`, with the topic.
fn cluster(rtt: Duration) -> anyhow::Result<MockCluster<'static, DefaultProducerContext>> {
    let cluster = MockCluster::new(3)?;
    cluster.create_topic(TOPIC, 6, 3)?;
    for broker in 1..=3 {
        cluster.broker_round_trip_time(broker, rtt)?;
    }
    Ok(cluster)
}

fn letter(offset: i64) -> DeadLetter {
    DeadLetter {
        key: Some(format!("CRM-{offset}").into_bytes()),
        payload: vec![b'x'; 400],
        class: DeadLetterClass::InvalidJson,
        reason: "not JSON: expected value at line 1 column 1".into(),
        source: TopicPartition {
            topic: "pos.purchases".into(),
            partition: (offset % 24) as i32,
        },
        offset,
        target_status: None,
        replayed_from: None,
    }
}

fn settings(cluster: &MockCluster<'static, DefaultProducerContext>) -> KafkaSettings {
    KafkaSettings {
        brokers: cluster.bootstrap_servers(),
        dlq_topic: TOPIC.into(),
        ..KafkaSettings::default()
    }
}

/// Letters per second through the service's writer.
async fn through_the_writer(letters: i64, rtt: Duration) -> anyhow::Result<f64> {
    let cluster = cluster(rtt)?;
    let retry = RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    let writer = Arc::new(DeadLetterWriter::new(
        &settings(&cluster),
        retry,
        Arc::new(Metrics::new()),
    )?);
    let started = Instant::now();
    let mut writing = tokio::task::JoinSet::new();
    for offset in 0..letters {
        let writer = writer.clone();
        writing.spawn(async move {
            writer
                .write(&letter(offset), &CancellationToken::new())
                .await
        });
    }
    while let Some(written) = writing.join_next().await {
        anyhow::ensure!(written?, "a letter was not written");
    }
    Ok(letters as f64 / started.elapsed().as_secs_f64())
}

/// Letters per second, one a batch, with the writer's configuration otherwise.
async fn one_a_batch(letters: i64, rtt: Duration) -> anyhow::Result<f64> {
    let cluster = cluster(rtt)?;
    let config = kafka::alone(kafka::dead_letter_producer_config(&settings(&cluster))?);
    let producer: Arc<FutureProducer> = Arc::new(config.create()?);
    let started = Instant::now();
    let mut writing = tokio::task::JoinSet::new();
    for offset in 0..letters {
        let producer = producer.clone();
        writing.spawn(async move {
            let letter = letter(offset);
            let record = FutureRecord::to(TOPIC)
                .key(letter.key.as_deref().unwrap_or_default())
                .payload(&letter.payload[..])
                .headers(pos_profile_sync::kafka::dead_letter::headers(&letter));
            producer
                .send(record, Timeout::After(Duration::from_secs(30)))
                .await
                .is_ok()
        });
    }
    while let Some(written) = writing.join_next().await {
        anyhow::ensure!(written?, "a letter was not written");
    }
    Ok(letters as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn run() -> anyhow::Result<Vec<String>> {
    let letters: i64 = env_or("PPS_BENCH_DLQ_LETTERS", 3000)?;
    let rtt = Duration::from_millis(env_or("PPS_BENCH_DLQ_RTT_MS", 2)?);
    let ours = through_the_writer(letters, rtt).await?;
    let alone = one_a_batch(letters, rtt).await?;
    Ok(vec![format!(
        "{letters} letters at once, brokers answering after {} ms: the writer {ours:.0}/s, one letter a batch {alone:.0}/s ({:.1}x)",
        rtt.as_millis(),
        ours / alone
    )])
}
