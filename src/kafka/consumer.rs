//! The consumer: a group member with the cooperative-sticky assignor and no
//! automatic offset handling, polled on its own thread. Records are parsed
//! and mapped there (off the coordinator), then handed over through a bounded
//! channel, in batches of what the client had ready: waking the coordinator
//! (a futex call here, a parked runtime thread there) once per batch instead
//! of once per record. Rebalance callbacks run on this thread too: a revoke asks the
//! coordinator to drain the partitions and commits what it answers before
//! the partitions go, so a partition no longer owned is never committed.

use super::{ConsumerEvent, Record, ReportedOffsets, TopicPartition};
use crate::event::{ErrorClass, EventError};
use crate::mapping::{Decision, Mapping};
use crate::ops::config::Settings;
use crate::ops::metrics::{Metrics, RebalanceKind, RebalanceLabels};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The dead-letter reason of a record without a value (a tombstone, as a
/// compacting producer writes to delete a key): no event to read.
pub const TOMBSTONE: &str = "the record has no value (a tombstone): there is no event to read";

/// The most records handed over at once. A batch is what the client had
/// ready when it was polled: under a backlog, this many; a record arriving
/// alone goes alone, at once.
pub const HANDOVER_BATCH: usize = 64;

/// The consumer type the service uses.
pub type PipelineConsumer = BaseConsumer<PipelineContext>;

/// Callbacks from librdkafka: logs, rebalances, commit results, statistics.
pub struct PipelineContext {
    events: mpsc::Sender<ConsumerEvent>,
    /// How long a revoke may wait for the coordinator's drain.
    revoke_wait: Duration,
    assignment_changed: AtomicBool,
    /// Set once the coordinator is gone: the close's revoke asks nobody.
    closing: AtomicBool,
    /// Set by every client error: the polling loop then asks whether the
    /// client is dead (a fatal error).
    error_seen: AtomicBool,
    /// Set when a commit was given up while its blocking call still holds
    /// the consumer: closing then need not wait for that clone.
    commit_abandoned: AtomicBool,
    metrics: Arc<Metrics>,
    /// Records read but not handed over yet (the batch being gathered).
    /// Every other event this thread sends goes after them, so the
    /// coordinator hears of a revoke only after every record read before it.
    held: Mutex<Vec<Record>>,
}

impl PipelineContext {
    /// Says that a commit was given up while its blocking call still runs
    /// (and holds a clone of the consumer): the polling thread then ends
    /// without waiting for that clone, and the process without the close.
    pub fn abandon_commit(&self) {
        self.commit_abandoned.store(true, Ordering::Release);
    }

    /// Adds a record to the batch being gathered; how many it holds now.
    fn hold(&self, record: Record) -> usize {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.push(record);
        held.len()
    }

    /// Whether records wait to be handed over.
    fn holds_records(&self) -> bool {
        !self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Hands the gathered records over; false when the coordinator is gone.
    fn hand_over_held(&self) -> bool {
        let records =
            std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        records.is_empty() || self.send_now(ConsumerEvent::Records(records))
    }

    /// Sends an event after the records gathered before it.
    fn send(&self, event: ConsumerEvent) -> bool {
        self.hand_over_held() && self.send_now(event)
    }

    /// Sends an event now, waiting while the channel is full; false when
    /// the coordinator is gone. Trying first spares the waiting path's
    /// set-up when there is room, as there nearly always is.
    fn send_now(&self, event: ConsumerEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            // Callbacks normally run on the consumer thread, outside the
            // async runtime, where waiting is right; never block inside it.
            Err(mpsc::error::TrySendError::Full(event)) => {
                tokio::runtime::Handle::try_current().is_err()
                    && self.events.blocking_send(event).is_ok()
            }
        }
    }

    fn count_rebalance(&self, kind: RebalanceKind) {
        self.metrics
            .rebalances
            .get_or_create(&RebalanceLabels { kind })
            .inc();
    }
}

impl ClientContext for PipelineContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        super::log_to_tracing(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "Kafka client error: {reason}");
        self.error_seen.store(true, Ordering::Release);
    }

    fn stats(&self, statistics: Statistics) {
        let mut marks = Vec::new();
        for (name, topic) in &statistics.topics {
            let topic_name: Arc<str> = Arc::from(name.as_str());
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.hi_offset >= 0 && partition.fetch_state != "none" {
                    marks.push((
                        TopicPartition {
                            topic: topic_name.clone(),
                            partition: *id,
                        },
                        ReportedOffsets {
                            high: partition.hi_offset,
                            fetching: (partition.next_offset >= 0).then_some(partition.next_offset),
                        },
                    ));
                }
            }
        }
        if !marks.is_empty() {
            // Metrics only: never block for them.
            let _ = self.events.try_send(ConsumerEvent::Offsets(marks));
        }
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = partitions_of(list);
        let lost = consumer.assignment_lost();
        self.count_rebalance(if lost {
            RebalanceKind::Lost
        } else {
            RebalanceKind::Revoke
        });
        if self.closing.load(Ordering::Acquire) {
            // Shutting down: the coordinator committed what was accepted.
            return;
        }
        tracing::info!(
            partitions = %describe(&partitions),
            lost,
            "Partitions revoked; draining them before they go."
        );
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if !self.send(ConsumerEvent::Revoked {
            partitions,
            lost,
            reply,
        }) {
            return;
        }
        let Ok(offsets) = answer.recv_timeout(self.revoke_wait) else {
            tracing::warn!("The drain of revoked partitions did not answer in time; committing nothing for them.");
            return;
        };
        if lost || offsets.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (tp, offset) in &offsets {
            if let Err(error) =
                list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
            {
                tracing::warn!(error = %error, partition = %tp, "Cannot add an offset to commit.");
            }
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => tracing::info!(partitions = offsets.len(), "Committed revoked partitions."),
            Err(error) => {
                tracing::warn!(error = %error, "Could not commit revoked partitions; their new owner re-reads from the last commit.")
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                self.count_rebalance(RebalanceKind::Assign);
                // librdkafka keeps a pause across revoke and re-assign; the
                // coordinator starts every assigned partition unpaused, so
                // the client must too (before the coordinator hears of it).
                if let Err(error) = consumer.resume(list) {
                    tracing::warn!(error = %error, "Could not resume newly assigned partitions.");
                }
                tracing::info!(partitions = %describe(&partitions), "Partitions assigned.");
                self.send(ConsumerEvent::Assigned(partitions));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::error!(error = %error, "Rebalance failed."),
        }
        self.assignment_changed.store(true, Ordering::Release);
    }
}

