//! Metrics an operator pages on, read from the running service's `/metrics`:
//! a partition that moved to another pod stops being exported by its old
//! owner, and a partition stuck behind one record shows how long it waits.

use crate::helpers::*;
use pos_profile_sync::generator::GeneratorConfig;
use pps_target_simulator::{Failure, Faults};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The partitions a pod exports a series of `name` for.
async fn partitions_exported(app: &App, name: &str) -> BTreeSet<i32> {
    let Some((_, body)) = app.get("/metrics").await else {
        return BTreeSet::new();
    };
    body.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| {
            let value = line.split("partition=\"").nth(1)?;
            value.split('"').next()?.parse().ok()
        })
        .collect()
}

/// Waits until `check` holds on the pod's metrics, or fails the test.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stops_exporting_lag_offsets_and_age_of_partitions_it_gave_away() {
    let kafka = Kafka::start(4);
    let work = Workload::new(GeneratorConfig {
        events: 400,
        customers: 200,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let config = AppConfig::new(&kafka, &sim);
    let mut first = spawn_app(&config);
    let all: BTreeSet<i32> = (0..4).collect();
    eventually(
        Duration::from_secs(60),
        "the only pod exports every partition's lag",
        || {
            let first = &first;
            let all = &all;
            async move { &partitions_exported(first, "pps_consumer_lag").await == all }
        },
    )
    .await;

    let mut second = spawn_app(&config);
    eventually(
        Duration::from_secs(60),
        "the second pod takes partitions",
        || {
            let second = &second;
            async move {
                second
                    .metric("pps_assigned_partitions")
                    .await
                    .unwrap_or(0.0)
                    >= 1.0
            }
        },
    )
    .await;
    // Each pod exports exactly the partitions it owns, and no partition twice.
    eventually(
        Duration::from_secs(30),
        "the first pod drops the series of the partitions it gave away",
        || {
            let (first, second) = (&first, &second);
            async move {
                let owned = first
                    .metric("pps_assigned_partitions")
                    .await
                    .unwrap_or(-1.0);
                let mut exported = Vec::new();
                for name in [
                    "pps_consumer_lag",
                    "pps_committed_offset",
                    "pps_high_watermark",
                    "pps_oldest_unfinished_age_seconds",
                ] {
                    exported.push(partitions_exported(first, name).await);
                }
                let theirs = partitions_exported(second, "pps_consumer_lag").await;
                owned < 4.0
                    && exported
                        .iter()
                        .all(|set| set.len() as f64 <= owned && set.is_disjoint(&theirs))
                    && exported[0].len() as f64 == owned
            }
        },
    )
    .await;
    let ours = partitions_exported(&first, "pps_consumer_lag").await;
    let theirs = partitions_exported(&second, "pps_consumer_lag").await;
    assert!(
        ours.is_disjoint(&theirs),
        "ours {ours:?}, theirs {theirs:?}"
    );

    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let (status, _) = second.terminate(Duration::from_secs(15));
    assert!(status.success(), "second pod: {status:?}");
    let (status, _) = first.terminate(Duration::from_secs(15));
    assert!(status.success(), "first pod: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_retried_forever_shows_as_the_age_of_its_partitions_oldest_unfinished_event() {
    let kafka = Kafka::start(1);
    let work = Workload::new(GeneratorConfig {
        events: 1,
        customers: 1,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    // Every update is answered 503: the record is retried, never finished.
    sim.set_faults(Faults {
        failures: vec![Failure {
            status: 503,
            probability: 1.0,
            retry_after: None,
        }],
        ..Faults::default()
    })
    .unwrap();
    let app = spawn_app(&AppConfig::new(&kafka, &sim));
    let series = r#"pps_oldest_unfinished_age_seconds{topic="pos.purchases",partition="0"}"#;
    eventually(
        Duration::from_secs(60),
        "the stuck record's age passes 6 s",
        || {
            let app = &app;
            async move { app.metric(series).await.unwrap_or(0.0) >= 6.0 }
        },
    )
    .await;
    // The lag is one event: a lag alert could not tell this partition is stuck.
    assert_eq!(
        app.metric(r#"pps_consumer_lag{topic="pos.purchases",partition="0"}"#)
            .await,
        Some(1.0)
    );
    let before = app.metric(series).await.unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let later = app.metric(series).await.unwrap_or(0.0);
    assert!(
        later > before,
        "the age keeps growing: {before} then {later}"
    );

    sim.set_faults(Faults::default()).unwrap();
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    eventually(
        Duration::from_secs(30),
        "the age returns to 0 once it is accepted",
        || {
            let app = &app;
            async move { app.metric(series).await == Some(0.0) }
        },
    )
    .await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
}
