//! Dead letters (`docs/contract.md` section 8): the original key and value byte for
//! byte on `kafka.dlq_topic`, with headers saying why and where from. The
//! idempotent producer waits for `acks=all`; a write that fails is retried
//! until it succeeds or the pod gives up at its drain deadline, so a failing
//! dead-letter topic stops progress instead of skipping events. The one
//! refusal a retry cannot cure, a record larger than the topic or producer
//! takes, is written again without the value (then without the key), saying
//! so in `pps-value-omitted` (`pps-key-omitted`): the letter still records
//! why and where from, and the record stays at its source offset.

use super::TopicPartition;
use crate::event::ErrorClass;
use crate::ops::config::KafkaSettings;
use crate::ops::metrics::Metrics;
use crate::retry::RetryPolicy;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest `pps-error-reason`, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Why a record is a dead letter: its `pps-error-class` (contract section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterClass {
    /// Not UTF-8, not JSON, or JSON no reader should be given.
    InvalidJson,
    /// JSON that breaks a rule of the event schema.
    SchemaViolation,
    /// A `schema_version` other than 1.
    UnsupportedVersion,
    /// Target refused for good: a 4xx other than 401, 403, 408 and 429, a batch
    /// row reported failed, or a batch Target keeps refusing or losing.
    TargetRejected,
    /// `delivery.max_attempts` retryable failures.
    RetriesExhausted,
    /// `existence.policy = "dead_letter"` and Target has no such profile.
    ProfileNotFound,
}

impl DeadLetterClass {
    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterClass::InvalidJson => "invalid_json",
            DeadLetterClass::SchemaViolation => "schema_violation",
            DeadLetterClass::UnsupportedVersion => "unsupported_version",
            DeadLetterClass::TargetRejected => "target_rejected",
            DeadLetterClass::RetriesExhausted => "retries_exhausted",
            DeadLetterClass::ProfileNotFound => "profile_not_found",
        }
    }
}

impl From<ErrorClass> for DeadLetterClass {
    fn from(class: ErrorClass) -> Self {
        match class {
            ErrorClass::InvalidJson => DeadLetterClass::InvalidJson,
            ErrorClass::SchemaViolation => DeadLetterClass::SchemaViolation,
            ErrorClass::UnsupportedVersion => DeadLetterClass::UnsupportedVersion,
        }
    }
}

impl std::fmt::Display for DeadLetterClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every `pps-error-class` the contract defines (section 8), as written.
pub const ERROR_CLASSES: [&str; 6] = [
    DeadLetterClass::InvalidJson.as_str(),
    DeadLetterClass::SchemaViolation.as_str(),
    DeadLetterClass::UnsupportedVersion.as_str(),
    DeadLetterClass::TargetRejected.as_str(),
    DeadLetterClass::RetriesExhausted.as_str(),
    DeadLetterClass::ProfileNotFound.as_str(),
];

/// One record to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The original key.
    pub key: Option<Vec<u8>>,
    /// The original value.
    pub payload: Vec<u8>,
    /// `pps-error-class`.
    pub class: DeadLetterClass,
    /// `pps-error-reason` (made one line, at most 1 KB).
    pub reason: String,
    /// Where it came from.
    pub source: TopicPartition,
    /// Its offset there.
    pub offset: i64,
    /// `pps-target-status`, for Target's answers.
    pub target_status: Option<u16>,
    /// `pps-replayed-from`, carried on from a record `dlq replay` published.
    pub replayed_from: Option<Box<str>>,
}

/// Writes dead letters.
pub struct DeadLetterWriter {
    producer: FutureProducer<super::TracingContext>,
    /// One letter a batch, made at the first size refusal (see [`super::alone`]).
    alone: OnceLock<FutureProducer<super::TracingContext>>,
    /// Its configuration.
    alone_config: rdkafka::ClientConfig,
    topic: String,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    /// Cancelled when the producer hit a fatal error: it can write nothing
    /// more, and only a new process has a new producer.
    failed: CancellationToken,
}

