//! The coordinator driven by hand: the test plays the consumer thread
//! (assignments, records, revokes) against a real coordinator task, a real
//! broker (librdkafka's mock cluster, for pauses, commits and dead letters)
//! and the Target simulator over HTTP. Rebalance orders that a live group
//! produces only under load (a revoke answered late, a partition assigned
//! again meanwhile) are played here exactly.

use super::*;
use crate::delivery::gate::{RateShare, SendGate};
use crate::kafka::TopicPartition;
use crate::mapping::Mapping;
use crate::ops::config::{KafkaSettings, TargetSettings, TimeOrder};
use crate::retry::RetryPolicy;
use crate::target::TargetClient;
use pps_target_simulator::{
    Existence, Failure, Faults, Simulator, SimulatorConfig, SimulatorHandle,
};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::fixtures::{one_update, record, record_of, sale, settings, tp, TOPIC};

/// A coordinator task and what it talks to.
struct Harness {
    cluster: MockCluster<'static, DefaultProducerContext>,
    sim: SimulatorHandle,
    events: mpsc::Sender<ConsumerEvent>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    consumer_stopped: CancellationToken,
    task: tokio::task::JoinHandle<Result<Drained, Halted>>,
    mapping: Mapping,
    dead_letters: Arc<DeadLetterWriter>,
}

/// What a coordinator built for a test talks to.
struct Parts {
    cluster: MockCluster<'static, DefaultProducerContext>,
    sim: SimulatorHandle,
    events: mpsc::Sender<ConsumerEvent>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    dead_letters: Arc<DeadLetterWriter>,
}

/// A coordinator (not running) over a fresh mock cluster and simulator.
async fn build(settings: CoordinatorSettings, faults: Faults) -> (Coordinator, Parts) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 2, 1).expect("topic");
    cluster
        .create_topic("pos.purchases.dlq", 1, 1)
        .expect("topic");
    let mut config = SimulatorConfig::new("acme");
    config.faults = faults;
    // Every customer has a profile: these tests are about delivery, not existence.
    config.existence = Existence::all_known();
    let sim = Simulator::start("127.0.0.1:0".parse().expect("address"), config)
        .await
        .expect("simulator");
    let kafka = KafkaSettings {
        brokers: cluster.bootstrap_servers(),
        group_id: "coordinator-tests".into(),
        ..KafkaSettings::default()
    };
    let target = TargetSettings {
        client_code: "acme".into(),
        base_url: sim.base_url(),
        timeout_ms: 2_000,
        ..TargetSettings::default()
    };
    let retry = RetryPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(50),
    };
    let metrics = Arc::new(Metrics::new());
    let gate = Arc::new(SendGate::new(RateShare::of_group(1e6, 1000, 0, 1), retry));
    let health = Arc::new(Health::new(gate.readiness()));
    let updates = UpdateAttempts {
        client: Arc::new(TargetClient::new(&target, 8).expect("client")),
        gate,
        concurrency: crate::delivery::concurrency::AdaptiveConcurrency::new(
            64,
            metrics.concurrency_limit.clone(),
            metrics.target_in_flight.clone(),
        ),
        retry,
        max_attempts: 0,
        metrics: metrics.clone(),
    };
    let dead_letters = Arc::new(
        DeadLetterWriter::new(&kafka, retry, metrics.clone()).expect("dead-letter writer"),
    );
    let consumer = Arc::new(crate::kafka::consumer::detached(&kafka));
    let (events, events_rx) = mpsc::channel(64);
    let coordinator = Coordinator::new(
        settings,
        consumer,
        events_rx,
        updates,
        dead_letters.clone(),
        metrics.clone(),
        health.clone(),
    );
    let parts = Parts {
        cluster,
        sim,
        events,
        metrics,
        health,
        dead_letters,
    };
    (coordinator, parts)
}

impl Harness {
    async fn start(settings: CoordinatorSettings, faults: Faults) -> Harness {
        let (coordinator, parts) = build(settings, faults).await;
        let shutdown = CancellationToken::new();
        let consumer_stopped = CancellationToken::new();
        let task = tokio::spawn(
            coordinator
                .watch_consumer(consumer_stopped.clone())
                .run(shutdown.clone()),
        );
        let harness = Harness {
            cluster: parts.cluster,
            sim: parts.sim,
            events: parts.events,
            metrics: parts.metrics,
            health: parts.health,
            shutdown,
            consumer_stopped,
            task,
            mapping: Mapping::default(),
            dead_letters: parts.dead_letters,
        };
        harness.send(ConsumerEvent::PartitionCount(2)).await;
        harness
    }

