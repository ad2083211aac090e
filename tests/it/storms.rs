//! Fault storms: the real binary against the mock cluster and the simulator while
//! something goes badly wrong for about ten seconds mid-stream, then stops. Kafka side:
//! a broker down, request errors on fetch, commit and produce (dead-letter writes), the
//! group coordinator moving. Target side: 503 to every call, 503 to a random third of
//! the calls (where the pod must keep sending near its budget), every call hanging
//! past the timeout, connection resets, 5 s latency.
//!
//! After each storm the test checks what a user would: every customer event's final
//! attributes are at Target, the committed offsets reach the end of every partition,
//! the dead-letter topic holds exactly the malformed events (by class, nothing else),
//! Target never saw more than budget + burst requests in one second, and the pod is
//! ready again on its own, still the same process. The last test pins down a bug
//! the broker-down storm found (a paused partition never read again after it came
//! back from a rebalance).

use crate::helpers::*;
use pos_profile_sync::generator::{EventKind, GeneratorConfig};
use pps_target_simulator::{Failure, Faults, Latency, SimulatorHandle};
use rdkafka::mocking::MockCoordinator;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The group budget of every storm (requests per second at Target).
const BUDGET: f64 = 150.0;
/// The group burst of every storm.
const BURST: u32 = 15;
/// How long a storm rages.
const STORM: Duration = Duration::from_secs(10);
/// Records the pod holds per partition before it pauses fetching it.
const BUFFERED: u32 = 50;
/// The consumer group of every storm.
const GROUP: &str = "pos-profile-sync";

/// How far the pod has come: updates Target accepted, events read, dead letters
/// written (and acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    accepted: u64,
    consumed: u64,
    dead_letters: u64,
}

/// A storm's stage: the workload on the source topic, the simulator and the pod.
struct Scene {
    kafka: Kafka,
    sim: SimulatorHandle,
    work: Workload,
    app: App,
    started: Instant,
}

impl Scene {
    /// About 3000 events (2 % malformed, 2 % anonymous) on 4 partitions, sent at
    /// 150 a second: some 20 s of stream. The pod holds at most [`BUFFERED`] records
    /// per partition, so it reads (and dead-letters) all along the stream, as at the
    /// head of a live topic, rather than everything in its first second. `prepare`
    /// may change the cluster and the configuration before the pod starts.
    async fn start(prepare: impl FnOnce(&Kafka, &mut AppConfig)) -> Scene {
        let kafka = Kafka::start(4);
        let work = Workload::new(GeneratorConfig {
            events: 3000,
            customers: 600,
            bad_ratio: 0.02,
            anonymous_ratio: 0.02,
            ..GeneratorConfig::default()
        });
        kafka.produce(&work.events);
        let sim = start_simulator(None).await;
        let mut config = AppConfig::new(&kafka, &sim);
        config.settings.rate_limit.per_second = BUDGET;
        config.settings.rate_limit.burst = BURST;
        config = config.with_delivery(|d| d.max_buffered_per_partition = BUFFERED);
        prepare(&kafka, &mut config);
        let app = spawn_app(&config);
        Scene {
            kafka,
            sim,
            work,
            app,
            started: Instant::now(),
        }
    }

    /// Waits until a quarter of the updates were accepted, so that the storm breaks
    /// mid-stream, with events still to read and to dead-letter; returns the progress.
    async fn mid_stream(&self) -> Progress {
        let quarter = self.work.customer_events() as u64 / 4;
        wait_for(Duration::from_secs(60), "a quarter of the updates", || {
            self.sim.stats().accepted >= quarter
        })
        .await;
        let progress = self.progress().await;
        assert!(
            progress.accepted < self.work.customer_events() as u64,
            "the updates were over before the storm: {progress:?}"
        );
        assert!(
            progress.consumed < self.work.events.len() as u64,
            "the pod had read everything before the storm: {progress:?}"
        );
        let malformed: usize = self.work.malformed().values().sum();
        assert!(
            progress.dead_letters < malformed as u64,
            "every dead letter was written before the storm: {progress:?}"
        );
        progress
    }