impl std::fmt::Debug for DeadLetterWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterWriter")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetterWriter {
    /// An idempotent `acks=all` producer for `kafka.dlq_topic`.
    pub fn new(
        settings: &KafkaSettings,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<DeadLetterWriter, super::KafkaSetupError> {
        let config = super::dead_letter_producer_config(settings)?;
        let producer: FutureProducer<super::TracingContext> = config
            .create_with_context(super::TracingContext)
            .map_err(|error| super::KafkaSetupError::Create {
                client: "dead-letter producer",
                reason: settings.redact(&error.to_string()),
            })?;
        Ok(DeadLetterWriter {
            producer,
            alone: OnceLock::new(),
            alone_config: super::alone(config),
            topic: settings.dlq_topic.clone(),
            retry,
            metrics,
            failed: CancellationToken::new(),
        })
    }

    /// Cancelled once the producer failed for good (a librdkafka fatal
    /// error, such as an idempotence sequence the broker refuses): the
    /// service then drains and exits non-zero, and its restart makes a new
    /// producer. Letters not written stay at their source offsets.
    pub fn failed(&self) -> &CancellationToken {
        &self.failed
    }

    /// Raises a librdkafka fatal error in the producer, as a broker's
    /// refused idempotence sequence does (librdkafka's own test hook).
    #[cfg(test)]
    #[allow(unsafe_code)]
    pub(crate) fn raise_fatal_error(&self) {
        let reason = std::ffi::CString::new("out of order sequence").expect("text");
        // SAFETY: the producer is alive (self owns it) and `reason` is a
        // NUL-terminated string that outlives the call, which copies it.
        let raised = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            )
        };
        assert_eq!(
            raised,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        );
    }

    /// The one-letter-a-batch producer, made on first use. `None` (after an
    /// error naming the cause, and with the writer failed, as after a fatal
    /// error) if librdkafka will not make it, which the same configuration
    /// with one more setting does not make likely.
    fn alone_producer(&self) -> Option<&FutureProducer<super::TracingContext>> {
        if let Some(alone) = self.alone.get() {
            return Some(alone);
        }
        match self.alone_config.create_with_context(super::TracingContext) {
            // Two writers may race to make it: one is kept, the other dropped.
            Ok(made) => Some(self.alone.get_or_init(|| made)),
            Err(error) => {
                tracing::error!(
                    error = %error,
                    "Could not make the dead-letter producer that sends one letter a batch; the pod stops."
                );
                self.failed.cancel();
                None
            }
        }
    }

    /// `kafka.dlq_topic`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes until Kafka acknowledges (`true`), or `abandon` fires or the
    /// producer fails for good (`false`: the letter is not written and its
    /// source offset must not be committed).
    pub async fn write(&self, letter: &DeadLetter, abandon: &CancellationToken) -> bool {
        let mut carried = Carried::Whole;
        let mut schedule = self.retry.schedule();
        // Sent through the one-letter-a-batch producer, after a size refusal.
        let mut producer = &self.producer;
        loop {
            if self.failed.is_cancelled() {
                return false;
            }
            let mut record = FutureRecord::to(&self.topic).headers(carried.headers(letter));
            record = record.payload(match carried {
                Carried::Whole => &letter.payload[..],
                Carried::NoValue | Carried::Neither => &[],
            });
            if let (Some(key), Carried::Whole | Carried::NoValue) = (&letter.key, carried) {
                record = record.key(&key[..]);
            }
            let sent = tokio::select! {
                biased;
                _ = abandon.cancelled() => return false,
                sent = producer.send(record, Timeout::After(Duration::from_secs(30))) => sent,
            };
            match sent {
                Ok(_) => {
                    self.metrics
                        .dead_letter_counter(letter.class.as_str())
                        .inc();
                    return true;
                }
                Err((error, _)) if too_large(&error) && std::ptr::eq(producer, &self.producer) => {
                    // The broker judges whole batches: the refusal may be
                    // about the letters batched with this one. Alone, it
                    // is about this letter only.
                    match self.alone_producer() {
                        Some(alone) => producer = alone,
                        None => return false,
                    }
                }
                Err((error, _)) if too_large(&error) && carried != Carried::Neither => {
                    carried = carried.less();
                    tracing::warn!(
                        error = %error,
                        topic = %self.topic,
                        source = %letter.source,
                        offset = letter.offset,
                        value_bytes = letter.payload.len(),
                        key_bytes = letter.key.as_ref().map_or(0, Vec::len),
                        "A dead letter is too large for the dead-letter topic; writing it without its {} (the record stays at its source offset).",
                        carried.left_out()
                    );
                }
                Err((error, _)) => {
                    self.metrics.dead_letter_write_errors.inc();
                    if let Some((code, reason)) = producer.client().fatal_error() {
                        if !self.failed.is_cancelled() {
                            tracing::error!(
                                error = %code,
                                reason = %reason,
                                topic = %self.topic,
                                "The dead-letter producer failed for good (a fatal Kafka client error); the pod stops and its restart makes a new one. Letters not written stay at their source offsets, which are not committed."
                            );
                            self.failed.cancel();
                        }
                        return false;
                    }
                    if matches!(
                        error,
                        KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord)
                    ) {
                        // What a compacted topic answers a record without a
                        // key; compaction would also drop older letters of
                        // the same key. Only the topic's policy cures it.
                        tracing::error!(
                            error = %error,
                            topic = %self.topic,
                            source = %letter.source,
                            offset = letter.offset,
                            "Kafka refuses the dead letter as an invalid record: a compacted dead-letter topic (cleanup.policy=compact) refuses records without a key and drops older letters of a key; give it cleanup.policy=delete. Retrying (the source offset is not committed until it is written)."
                        );
                    } else {
                        tracing::warn!(
                            error = %error,
                            topic = %self.topic,
                            source = %letter.source,
                            offset = letter.offset,
                            "Could not write a dead letter; retrying (the source offset is not committed until it is written)."
                        );
                    }
                    tokio::select! {
                        _ = abandon.cancelled() => return false,
                        _ = tokio::time::sleep(schedule.next_delay()) => {}
                    }
                }
            }
        }
    }
}