/// A group member that joins nothing: the coordinator's tests drive it
/// with their own events, and its pauses and commits go to a real broker.
#[cfg(test)]
pub(crate) fn detached(settings: &crate::ops::config::KafkaSettings) -> PipelineConsumer {
    let (events, _) = mpsc::channel(1);
    let context = PipelineContext {
        events,
        revoke_wait: Duration::from_secs(1),
        assignment_changed: AtomicBool::new(false),
        closing: AtomicBool::new(true),
        error_seen: AtomicBool::new(false),
        commit_abandoned: AtomicBool::new(false),
        metrics: Arc::new(Metrics::new()),
        held: Mutex::default(),
    };
    super::consumer_config(settings)
        .expect("a consumer configuration for the tests")
        .create_with_context(context)
        .expect("a consumer for the tests")
}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: Arc::from(e.topic()),
            partition: e.partition(),
        })
        .collect()
}

fn describe(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The running consumer thread.
pub struct ConsumerThread {
    /// The consumer, shared with the coordinator for commits and pausing.
    pub consumer: Arc<PipelineConsumer>,
    /// Cancelled when the polling thread ends, whatever ended it.
    pub stopped: tokio_util::sync::CancellationToken,
    fetching: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ConsumerThread {
    /// Creates the group member, subscribes, and starts polling.
    pub fn start(
        settings: &Settings,
        mapping: Arc<Mapping>,
        events: mpsc::Sender<ConsumerEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<ConsumerThread, super::KafkaSetupError> {
        let kafka = &settings.kafka;
        let config = super::consumer_config(kafka)?;
        let context = PipelineContext {
            events: events.clone(),
            revoke_wait: settings.delivery.drain_timeout() + Duration::from_secs(2),
            assignment_changed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            error_seen: AtomicBool::new(false),
            commit_abandoned: AtomicBool::new(false),
            metrics,
            held: Mutex::default(),
        };
        let consumer: PipelineConsumer = config.create_with_context(context).map_err(|error| {
            super::KafkaSetupError::Create {
                client: "Kafka consumer",
                reason: kafka.redact(&error.to_string()),
            }
        })?;
        let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|error| super::KafkaSetupError::Subscribe {
                topics: kafka.topics.clone(),
                reason: error.to_string(),
            })?;
        let consumer = Arc::new(consumer);
        let fetching = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = tokio_util::sync::CancellationToken::new();
        let worker = PollLoop {
            consumer: consumer.clone(),
            mapping,
            events,
            fetching: fetching.clone(),
            stop: stop.clone(),
            topics: kafka.topics.clone(),
            stopped: stopped.clone(),
        };
        let guard = stopped.clone().drop_guard();
        let thread = std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || {
                // Cancelled when the loop ends, by a panic too.
                let _stopped = guard;
                worker.run();
            })
            .map_err(|error| super::KafkaSetupError::Thread(error.to_string()))?;
        Ok(ConsumerThread {
            consumer,
            stopped,
            fetching,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops handing over records and pauses every assigned partition
    /// (rebalance callbacks are still served).
    pub fn stop_fetching(&self) {
        self.fetching.store(false, Ordering::Release);
    }

    /// Calls [`ConsumerThread::stop_fetching`] when `token` is cancelled.
    pub fn stop_fetching_on(&self, token: tokio_util::sync::CancellationToken) {
        let fetching = self.fetching.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            fetching.store(false, Ordering::Release);
        });
    }

    /// Leaves the group and ends the thread. The caller must have dropped its
    /// own clones of the consumer so the last one closes on the thread.
    pub fn shut_down(mut self) {
        self.consumer
            .context()
            .closing
            .store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        drop(self.consumer);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("The consumer thread panicked while closing.");
            }
        }
    }
}

