//! The delivery engine end to end: the real binary against the mock cluster
//! and the simulator. Each test checks what a user would: what Target holds,
//! what the dead-letter topic holds, what the group committed.

use crate::helpers::*;
use pos_profile_sync::generator::{EventKind, GeneratorConfig};
use pos_profile_sync::mapping::{Decision, Mapping};
use pos_profile_sync::ops::config::PropertyValue;
use pps_target_simulator::{Failure, Faults, Latency, RetryAfter};
use std::collections::BTreeMap;
use std::time::Duration;

fn workload(events: u64, customers: u64, bad_ratio: f64, anonymous_ratio: f64) -> Workload {
    Workload::new(GeneratorConfig {
        events,
        customers,
        bad_ratio,
        anonymous_ratio,
        ..GeneratorConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_and_bad_ones_are_dead_lettered_with_provenance() {
    let kafka = Kafka::start(4);
    let work = workload(2000, 300, 0.02, 0.05);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut app = spawn_app(&AppConfig::new(&kafka, &sim));

    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    // One request per identified event: anonymous events made no call.
    let stats = sim.stats();
    assert_eq!(stats.accepted as usize, work.customer_events());
    assert_eq!(stats.total, stats.accepted);

    let source = kafka.read_all(TOPIC);
    let letters = kafka.read_all(DLQ);
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for letter in &letters {
        let partition: i32 = letter.headers["pps-source-partition"].parse().unwrap();
        let offset: i64 = letter.headers["pps-source-offset"].parse().unwrap();
        assert_eq!(letter.headers["pps-source-topic"], TOPIC);
        let original = source
            .iter()
            .find(|r| r.partition == partition && r.offset == offset)
            .expect("the source record exists");
        assert_eq!(letter.value, original.value, "value byte for byte");
        assert_eq!(letter.key, original.key, "key byte for byte");
        let class = letter.headers["pps-error-class"].as_str();
        let expected = work
            .events
            .iter()
            .find(|e| e.payload == original.value)
            .map(|e| e.kind.clone());
        assert_eq!(expected, Some(EventKind::Malformed(class_name(class))));
        assert!(!letter.headers["pps-error-reason"].is_empty());
        assert!(!letter.headers.contains_key("pps-target-status"));
        *classes.entry(class_name(class)).or_default() += 1;
    }
    assert_eq!(classes, work.malformed());

    // The metrics say exactly the same, and the lag is back to zero.
    let customers = work.customer_events() as f64;
    let anonymous = work
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Anonymous)
        .count() as f64;
    let metric = |series: &'static str| {
        let app = &app;
        async move { app.metric(series).await.unwrap_or(0.0) }
    };
    assert_eq!(
        metric(r#"pps_events_consumed_total{outcome="update",error_class=""}"#).await,
        customers
    );
    assert_eq!(
        metric(r#"pps_events_consumed_total{outcome="skip",error_class=""}"#).await,
        anonymous
    );
    assert_eq!(metric("pps_events_accepted_total").await, customers);
    for (class, count) in work.malformed() {
        let consumed =
            format!(r#"pps_events_consumed_total{{outcome="dead_letter",error_class="{class}"}}"#);
        let written = format!(r#"pps_dead_letters_total{{error_class="{class}"}}"#);
        assert_eq!(
            app.metric(&consumed).await,
            Some(count as f64),
            "{consumed}"
        );
        assert_eq!(app.metric(&written).await, Some(count as f64), "{written}");
    }
    let mut lag_zero = false;
    for _ in 0..100 {
        let (_, body) = app.get("/metrics").await.unwrap();
        let lags: Vec<f64> = body
            .lines()
            .filter(|l| l.starts_with("pps_consumer_lag{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        if lags.len() == kafka.partitions as usize && lags.iter().all(|l| *l == 0.0) {
            lag_zero = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(lag_zero, "consumer lag must return to 0 on every partition");

    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

/// A session long enough for a drain deadline above the tests' 6 s.
fn long_session(config: &mut AppConfig) {
    for (key, value) in [
        ("session.timeout.ms", 30_000),
        ("max.poll.interval.ms", 60_000),
    ] {
        config
            .settings
            .kafka
            .properties
            .insert(key.to_owned(), PropertyValue::Int(value));
    }
}

fn class_name(class: &str) -> &'static str {
    match class {
        "invalid_json" => "invalid_json",
        "schema_violation" => "schema_violation",
        "unsupported_version" => "unsupported_version",
        "target_rejected" => "target_rejected",
        "retries_exhausted" => "retries_exhausted",
        other => panic!("unknown dead-letter class {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_not_committed_before_target_accepts() {
    let kafka = Kafka::start(3);
    let work = workload(300, 50, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.hold();
    let mut app = spawn_app(&AppConfig::new(&kafka, &sim));

    // Unanswered requests teach the concurrency limit nothing: it stays at
    // its start (1), so one request waits at Target rather than hundreds.
    wait_for(Duration::from_secs(30), "a held request", || {
        sim.stats().held >= 1
    })
    .await;
    // Several commit intervals pass while Target holds every response.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let committed = kafka.committed("pos-profile-sync");
    assert!(
        committed.iter().all(|c| *c <= 0),
        "committed {committed:?} while Target accepted nothing"
    );
    assert_eq!(sim.stats().accepted, 0);

    sim.release();
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_five_times_loses_nothing() {
    let kafka = Kafka::start(6);
    let work = workload(20_000, 2000, 0.001, 0.02);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.set_faults(Faults {
        latency: Latency::fixed_ms(2),
        ..Faults::none()
    })
    .unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 3000.0;
    config.settings.rate_limit.burst = 100;
    let total = work.customer_events() as u64;

    let mut app = spawn_app(&config);
    for kill in 1..=5u64 {
        let target = total * kill / 7;
        wait_for(Duration::from_secs(90), "progress before a kill", || {
            sim.stats().accepted >= target
        })
        .await;
        app.kill();
        app = spawn_app(&config);
    }
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(120)).await;

    assert_eq!(
        work.lost_profiles(&sim),
        Vec::<String>::new(),
        "lost after kills"
    );
    let accepted = sim.stats().accepted;
    let duplicates = accepted - total;
    println!(
        "sigkill x5: {total} updates needed, {accepted} accepted, {duplicates} duplicates, 0 lost"
    );
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_storm_with_retry_after_dead_letters_nothing_and_keeps_the_budget() {
    let kafka = Kafka::start(4);
    let work = workload(1500, 400, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.set_faults(Faults {
        failures: vec![Failure::new(503, 0.3).with_retry_after(RetryAfter::Seconds(1))],
        ..Faults::none()
    })
    .unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 200.0;
    config.settings.rate_limit.burst = 20;
    let mut app = spawn_app(&config);

    // The storm rages until it has hit the pod hard, and three seconds more;
    // then Target recovers.
    wait_for(Duration::from_secs(60), "the storm to hit", || {
        sim.stats().by_status.get(&503).copied().unwrap_or(0) >= 30
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.set_faults(Faults::none()).unwrap();
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    assert!(kafka.read_all(DLQ).is_empty(), "nothing dead-lettered");
    let busiest = sim
        .stats()
        .requests_per_second
        .busiest()
        .map_or(0, |(_, n)| n);
    assert!(
        busiest <= 220,
        "busiest second saw {busiest} requests, budget 200 + burst 20"
    );
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_pause_everything_until_the_token_is_fixed() {
    let kafka = Kafka::start(3);
    let work = workload(300, 80, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(Some("right-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_file(&token, "wrong-token\n");
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.target.token_file = token.display().to_string();
    let mut app = spawn_app(&config);

    wait_for(Duration::from_secs(30), "401 answers", || {
        sim.stats().by_status.get(&401).copied().unwrap_or(0) > 0
    })
    .await;
    let mut not_ready = false;
    for _ in 0..50 {
        if let Some((503, _)) = app.get("/readyz").await {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        not_ready,
        "/readyz must be false while credentials are refused"
    );
    // Requests in flight when the first 401 came back finish (up to
    // max_in_flight of them); after that only single probes go out, backing
    // off from 20 ms towards 1 s: a handful in two seconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused_401 = || sim.stats().by_status.get(&401).copied().unwrap_or(0);
    let before = refused_401();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let probes = refused_401() - before;
    assert!(
        probes <= 12,
        "one probe at a time with backoff: {probes} 401s in 2 s"
    );
    assert_eq!(sim.stats().accepted, 0);
    assert!(kafka.committed("pos-profile-sync").iter().all(|c| *c <= 0));

    write_file(&token, "right-token\n");
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    assert!(
        kafka.read_all(DLQ).is_empty(),
        "a credentials problem dead-letters nothing"
    );
    assert_eq!(app.get("/readyz").await.map(|r| r.0), Some(200));
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_share_the_group_budget_and_a_joining_pod_loses_nothing() {
    let kafka = Kafka::start(6);
    let work = workload(2400, 600, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 150.0;
    config.settings.rate_limit.burst = 6;
    let mut first = spawn_app(&config);
    let mut second = spawn_app(&config);
    wait_for(Duration::from_secs(60), "a third of the work", || {
        sim.stats().accepted >= 800
    })
    .await;
    let mut third = spawn_app(&config);
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(120)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let busiest = sim
        .stats()
        .requests_per_second
        .busiest()
        .map_or(0, |(_, n)| n);
    assert!(
        busiest <= 156,
        "busiest second saw {busiest}, group budget 150 + burst 6; per second: {:?}",
        sim.stats().requests_per_second.0
    );
    for app in [&mut first, &mut second, &mut third] {
        let (status, _) = app.terminate(Duration::from_secs(10));
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_commits_exactly_what_was_accepted() {
    let kafka = Kafka::start(3);
    let work = workload(1500, 1_000_000, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.set_faults(Faults {
        latency: Latency::fixed_ms(150),
        ..Faults::none()
    })
    .unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.delivery.max_in_flight = 16;
    config.settings.delivery.drain_timeout_ms = 2000;
    let mut app = spawn_app(&config);
    wait_for(Duration::from_secs(30), "some progress", || {
        sim.stats().accepted >= 100
    })
    .await;
    let (status, took) = app.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}");
    assert!(took <= Duration::from_millis(2000 + 5000), "took {took:?}");

    // Every event below the committed offset reached Target; the event at
    // the committed offset did not (the commit stops exactly there).
    let committed = kafka.committed("pos-profile-sync");
    let source = kafka.read_all(TOPIC);
    let accepted_ids = sim.stats().accepted;
    let mapping = Mapping::default();
    let mut below = 0;
    for record in &source {
        let c = committed[record.partition as usize];
        let event = work
            .events
            .iter()
            .find(|e| e.payload == record.value)
            .unwrap();
        let EventKind::Customer(n) = event.kind else {
            unreachable!()
        };
        let (_, id) = pos_profile_sync::generator::customer_id(n);
        let profile = sim.profile_third_party(&id).or_else(|| sim.profile_pc(&id));
        if record.offset < c {
            // Per-profile order: a later event of this customer arriving
            // implies this one did, so any arrival counts.
            below += 1;
            assert!(
                profile.is_some(),
                "offset {} of partition {} committed but never sent",
                record.offset,
                record.partition
            );
        } else if record.offset == c {
            let Decision::Update(update) = mapping.decide(&record.value) else {
                unreachable!()
            };
            let carried = profile.is_some_and(|p| {
                update
                    .attributes
                    .iter()
                    .all(|a| p.get(&*a.name).map(String::as_str) == Some(a.value.as_str()))
            });
            assert!(
                !carried,
                "offset {} of partition {} was accepted but not committed",
                record.offset, record.partition
            );
        }
    }
    assert!(below > 0 && below as u64 <= accepted_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_faults_on_commit_produce_and_a_broker_lose_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let kafka = Kafka::start(4);
    let work = workload(3000, 500, 0.02, 0.02);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    // Target rejects some updates for good, so dead letters are written all
    // through the run, not only for the malformed events read at start-up.
    sim.set_faults(Faults {
        latency: Latency::fixed_ms(3),
        failures: vec![Failure::new(400, 0.02)],
        ..Faults::none()
    })
    .unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 400.0;
    config.settings.rate_limit.burst = 20;
    kafka.mock().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 6],
    );
    // The dead-letter producer's very first batches fail too.
    kafka.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 4],
    );
    let mut app = spawn_app(&config);
    wait_for(Duration::from_secs(60), "some progress", || {
        sim.stats().accepted >= 300
    })
    .await;
    // Produce faults mid-stream on the dead-letter producer, every kind.
    kafka.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        ],
    );
    wait_for(Duration::from_secs(60), "more progress", || {
        sim.stats().accepted >= 900
    })
    .await;
    kafka.mock().broker_down(2).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.mock().broker_up(2).unwrap();
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(120)).await;

    // Every event is either at Target or on the dead-letter topic.
    let source = kafka.read_all(TOPIC);
    let letters = kafka.read_all(DLQ);
    let mut dead: Vec<(i32, i64)> = letters
        .iter()
        .map(|l| {
            (
                l.headers["pps-source-partition"].parse().unwrap(),
                l.headers["pps-source-offset"].parse().unwrap(),
            )
        })
        .collect();
    dead.sort();
    dead.dedup();
    let rejected = letters
        .iter()
        .filter(|l| l.headers["pps-error-class"] == "target_rejected")
        .inspect(|l| {
            assert_eq!(
                l.headers.get("pps-target-status").map(String::as_str),
                Some("400")
            )
        })
        .count() as u64;
    assert!(
        rejected > 0,
        "Target rejected some updates during the faults"
    );
    assert_eq!(
        rejected,
        sim.stats().by_status.get(&400).copied().unwrap_or(0),
        "one dead letter per 400"
    );
    let mut rejected_customers = std::collections::BTreeSet::new();
    for record in &source {
        let event = work
            .events
            .iter()
            .find(|e| e.payload == record.value)
            .unwrap();
        let in_dlq = dead
            .binary_search(&(record.partition, record.offset))
            .is_ok();
        match event.kind {
            EventKind::Malformed(_) => assert!(
                in_dlq,
                "malformed {}:{} not dead-lettered",
                record.partition, record.offset
            ),
            EventKind::Customer(n) if in_dlq => {
                rejected_customers.insert(n);
            }
            _ => {}
        }
    }
    // Profiles none of whose events was rejected hold exactly the expected state.
    let lost: Vec<String> = work
        .lost_profiles(&sim)
        .into_iter()
        .filter(|line| {
            !rejected_customers.iter().any(|n| {
                line.starts_with(&format!(
                    "{}:",
                    pos_profile_sync::generator::customer_id(*n).1
                ))
            })
        })
        .collect();
    assert_eq!(lost, Vec::<String>::new());
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_sends_fewer_updates_and_target_ends_in_the_same_state() {
    let kafka = Kafka::start(4);
    let work = Workload::new(GeneratorConfig {
        events: 3000,
        customers: 300,
        zipf: 1.1,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.set_faults(Faults {
        latency: Latency::fixed_ms(20),
        ..Faults::none()
    })
    .unwrap();
    let config = AppConfig::new(&kafka, &sim).with_delivery(|d| d.coalesce_window_ms = 1000);
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let requests = sim.stats().total as f64;
    let per_event = requests / work.customer_events() as f64;
    println!(
        "coalescing: {requests} requests for {} events ({per_event:.3} per event)",
        work.customer_events()
    );
    assert!(
        per_event <= 0.5,
        "{requests} requests for {} events",
        work.customer_events()
    );
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_partition_buffers_pause_fetching_until_target_catches_up() {
    let kafka = Kafka::start(2);
    let work = workload(600, 300, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.hold();
    let config = AppConfig::new(&kafka, &sim).with_delivery(|d| d.max_buffered_per_partition = 50);
    let mut app = spawn_app(&config);
    wait_assigned(&app, 2.0, Duration::from_secs(60)).await;

    let mut paused = 0.0;
    for _ in 0..150 {
        paused = app.metric("pps_paused_partitions").await.unwrap_or(0.0);
        if paused == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        paused, 2.0,
        "both partitions pause while Target holds every response"
    );
    let consumed = app
        .metric(r#"pps_events_consumed_total{outcome="update",error_class=""}"#)
        .await
        .unwrap_or(0.0);
    // Records already handed over when a partition pauses still arrive, so
    // the provable bound is that fetching stopped before the end.
    assert!(
        consumed < 600.0,
        "fetching stopped before the end: {consumed} of 600 read"
    );

    sim.release();
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    assert_eq!(app.metric("pps_paused_partitions").await, Some(0.0));
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_buffer_limit_pauses_every_partition_whatever_their_number() {
    let kafka = Kafka::start(8);
    let work = workload(4000, 2000, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.hold();
    // Each partition alone could hold its whole share; the pod may not.
    let config = AppConfig::new(&kafka, &sim).with_delivery(|d| d.max_buffered = 100);
    let mut app = spawn_app(&config);
    wait_assigned(&app, 8.0, Duration::from_secs(60)).await;

    let mut paused = 0.0;
    for _ in 0..150 {
        paused = app.metric("pps_paused_partitions").await.unwrap_or(0.0);
        if paused == 8.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(paused, 8.0, "every partition pauses once the pod holds 100");
    let consumed = app
        .metric(r#"pps_events_consumed_total{outcome="update",error_class=""}"#)
        .await
        .unwrap_or(0.0);
    assert!(
        consumed < 4000.0,
        "fetching stopped before the end: {consumed} of 4000 read"
    );

    sim.release();
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(90)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    assert_eq!(app.metric("pps_paused_partitions").await, Some(0.0));
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_commit_the_group_never_answers_does_not_hold_the_exit_past_its_deadline() {
    let kafka = Kafka::start(3);
    let work = workload(400, 1_000_000, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    // No periodic commit comes before the stop: what was accepted waits
    // for the final commit.
    let mut config = AppConfig::new(&kafka, &sim).with_delivery(|delivery| {
        delivery.commit_interval_ms = 600_000;
        delivery.drain_timeout_ms = 10_000;
    });
    long_session(&mut config);
    let mut app = spawn_app(&config);
    wait_for(Duration::from_secs(30), "every event accepted", || {
        sim.stats().accepted >= 400
    })
    .await;
    // Every broker, the group coordinator among them, now answers after 40 s.
    for broker in 1..=3 {
        kafka
            .mock()
            .broker_round_trip_time(broker, Duration::from_secs(40))
            .unwrap();
    }
    let (_, took) = app.terminate(Duration::from_secs(30));
    assert!(
        took <= Duration::from_millis(10_000 + 5000),
        "took {took:?}; log:\n{}",
        app.log_text()
    );
    let log = app.log_text();
    assert!(
        log.contains("Could not commit final offsets; the next owner re-reads"),
        "log:\n{log}"
    );
    // The last word says so too: an operator reading the end of the log must
    // not be told that the pod stopped cleanly.
    assert!(!log.contains("stopped cleanly"), "log:\n{log}");
    assert!(
        log.contains("pos-profile-sync stopped; the next owner re-reads"),
        "log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_refusing_records_as_invalid_names_compaction_and_loses_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let kafka = Kafka::start(2);
    let work = workload(300, 100, 0.1, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    // What a compacted topic answers a record without a key, for the
    // dead-letter producer's first requests.
    kafka.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 3],
    );
    let mut app = spawn_app(&AppConfig::new(&kafka, &sim));
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    let log = app.log_text();
    assert!(
        log.contains("give it cleanup.policy=delete"),
        "the log does not name the cause; log:\n{log}"
    );
    let letters = kafka.read_all(DLQ);
    assert_eq!(
        letters.len(),
        work.malformed().values().sum::<usize>(),
        "every bad event has its letter once the topic takes them"
    );
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_kafka_error_ends_the_pod_promptly_and_loses_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let kafka = Kafka::start(2);
    let work = workload(300, 100, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.kafka.properties.insert(
        "group.instance.id".to_owned(),
        PropertyValue::Text("pod-0".to_owned()),
    );
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    // The group coordinator says another member took this instance id:
    // librdkafka raises a fatal error, and the client can do nothing more.
    kafka.mock().request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID; 20],
    );
    let fenced = std::time::Instant::now();
    let status = app
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running; log:\n{}", app.log_text()));
    let took = fenced.elapsed();
    println!("fenced to exit: {took:?}");
    let log = app.log_text();
    assert!(!status.success(), "exit {status:?}; log:\n{log}");
    assert!(log.contains("Fatal Kafka client error"), "log:\n{log}");
    // The heartbeat comes within 0.5 s and nothing is in flight: the pod
    // stops at once rather than waiting for a close that cannot come.
    assert!(took < Duration::from_secs(5), "took {took:?}; log:\n{log}");
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_a_long_drain_at_once() {
    let kafka = Kafka::start(2);
    let work = workload(200, 1_000_000, 0.0, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut config =
        AppConfig::new(&kafka, &sim).with_delivery(|delivery| delivery.drain_timeout_ms = 20_000);
    long_session(&mut config);
    let mut app = spawn_app(&config);
    // Target holds every answer: the drain would wait out its 20 s.
    sim.hold();
    wait_for(Duration::from_secs(30), "a held request", || {
        sim.stats().held >= 1
    })
    .await;
    app.signal(15);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        app.running(),
        "the first SIGTERM drains, it does not stop at once"
    );
    let second = std::time::Instant::now();
    app.signal(15);
    let status = app
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still draining; log:\n{}", app.log_text()));
    assert_eq!(status.code(), Some(1), "log:\n{}", app.log_text());
    assert!(
        second.elapsed() < Duration::from_secs(10),
        "took {:?}",
        second.elapsed()
    );
    // Nothing was accepted, so nothing was committed: all is read again.
    assert!(kafka.committed("pos-profile-sync").iter().all(|c| *c <= 0));
    sim.release();
}