/// How much of the original record a dead letter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    /// Key and value.
    Whole,
    /// The key; the value was too large for the topic.
    NoValue,
    /// Neither: even the key was too large.
    Neither,
}

impl Carried {
    /// The next smaller form.
    fn less(self) -> Carried {
        match self {
            Carried::Whole => Carried::NoValue,
            Carried::NoValue | Carried::Neither => Carried::Neither,
        }
    }

    /// What this form leaves out, for the log.
    fn left_out(self) -> &'static str {
        match self {
            Carried::Whole => "nothing",
            Carried::NoValue => "value",
            Carried::Neither => "key and value",
        }
    }

    /// The contract's headers, and one per part left out with its size.
    fn headers(self, letter: &DeadLetter) -> OwnedHeaders {
        let mut out = headers(letter);
        if self != Carried::Whole {
            out = out.insert(Header {
                key: VALUE_OMITTED,
                value: Some(&letter.payload.len().to_string()),
            });
        }
        if let (Some(key), Carried::Neither) = (&letter.key, self) {
            out = out.insert(Header {
                key: KEY_OMITTED,
                value: Some(&key.len().to_string()),
            });
        }
        out
    }
}

/// The header of a dead letter written without the record's value (too
/// large for the dead-letter topic): the value's size in bytes.
pub const VALUE_OMITTED: &str = "pps-value-omitted";
/// The same for a key left out.
pub const KEY_OMITTED: &str = "pps-key-omitted";

/// Whether Kafka refused a record for its size, which no retry cures:
/// librdkafka's own `message.max.bytes`, or the broker's topic limit.
fn too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

