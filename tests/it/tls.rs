//! Target over HTTPS: the simulator serves TLS with a generated test CA, the
//! client trusts it through `target.ca_file`, a client that does not trust it
//! fails the handshake and retries (never dead-letters), and the service
//! delivers every event over HTTPS end to end.

use crate::helpers::*;
use pos_profile_sync::event::{parse_rfc3339, Identity};
use pos_profile_sync::generator::GeneratorConfig;
use pos_profile_sync::mapping::{Attribute, ProfileUpdate};
use pos_profile_sync::ops::config::TargetSettings;
use pos_profile_sync::target::{TargetClient, Verdict};
use pps_target_simulator::{Existence, Simulator, SimulatorConfig, SimulatorHandle, TlsIdentity};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

async fn start_https_simulator() -> (SimulatorHandle, TlsIdentity) {
    let identity = TlsIdentity::generate().expect("a test CA");
    let sim = Simulator::start_tls(
        "127.0.0.1:0".parse().unwrap(),
        SimulatorConfig {
            existence: Existence::all_known(),
            ..SimulatorConfig::new(CLIENT)
        },
        &identity,
    )
    .await
    .expect("an HTTPS simulator");
    (sim, identity)
}

fn settings(base_url: String, ca_file: &Path) -> TargetSettings {
    TargetSettings {
        client_code: CLIENT.into(),
        base_url,
        ca_file: ca_file.display().to_string(),
        timeout_ms: 2000,
        ..TargetSettings::default()
    }
}

fn update(id: &str) -> ProfileUpdate {
    ProfileUpdate {
        identity: Identity::ThirdParty(id.into()),
        attributes: vec![Attribute {
            name: "lastPurchaseTotal".into(),
            value: "12.50".into(),
        }],
        occurred_at: parse_rfc3339("2026-11-28T10:15:00Z").unwrap(),
    }
}

#[tokio::test]
async fn an_update_is_accepted_over_https_when_the_ca_file_is_trusted() {
    let (sim, identity) = start_https_simulator().await;
    assert!(sim.base_url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, identity.trust_pem()).unwrap();

    let client = TargetClient::new(&settings(sim.base_url(), &ca), 2).unwrap();
    let attempt = client.send(&update("CRM-TLS-1")).await;
    assert_eq!(
        (attempt.verdict, attempt.status),
        (Verdict::Accepted, Some(200))
    );
    assert_eq!(
        sim.profile_third_party("CRM-TLS-1").unwrap()["lastPurchaseTotal"],
        "12.50"
    );

    // `localhost` is in the certificate too.
    let by_name = sim.base_url().replace("127.0.0.1", "localhost");
    let client = TargetClient::new(&settings(by_name, &ca), 2).unwrap();
    assert_eq!(
        client.send(&update("CRM-TLS-2")).await.verdict,
        Verdict::Accepted
    );
}

#[tokio::test]
async fn a_client_without_the_ca_fails_the_handshake_and_retries_instead_of_rejecting() {
    let (sim, _identity) = start_https_simulator().await;
    // Trusts a different CA: the simulator's certificate is unknown to it.
    let other = TlsIdentity::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, other.trust_pem()).unwrap();
    let untrusting = TargetClient::new(&settings(sim.base_url(), &ca), 2).unwrap();
    // And one with only the public roots.
    let public_roots = TargetClient::new(
        &TargetSettings {
            ca_file: String::new(),
            ..settings(sim.base_url(), &ca)
        },
        2,
    )
    .unwrap();

    for client in [untrusting, public_roots] {
        let attempt = client.send(&update("CRM-TLS-3")).await;
        assert_eq!(
            attempt.verdict,
            Verdict::Retry {
                status: None,
                retry_after: None
            }
        );
        assert_eq!(attempt.status, None);
        assert!(!attempt.timed_out, "a handshake failure is not a timeout");
    }
    assert_eq!(sim.stats().total, 0, "no request got through");
    assert_eq!(sim.profile_third_party("CRM-TLS-3"), None);
}

#[tokio::test]
async fn a_ca_file_that_is_missing_or_not_pem_stops_the_client_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let error = TargetClient::new(&settings("https://127.0.0.1:1".into(), &missing), 1)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("target.ca_file") && error.contains("missing-ca.pem"),
        "{error}"
    );

    let garbage = dir.path().join("garbage-ca.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let error = TargetClient::new(&settings("https://127.0.0.1:1".into(), &garbage), 1)
        .unwrap_err()
        .to_string();
    assert!(error.contains("garbage-ca.pem"), "{error}");
}

#[tokio::test]
async fn simulate_target_serves_https_and_writes_the_ca_to_trust() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("sim-ca.pem");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
        .args([
            "simulate-target",
            "--client-code",
            CLIENT,
            "--tls-self-signed",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-ca-out")
        .arg(&ca)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the CA file", || ca.is_file()).await;
    let client = TargetClient::new(&settings(format!("https://localhost:{port}"), &ca), 1)
        .expect("the written CA file is a usable ca_file");
    let mut attempts = Vec::new();
    for _ in 0..100 {
        let attempt = client.send(&update("CRM-TLS-4")).await;
        attempts.push(attempt);
        if attempt.verdict == Verdict::Accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        attempts.last().map(|a| a.verdict),
        Some(Verdict::Accepted),
        "never accepted over HTTPS: {attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_delivers_every_event_over_https_with_a_configured_ca() {
    let kafka = Kafka::start(3);
    let work = Workload::new(GeneratorConfig {
        events: 600,
        customers: 120,
        bad_ratio: 0.02,
        anonymous_ratio: 0.05,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let (sim, identity) = start_https_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("target-ca.pem");
    std::fs::write(&ca, identity.trust_pem()).unwrap();
    let mut config = AppConfig::new(&kafka, &sim);
    assert!(config.settings.target.base_url.starts_with("https://"));
    config
        .env
        .push(("PPS_TARGET__CA_FILE".into(), ca.display().to_string()));
    let _app = spawn_app(&config);

    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;

    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());
    let stats = sim.stats();
    assert_eq!(stats.accepted as usize, work.customer_events());
    assert_eq!(stats.total, stats.accepted);
    let letters = kafka.read_all(DLQ);
    assert_eq!(
        letters.len(),
        work.malformed().values().sum::<usize>(),
        "only the malformed events are dead-lettered"
    );
}

#[test]
fn check_config_names_an_unreadable_or_invalid_ca_file_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let good = dir.path().join("good-ca.pem");
    std::fs::write(&good, TlsIdentity::generate().unwrap().trust_pem()).unwrap();
    let cases = [
        (dir.path().join("absent-ca.pem"), Some(2), "absent-ca.pem"),
        (not_pem, Some(2), "not-a-ca.pem"),
        (good, Some(0), ""),
    ];
    for (ca, code, named) in cases {
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[target]\nclient_code = \"acme\"\nca_file = {:?}\n",
                ca.display().to_string()
            ),
        )
        .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), code, "{stderr}");
        assert!(
            stderr.contains("target.ca_file: ") == (code == Some(2)),
            "{stderr}"
        );
        assert!(stderr.contains(named), "{stderr}");
    }
}