    /// How far the pod has come.
    async fn progress(&self) -> Progress {
        let (_, body) = self.app.get("/metrics").await.expect("metrics");
        let sum = |prefix: &str| -> u64 {
            body.lines()
                .filter(|line| line.starts_with(prefix))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Progress {
            accepted: self.sim.stats().accepted,
            consumed: sum("pps_events_consumed_total{"),
            dead_letters: sum("pps_dead_letters_total{"),
        }
    }

    /// A Target storm: `faults` for [`STORM`], then none.
    async fn target_storm(&self, faults: Faults) {
        self.mid_stream().await;
        self.sim.set_faults(faults).expect("valid faults");
        tokio::time::sleep(STORM).await;
        self.sim.set_faults(Faults::none()).expect("no faults");
    }

    /// A service metric, 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        self.app.metric(series).await.unwrap_or(0.0)
    }

    /// Target requests that took longer than the largest histogram bucket bound not
    /// over `seconds` (4.096 for 4.5).
    async fn requests_slower_than(&self, seconds: f64) -> u64 {
        let (_, body) = self.app.get("/metrics").await.expect("metrics");
        let buckets: Vec<(f64, f64)> = body
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("pps_target_request_duration_seconds_bucket{le=\"")?;
                let (bound, count) = rest.split_once("\"} ")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect();
        let all = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
        let fast = buckets
            .iter()
            .filter(|(bound, _)| *bound <= seconds)
            .map(|b| b.1)
            .fold(0.0, f64::max);
        (all - fast) as u64
    }

    /// Everything a user checks once the storm is over; then a clean SIGTERM.
    async fn aftermath(mut self, storm: &str) {
        let storm_over = Instant::now();
        wait_all_committed(&self.kafka, GROUP, Duration::from_secs(120)).await;
        let caught_up = storm_over.elapsed();
        assert_eq!(
            self.work.lost_profiles(&self.sim),
            Vec::<String>::new(),
            "{storm}: profiles not in their final state"
        );
        let letters = self.dead_letters_by_class(storm);
        assert_eq!(
            letters,
            self.work.malformed(),
            "{storm}: the dead-letter topic holds exactly the malformed events"
        );
        let busiest = busiest_second(&self.sim);
        assert!(
            busiest as f64 <= BUDGET + f64::from(BURST),
            "{storm}: the busiest second saw {busiest} requests, budget {BUDGET} + burst {BURST}; per second: {:?}",
            self.sim.stats().requests_per_second.0
        );
        assert!(
            self.app.wait_ready(Duration::from_secs(30)).await,
            "{storm}: /readyz is not 200 again"
        );
        assert!(self.app.running(), "{storm}: the pod exited");
        let stats = self.sim.stats();
        println!(
            "{storm}: all {} updates at Target and committed {:.1} s after the storm ({:.1} s in all); {} requests ({} accepted, by status {:?}, {} hung, {} reset); busiest second {busiest} (budget {BUDGET} + {BURST})",
            self.work.customer_events(),
            caught_up.as_secs_f64(),
            self.started.elapsed().as_secs_f64(),
            stats.total,
            stats.accepted,
            stats.by_status,
            stats.hung,
            stats.resets,
        );
        let (status, _) = self.app.terminate(Duration::from_secs(15));
        assert!(status.success(), "{storm}: exit status {status:?}");
    }