/// The contract's headers.
pub fn headers(letter: &DeadLetter) -> OwnedHeaders {
    let reason = one_line(&letter.reason, MAX_REASON_BYTES);
    let partition = letter.source.partition.to_string();
    let offset = letter.offset.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: "pps-error-class",
            value: Some(letter.class.as_str()),
        })
        .insert(Header {
            key: "pps-error-reason",
            value: Some(&reason),
        })
        .insert(Header {
            key: "pps-source-topic",
            value: Some(&*letter.source.topic),
        })
        .insert(Header {
            key: "pps-source-partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "pps-source-offset",
            value: Some(&offset),
        });
    if let Some(store) = store_id(&letter.payload) {
        headers = headers.insert(Header {
            key: "pps-store-id",
            value: Some(&store),
        });
    }
    if let Some(status) = letter.target_status {
        headers = headers.insert(Header {
            key: "pps-target-status",
            value: Some(&status.to_string()),
        });
    }
    if let Some(from) = &letter.replayed_from {
        headers = headers.insert(Header {
            key: REPLAYED_FROM,
            value: Some(&**from),
        });
    }
    headers
}

/// The header a replayed record gains, `<dlq topic>/<partition>/<offset>`,
/// and the dead letter of a replayed record keeps.
pub const REPLAYED_FROM: &str = "pps-replayed-from";

/// The longest `pps-replayed-from` carried on (a topic name is at most 249
/// characters, so a real one is far shorter).
const MAX_REPLAYED_FROM_BYTES: usize = 512;

/// A record's `pps-replayed-from` header, when it holds one-line UTF-8 of
/// at most 512 bytes (anything else is not ours and is not carried on); the
/// last one, the latest replay, when a record was replayed more than once.
pub fn replayed_from<H: Headers>(headers: &H) -> Option<Box<str>> {
    headers
        .iter()
        .filter(|header| header.key == REPLAYED_FROM)
        .filter_map(|header| std::str::from_utf8(header.value?).ok())
        .filter(|value| {
            !value.is_empty()
                && value.len() <= MAX_REPLAYED_FROM_BYTES
                && !value.chars().any(char::is_control)
        })
        .last()
        .map(Box::from)
}

/// The event's `store_id`, for `pps-store-id`, when the value is a JSON
/// object whose `store_id` is what the event schema allows (a string of 1 to
/// 64 characters without control characters). A store id names a shop, not a
/// person, so it may travel in a header; it tells the POS team which store's
/// tills sent the event. Read even from events that broke another rule, since
/// those are the ones the POS team has to find.
pub fn store_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct StoreOnly<'a> {
        #[serde(borrow)]
        store_id: Option<std::borrow::Cow<'a, str>>,
    }
    // An object only: serde would read a JSON array into the struct by position.
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let parsed: StoreOnly<'_> = serde_json::from_slice(payload).ok()?;
    let store = parsed.store_id?;
    let length = store.chars().count();
    ((1..=64).contains(&length) && !store.chars().any(char::is_control)).then(|| store.into_owned())
}

