//! Bulk batches end to end (`docs/contract.md` section 12): the real binary routes
//! updates to the simulator's `batchUpdate`, polls `batchStatus`, and commits
//! only what completed batches carried.

use crate::helpers::*;
use pos_profile_sync::generator::{customer_id, EventKind, GeneratedEvent, GeneratorConfig};
use pos_profile_sync::ops::config::{BulkMode, BulkSettings};
use pps_target_simulator::{BulkFaults, Faults};
use std::time::Duration;

const GROUP: &str = "pos-profile-sync";

/// `[bulk]` with this mode and batch age, otherwise its defaults.
fn bulk(mode: BulkMode, max_age_ms: u64) -> BulkSettings {
    BulkSettings {
        mode,
        max_age_ms,
        ..BulkSettings::default()
    }
}

fn bulk_faults(completion_delay_ms: u64) -> Faults {
    Faults {
        bulk: BulkFaults {
            completion_delay_ms,
            calls_per_minute: 0,
            ..BulkFaults::default()
        },
        ..Faults::none()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_in_always_mode_arrives_in_a_handful_of_batches_committed_only_when_complete() {
    // 200,000 events; 16 partitions keep each under the mock cluster's 5 MB.
    let kafka = Kafka::start(16);
    let work = Workload::new(GeneratorConfig {
        events: 200_000,
        customers: 20_000,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    // Long enough to look at the offsets while the first batch is incomplete.
    sim.set_faults(bulk_faults(4_000)).unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 10.0;
    config.settings.rate_limit.burst = 10;
    config.settings.delivery.drain_timeout_ms = 5000;
    // A batch stays open 30 s: a profile's later events join its row meanwhile.
    config.settings.bulk = bulk(BulkMode::Always, 30_000);
    let config = config.with_delivery(|d| {
        d.max_buffered_per_partition = 20000;
        d.max_buffered = 250000;
    });
    let mut app = spawn_app(&config);

    wait_for(Duration::from_secs(120), "the first batch", || {
        sim.stats().bulk.batches_submitted >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = sim.stats();
    assert_eq!(stats.bulk.rows_applied, 0, "the batch is still incomplete");
    let committed = kafka.committed(GROUP);
    assert!(
        committed.iter().all(|c| *c <= 0),
        "committed {committed:?} before any batch completed"
    );

    wait_all_committed(&kafka, GROUP, Duration::from_secs(240)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let stats = sim.stats();
    println!(
        "backfill: {} batches, {} rows received, {} applied, {} polls, {} single updates",
        stats.bulk.batches_submitted,
        stats.bulk.rows_received,
        stats.bulk.rows_applied,
        stats.bulk.status_polls,
        stats.accepted
    );
    assert_eq!(stats.accepted, 0, "always mode sends no single update");
    assert!(
        (1..=12).contains(&stats.bulk.batches_submitted),
        "{} batches",
        stats.bulk.batches_submitted
    );
    let profiles = work.expected_profiles().len() as u64;
    assert!(
        stats.bulk.rows_applied >= profiles,
        "every one of {profiles} profiles had a row"
    );
    let metrics = app.get("/metrics").await.expect("metrics").1;
    assert!(metrics.contains("pps_bulk_batches_total{status=\"complete\"}"));
    assert!(metrics.contains("pps_route{route=\"batch\"} 1"));
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_a_batch_is_incomplete_loses_nothing() {
    let kafka = Kafka::start(4);
    let work = Workload::new(GeneratorConfig {
        events: 5_000,
        customers: 800,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    // Never completes while the first process lives.
    sim.set_faults(bulk_faults(600_000)).unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.bulk = bulk(BulkMode::Always, 500);
    let mut app = spawn_app(&config);
    wait_for(Duration::from_secs(60), "a submitted batch", || {
        sim.stats().bulk.batches_submitted >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.kill();
    assert!(
        kafka.committed(GROUP).iter().all(|c| *c <= 0),
        "nothing may be committed before a batch completes"
    );
    assert_eq!(sim.stats().bulk.rows_applied, 0);

    // Batches now complete at once; the restarted process sends everything again.
    sim.set_faults(bulk_faults(0)).unwrap();
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, GROUP, Duration::from_secs(90)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}

/// An event of customer `n` whose category and store carry `text`.
fn tricky_event(n: u64, event: usize, text: &str) -> GeneratedEvent {
    let (crm, id) = customer_id(n);
    assert!(crm, "customer {n} has a CRM id");
    let payload = serde_json::json!({
        "event_id": format!("tricky-{event}"),
        "event_type": "sale",
        "occurred_at": format!("2026-11-28T10:{:02}:00Z", event % 60),
        "store_id": format!("S{text}"),
        "customer": {"third_party_id": id, "loyalty_tier": text},
        "currency": "EUR",
        "total": "10.00",
        "items": [{"sku": "A-1", "category": text, "quantity": 1, "unit_price": "10.00"}]
    });
    GeneratedEvent {
        key: id.into_bytes(),
        payload: serde_json::to_vec(&payload).unwrap(),
        kind: EventKind::Customer(n),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_with_form_and_csv_metacharacters_arrive_intact_through_batches() {
    let kafka = Kafka::start(2);
    let texts = [
        "100%",
        "a&b=c",
        "x+y",
        "comma, \"quoted\"",
        "two\nlines\r\n",
        "Größe 😀 日本",
        "%41%zz&&==++",
        "; DROP TABLE",
    ];
    let events: Vec<GeneratedEvent> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| tricky_event(i as u64 * 10, i, text))
        .collect();
    let work = Workload { events };
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.set_faults(bulk_faults(0)).unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.bulk = bulk(BulkMode::Always, 300);
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, GROUP, Duration::from_secs(60)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    assert!(sim.stats().bulk.rows_applied >= texts.len() as u64);
    assert!(app.terminate(Duration::from_secs(10)).0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rows_become_dead_letters_of_every_event_they_carry() {
    let kafka = Kafka::start(2);
    let work = Workload::new(GeneratorConfig {
        events: 400,
        customers: 40,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let (_, failing) = customer_id(3);
    let failing_events = work
        .events
        .iter()
        .filter(|e| e.key == failing.as_bytes())
        .count();
    assert!(failing_events > 0);
    let sim = start_simulator(None).await;
    let mut faults = bulk_faults(0);
    faults.bulk.row_failure_ids = vec![failing.clone()];
    sim.set_faults(faults).unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.bulk = bulk(BulkMode::Always, 300);
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, GROUP, Duration::from_secs(60)).await;
    let letters = kafka.read_all(DLQ);
    assert_eq!(
        letters.len(),
        failing_events,
        "one letter per event of the row"
    );
    for letter in &letters {
        assert_eq!(letter.headers["pps-error-class"], "target_rejected");
        assert_eq!(letter.key.as_deref(), Some(failing.as_bytes()));
    }
    assert!(app.terminate(Duration::from_secs(10)).0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_moves_a_backlog_to_batches_and_comes_back_to_single_updates() {
    let kafka = Kafka::start(2);
    let burst = Workload::new(GeneratorConfig {
        events: 3_000,
        customers: 500,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&burst.events);
    let sim = start_simulator(None).await;
    sim.set_faults(bulk_faults(0)).unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    // 100 updates/s for 2 s is 200: a 3,000-event backlog is far beyond it.
    config.settings.rate_limit.per_second = 100.0;
    config.settings.rate_limit.burst = 10;
    config.settings.bulk = BulkSettings {
        overflow_after_seconds: 2,
        ..bulk(BulkMode::Overflow, 500)
    };
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, GROUP, Duration::from_secs(90)).await;
    assert_eq!(burst.lost_profiles(&sim), Vec::<String>::new());
    let after_burst = sim.stats();
    assert!(
        after_burst.bulk.rows_applied > 0,
        "the backlog went as batches"
    );
    wait_for(Duration::from_secs(20), "single updates again", || {
        app.log_text().contains("Updates now go as single updates.")
    })
    .await;

    // A trickle the budget keeps up with goes as single updates.
    let trickle = Workload::new(GeneratorConfig {
        events: 40,
        customers: 500,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        seed: 99,
        ..GeneratorConfig::default()
    });
    kafka.produce(&trickle.events);
    wait_all_committed(&kafka, GROUP, Duration::from_secs(60)).await;
    let after_trickle = sim.stats();
    assert!(
        after_trickle.accepted >= after_burst.accepted + 30,
        "single updates: {} then {}",
        after_burst.accepted,
        after_trickle.accepted
    );
    assert_eq!(
        after_trickle.bulk.batches_submitted,
        after_burst.bulk.batches_submitted
    );
    let log = app.log_text();
    assert!(log.contains("Updates now go as bulk batches."));
    assert!(app.terminate(Duration::from_secs(10)).0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_moves_to_batches_before_the_daily_quota_runs_out() {
    let kafka = Kafka::start(1);
    let work = Workload::new(GeneratorConfig {
        events: 200,
        customers: 60,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    let sim = start_simulator(None).await;
    sim.set_faults(bulk_faults(0)).unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    // Reach: 20/s for 1 s is 20 updates. A daily quota of 120 leaves less
    // than that after about 100 single updates.
    config.settings.rate_limit.per_second = 20.0;
    config.settings.rate_limit.burst = 5;
    config.settings.bulk = BulkSettings {
        overflow_after_seconds: 1,
        ..bulk(BulkMode::Overflow, 300)
    };
    config
        .env
        .push(("PPS_RATE_LIMIT__DAILY_QUOTA".into(), "120".into()));
    let mut app = spawn_app(&config);
    // Waves of 10 events: a backlog the budget clears within the second.
    for wave in work.events.chunks(10) {
        kafka.produce(wave);
        wait_all_committed(&kafka, GROUP, Duration::from_secs(30)).await;
    }
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let stats = sim.stats();
    println!(
        "quota run: {} single updates, {} batches, {} rows",
        stats.accepted, stats.bulk.batches_submitted, stats.bulk.rows_applied
    );
    assert!(
        (90..=120).contains(&stats.accepted),
        "single updates until the quota ran low, never past it: {}",
        stats.accepted
    );
    assert!(stats.bulk.rows_applied > 0, "the rest went as batches");
    assert!(app.log_text().contains("Updates now go as bulk batches."));
    assert!(app.terminate(Duration::from_secs(10)).0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_on_the_bulk_path_make_the_pod_not_ready_and_commit_nothing() {
    let kafka = Kafka::start(2);
    let work = Workload::new(GeneratorConfig {
        events: 200,
        customers: 50,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(Some("right-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_file(&token, "wrong-token\n");
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.target.token_file = token.display().to_string();
    config.settings.bulk = BulkSettings {
        calls_per_minute: 600,
        ..bulk(BulkMode::Always, 300)
    };
    let mut app = spawn_app(&config);

    let refused = "pps_bulk_calls_total{call=\"submit\",outcome=\"auth_failed\"}";
    let mut seen = false;
    for _ in 0..300 {
        if app.metric(refused).await.unwrap_or(0.0) > 0.0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "a bulk submit refused for its credentials");
    let mut not_ready = false;
    let mut paused = false;
    for _ in 0..50 {
        if let Some((503, reason)) = app.get("/readyz").await {
            not_ready |= reason.contains("credentials");
        }
        paused |= app.metric("pps_auth_paused").await == Some(1.0);
        if not_ready && paused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        not_ready,
        "/readyz must be false, naming the credentials, while Target refuses the bulk credentials"
    );
    assert!(paused, "pps_auth_paused must say so");
    assert!(kafka.committed(GROUP).iter().all(|c| *c <= 0));

    write_file(&token, "right-token\n");
    wait_all_committed(&kafka, GROUP, Duration::from_secs(60)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    assert!(
        kafka.read_all(DLQ).is_empty(),
        "a credentials problem dead-letters nothing"
    );
    assert_eq!(app.get("/readyz").await.map(|r| r.0), Some(200));
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
}
