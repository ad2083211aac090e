//! The main end-to-end scenarios against a real Apache Kafka broker (the
//! `apache/kafka` image, in a container started through Docker) instead of
//! librdkafka's mock cluster: every event arrives and is committed, SIGKILL and
//! restart lose nothing, bad events are dead-lettered byte for byte.
//!
//! Compiled only with the `real-kafka` feature:
//! `cargo test --features real-kafka --test real_kafka`. It needs a reachable
//! Docker engine and fails, saying so, without one.

// Shared with the `it` binary, which uses more of it.
#[allow(dead_code, unused_imports)]
#[path = "it/helpers.rs"]
mod helpers;

use helpers::*;
use pos_profile_sync::generator::GeneratorConfig;
use pps_target_simulator::{Faults, Latency};
use std::time::Duration;
use testcontainers::runners::AsyncRunner;
use testcontainers::ContainerAsync;
use testcontainers_modules::kafka::apache;

const GROUP: &str = "pos-profile-sync";

/// A one-broker KRaft cluster in a container, with the test topics.
async fn real_kafka(partitions: i32) -> (ContainerAsync<apache::Kafka>, Kafka) {
    let container = apache::Kafka::default()
        .with_jvm_image()
        .start()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "the real-Kafka suite needs a reachable Docker engine (DOCKER_HOST or \
                 /var/run/docker.sock) to start the apache/kafka image; none answered: {error}"
            )
        });
    let port = container
        .get_host_port_ipv4(apache::KAFKA_PORT)
        .await
        .expect("the broker's mapped port");
    let kafka = Kafka::external(format!("127.0.0.1:{port}"), partitions).await;
    (container, kafka)
}

fn workload(events: u64, customers: u64, bad_ratio: f64) -> Workload {
    Workload::new(GeneratorConfig {
        events,
        customers,
        bad_ratio,
        anonymous_ratio: 0.05,
        ..GeneratorConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_and_is_committed_on_a_real_broker() {
    let (_container, kafka) = real_kafka(4).await;
    let work = workload(3000, 400, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let _app = spawn_app(&AppConfig::new(&kafka, &sim));

    wait_all_committed(&kafka, GROUP, Duration::from_secs(120)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let stats = sim.stats();
    assert_eq!(stats.accepted as usize, work.customer_events());
    assert!(kafka.read_all(DLQ).is_empty(), "nothing was dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_nothing_on_a_real_broker() {
    let (_container, kafka) = real_kafka(6).await;
    let work = workload(12_000, 1500, 0.0);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    sim.set_faults(Faults {
        latency: Latency::fixed_ms(2),
        ..Faults::none()
    })
    .unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 2000.0;
    config.settings.rate_limit.burst = 100;
    let total = work.customer_events() as u64;

    let mut app = spawn_app(&config);
    for kill in 1..=3u64 {
        let target = total * kill / 5;
        wait_for(Duration::from_secs(120), "progress before a kill", || {
            sim.stats().accepted >= target
        })
        .await;
        app.kill();
        app = spawn_app(&config);
    }
    wait_all_committed(&kafka, GROUP, Duration::from_secs(180)).await;

    assert_eq!(
        work.lost_profiles(&sim),
        Vec::<String>::new(),
        "lost after kills"
    );
    assert!(sim.stats().accepted >= total);
    let (status, _) = app.terminate(Duration::from_secs(15));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_dead_lettered_byte_for_byte_on_a_real_broker() {
    let (_container, kafka) = real_kafka(3).await;
    let work = workload(1500, 200, 0.05);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let _app = spawn_app(&AppConfig::new(&kafka, &sim));

    wait_all_committed(&kafka, GROUP, Duration::from_secs(120)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let source = kafka.read_all(TOPIC);
    let letters = kafka.read_all(DLQ);
    assert_eq!(letters.len(), work.malformed().values().sum::<usize>());
    for letter in &letters {
        let partition: i32 = letter.headers["pps-source-partition"].parse().unwrap();
        let offset: i64 = letter.headers["pps-source-offset"].parse().unwrap();
        let original = source
            .iter()
            .find(|r| r.partition == partition && r.offset == offset)
            .expect("the source record exists");
        assert_eq!(letter.value, original.value, "value byte for byte");
        assert_eq!(letter.key, original.key, "key byte for byte");
        assert!(!letter.headers["pps-error-class"].is_empty());
    }
}