/// Line breaks and control characters become spaces; cut to `max` bytes on a
/// character boundary. Unicode's line and paragraph separators (U+2028,
/// U+2029) are line breaks too: not control characters, but log viewers and
/// JavaScript break lines at them.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect();
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn reasons_are_one_line_of_at_most_1_kb_on_a_character_boundary() {
        assert_eq!(one_line("a\nb\r\tc", 100), "a b  c");
        assert_eq!(one_line("a\u{2028}b\u{2029}c\u{85}d", 100), "a b c d");
        let long = "é".repeat(600); // 1200 bytes
        let cut = one_line(&long, MAX_REASON_BYTES);
        assert!(cut.len() <= MAX_REASON_BYTES && cut.len() >= MAX_REASON_BYTES - 1);
    }

    #[test]
    fn the_store_id_is_read_from_any_json_object_that_has_a_valid_one() {
        assert_eq!(
            store_id(br#"{"store_id":"S-0042","total":"oops"}"#),
            Some("S-0042".to_owned())
        );
        assert_eq!(
            store_id(br#"{"store_id":"Caf\u00e9 4"}"#),
            Some("Café 4".to_owned())
        );
        assert_eq!(store_id(b"not json"), None);
        assert_eq!(store_id(br#"{"total":"1"}"#), None);
        assert_eq!(store_id(br#"{"store_id":17}"#), None);
        assert_eq!(store_id(br#"{"store_id":""}"#), None);
        assert_eq!(store_id(br#"{"store_id":"a\nb"}"#), None);
        let too_long = format!(r#"{{"store_id":"{}"}}"#, "s".repeat(65));
        assert_eq!(store_id(too_long.as_bytes()), None);
        assert_eq!(store_id(br#"["store_id"]"#), None);
    }

    #[test]
    fn a_dead_letter_names_its_store_when_the_event_has_one() {
        let letter = DeadLetter {
            key: Some(b"CRM-1".to_vec()),
            payload: br#"{"store_id":"S7","customer":{"third_party_id":"CRM-1"}}"#.to_vec(),
            class: DeadLetterClass::SchemaViolation,
            reason: "total: required".into(),
            ..not_json_letter()
        };
        let headers = headers(&letter);
        let found: Vec<(String, Vec<u8>)> = (0..headers.count())
            .map(|i| {
                let h = headers.get(i);
                (h.key.to_owned(), h.value.unwrap_or_default().to_vec())
            })
            .collect();
        assert!(
            found.contains(&("pps-store-id".to_owned(), b"S7".to_vec())),
            "{found:?}"
        );
        // Never the customer id.
        assert!(found
            .iter()
            .all(|(_, v)| !String::from_utf8_lossy(v).contains("CRM-1")));
    }

    #[test]
    fn every_class_is_written_as_the_contract_names_it() {
        use DeadLetterClass::*;
        let all = [
            InvalidJson,
            SchemaViolation,
            UnsupportedVersion,
            TargetRejected,
            RetriesExhausted,
            ProfileNotFound,
        ];
        // As contract section 8 names them.
        let contract = [
            "invalid_json",
            "schema_violation",
            "unsupported_version",
            "target_rejected",
            "retries_exhausted",
            "profile_not_found",
        ];
        assert_eq!(all.map(DeadLetterClass::as_str), contract);
        assert_eq!(ERROR_CLASSES, contract);
        for class in [
            ErrorClass::InvalidJson,
            ErrorClass::SchemaViolation,
            ErrorClass::UnsupportedVersion,
        ] {
            assert_eq!(DeadLetterClass::from(class).as_str(), class.as_str());
        }
    }

    #[test]
    fn headers_carry_class_reason_provenance_and_status() {
        let letter = DeadLetter {
            key: None,
            payload: vec![],
            class: DeadLetterClass::TargetRejected,
            reason: "Target answered 400".into(),
            source: TopicPartition {
                topic: "pos.purchases".into(),
                partition: 3,
            },
            offset: 42,
            target_status: Some(400),
            replayed_from: None,
        };
        let headers = headers(&letter);
        let got: Vec<(String, String)> = (0..headers.count())
            .map(|i| {
                let h = headers.get(i);
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        let expected = [
            ("pps-error-class", "target_rejected"),
            ("pps-error-reason", "Target answered 400"),
            ("pps-source-topic", "pos.purchases"),
            ("pps-source-partition", "3"),
            ("pps-source-offset", "42"),
            ("pps-target-status", "400"),
        ];
        assert_eq!(
            got,
            expected.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
    }

    /// The letter of offset 1 of `pos.purchases` partition 0, which was not JSON.
    fn not_json_letter() -> DeadLetter {
        DeadLetter {
            key: None,
            payload: b"{".to_vec(),
            class: DeadLetterClass::InvalidJson,
            reason: "not JSON".into(),
            source: TopicPartition {
                topic: "pos.purchases".into(),
                partition: 0,
            },
            offset: 1,
            target_status: None,
            replayed_from: None,
        }
    }

    /// A writer to `topic` on `cluster`, retrying every 50 to 200 ms.
    fn writer_to(
        cluster: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        topic: &str,
    ) -> (KafkaSettings, DeadLetterWriter) {
        let settings = KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            dlq_topic: topic.into(),
            ..KafkaSettings::default()
        };
        let retry = RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        };
        let writer =
            DeadLetterWriter::new(&settings, retry, Arc::new(Metrics::new())).expect("writer");
        (settings, writer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_letter_too_large_for_the_topic_is_written_without_what_does_not_fit() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("dlq", 1, 1).expect("topic");
        let (settings, writer) = writer_to(&cluster, "dlq");
        // Over librdkafka's default message.max.bytes (1,000,000).
        let big = vec![b'x'; 1_200_000];
        let letter = |key: Vec<u8>| DeadLetter {
            key: Some(key),
            payload: big.clone(),
            class: DeadLetterClass::InvalidJson,
            reason: "not JSON".into(),
            source: TopicPartition {
                topic: "pos.purchases".into(),
                partition: 2,
            },
            offset: 7,
            target_status: None,
            replayed_from: None,
        };
        let small_key = letter(b"CRM-1".to_vec());
        let big_key = letter(big.clone());
        for one in [&small_key, &big_key] {
            let written = tokio::time::timeout(
                Duration::from_secs(20),
                writer.write(one, &CancellationToken::new()),
            )
            .await
            .expect("a refusal for size is not retried forever");
            assert!(written);
        }
        let inspector = crate::kafka::inspect::Inspector::new(&settings.brokers, &[]).unwrap();
        let stored = tokio::task::spawn_blocking(move || inspector.read_all("dlq"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].key.as_deref(), Some(&b"CRM-1"[..]));
        assert!(stored[0].value.is_empty());
        assert_eq!(stored[0].headers[VALUE_OMITTED], "1200000");
        assert!(!stored[0].headers.contains_key(KEY_OMITTED));
        assert_eq!(stored[1].key, None);
        assert_eq!(stored[1].headers[VALUE_OMITTED], "1200000");
        assert_eq!(stored[1].headers[KEY_OMITTED], "1200000");
        for letter in &stored {
            assert_eq!(letter.headers["pps-error-class"], "invalid_json");
            assert_eq!(letter.headers["pps-source-partition"], "2");
            assert_eq!(letter.headers["pps-source-offset"], "7");
        }
    }

    /// Letters `0..count` of `pos.purchases` partition 0, each with its own
    /// key, written at once to a fresh mock cluster that refuses its first
    /// `refusals` produce requests as too large; how they were stored.
    async fn written_after_size_refusals(
        refusals: usize,
        count: i64,
    ) -> Vec<crate::kafka::inspect::StoredRecord> {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("dlq", 1, 1).expect("topic");
        let (_, writer) = writer_to(&cluster, "dlq");
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; refusals],
        );
        let writer = Arc::new(writer);
        let mut writing = tokio::task::JoinSet::new();
        for offset in 0..count {
            let writer = writer.clone();
            writing.spawn(async move {
                let letter = DeadLetter {
                    key: Some(format!("CRM-{offset}").into_bytes()),
                    payload: vec![b'x'; 400],
                    offset,
                    ..not_json_letter()
                };
                writer.write(&letter, &CancellationToken::new()).await
            });
        }
        while let Some(written) = tokio::time::timeout(Duration::from_secs(30), writing.join_next())
            .await
            .expect("written in time")
        {
            assert!(written.expect("no panic"));
        }
        let inspector =
            crate::kafka::inspect::Inspector::new(&cluster.bootstrap_servers(), &[]).unwrap();
        tokio::task::spawn_blocking(move || inspector.read_all("dlq"))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_refused_for_its_size_is_written_letter_by_letter_whole() {
        // The broker refuses the first produce request as too large, as a
        // topic whose max.message.bytes is below the batch's size does:
        // the batch, not any one letter in it, was too large.
        let stored = written_after_size_refusals(1, 20).await;
        assert_eq!(stored.len(), 20);
        for letter in &stored {
            assert_eq!(letter.value.len(), 400, "{:?}", letter.headers);
            assert!(!letter.headers.contains_key(VALUE_OMITTED));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_letter_refused_for_its_size_even_alone_is_written_without_its_value() {
        // Refused in its batch, and again alone: the letter itself is too large.
        let stored = written_after_size_refusals(2, 1).await;
        assert_eq!(stored.len(), 1);
        assert!(stored[0].value.is_empty());
        assert_eq!(stored[0].headers[VALUE_OMITTED], "400");
        assert_eq!(stored[0].key.as_deref(), Some(&b"CRM-0"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_dead_letter_topic_is_waited_for_never_created() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        let (settings, writer) = writer_to(&cluster, "missing.dlq");
        let letter = not_json_letter();
        let abandon = CancellationToken::new();
        let stop = abandon.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.cancel();
        });
        assert!(
            !writer.write(&letter, &abandon).await,
            "written to a topic that does not exist"
        );
        let inspector = crate::kafka::inspect::Inspector::new(&settings.brokers, &[]).unwrap();
        // The inspector is a consumer: asking about the topic creates none.
        let topics = tokio::task::spawn_blocking(move || inspector.partitions("missing.dlq"))
            .await
            .unwrap();
        assert!(
            topics.is_err() || topics == Ok(0),
            "the topic was created: {topics:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fatal_producer_error_fails_the_writer_instead_of_retrying_forever() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster
            .create_topic("pos.purchases.dlq", 1, 1)
            .expect("topic");
        let (_, writer) = writer_to(&cluster, "pos.purchases.dlq");
        let letter = not_json_letter();
        let abandon = CancellationToken::new();
        assert!(
            writer.write(&letter, &abandon).await,
            "the first is written"
        );
        // What an idempotent producer gets when the broker refuses its
        // sequence for good: no retry of this producer can succeed.
        writer.raise_fatal_error();
        let written =
            tokio::time::timeout(Duration::from_secs(20), writer.write(&letter, &abandon))
                .await
                .expect("the writer gave up instead of retrying a dead producer");
        assert!(!written, "nothing can be written after a fatal error");
        assert!(writer.failed().is_cancelled(), "the service is told");
        // Later letters are refused at once.
        assert!(!writer.write(&letter, &abandon).await);
    }

    #[test]
    fn the_latest_well_formed_replay_mark_is_carried_on() {
        let of = |pairs: &[(&str, &[u8])]| {
            let headers = pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(*value),
                })
            });
            replayed_from(&headers).map(String::from)
        };
        assert_eq!(of(&[("traceparent", b"x")]), None);
        assert_eq!(
            of(&[(REPLAYED_FROM, b"dlq/0/1"), (REPLAYED_FROM, b"dlq/0/9")]).as_deref(),
            Some("dlq/0/9")
        );
        let long = vec![b'a'; MAX_REPLAYED_FROM_BYTES + 1];
        for bad in [&b""[..], b"\xff\xfe", b"a\nb", &long] {
            assert_eq!(of(&[(REPLAYED_FROM, bad)]), None, "{bad:?}");
            assert_eq!(
                of(&[(REPLAYED_FROM, b"dlq/1/2"), (REPLAYED_FROM, bad)]).as_deref(),
                Some("dlq/1/2")
            );
        }
        let letter = DeadLetter {
            replayed_from: Some("dlq/0/9".into()),
            ..not_json_letter()
        };
        let written = headers(&letter);
        let last = written.get(written.count() - 1);
        assert_eq!(
            (last.key, last.value),
            (REPLAYED_FROM, Some(&b"dlq/0/9"[..]))
        );
    }
}