    /// The dead letters by class, each source record counted once (a redelivery after
    /// a rebalance may write one twice); panics on a letter for anything but a
    /// malformed event of that very class.
    fn dead_letters_by_class(&self, storm: &str) -> BTreeMap<&'static str, usize> {
        let source = self.kafka.read_all(TOPIC);
        let letters = self.kafka.read_all(DLQ);
        let mut positions: BTreeMap<(i32, i64), &'static str> = BTreeMap::new();
        for letter in &letters {
            let partition: i32 = letter.headers["pps-source-partition"].parse().unwrap();
            let offset: i64 = letter.headers["pps-source-offset"].parse().unwrap();
            let class = letter.headers["pps-error-class"].as_str();
            let original = source
                .iter()
                .find(|r| r.partition == partition && r.offset == offset)
                .expect("the source record exists");
            let kind = self
                .work
                .events
                .iter()
                .find(|e| e.payload == original.value)
                .map(|e| e.kind.clone());
            let Some(EventKind::Malformed(expected)) = kind else {
                panic!(
                    "{storm}: {partition}:{offset} dead-lettered as {class}, but it is {kind:?}"
                );
            };
            assert_eq!(class, expected, "{storm}: {partition}:{offset}");
            positions.insert((partition, offset), expected);
        }
        if letters.len() > positions.len() {
            println!(
                "{storm}: {} dead letters written twice",
                letters.len() - positions.len()
            );
        }
        let mut by_class = BTreeMap::new();
        for class in positions.into_values() {
            *by_class.entry(class).or_default() += 1;
        }
        by_class
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_for_ten_seconds_mid_stream_loses_nothing() {
    // Broker 1 coordinates the group, leads two source partitions and the
    // dead-letter partition: its loss stops fetching, commits and dead letters.
    let scene = Scene::start(|kafka, _| {
        let cluster = kafka.mock();
        cluster
            .coordinator(MockCoordinator::Group(GROUP.into()), 1)
            .unwrap();
        cluster.partition_leader(TOPIC, 0, Some(1)).unwrap();
        cluster.partition_leader(TOPIC, 1, Some(1)).unwrap();
        cluster.partition_leader(DLQ, 0, Some(1)).unwrap();
    })
    .await;
    let before = scene.mid_stream().await;
    scene.kafka.mock().broker_down(1).unwrap();
    tokio::time::sleep(STORM).await;
    let during = scene.progress().await;
    scene.kafka.mock().broker_up(1).unwrap();
    println!("broker down: {before:?} when it went down, {during:?} when it came back");
    scene.aftermath("broker down").await;
}

/// From now on every request of `key` fails, the codes in turn, until
/// `clear_request_errors`: far more errors are queued than the pod can send such
/// requests in a storm.
fn fail_every_request(kafka: &Kafka, key: RDKafkaApiKey, codes: &[RDKafkaRespErr]) {
    let errors: Vec<RDKafkaRespErr> = codes.iter().copied().cycle().take(50_000).collect();
    kafka.mock().request_errors(key, &errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_errors_for_ten_seconds_lose_nothing() {
    use RDKafkaRespErr::*;
    let scene = Scene::start(|_, _| {}).await;
    let before = scene.mid_stream().await;
    let codes = [
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR,
    ];
    fail_every_request(&scene.kafka, RDKafkaApiKey::Fetch, &codes);
    tokio::time::sleep(STORM).await;
    let during = scene.progress().await;
    scene
        .kafka
        .mock()
        .clear_request_errors(RDKafkaApiKey::Fetch);
    println!("fetch errors: {before:?} when they began, {during:?} when they stopped");
    let failed = scene
        .app
        .log_text()
        .lines()
        .filter(|line| line.contains("Fetch from broker") && line.contains("failed"))
        .count();
    assert!(failed > 0, "the pod's fetches met the errors");
    scene.aftermath("fetch errors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_errors_for_ten_seconds_lose_nothing() {
    use RDKafkaRespErr::*;
    let scene = Scene::start(|_, _| {}).await;
    let before = scene.mid_stream().await;
    let codes = [
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
    ];
    fail_every_request(&scene.kafka, RDKafkaApiKey::OffsetCommit, &codes);
    // A commit already sent when the storm breaks may still land: the
    // baseline is taken a second in, the last look just before the storm ends.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let committed = scene.kafka.committed(GROUP);
    tokio::time::sleep(STORM - Duration::from_secs(1)).await;
    let during = scene.progress().await;
    let still = scene.kafka.committed(GROUP);
    scene
        .kafka
        .mock()
        .clear_request_errors(RDKafkaApiKey::OffsetCommit);
    println!(
        "commit errors: {before:?} when they began, committed {committed:?} a second in, {during:?} and committed {still:?} when they stopped"
    );
    assert!(
        during.accepted > before.accepted,
        "updates were accepted, so commits were due"
    );
    assert_eq!(still, committed, "every commit of the storm failed");
    scene.aftermath("commit errors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_write_errors_for_ten_seconds_lose_nothing() {
    use RDKafkaRespErr::*;
    let scene = Scene::start(|_, _| {}).await;
    let before = scene.mid_stream().await;
    let codes = [
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ];
    fail_every_request(&scene.kafka, RDKafkaApiKey::Produce, &codes);
    tokio::time::sleep(STORM).await;
    let during = scene.progress().await;
    scene
        .kafka
        .mock()
        .clear_request_errors(RDKafkaApiKey::Produce);
    println!("dead-letter write errors: {before:?} when they began, {during:?} when they stopped");
    assert!(
        during.consumed > before.consumed,
        "the pod read on during the storm"
    );
    assert_eq!(
        during.dead_letters, before.dead_letters,
        "no dead letter could be written during the storm"
    );
    scene.aftermath("dead-letter write errors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_coordinator_moving_mid_stream_loses_nothing() {
    let scene = Scene::start(|kafka, _| {
        kafka
            .mock()
            .coordinator(MockCoordinator::Group(GROUP.into()), 1)
            .unwrap();
    })
    .await;
    scene.mid_stream().await;
    // Four moves, one every 2.5 s: 1 → 2 → 3 → 1 → 2. The last one leaves it
    // away from where the pod found it, so reaching the end proves the pod
    // followed (the old coordinator answers NOT_COORDINATOR).
    for broker in [2, 3, 1, 2] {
        scene
            .kafka
            .mock()
            .coordinator(MockCoordinator::Group(GROUP.into()), broker)
            .unwrap();
        tokio::time::sleep(STORM / 4).await;
    }
    scene.aftermath("coordinator moves").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_answering_503_to_every_call_for_ten_seconds_dead_letters_nothing() {
    let scene = Scene::start(|_, _| {}).await;
    scene
        .target_storm(Faults {
            failures: vec![Failure::new(503, 1.0)],
            ..Faults::none()
        })
        .await;
    let refused = scene.sim.stats().by_status.get(&503).copied().unwrap_or(0);
    assert!(
        refused >= 20,
        "the storm hit the pod: {refused} answers 503"
    );
    assert!(
        scene
            .metric(r#"pps_target_requests_total{outcome="retryable",status_class="5xx"}"#)
            .await
            >= 20.0
    );
    scene.aftermath("503 storm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_503s_to_a_third_of_the_calls_for_ten_seconds_keep_the_pod_sending() {
    // A Target that fails a third of the calls whatever the load is not
    // overloaded: the pod keeps sending at most of its budget and retries the
    // failed updates. The floor is far below that (a quarter of the budget), so
    // only a pod that backs off as from overload falls under it.
    let scene = Scene::start(|_, _| {}).await;
    scene.mid_stream().await;
    let before = scene.sim.stats();
    let storm_started = Instant::now();
    scene
        .sim
        .set_faults(Faults {
            failures: vec![Failure::new(503, 0.3)],
            ..Faults::none()
        })
        .expect("valid faults");
    tokio::time::sleep(STORM).await;
    let during = scene.sim.stats();
    let storm = storm_started.elapsed();
    scene.sim.set_faults(Faults::none()).expect("no faults");
    let sent = during.total - before.total;
    let refused = during.by_status.get(&503).copied().unwrap_or(0);
    let rate = sent as f64 / storm.as_secs_f64();
    println!(
        "random 503s: {sent} requests in {:.1} s ({rate:.0}/s, budget {BUDGET}), {refused} answered 503",
        storm.as_secs_f64()
    );
    assert!(
        refused >= 100,
        "the storm hit the pod: {refused} answers 503"
    );
    assert!(
        rate >= BUDGET / 4.0,
        "{rate:.0} requests a second under random 503s, under a quarter of the budget {BUDGET}"
    );
    scene.aftermath("random 503s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_hanging_past_the_timeout_for_ten_seconds_loses_nothing() {
    // target.timeout_ms is 2000: every call of the storm times out.
    let scene = Scene::start(|_, _| {}).await;
    scene.mid_stream().await;
    scene
        .sim
        .set_faults(Faults {
            hang_probability: 1.0,
            ..Faults::none()
        })
        .unwrap();
    let storm_started = Instant::now();
    let mut not_ready = false;
    while storm_started.elapsed() < STORM {
        not_ready |= matches!(scene.app.get("/readyz").await, Some((503, _)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scene.sim.set_faults(Faults::none()).unwrap();
    assert!(not_ready, "/readyz turns 503 while Target answers nothing");
    // Adaptive concurrency keeps few calls at a Target that answers nothing
    // (one or two at a time), so 10 s of 2 s timeouts hang a handful.
    let hung = scene.sim.stats().hung;
    assert!(hung >= 4, "the storm hit the pod: {hung} calls hung");
    assert!(
        scene
            .metric(r#"pps_target_requests_total{outcome="retryable",status_class="timeout"}"#)
            .await
            >= 4.0,
        "hung calls end as timeouts and are retried"
    );
    scene.aftermath("hang storm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_for_ten_seconds_lose_nothing() {
    let scene = Scene::start(|_, _| {}).await;
    scene
        .target_storm(Faults {
            reset_probability: 0.5,
            ..Faults::none()
        })
        .await;
    let resets = scene.sim.stats().resets;
    assert!(resets >= 50, "the storm hit the pod: {resets} resets");
    let retried = scene
        .metric(r#"pps_target_requests_total{outcome="retryable",status_class="connection"}"#)
        .await;
    assert!(
        retried >= 50.0,
        "resets are retried as connection errors: {retried}"
    );
    scene.aftermath("reset storm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_second_latency_spikes_slow_delivery_but_lose_nothing() {
    // The contract's default timeout (10 s): a 5 s answer is slow, not lost.
    let scene = Scene::start(|_, config| config.settings.target.timeout_ms = 10_000).await;
    scene.mid_stream().await;
    for _ in 0..2 {
        scene
            .sim
            .set_faults(Faults {
                latency: Latency::fixed_ms(5000),
                ..Faults::none()
            })
            .unwrap();
        tokio::time::sleep(STORM / 2).await;
        scene.sim.set_faults(Faults::none()).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // With adaptive concurrency few calls wait out a spike at once: at least
    // one per spike.
    let slow = scene.requests_slower_than(4.5).await;
    assert!(
        slow >= 2,
        "the spikes hit the pod: {slow} calls took over 4 s"
    );
    assert_eq!(
        scene
            .metric(r#"pps_target_requests_total{outcome="retryable",status_class="timeout"}"#)
            .await,
        0.0,
        "a 5 s answer under a 10 s timeout is waited for"
    );
    scene.aftermath("latency spikes").await;
}

/// A gauge of a pod, -1 when it does not answer.
async fn gauge(app: &App, name: &str) -> f64 {
    app.metric(name).await.unwrap_or(-1.0)
}

/// Found by the broker-down storm: a partition paused for a full buffer when it
/// was taken away (a lost session, a scale-up) stayed paused in the Kafka client
/// when it came back, while the pod's fresh state for it said "not paused", so it
/// was never read again. Here a second pod joins while every partition of the
/// first is paused, takes some of them, and leaves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_when_taken_away_is_read_again_when_it_comes_back() {
    let kafka = Kafka::start(4);
    let work = Workload::new(GeneratorConfig {
        events: 800,
        customers: 400,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.hold();
    let config = AppConfig::new(&kafka, &sim).with_delivery(|d| d.max_buffered_per_partition = 20);
    let mut first = spawn_app(&config);
    let started = Instant::now();
    while gauge(&first, "pps_paused_partitions").await != 4.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "every partition of the first pod pauses while Target holds"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut second = spawn_app(&config);
    let started = Instant::now();
    while gauge(&second, "pps_assigned_partitions").await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second pod gets partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = second.terminate(Duration::from_secs(15));
    assert!(status.success(), "second pod: {status:?}");
    let started = Instant::now();
    while gauge(&first, "pps_assigned_partitions").await != 4.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first pod gets every partition back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    sim.release();
    wait_all_committed(&kafka, GROUP, Duration::from_secs(60)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let (status, _) = first.terminate(Duration::from_secs(15));
    assert!(status.success(), "first pod: {status:?}");
}
