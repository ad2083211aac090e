//! The publishing half of `produce`: an idempotent lz4 producer that counts
//! what the brokers acknowledged, a fail-fast check of brokers and topic,
//! governor pacing for `--rate`, the progress bar, and the loop that stops
//! on a signal and flushes before it reports.

use crate::generator::{Generator, GeneratorConfig};
use crate::kafka::{base_config, log_to_tracing, ClientRole};
use crate::ops::config::KafkaSettings;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the final flush may take before unacknowledged events are reported.
pub(super) const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// A limiter for `rate` events per second (none for 0), with a burst of
/// 10 ms worth of events so sleeping at the timer's granularity does not
/// lower the rate.
fn pacer(rate: f64) -> Option<DefaultDirectRateLimiter> {
    if rate <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64((1.0 / rate).max(1e-9));
    let burst = (rate / 100.0).ceil().clamp(1.0, 100_000.0) as u32;
    let quota =
        Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    Some(RateLimiter::direct(quota))
}

/// Counts what the brokers acknowledged.
#[derive(Debug, Default)]
struct Deliveries {
    acknowledged: AtomicU64,
    /// Key and value bytes of acknowledged events.
    bytes: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "Kafka client error: {reason}");
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let size =
                    message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len);
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(size as u64, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub(super) struct Outcome {
    /// Events the brokers acknowledged.
    pub(super) acknowledged: u64,
    /// Key and value bytes of those.
    pub(super) bytes: u64,
    /// Events the producer gave up on.
    pub(super) failed: u64,
    /// Events still unacknowledged when the flush timed out.
    pub(super) unflushed: u64,
    /// From the first event to the end of the flush.
    pub(super) elapsed: Duration,
    /// Stopped by a signal.
    pub(super) interrupted: bool,
    /// Why it stopped early, if it did.
    pub(super) error: Option<String>,
}

/// Why nothing was published.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The options point at something that is not there (exit 2).
    Usage(String),
    /// Kafka could not be used (exit 1).
    Failure(String),
}

fn producer(kafka: &KafkaSettings) -> Result<ThreadedProducer<Deliveries>, Refusal> {
    let mut config = base_config(kafka, ClientRole::Producer)
        .map_err(|error| Refusal::Usage(error.to_string()))?;
    for (key, value) in [("compression.type", "lz4"), ("linger.ms", "20")] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config.set("enable.idempotence", "true");
    config
        .create_with_context(Deliveries::default())
        .map_err(|error| Refusal::Usage(format!("cannot create the producer: {error}")))
}

/// Fails fast on unreachable brokers or a topic that is not there (and that
/// the brokers do not create on first use).
fn check_topic(
    producer: &ThreadedProducer<Deliveries>,
    kafka: &KafkaSettings,
    topic: &str,
) -> Result<(), Refusal> {
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|error| {
            Refusal::Failure(format!(
                "cannot reach the brokers at {} ({error}); check --brokers and the TLS/SASL [kafka.properties]",
                kafka.brokers
            ))
        })?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(found) if found.error().is_none() && !found.partitions().is_empty() => Ok(()),
        _ => Err(Refusal::Usage(format!(
            "topic {topic} does not exist on {} and the brokers did not create it; create it or check --topic",
            kafka.brokers
        ))),
    }
}

fn progress_bar(events: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(events), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "[{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Publishes every generated event (or until `stop`), then flushes.
pub(super) fn publish(
    kafka: &KafkaSettings,
    topic: &str,
    generator: GeneratorConfig,
    rate: f64,
    stop: &CancellationToken,
) -> Result<Outcome, Refusal> {
    let producer = producer(kafka)?;
    check_topic(&producer, kafka, topic)?;
    let pacer = pacer(rate);
    let bar = progress_bar(generator.events);
    let deliveries = producer.context();
    let started = Instant::now();
    let mut error = None;
    'events: for event in Generator::new(generator) {
        if deliveries.failed.load(Ordering::Relaxed) > 0 {
            break;
        }
        if let Some(pacer) = &pacer {
            while let Err(not_until) = pacer.check() {
                if stop.is_cancelled() {
                    break 'events;
                }
                let wait = not_until.wait_time_from(governor::clock::Clock::now(pacer.clock()));
                std::thread::sleep(wait.min(Duration::from_millis(100)));
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let mut record = BaseRecord::to(topic)
            .key(&event.key[..])
            .payload(&event.payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((cause, _)) => {
                    error = Some(format!("cannot hand an event to the producer: {cause}"));
                    break 'events;
                }
            }
        }
        bar.inc(1);
    }
    let flushed = producer.flush(FLUSH_TIMEOUT);
    bar.finish_and_clear();
    let failed = deliveries.failed.load(Ordering::Relaxed);
    if error.is_none() && failed > 0 {
        let first = deliveries
            .first_error
            .lock()
            .ok()
            .and_then(|first| first.clone())
            .unwrap_or_default();
        error = Some(format!(
            "{failed} events were not acknowledged, the first because: {first}"
        ));
    }
    let unflushed = u64::try_from(producer.in_flight_count()).unwrap_or(0);
    if error.is_none() {
        if let Err(cause) = flushed {
            error = Some(format!(
                "{unflushed} events still unacknowledged after {} s: {cause}",
                FLUSH_TIMEOUT.as_secs()
            ));
        }
    }
    Ok(Outcome {
        acknowledged: deliveries.acknowledged.load(Ordering::Relaxed),
        bytes: deliveries.bytes.load(Ordering::Relaxed),
        failed,
        unflushed,
        elapsed: started.elapsed(),
        interrupted: stop.is_cancelled(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_allows_ten_milliseconds_of_burst_then_holds_the_rate() {
        assert!(pacer(0.0).is_none());
        let pacer = pacer(1000.0).unwrap();
        // A burst of 10 ms worth, then the rate holds.
        let passed = (0..100).filter(|_| pacer.check().is_ok()).count();
        assert!((10..=12).contains(&passed), "{passed}");
        let slow = super::pacer(0.5).unwrap();
        assert!(slow.check().is_ok());
        assert!(slow.check().is_err());
    }
}