struct PollLoop {
    consumer: Arc<PipelineConsumer>,
    mapping: Arc<Mapping>,
    events: mpsc::Sender<ConsumerEvent>,
    fetching: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    topics: Vec<String>,
    /// Cancelled as soon as the loop ends (a fatal error, or the
    /// coordinator gone), so the coordinator drains without waiting for
    /// the close.
    stopped: tokio_util::sync::CancellationToken,
}

impl PollLoop {
    fn run(self) {
        let mut topic_names: foldhash::HashMap<String, Arc<str>> = foldhash::HashMap::default();
        let mut paused_all = false;
        let mut share_due: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            if self
                .consumer
                .context()
                .assignment_changed
                .swap(false, Ordering::AcqRel)
            {
                share_due = Some(Instant::now());
                paused_all = false;
            }
            if share_due.is_some_and(|at| at <= Instant::now()) {
                share_due = match self.share() {
                    Some(event) => {
                        if self.events.blocking_send(event).is_err() {
                            break;
                        }
                        None
                    }
                    None => Some(Instant::now() + Duration::from_secs(1)),
                };
            }
            let fetching = self.fetching.load(Ordering::Acquire);
            if !fetching && !paused_all {
                if let Ok(assignment) = self.consumer.assignment() {
                    let _ = self.consumer.pause(&assignment);
                }
                paused_all = true;
            }
            // While records are held, only what the client has ready is
            // taken: the batch goes as soon as nothing more is.
            let context = self.consumer.context();
            let wait = if context.holds_records() {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            let polled = self.consumer.poll(wait);
            if let Some(Err(error)) = &polled {
                tracing::warn!(error = %error, "Kafka consumer error.");
                self.consumer
                    .context()
                    .error_seen
                    .store(true, Ordering::Release);
            }
            if self.is_dead() {
                break;
            }
            match polled {
                None | Some(Err(_)) => {
                    if !context.hand_over_held() {
                        break;
                    }
                }
                Some(Ok(message)) => {
                    if !fetching {
                        // Not tracked, so never committed: its next owner reads it.
                        continue;
                    }
                    // Looked up by `&str`: no allocation per record.
                    let topic = match topic_names.get(message.topic()) {
                        Some(topic) => topic.clone(),
                        None => {
                            let topic: Arc<str> = Arc::from(message.topic());
                            topic_names.insert(message.topic().to_owned(), topic.clone());
                            topic
                        }
                    };
                    let value = message.payload();
                    let decision = match value {
                        Some(bytes) => self.mapping.decide(bytes),
                        None => Decision::DeadLetter(EventError {
                            class: ErrorClass::InvalidJson,
                            reason: TOMBSTONE.to_owned(),
                        }),
                    };
                    let payload = value.unwrap_or_default().to_vec();
                    let record = Record {
                        tp: TopicPartition {
                            topic,
                            partition: message.partition(),
                        },
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload,
                        timestamp_ms: message.timestamp().to_millis(),
                        decision,
                        trace_context: if crate::ops::traces::enabled() {
                            super::trace_context::extract(message.headers()).map(Box::new)
                        } else {
                            None
                        },
                        replayed_from: message
                            .headers()
                            .and_then(super::dead_letter::replayed_from),
                    };
                    if context.hold(record) >= HANDOVER_BATCH && !context.hand_over_held() {
                        break;
                    }
                }
            }
        }
        self.stopped.cancel();
        // Wait for the coordinator to drop its clone, so the consumer closes
        // (and leaves the group) here, outside the async runtime; not for a
        // commit given up, whose call may never return.
        let deadline = Instant::now() + Duration::from_secs(5);
        let abandoned = &self.consumer.context().commit_abandoned;
        while Arc::strong_count(&self.consumer) > 1
            && !abandoned.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.consumer.client().fatal_error().is_some() {
            // A client with a fatal error never finishes closing (librdkafka's
            // main thread waits, spinning, for a group exit that cannot
            // come): it is left open, and the process ends without it.
            std::mem::forget(self.consumer);
        }
    }