    async fn send(&self, event: ConsumerEvent) {
        self.events.send(event).await.expect("coordinator running");
    }

    async fn assign(&self, partitions: &[i32]) {
        self.send(ConsumerEvent::Assigned(
            partitions.iter().map(|&p| tp(p)).collect(),
        ))
        .await;
    }

    /// A sale of `customer` (or an anonymous one) at `offset` of `partition`.
    async fn record(&self, partition: i32, offset: i64, customer: Option<&str>) {
        self.send(ConsumerEvent::Records(vec![record(
            &self.mapping,
            partition,
            offset,
            customer,
        )]))
        .await;
    }

    /// Revokes partitions; the answer arrives on the receiver.
    async fn revoke(
        &self,
        partitions: &[i32],
        lost: bool,
    ) -> std::sync::mpsc::Receiver<Vec<(TopicPartition, i64)>> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(ConsumerEvent::Revoked {
            partitions: partitions.iter().map(|&p| tp(p)).collect(),
            lost,
            reply,
        })
        .await;
        answer
    }

    fn requests(&self) -> u64 {
        self.sim.stats().total
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// Tells the pod to stop and waits up to `limit` for the coordinator to
    /// return; how long its drain took and how it ended.
    async fn drain(&mut self, limit: Duration) -> (Duration, Drained) {
        drain(&self.shutdown, &mut self.task, limit).await
    }

    /// The group's committed offset of `partition`, read from the broker
    /// (-1 when none was committed).
    /// Partition 0 assigned, its first record (CRM-1) delivered and committed.
    async fn first_record_committed(&self) {
        self.assign(&[0]).await;
        self.record(0, 0, Some("CRM-1")).await;
        eventually(Duration::from_secs(5), "the first commit", || {
            self.committed(0) == 1
        })
        .await;
    }

    fn committed(&self, partition: i32) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer as _};
        let reader: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .set("group.id", "coordinator-tests")
            .create()
            .expect("reader");
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition(TOPIC, partition);
        let committed = reader
            .committed_offsets(list, Duration::from_secs(5))
            .expect("committed offsets");
        match committed.elements()[0].offset() {
            rdkafka::Offset::Offset(offset) => offset,
            _ => -1,
        }
    }
}

/// Cancels `shutdown` and waits up to `limit` for the coordinator's `task`
/// to return; how long its drain took and how it ended. (Apart from
/// [`Harness`], so that a test can answer held requests while the drain runs.)
async fn drain(
    shutdown: &CancellationToken,
    task: &mut tokio::task::JoinHandle<Result<Drained, Halted>>,
    limit: Duration,
) -> (Duration, Drained) {
    let started = Instant::now();
    shutdown.cancel();
    let ended = tokio::time::timeout(limit, task).await;
    let drained = ended
        .expect("the drain ended in time")
        .expect("not panicked")
        .expect("a drain after a stop signal is no error");
    (started.elapsed(), drained)
}

/// Releases the simulator's held requests `after` from now.
async fn release_after(sim: &SimulatorHandle, after: Duration) {
    tokio::time::sleep(after).await;
    sim.release();
}

