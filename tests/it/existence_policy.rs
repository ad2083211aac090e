//! The existence policy end to end (`docs/contract.md`, section 13): the real
//! binary against a simulator that follows Adobe (a single update to a profile
//! Target does not have answers 200 and changes nothing; v2 batches create
//! profiles), with a share of the customers known at start.

use crate::helpers::*;
use pos_profile_sync::generator::{customer_id, GeneratorConfig};
use pos_profile_sync::ops::config::{ExistencePolicy, ExistenceSettings};
use pps_target_simulator::{
    known_at_start, BulkFaults, Existence, Faults, Simulator, SimulatorConfig, SimulatorHandle,
};
use std::collections::BTreeSet;
use std::time::Duration;

const GROUP: &str = "pos-profile-sync";

/// A faithful simulator with `known_share` of the customers known at start,
/// batches that stay incomplete `completion_delay_ms`, and no bulk call limit.
async fn faithful(known_share: f64, completion_delay_ms: u64) -> SimulatorHandle {
    let config = SimulatorConfig {
        existence: Existence {
            known_share,
            ..Existence::faithful()
        },
        faults: Faults {
            bulk: BulkFaults {
                completion_delay_ms,
                calls_per_minute: 0,
                ..BulkFaults::default()
            },
            ..Faults::none()
        },
        ..SimulatorConfig::new(CLIENT)
    };
    Simulator::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("simulator")
}

/// The customers of a workload, split into those known at start and the others.
fn known_and_unknown(work: &Workload, share: f64) -> (BTreeSet<String>, BTreeSet<String>) {
    work.expected_profiles()
        .keys()
        .map(|n| customer_id(*n).1)
        .partition(|id| known_at_start(id, share))
}

/// `existence.policy = "dead_letter"` with fetches that do not hold the test up.
fn dead_letter_policy() -> ExistenceSettings {
    ExistenceSettings {
        policy: ExistencePolicy::DeadLetter,
        fetch_per_second: 2000.0,
        fetch_burst: 200,
        ..ExistenceSettings::default()
    }
}

fn workload(events: u64, customers: u64) -> Workload {
    Workload::new(GeneratorConfig {
        events,
        customers,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..GeneratorConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_customers_are_created_through_batches_and_a_kill_during_a_creating_batch_loses_nothing(
) {
    let kafka = Kafka::start(4);
    let work = workload(1500, 300);
    kafka.produce(&work.events);
    let sim = faithful(0.3, 3_000).await;
    let (known, unknown) = known_and_unknown(&work, 0.3);
    assert!(!known.is_empty() && !unknown.is_empty());
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 300.0;
    config.settings.rate_limit.burst = 30;
    // The default policy ("create"), with fetches that do not hold the test up.
    config.settings.existence = ExistenceSettings {
        fetch_per_second: 2000.0,
        fetch_burst: 200,
        ..ExistenceSettings::default()
    };
    config.settings.bulk.max_age_ms = 300;
    config.settings.bulk.calls_per_minute = 6000;
    let mut app = spawn_app(&config);

    wait_for(
        Duration::from_secs(60),
        "a creating batch submitted",
        || sim.stats().bulk.batches_submitted >= 1,
    )
    .await;
    // The batch stays incomplete for 3 s: the pod dies with it out.
    assert_eq!(
        sim.stats().bulk.profiles_created,
        0,
        "the batch is incomplete"
    );
    app.kill();
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, GROUP, Duration::from_secs(120)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let stats = sim.stats();
    assert_eq!(
        stats.updates_to_unknown_profiles, 0,
        "no single update went to a profile Target did not have"
    );
    assert_eq!(
        stats.bulk.profiles_created,
        unknown.len() as u64,
        "every unknown customer was created by a batch, once"
    );
    assert!(
        stats.accepted > 0,
        "known customers got single updates: {stats:?}"
    );
    let fetches = app
        .metric("pps_target_fetches_total{outcome=\"found\"}")
        .await;
    assert!(fetches.unwrap_or(0.0) > 0.0, "profiles were fetched first");
    assert!(kafka.read_all(DLQ).is_empty(), "nothing was dead-lettered");
    let (status, _) = app.terminate(Duration::from_secs(15));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_dead_letter_policy_unknown_customers_become_profile_not_found_dead_letters() {
    let kafka = Kafka::start(2);
    let work = workload(300, 60);
    kafka.produce(&work.events);
    let sim = faithful(0.5, 0).await;
    let (known, unknown) = known_and_unknown(&work, 0.5);
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.existence = dead_letter_policy();
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, GROUP, Duration::from_secs(90)).await;

    let stats = sim.stats();
    assert_eq!(stats.updates_to_unknown_profiles, 0);
    assert_eq!(stats.bulk.batches_submitted, 0, "no batch with this policy");
    let letters = kafka.read_all(DLQ);
    assert!(letters.iter().all(|l| l
        .headers
        .get("pps-error-class")
        .is_some_and(|class| class == "profile_not_found")));
    // The contract's pps-target-status is for target_rejected and
    // retries_exhausted only.
    assert!(
        letters
            .iter()
            .all(|l| !l.headers.contains_key("pps-target-status")),
        "{:?}",
        letters.first().map(|l| &l.headers)
    );
    let dead: BTreeSet<String> = letters
        .iter()
        .map(|l| String::from_utf8_lossy(l.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(dead, unknown, "exactly the unknown customers' events");
    for id in &known {
        assert!(
            sim.profile_third_party(id).is_some() || sim.profile_pc(id).is_some(),
            "{id} got its updates"
        );
    }
    let (status, _) = app.terminate(Duration::from_secs(15));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_only_fetches_are_made_a_fixed_token_makes_the_pod_ready_again() {
    let kafka = Kafka::start(2);
    let work = workload(100, 30);
    kafka.produce(&work.events);
    // No customer is known: every fetch finds nothing, so no update is sent.
    let mut sim_config = SimulatorConfig {
        existence: Existence {
            known_share: 0.0,
            ..Existence::faithful()
        },
        ..SimulatorConfig::new(CLIENT)
    };
    sim_config.token = Some("right-token".into());
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), sim_config)
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_file(&token, "wrong-token\n");
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.target.token_file = token.display().to_string();
    config.settings.existence = dead_letter_policy();
    let mut app = spawn_app(&config);
    let mut refused = false;
    for _ in 0..300 {
        if let Some((503, reason)) = app.get("/readyz").await {
            refused |= reason.contains("credentials");
        }
        if refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "a fetch refused for its credentials makes the pod not ready"
    );

    write_file(&token, "right-token\n");
    wait_all_committed(&kafka, GROUP, Duration::from_secs(60)).await;
    let letters = kafka.read_all(DLQ);
    assert_eq!(letters.len(), 100);
    assert!(letters
        .iter()
        .all(|l| l.headers["pps-error-class"] == "profile_not_found"));
    assert!(
        app.wait_ready(Duration::from_secs(10)).await,
        "/readyz still says {:?} once the fetches were answered",
        app.get("/readyz").await
    );
    let (status, _) = app.terminate(Duration::from_secs(15));
    assert!(status.success());
}