    /// Whether the client had a fatal error (a static member fenced by
    /// another with its `group.instance.id`, for one): it can do nothing more,
    /// so the loop ends, the coordinator drains and commits what it can, and
    /// the process exits non-zero for its supervisor to start it again
    /// rather than staying up, ready and idle. Asked only after an error.
    fn is_dead(&self) -> bool {
        // A load per record; the flag is cleared only when an error set it.
        let error_seen = &self.consumer.context().error_seen;
        if !error_seen.load(Ordering::Acquire) {
            return false;
        }
        error_seen.store(false, Ordering::Release);
        match self.consumer.client().fatal_error() {
            Some((code, reason)) => {
                tracing::error!(code = ?code, "Fatal Kafka client error, the consumer stops: {reason}");
                true
            }
            None => false,
        }
    }

    /// Partitions of all subscribed topics, from metadata.
    fn share(&self) -> Option<ConsumerEvent> {
        let mut total = 0;
        for topic in &self.topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()?;
            total += metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .map(|t| t.partitions().len())
                .sum::<usize>();
        }
        (total > 0).then_some(ConsumerEvent::PartitionCount(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::config::KafkaSettings;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use rdkafka::types::RDKafkaRespErr;

    /// A consumer thread of `group` on `cluster`, with the default mapping,
    /// and what it hands over.
    fn consumer_on(
        cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        group: &str,
    ) -> (ConsumerThread, mpsc::Receiver<ConsumerEvent>) {
        let settings = Settings {
            kafka: KafkaSettings {
                brokers: cluster.bootstrap_servers(),
                group_id: group.into(),
                ..KafkaSettings::default()
            },
            ..Settings::default()
        };
        let (events, received) = mpsc::channel(1024);
        let thread = ConsumerThread::start(
            &settings,
            Arc::new(Mapping::default()),
            events,
            Arc::new(Metrics::new()),
        )
        .expect("consumer");
        (thread, received)
    }

    #[test]
    // librdkafka's test hook has no safe binding; the test's only unsafe call.
    #[allow(unsafe_code)]
    fn a_fatal_client_error_ends_the_polling_thread() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("pos.purchases", 1, 1).expect("topic");
        let (thread, _keep) = consumer_on(&cluster, "fatal-error-test");
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !thread.stopped.is_cancelled(),
            "polls while the client is well"
        );
        // librdkafka's own test hook: the error a fenced static member gets.
        let reason = std::ffi::CString::new("fenced by another instance").expect("text");
        // SAFETY: the client is alive (the thread holds it) and `reason` is a
        // NUL-terminated string that outlives the call, which copies it.
        let raised = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                thread.consumer.client().native_ptr(),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID,
                reason.as_ptr(),
            )
        };
        assert_eq!(raised, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !thread.stopped.is_cancelled() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            thread.stopped.is_cancelled(),
            "the polling thread still runs a dead client"
        );
        thread.shut_down();
    }

    /// A one-broker mock cluster whose topic `pos.purchases` holds what
    /// `write` produced.
    fn cluster_holding(
        write: impl FnOnce(&BaseProducer),
    ) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("pos.purchases", 1, 1).expect("topic");
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("producer");
        write(&producer);
        producer.flush(Duration::from_secs(10)).expect("written");
        cluster
    }

    /// A record as the polling loop would hold it.
    fn held_record(offset: i64) -> Record {
        Record {
            tp: TopicPartition {
                topic: Arc::from("pos.purchases"),
                partition: 0,
            },
            offset,
            key: None,
            payload: Vec::new(),
            timestamp_ms: None,
            decision: Decision::Skip(crate::mapping::SkipReason::NoIdentity),
            trace_context: None,
            replayed_from: None,
        }
    }

    #[test]
    fn an_event_sent_while_records_are_held_goes_after_them() {
        let (events, mut received) = mpsc::channel(16);
        let context = PipelineContext {
            events,
            revoke_wait: Duration::from_secs(1),
            assignment_changed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            error_seen: AtomicBool::new(false),
            commit_abandoned: AtomicBool::new(false),
            metrics: Arc::new(Metrics::new()),
            held: Mutex::default(),
        };
        assert_eq!(context.hold(held_record(7)), 1);
        assert_eq!(context.hold(held_record(8)), 2);
        assert!(received.try_recv().is_err(), "held, not sent yet");
        // What a rebalance callback sends: the held records go first.
        assert!(context.send(ConsumerEvent::PartitionCount(3)));
        match received.try_recv() {
            Ok(ConsumerEvent::Records(records)) => {
                let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
                assert_eq!(offsets, [7, 8]);
            }
            other => panic!("expected the held records first, got {other:?}"),
        }
        assert!(matches!(
            received.try_recv(),
            Ok(ConsumerEvent::PartitionCount(3))
        ));
        assert!(!context.holds_records());
        assert!(context.hand_over_held(), "nothing held: nothing to send");
        assert!(received.try_recv().is_err());
    }

    #[test]
    fn a_backlog_is_handed_over_in_batches_in_order_and_whole() {
        const RECORDS: i64 = 500;
        let cluster = cluster_holding(|producer| {
            for n in 0..RECORDS {
                let value = format!("not an event {n}");
                producer
                    .send(BaseRecord::<str, str>::to("pos.purchases").payload(&value))
                    .expect("queued");
            }
        });
        let (thread, mut received) = consumer_on(&cluster, "batch-test");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut offsets = Vec::new();
        let mut batches = Vec::new();
        while (offsets.len() as i64) < RECORDS {
            assert!(
                Instant::now() < deadline,
                "{} of {RECORDS} records handed over",
                offsets.len()
            );
            match received.try_recv() {
                Ok(ConsumerEvent::Records(records)) => {
                    batches.push(records.len());
                    offsets.extend(records.iter().map(|r| r.offset));
                }
                Ok(_) | Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(error) => panic!("{error}"),
            }
        }
        thread.shut_down();
        assert_eq!(offsets, (0..RECORDS).collect::<Vec<_>>());
        assert!(batches.iter().all(|&n| (1..=HANDOVER_BATCH).contains(&n)));
        // The records were all there when the consumer started: they came
        // in full batches, not one by one.
        assert!(
            batches.len() < offsets.len() / 4,
            "{} batches for {} records: {batches:?}",
            batches.len(),
            offsets.len()
        );
    }

    #[test]
    fn a_tombstone_is_dead_lettered_as_what_it_is() {
        let cluster = cluster_holding(|producer| {
            producer
                .send(BaseRecord::<str, [u8]>::to("pos.purchases").key("CRM-1"))
                .expect("queued");
        });
        let (thread, mut received) = consumer_on(&cluster, "tombstone-test");
        let deadline = Instant::now() + Duration::from_secs(20);
        let record = loop {
            assert!(Instant::now() < deadline, "the tombstone was not read");
            match received.try_recv() {
                Ok(ConsumerEvent::Records(mut records)) => break records.remove(0),
                Ok(_) | Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(error) => panic!("{error}"),
            }
        };
        thread.shut_down();
        match record.decision {
            Decision::DeadLetter(error) => {
                assert_eq!(error.class, ErrorClass::InvalidJson);
                assert_eq!(error.reason, TOMBSTONE);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(record.key.as_deref(), Some(&b"CRM-1"[..]));
    }
}