/// Polls `done` every 20 ms until it holds or `limit` passes.
async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for a revoke's answer without blocking the runtime.
async fn answer_of(
    answer: &std::sync::mpsc::Receiver<Vec<(TopicPartition, i64)>>,
    limit: Duration,
) -> Vec<(TopicPartition, i64)> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(offsets) = answer.try_recv() {
            return offsets;
        }
        assert!(Instant::now() < deadline, "the revoke was not answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn always_503() -> Faults {
    Faults {
        failures: vec![Failure::new(503, 1.0)],
        ..Faults::none()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partitions_retrying_update_stops_at_the_revoke_deadline() {
    let h = Harness::start(settings(Duration::from_millis(300), 1000), always_503()).await;
    // Partition 1 stays: the pod keeps a share of the budget to send with.
    h.assign(&[0, 1]).await;
    h.record(0, 0, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "retries", || h.requests() >= 3).await;
    let answer = h.revoke(&[0], false).await;
    let offsets = answer_of(&answer, Duration::from_secs(5)).await;
    assert_eq!(offsets, [(tp(0), 0)], "nothing past the unaccepted record");
    // Let a request that was on the wire at the deadline land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_revoke = h.requests();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        h.requests(),
        after_revoke,
        "the old owner kept sending a revoked partition's update"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_partitions_work_stops_at_once() {
    let h = Harness::start(settings(Duration::from_secs(30), 1000), always_503()).await;
    // Partition 1 stays: the pod keeps a share of the budget to send with.
    h.assign(&[0, 1]).await;
    h.record(0, 0, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "retries", || h.requests() >= 3).await;
    let answer = h.revoke(&[0], true).await;
    assert!(answer_of(&answer, Duration::from_secs(1)).await.is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_loss = h.requests();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        h.requests(),
        after_loss,
        "a lost partition's update kept retrying"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_target_holds_when_its_partition_is_lost_is_dropped_at_once() {
    let h = Harness::start(settings(Duration::from_secs(30), 1000), Faults::none()).await;
    h.assign(&[0, 1]).await;
    h.sim.hold();
    h.record(0, 0, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "the update held by Target", || {
        h.sim.stats().held == 1
    })
    .await;
    assert_eq!(h.metrics.target_in_flight.get(), 1);
    let answer = h.revoke(&[0], true).await;
    assert!(answer_of(&answer, Duration::from_secs(1)).await.is_empty());
    // Target still holds the request, and the client's timeout (2 s) is
    // not near: only dropping the attempt ends it this soon.
    eventually(Duration::from_millis(1_000), "the attempt dropped", || {
        h.metrics.target_in_flight.get() == 0
    })
    .await;
    h.sim.release();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_profile_failing_forever_does_not_hold_back_the_others() {
    let faults = Faults {
        failing_ids: vec!["CRM-stuck".into()],
        ..Faults::none()
    };
    let h = Harness::start(settings(Duration::from_secs(1), 1000), faults).await;
    h.assign(&[0, 1]).await;
    h.record(0, 0, Some("CRM-stuck")).await;
    eventually(Duration::from_secs(5), "the stuck profile failing", || {
        h.sim.stats().rejected >= 5
    })
    .await;
    for offset in 0..50 {
        h.record(1, offset, Some(&format!("CRM-{offset}"))).await;
    }
    eventually(Duration::from_secs(10), "the other profiles", || {
        (0..50).all(|i| h.sim.profile_third_party(&format!("CRM-{i}")).is_some())
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_when_its_backoff_ends_not_when_something_else_wakes_the_loop() {
    // Nothing else wakes the loop: commits once a minute, one event, and
    // the pause check every 5 s. Only the state's own wake-up (the end of
    // each backoff, 20 to 50 ms) sends the retries.
    let faults = Faults {
        failing_ids: vec!["CRM-stuck".into()],
        ..Faults::none()
    };
    let quiet = CoordinatorSettings {
        commit_interval: Duration::from_secs(60),
        ..settings(Duration::from_secs(1), 1000)
    };
    let h = Harness::start(quiet, faults).await;
    h.assign(&[0]).await;
    h.record(0, 0, Some("CRM-stuck")).await;
    eventually(Duration::from_secs(4), "five attempts", || {
        h.sim.stats().rejected >= 5
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_for_a_full_pod_resumes_when_a_revoke_frees_the_buffer() {
    let h = Harness::start(settings(Duration::from_millis(200), 4), Faults::none()).await;
    h.sim.hold();
    h.assign(&[0, 1]).await;
    for offset in 0..4 {
        h.record(1, offset, Some(&format!("CRM-{offset}"))).await;
    }
    // An anonymous sale finishes at once, but arrives while the pod is full.
    h.record(0, 0, None).await;
    eventually(Duration::from_secs(5), "both partitions paused", || {
        h.metrics.paused_partitions.get() == 2
    })
    .await;
    let answer = h.revoke(&[1], false).await;
    answer_of(&answer, Duration::from_secs(5)).await;
    eventually(Duration::from_secs(5), "partition 0 fetching again", || {
        h.metrics.paused_partitions.get() == 0
    })
    .await;
    h.sim.release();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_revoke_answer_leaves_the_partitions_new_assignment_alone() {
    let h = Harness::start(settings(Duration::from_millis(300), 1000), Faults::none()).await;
    h.sim.hold();
    h.assign(&[0]).await;
    h.record(0, 0, Some("CRM-old")).await;
    eventually(Duration::from_secs(5), "the first update held", || {
        h.sim.stats().held == 1
    })
    .await;
    // The consumer stopped waiting for this answer and the partition came back.
    let answer = h.revoke(&[0], false).await;
    h.assign(&[0]).await;
    answer_of(&answer, Duration::from_secs(5)).await;
    h.sim.release();
    h.record(0, 1, Some("CRM-new")).await;
    eventually(
        Duration::from_secs(5),
        "the new assignment's update",
        || h.sim.profile_third_party("CRM-new").is_some(),
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_on_its_own_ends_the_run_with_an_error_and_not_ready() {
    let h = Harness::start(settings(Duration::from_millis(300), 1000), Faults::none()).await;
    h.assign(&[0]).await;
    h.record(0, 0, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "the update", || {
        h.sim.profile_third_party("CRM-1").is_some()
    })
    .await;
    // What the consumer thread's drop guard does when the thread ends.
    h.consumer_stopped.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), h.task)
        .await
        .expect("the run ends")
        .expect("no panic");
    assert_eq!(ended, Err(Halted::ConsumerStopped));
    assert_eq!(
        h.health.not_ready_reason(),
        Some("the Kafka consumer stopped")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_answers_a_pending_revoke_with_what_was_finished() {
    let h = Harness::start(settings(Duration::from_secs(1), 1000), Faults::none()).await;
    h.assign(&[0, 1]).await;
    h.record(0, 0, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "the first update", || {
        h.sim.profile_third_party("CRM-1").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.sim.hold();
    h.record(0, 1, Some("CRM-2")).await;
    eventually(Duration::from_secs(5), "the second update held", || {
        h.sim.stats().held == 1
    })
    .await;
    // The pod is told to stop; a revoke arrives during its drain, so its own
    // deadline would come after the drain's.
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = h.revoke(&[0], false).await;
    let offsets = answer_of(&answer, Duration::from_secs(10)).await;
    assert_eq!(
        offsets,
        [(tp(0), 1)],
        "offset 0 was accepted: commit up to it"
    );
    h.sim.release();
    let _ = tokio::time::timeout(Duration::from_secs(10), h.task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_task_that_panics_keeps_its_events_and_they_are_sent_again() {
    let (mut c, parts) = build(settings(Duration::from_secs(1), 1000), Faults::none()).await;
    let now = Instant::now();
    for event in [
        ConsumerEvent::PartitionCount(2),
        ConsumerEvent::Assigned(vec![tp(0)]),
        ConsumerEvent::Records(vec![record(&Mapping::default(), 0, 0, Some("CRM-1"))]),
    ] {
        c.state.on_event(event, now);
    }
    c.state.dispatch(now, 64);
    // The attempt the state asks for runs as a task that panics.
    let mut actions = Vec::new();
    c.state.take_actions(&mut actions);
    let work = one_update(&actions);
    c.tasks
        .start(work, async { panic!("a bug in a delivery task") });
    let done = c.tasks.next().await.expect("the task ended");
    c.on_task(done);
    c.carry_out();
    assert!(
        c.tasks.is_empty(),
        "nothing runs during the retry's backoff"
    );
    assert_eq!(
        c.state.work_in_flight(),
        1,
        "its events wait for another attempt"
    );
    // The next attempt is a real one and lands.
    tokio::time::sleep(Duration::from_millis(60)).await;
    c.state.dispatch(Instant::now(), 64);
    c.carry_out();
    let done = c.tasks.next().await.expect("the attempt ended");
    c.on_task(done);
    assert!(parts.sim.profile_third_party("CRM-1").is_some());
    let offsets: Vec<(i32, i64)> = c
        .state
        .changed_offsets()
        .iter()
        .map(|o| (o.tp.partition, o.offset))
        .collect();
    assert_eq!(offsets, vec![(0, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_time_order_by_occurrence_a_late_event_never_overwrites_what_a_newer_one_delivered() {
    let mut settings = settings(Duration::from_secs(1), 1000);
    settings.time_order = TimeOrder::OccurredAt;
    let h = Harness::start(settings, Faults::none()).await;
    h.assign(&[0]).await;
    let at = |time: &str, store: &str, kind: &str| {
        format!(
            r#"{{"event_id":"e-{time}","event_type":"{kind}","occurred_at":"2026-11-28T{time}Z","store_id":"{store}","customer":{{"third_party_id":"CRM-1"}},"currency":"EUR","total":"1.00","items":[]}}"#
        )
    };
    let send = |offset: i64, json: String| {
        ConsumerEvent::Records(vec![record_of(&h.mapping, 0, offset, Some("CRM-1"), json)])
    };
    h.send(send(0, at("10:00:00", "S-new", "sale"))).await;
    eventually(Duration::from_secs(5), "the newer sale", || {
        h.sim.profile_third_party("CRM-1").is_some()
    })
    .await;
    // A till uploads late: a sale and a return, both older.
    h.send(send(1, at("09:00:00", "S-late", "sale"))).await;
    h.send(send(2, at("09:30:00", "S-late", "return"))).await;
    eventually(Duration::from_secs(5), "the late return", || {
        h.sim
            .profile_third_party("CRM-1")
            .is_some_and(|p| p.contains_key("lastReturnAt"))
    })
    .await;
    let profile = h.sim.profile_third_party("CRM-1").expect("the profile");
    assert_eq!(profile["lastPurchaseAt"], "2026-11-28T10:00:00Z");
    assert_eq!(profile["lastPurchaseStore"], "S-new");
    assert_eq!(profile["lastReturnAt"], "2026-11-28T09:30:00Z");
    assert_eq!(
        h.metrics.events_superseded.get(),
        1,
        "the late sale was not sent"
    );
    assert_eq!(h.sim.stats().accepted, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_each_update_goes_in_arrival_order_even_a_late_one() {
    let h = Harness::start(settings(Duration::from_secs(1), 1000), Faults::none()).await;
    h.assign(&[0]).await;
    let newer = sale(0, Some("CRM-1")).replace("10:15:00", "11:00:00");
    let late = sale(1, Some("CRM-1")).replace("10:15:01", "09:00:00");
    h.send(ConsumerEvent::Records(vec![record_of(
        &h.mapping,
        0,
        0,
        Some("CRM-1"),
        newer,
    )]))
    .await;
    h.send(ConsumerEvent::Records(vec![record_of(
        &h.mapping,
        0,
        1,
        Some("CRM-1"),
        late,
    )]))
    .await;
    eventually(Duration::from_secs(5), "both updates", || {
        h.sim.stats().accepted == 2
    })
    .await;
    let profile = h.sim.profile_third_party("CRM-1").expect("the profile");
    assert_eq!(profile["lastPurchaseAt"], "2026-11-28T09:00:00Z");
    assert_eq!(h.metrics.events_superseded.get(), 0);
    h.stop().await;
}

// The shutdown drain (`drain.rs`): what is in flight finishes or is abandoned
// by the deadline, what waits is left to the next owner, and the commit says
// exactly what Target accepted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_the_update_in_flight_and_commits_it() {
    let mut h = Harness::start(settings(Duration::from_secs(5), 1000), Faults::none()).await;
    h.assign(&[0]).await;
    h.sim.hold();
    h.record(0, 0, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "the update held", || {
        h.sim.stats().held == 1
    })
    .await;
    let ((took, drained), ()) = tokio::join!(
        drain(&h.shutdown, &mut h.task, Duration::from_secs(10)),
        release_after(&h.sim, Duration::from_millis(300)),
    );
    assert!(
        took >= Duration::from_millis(300),
        "the drain waited for the answer ({took:?})"
    );
    assert!(h.sim.profile_third_party("CRM-1").is_some());
    assert_eq!(h.committed(0), 1, "the finished update is committed");
    assert!(drained.is_clean(), "{drained:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_its_deadline_abandons_the_update_and_commits_only_what_was_accepted() {
    let drain = Duration::from_millis(300);
    let mut h = Harness::start(settings(drain, 1000), Faults::none()).await;
    h.assign(&[0]).await;
    h.record(0, 0, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "the first update", || {
        h.sim.profile_third_party("CRM-1").is_some()
    })
    .await;
    h.sim.hold();
    h.record(0, 1, Some("CRM-2")).await;
    eventually(Duration::from_secs(5), "the second update held", || {
        h.sim.stats().held == 1
    })
    .await;
    let (took, drained) = h.drain(Duration::from_secs(10)).await;
    assert_eq!(
        drained,
        Drained {
            abandoned: 1,
            committed: true
        }
    );
    // The deadline, the abandoned attempt's moment to return (at most 1 s)
    // and the final commit (at most 2.5 s): the pod never waits for Target.
    assert!(
        took >= drain && took < drain + Duration::from_secs(4),
        "the drain took {took:?} with a {drain:?} deadline"
    );
    assert_eq!(
        h.committed(0),
        1,
        "offset 1 was never accepted: the next owner reads it again"
    );
    h.sim.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_leaves_waiting_updates_to_the_next_owner_and_commits_before_them() {
    let mut h = Harness::start(settings(Duration::from_secs(5), 1000), Faults::none()).await;
    h.assign(&[0]).await;
    h.sim.hold();
    // Offset 0 goes; offsets 1 and 2 wait behind it (one request at a time
    // per profile, whatever the concurrency limit).
    h.record(0, 0, Some("CRM-1")).await;
    h.record(0, 1, Some("CRM-1")).await;
    h.record(0, 2, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "the first update held", || {
        h.sim.stats().held == 1
    })
    .await;
    let ((_, drained), ()) = tokio::join!(
        drain(&h.shutdown, &mut h.task, Duration::from_secs(10)),
        release_after(&h.sim, Duration::from_millis(300)),
    );
    assert!(
        drained.is_clean(),
        "waiting updates are not abandoned work: {drained:?}"
    );
    assert_eq!(
        h.sim.stats().total,
        1,
        "no waiting update is sent once the pod is stopping"
    );
    assert_eq!(
        h.committed(0),
        1,
        "offset 0 was accepted, 1 and 2 were not: the commit stops before them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_producer_that_failed_for_good_stops_the_pod_before_the_bad_record() {
    let mut h = Harness::start(settings(Duration::from_secs(5), 1000), Faults::none()).await;
    h.first_record_committed().await;
    h.dead_letters.raise_fatal_error();
    // Offset 1 is not JSON: its dead letter cannot be written any more.
    h.send(ConsumerEvent::Records(vec![record_of(
        &h.mapping,
        0,
        1,
        Some("CRM-1"),
        "{".into(),
    )]))
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(15), &mut h.task)
        .await
        .expect("the pod stops instead of retrying a dead producer")
        .expect("no panic");
    assert_eq!(ended, Err(Halted::DeadLettersFailed));
    assert_eq!(
        h.committed(0),
        1,
        "the bad record's offset is not committed: the next owner dead-letters it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_does_not_wait_out_a_retry_that_would_start_past_its_deadline() {
    // Target asks for a minute's pause: the update's retry waits 60 s, far
    // past the 5 s drain deadline, and nothing else is in flight.
    let faults = Faults {
        failures: vec![Failure {
            status: 503,
            probability: 1.0,
            retry_after: Some(pps_target_simulator::RetryAfter::Seconds(60)),
        }],
        ..Faults::none()
    };
    let drain_timeout = Duration::from_secs(5);
    let mut h = Harness::start(settings(drain_timeout, 1000), faults).await;
    h.assign(&[0]).await;
    h.record(0, 0, Some("CRM-1")).await;
    eventually(Duration::from_secs(5), "the refused attempt", || {
        h.requests() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (took, drained) = h.drain(Duration::from_secs(15)).await;
    // Waiting would have finished nothing: the pod leaves the retry to the
    // next owner at once instead of at the deadline.
    assert!(
        took < drain_timeout / 2,
        "the drain waited {took:?} for a retry due after its deadline"
    );
    assert_eq!(
        drained,
        Drained {
            abandoned: 1,
            committed: true
        }
    );
    assert_eq!(h.requests(), 1, "the retry was not sent");
    let committed = h.committed(0);
    assert!(
        committed < 1,
        "offset 0 was never accepted, yet {committed} was committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_in_bounded_time_when_the_broker_is_slow_to_take_the_commit() {
    let mut h = Harness::start(settings(Duration::from_secs(1), 1000), Faults::none()).await;
    h.first_record_committed().await;
    // Every answer of the broker now takes 6 s: the group coordinator is as
    // good as unreachable for a pod with a grace period to keep.
    h.cluster
        .broker_round_trip_time(1, Duration::from_secs(6))
        .expect("round-trip delay");
    h.record(0, 1, Some("CRM-2")).await;
    eventually(Duration::from_secs(5), "the second update", || {
        h.sim.profile_third_party("CRM-2").is_some()
    })
    .await;
    // Let a periodic commit start and wait on the broker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (took, drained) = h.drain(Duration::from_secs(15)).await;
    assert!(
        took < Duration::from_secs(5),
        "the final commit is bounded (2.5 s): the drain took {took:?}"
    );
    assert!(
        !drained.committed,
        "offset 1 was accepted, its commit never answered: {drained:?}"
    );
    // The broker answers at once again, so that the commit left waiting on
    // a blocking thread ends and the test's runtime can stop.
    h.cluster
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("no delay");
}
