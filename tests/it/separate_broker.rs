//! What only a broker in its own process can show: a group whose pods come and
//! go, static membership, and Kafka TLS and SASL end to end. The group tests run
//! on whichever broker `PPS_TEST_BROKER` names; the TLS and SASL ones need tansu
//! (`PPS_TEST_BROKER=tansu PPS_TANSU_BIN=$(scripts/tansu.sh)`, then
//! `--include-ignored`), since librdkafka's mock cluster speaks neither. The
//! static-membership test is ignored: no broker available here supports it
//! (see `tests/BROKER.md`).

use crate::helpers::tansu::{free_address, Tansu, TansuOptions, TlsTerminator};
use crate::helpers::*;
use pos_profile_sync::generator::GeneratorConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GROUP: &str = "pos-profile-sync";

fn workload(events: u64, customers: u64) -> Workload {
    Workload::new(GeneratorConfig {
        events,
        customers,
        bad_ratio: 0.01,
        anonymous_ratio: 0.02,
        ..GeneratorConfig::default()
    })
}

/// A gauge or counter of a pod, -1 when it does not answer.
async fn metric(app: &App, series: &str) -> f64 {
    app.metric(series).await.unwrap_or(-1.0)
}

/// Waits until a metric of a pod satisfies `done`.
async fn wait_metric(app: &App, series: &str, limit: Duration, done: impl Fn(f64) -> bool) {
    let started = Instant::now();
    loop {
        let value = metric(app, series).await;
        if done(value) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{series} is {value} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `pods` own `partitions` partitions between them, shared as
/// evenly as they can be: the cooperative assignor's last round is done. A
/// total alone is not enough: between two rounds every partition can be owned
/// while the assignor is about to move one more (tests/BROKER.md, 5).
async fn wait_group_settled(pods: &[&App], partitions: u32, limit: Duration) {
    let started = Instant::now();
    loop {
        let mut owned = Vec::new();
        for pod in pods {
            owned.push(metric(pod, "pps_assigned_partitions").await);
        }
        if settled(&owned, partitions) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "the pods own {owned:?} partitions after {limit:?}, not {partitions} evenly between them"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every partition owned, and no pod owning more than one partition over
/// another (what a balanced assignment is).
fn settled(owned: &[f64], partitions: u32) -> bool {
    let most = owned.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let fewest = owned.iter().copied().fold(f64::INFINITY, f64::min);
    owned.iter().sum::<f64>() == f64::from(partitions) && most - fewest <= 1.0
}

#[test]
fn a_group_is_settled_only_when_every_partition_is_owned_evenly() {
    // Between two cooperative rounds: all six owned, one more to move.
    assert!(!settled(&[2.0, 3.0, 1.0], 6));
    assert!(!settled(&[2.0, 2.0, 1.0], 6));
    assert!(settled(&[2.0, 2.0, 2.0], 6));
    assert!(settled(&[2.0, 1.0], 3));
    // A pod that does not answer (-1) never settles the group.
    assert!(!settled(&[-1.0, 4.0, 3.0], 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pods_with_one_joining_and_one_leaving_lose_nothing_and_keep_the_group_budget() {
    let kafka = Kafka::start(6);
    let work = workload(3000, 700);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 150.0;
    config.settings.rate_limit.burst = 6;
    let mut first = spawn_app(&config);
    let mut second = spawn_app(&config);
    wait_for(Duration::from_secs(90), "a quarter of the work", || {
        sim.stats().accepted >= 700
    })
    .await;
    let mut third = spawn_app(&config);
    wait_metric(
        &third,
        "pps_assigned_partitions",
        Duration::from_secs(60),
        |n| n >= 1.0,
    )
    .await;
    // tansu 0.6 does not rebalance again when a member leaves in the middle
    // of a cooperative rebalance (tests/BROKER.md, 5): the first pod leaves
    // once the three pods own all six partitions between them.
    wait_group_settled(&[&first, &second, &third], 6, Duration::from_secs(60)).await;
    // The first pod leaves as Kubernetes stops it: SIGTERM, drain, commit.
    let (status, _) = first.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "the leaving pod exits cleanly: {status:?}; log:\n{}",
        first.log_text()
    );
    wait_all_committed(&kafka, GROUP, Duration::from_secs(120)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let letters = kafka.read_all(DLQ);
    assert!(
        letters.len() >= work.malformed().values().sum::<usize>(),
        "every malformed event is dead-lettered"
    );
    let busiest = busiest_second(&sim);
    assert!(
        busiest <= 156,
        "busiest second saw {busiest}, group budget 150 + burst 6; per second: {:?}",
        sim.stats().requests_per_second.0
    );
    for app in [&mut second, &mut third] {
        let (status, _) = app.terminate(Duration::from_secs(15));
        assert!(status.success());
    }
}

/// A pod named `name` with static membership (the chart fills
/// `group.instance.id` from the pod's name) and a session timeout of a minute.
fn static_member(config: &AppConfig, name: &str) -> AppConfig {
    let mut config = config.clone();
    for (key, value) in [
        ("GROUP_INSTANCE_ID", name),
        ("SESSION_TIMEOUT_MS", "60000"),
        ("MAX_POLL_INTERVAL_MS", "60000"),
    ] {
        config
            .env
            .push((format!("PPS_KAFKA__PROPERTIES__{key}"), value.into()));
    }
    config
}

/// The partitions of the last non-empty "Partitions assigned" line of a pod's log.
fn last_assignment(log: &str) -> String {
    log.lines()
        .filter(|line| line.contains("Partitions assigned."))
        .map(without_colours)
        .filter_map(|line| Some(line.split("partitions=").nth(1)?.trim().to_owned()))
        .rfind(|partitions| !partitions.is_empty())
        .unwrap_or_default()
}

/// A log line without its terminal colour codes (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a broker with static membership: neither librdkafka's mock cluster nor tansu 0.6 gives a restarted static member its place back (tests/BROKER.md)"]
async fn a_static_member_killed_and_restarted_gets_its_partitions_back_before_its_session_times_out(
) {
    let kafka = Kafka::start(4);
    let work = workload(4000, 800);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.rate_limit.per_second = 400.0;
    config.settings.rate_limit.burst = 20;
    let mut pod_a = spawn_app(&static_member(&config, "pos-profile-sync-a"));
    let pod_b = spawn_app(&static_member(&config, "pos-profile-sync-b"));
    for pod in [&pod_a, &pod_b] {
        wait_metric(
            pod,
            "pps_assigned_partitions",
            Duration::from_secs(60),
            |n| n == 2.0,
        )
        .await;
    }
    wait_for(Duration::from_secs(60), "some progress", || {
        sim.stats().accepted >= 500
    })
    .await;
    let owned_by_a = last_assignment(&pod_a.log_text());
    let owned_by_b = last_assignment(&pod_b.log_text());

    // Without static membership the dead member would keep its partitions
    // until its 60 s session timed out; with it, the restarted pod takes its
    // place in the group at once.
    pod_a.kill();
    pod_a = spawn_app(&static_member(&config, "pos-profile-sync-a"));
    wait_metric(
        &pod_a,
        "pps_assigned_partitions",
        Duration::from_secs(30),
        |n| n == 2.0,
    )
    .await;
    assert_eq!(last_assignment(&pod_a.log_text()), owned_by_a);
    wait_all_committed(&kafka, GROUP, Duration::from_secs(120)).await;

    assert_eq!(last_assignment(&pod_b.log_text()), owned_by_b);
    assert_eq!(
        metric(&pod_b, r#"pps_rebalances_total{kind="revoke"}"#).await,
        -1.0,
        "the other pod never gave a partition up"
    );
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
}

/// A CA, a broker certificate it signed for 127.0.0.1, and a CA that signed nothing.
struct BrokerPki {
    dir: tempfile::TempDir,
}

impl BrokerPki {
    fn generate() -> BrokerPki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = certificate_authority("kafka test CA");
        let mut server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server certificate parameters");
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate().unwrap();
        write("broker.pem", server.signed_by(&key, &ca).unwrap().pem());
        write("broker.key", key.serialize_pem());
        write("ca.pem", ca.pem());
        write("other-ca.pem", certificate_authority("another CA").pem());
        BrokerPki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// tansu behind stunnel: clients see only TLS on the advertised address.
fn kafka_over_tls(pki: &BrokerPki, partitions: i32) -> (Kafka, TlsTerminator) {
    let terminator_address = free_address();
    let broker = Tansu::start(TansuOptions {
        advertised: Some(terminator_address),
        ..TansuOptions::default()
    });
    let terminator = TlsTerminator::start(
        terminator_address,
        broker.listen_address(),
        &pki.path("broker.pem"),
        &pki.path("broker.key"),
    );
    let mut kafka = Kafka::on_tansu(broker, partitions);
    kafka.client_properties = tls_properties(&pki.path("ca.pem"));
    (kafka, terminator)
}

fn tls_properties(ca: &Path) -> Vec<(String, String)> {
    vec![
        ("security.protocol".into(), "SSL".into()),
        ("ssl.ca.location".into(), ca.display().to_string()),
    ]
}

/// The service's environment for these librdkafka properties.
fn property_env(properties: &[(String, String)]) -> Vec<(String, String)> {
    properties
        .iter()
        .map(|(key, value)| {
            let name = key.replace('.', "_").to_ascii_uppercase();
            (format!("PPS_KAFKA__PROPERTIES__{name}"), value.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu and stunnel: PPS_TEST_BROKER=tansu PPS_TANSU_BIN=$(scripts/tansu.sh)"]
async fn the_service_delivers_everything_over_kafka_tls_with_a_generated_ca() {
    let pki = BrokerPki::generate();
    let (kafka, _terminator) = kafka_over_tls(&pki, 3);
    let work = workload(1500, 300);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim);
    config.env = property_env(&kafka.client_properties);
    let mut app = spawn_app(&config);

    wait_all_committed(&kafka, GROUP, Duration::from_secs(90)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    assert_eq!(
        kafka.read_all(DLQ).len(),
        work.malformed().values().sum::<usize>(),
        "the malformed events are dead-lettered over TLS too"
    );
    let (status, _) = app.terminate(Duration::from_secs(15));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu and stunnel: PPS_TEST_BROKER=tansu PPS_TANSU_BIN=$(scripts/tansu.sh)"]
async fn a_broker_certificate_from_an_untrusted_ca_is_named_in_the_log_and_nothing_is_committed() {
    let pki = BrokerPki::generate();
    let (kafka, _terminator) = kafka_over_tls(&pki, 2);
    let work = workload(200, 50);
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim);
    config.env = property_env(&tls_properties(&pki.path("other-ca.pem")));
    let app = spawn_app(&config);

    let started = Instant::now();
    while !app.log_text().contains("certificate verify failed") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the log names the untrusted certificate:\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(app.get("/readyz").await.map(|r| r.0), Some(200));
    assert_eq!(sim.stats().total, 0, "nothing reached Target");
    assert!(
        kafka.committed(GROUP).iter().all(|c| *c < 0),
        "nothing is committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu: PPS_TEST_BROKER=tansu PPS_TANSU_BIN=$(scripts/tansu.sh)"]
async fn a_scram_password_the_broker_refuses_is_named_in_the_log_and_nothing_reaches_target() {
    let broker = Tansu::start(TansuOptions {
        authentication: true,
        ..TansuOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("sasl-password");
    std::fs::write(&password, "not-the-password\n").unwrap();
    let sim = start_simulator(None).await;
    let mut config = AppConfig::with_bootstrap(&broker.bootstrap, &sim);
    config.env = property_env(&[
        ("security.protocol".into(), "SASL_PLAINTEXT".into()),
        ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
        ("sasl.username".into(), "pos-profile-sync".into()),
    ]);
    config.env.push((
        "PPS_KAFKA__PROPERTIES__SASL_PASSWORD_FILE".into(),
        password.display().to_string(),
    ));
    let app = spawn_app(&config);

    let started = Instant::now();
    while !app.log_text().contains("SASL authentication error") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the log names the refused authentication:\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !app.log_text().contains("not-the-password"),
        "the password read through sasl.password_file is never logged"
    );
    assert_ne!(app.get("/readyz").await.map(|r| r.0), Some(200));
    assert_eq!(sim.stats().total, 0, "nothing reached Target");
}
