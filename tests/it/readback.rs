//! Profile fetches and read-back verification against the simulator over real
//! HTTP: the fetch client finds a profile with its attributes, tells Adobe's
//! "no profile" answer from a misrouted request, and sends the token; the
//! verification task sorts accepted updates into applied, not yet applied,
//! not found and different; and `verify` does the same from the command line
//! with its exit code. Profiles are created the one way Target creates them
//! for a server: a bulk v2 batch.

use crate::helpers::*;
use pos_profile_sync::delivery::fetch_budget::{FetchBudget, ProfileFetcher};
use pos_profile_sync::delivery::verify::{self, Verifier};
use pos_profile_sync::event::Identity;
use pos_profile_sync::mapping::{Decision, Mapping, ProfileUpdate};
use pos_profile_sync::ops::config::{TargetSettings, VerifySettings};
use pos_profile_sync::ops::metrics::Metrics;
use pos_profile_sync::target::bulk::{BatchEncoder, BatchKind, BatchState, BulkClient};
use pos_profile_sync::target::fetch::{FetchClient, FetchOutcome};
use pps_target_simulator::{BulkFaults, SimulatorHandle};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A simulator that follows Adobe with no profile at start: only what a test
/// creates (through a v2 batch) exists, so a fetch can find nothing.
async fn faithful_simulator(token: Option<&str>) -> SimulatorHandle {
    crate::bulk::start(token, BulkFaults::default()).await
}

fn settings(sim: &SimulatorHandle, token_file: &str) -> TargetSettings {
    TargetSettings {
        client_code: CLIENT.into(),
        base_url: sim.base_url(),
        token_file: token_file.into(),
        timeout_ms: 5_000,
        ..TargetSettings::default()
    }
}

/// Creates (or updates) profiles through a bulk v2 batch and waits until it is applied.
async fn create(sim: &SimulatorHandle, token_file: &str, updates: &[ProfileUpdate]) {
    let client = BulkClient::new(&settings(sim, token_file)).unwrap();
    let kind = BatchKind::of(&updates[0].identity);
    let mut encoder = BatchEncoder::new(kind);
    for update in updates {
        encoder.push(update).expect("a batch row");
    }
    let submitted = client
        .submit(encoder.finish().body().clone())
        .await
        .expect("submitted");
    for _ in 0..100 {
        let report = client
            .status(&submitted.status_url)
            .await
            .expect("a status");
        if report.state == BatchState::Complete {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the batch did not complete");
}

fn values(outcome: &FetchOutcome) -> Vec<(String, String)> {
    match outcome {
        FetchOutcome::Found { attributes } => attributes
            .iter()
            .map(|(name, a)| (name.clone(), a.value.clone()))
            .collect(),
        other => panic!("expected a profile, got {other:?}"),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_profile_target_has_is_found_with_its_attributes_and_one_it_lacks_is_not_found() {
    let sim = faithful_simulator(None).await;
    let third = Identity::ThirdParty("CRM é&x?#1".into());
    let pc = Identity::Pc("pc a/b".into());
    create(
        &sim,
        "",
        &[profile_update(
            third.clone(),
            &[("store", "Zürich & Co"), ("tier", "gold")],
        )],
    )
    .await;
    create(
        &sim,
        "",
        &[profile_update(pc.clone(), &[("total", "12.50")])],
    )
    .await;
    let client = FetchClient::new(&settings(&sim, ""), 2).unwrap();
    assert_eq!(
        values(&client.fetch(&third).await),
        pairs(&[("store", "Zürich & Co"), ("tier", "gold")])
    );
    assert_eq!(
        values(&client.fetch(&pc).await),
        pairs(&[("total", "12.50")])
    );
    assert_eq!(
        client
            .fetch(&Identity::ThirdParty("CRM-unknown".into()))
            .await,
        FetchOutcome::NotFound
    );
    assert_eq!(
        client.fetch(&Identity::Pc("CRM é&x?#1".into())).await,
        FetchOutcome::NotFound,
        "namespaces are apart"
    );
}

#[tokio::test]
async fn a_fetch_sent_to_the_wrong_place_is_rejected_never_taken_for_a_missing_profile() {
    let sim = faithful_simulator(None).await;
    let mut wrong = settings(&sim, "");
    wrong.base_url = format!("{}/not-target", sim.base_url());
    let client = FetchClient::new(&wrong, 1).unwrap();
    assert_eq!(
        client.fetch(&Identity::ThirdParty("CRM-1".into())).await,
        FetchOutcome::Rejected { status: 404 }
    );
    let mut closed = settings(&sim, "");
    closed.base_url = format!("http://127.0.0.1:{}", free_port());
    let client = FetchClient::new(&closed, 1).unwrap();
    assert_eq!(
        client.fetch(&Identity::ThirdParty("CRM-1".into())).await,
        FetchOutcome::Retry {
            status: None,
            retry_after: None
        }
    );
}

#[tokio::test]
async fn the_token_goes_with_every_fetch_and_a_refused_one_is_re_read() {
    let sim = faithful_simulator(Some("secret-1")).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_file(&token, "secret-1\n");
    let token_file = token.to_str().unwrap();
    let id = Identity::ThirdParty("CRM-1".into());
    create(
        &sim,
        token_file,
        &[profile_update(id.clone(), &[("tier", "gold")])],
    )
    .await;
    let client = FetchClient::new(&settings(&sim, token_file), 1).unwrap();
    assert_eq!(values(&client.fetch(&id).await), pairs(&[("tier", "gold")]));
    sim.set_token(Some("secret-2".into()));
    assert_eq!(
        client.fetch(&id).await,
        FetchOutcome::AuthFailed { status: 401 }
    );
    write_file(&token, "secret-2\n");
    assert_eq!(values(&client.fetch(&id).await), pairs(&[("tier", "gold")]));
}

#[tokio::test]
async fn accepted_updates_are_read_back_as_applied_not_yet_applied_not_found_or_different() {
    let sim = faithful_simulator(None).await;
    let metrics = Arc::new(Metrics::new());
    let verify_settings = VerifySettings {
        sample_ratio: 1.0,
        delay_ms: 0,
        interval_ms: 100,
        max_pending: 100,
    };
    let verifier = Verifier::new(&verify_settings, metrics.clone()).expect("on");
    let id = |name: &str| Identity::ThirdParty(name.into());
    let x = |name: &str, value: &str| profile_update(id(name), &[("x", value)]);

    // Applied: Target holds what was accepted.
    create(&sim, "", &[x("applied", "1")]).await;
    verifier.offer(&x("applied", "1"));
    // Not found: Target never had the profile (a single update to it changed nothing).
    verifier.offer(&x("missing", "1"));
    // Not yet applied: Target holds a value it set before the update was accepted.
    create(&sim, "", &[x("late", "old")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    verifier.offer(&x("late", "new"));
    // Different: Target holds another value it set after the update was accepted.
    verifier.offer(&x("other", "mine"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    create(&sim, "", &[x("other", "theirs")]).await;

    let fetcher = ProfileFetcher {
        client: Arc::new(FetchClient::new(&settings(&sim, ""), 2).unwrap()),
        budget: Arc::new(FetchBudget::whole(50.0, 5, metrics.clone())),
        metrics: metrics.clone(),
        gate: None,
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(verify::task::run(verifier, fetcher, stop.clone()));
    let count = |result: &str| {
        metrics
            .encode()
            .lines()
            .find(|line| line.starts_with(&format!("pps_verify_total{{result=\"{result}\"}}")))
            .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(10), "four read-backs", || {
        ["applied", "not_yet_applied", "not_found", "different"]
            .iter()
            .map(|r| count(r))
            .sum::<u64>()
            == 4
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    for result in ["applied", "not_yet_applied", "not_found", "different"] {
        assert_eq!(count(result), 1, "{result}\n{}", metrics.encode());
    }
    let text = metrics.encode();
    assert!(
        text.contains("pps_target_fetches_total{outcome=\"found\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("pps_target_fetches_total{outcome=\"not_found\"} 1"),
        "{text}"
    );
    assert!(text.contains("pps_fetch_share_per_second 50.0"), "{text}");
    assert!(text.contains("pps_verify_pending 0"), "{text}");
    // Fetches are not updates: the simulator saw none.
    assert_eq!(sim.stats().total, 0);
}

/// A sale of `id` as the POS sends it.
fn sale(id: &str, store: &str) -> String {
    format!(
        r#"{{"event_id":"e-{id}-{store}","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z","store_id":"{store}","customer":{{"third_party_id":"{id}"}},"currency":"EUR","total":"10","items":[]}}"#
    )
}

#[tokio::test]
async fn the_verify_command_reads_every_profile_back_and_exits_0_only_when_all_are_applied() {
    let sim = faithful_simulator(None).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let lines = [
        sale("CRM-1", "S0"),
        sale("CRM-2", "S2"),
        sale("CRM-1", "S1"),
    ];
    write_file(&events, &(lines.join("\n") + "\n"));
    let config = dir.path().join("config.toml");
    write_file(
        &config,
        &format!(
            "[target]\nclient_code = \"{CLIENT}\"\nbase_url = \"{}\"\n[existence]\nfetch_per_second = 100.0\n",
            sim.base_url()
        ),
    );
    // CRM-1 exists with what its latest event says; CRM-2 does not exist.
    let Decision::Update(latest) = Mapping::default().decide(lines[2].as_bytes()) else {
        panic!("an update");
    };
    create(&sim, "", &[latest]).await;
    let (config, events) = (config.clone(), events.clone());
    let run = move || {
        let output = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
            .args(["verify", "--config", config.to_str().unwrap(), "--input"])
            .arg(&events)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run verify");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let out: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        out,
        [
            r#"{"identity":{"mbox3rdPartyId":"CRM-1"},"result":"applied"}"#,
            r#"{"identity":{"mbox3rdPartyId":"CRM-2"},"result":"not_found"}"#,
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "2 profiles: 1 applied (50.0%), 0 not yet applied (0.0%), 1 not found (50.0%)"
        ),
        "{stderr}"
    );

    let Decision::Update(second) = Mapping::default().decide(lines[1].as_bytes()) else {
        panic!("an update");
    };
    create(&sim, "", &[second]).await;
    let (code, stdout, stderr) = tokio::task::spawn_blocking(run).await.unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("2 profiles: 2 applied (100.0%)"),
        "{stderr}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
        .args(["verify", "--input", "/nonexistent/events.ndjson"])
        .env("PPS_TARGET__CLIENT_CODE", CLIENT)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--input /nonexistent/events.ndjson"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_service_reads_back_its_accepted_updates_within_a_fetch_budget_of_its_own() {
    let kafka = Kafka::start(2);
    let work = Workload::new(pos_profile_sync::generator::GeneratorConfig {
        events: 300,
        customers: 40,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        ..Default::default()
    });
    let sim = faithful_simulator(None).await;
    // Every customer has a profile already (created the way a server can: a v2 batch).
    let profiles = work.expected_profiles();
    let (mut third, mut pc) = (Vec::new(), Vec::new());
    for n in profiles.keys() {
        match pos_profile_sync::generator::customer_id(*n) {
            (true, id) => third.push(profile_update(
                Identity::ThirdParty(id.into()),
                &[("seeded", "1")],
            )),
            (false, id) => pc.push(profile_update(Identity::Pc(id.into()), &[("seeded", "1")])),
        }
    }
    for batch in [third, pc] {
        if !batch.is_empty() {
            create(&sim, "", &batch).await;
        }
    }
    kafka.produce(&work.events);
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.existence.fetch_per_second = 400.0;
    config.settings.existence.fetch_burst = 20;
    config.settings.verify.sample_ratio = 1.0;
    config.settings.verify.delay_ms = 3000;
    config.settings.verify.interval_ms = 500;
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;

    let series = |result: &str| format!("pps_verify_total{{result=\"{result}\"}}");
    let mut applied = 0.0;
    for _ in 0..150 {
        applied = app.metric(&series("applied")).await.unwrap_or(0.0);
        if applied >= profiles.len() as f64 && app.metric("pps_verify_pending").await == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        applied >= profiles.len() as f64,
        "{applied} of {} profiles read back as applied",
        profiles.len()
    );
    for other in ["not_yet_applied", "not_found", "different", "failed"] {
        assert_eq!(
            app.metric(&series(other)).await.unwrap_or(0.0),
            0.0,
            "{other}"
        );
    }
    assert_eq!(
        app.metric(r#"pps_target_fetches_total{outcome="found"}"#)
            .await,
        Some(applied)
    );
    // The fetch budget is the pod's whole share of its own key, beside the update budget.
    assert_eq!(app.metric("pps_fetch_share_per_second").await, Some(400.0));
    assert_eq!(
        app.metric("pps_rate_share_per_second").await,
        Some(1_000_000.0)
    );
    // Fetches are not updates: Target saw one update per event, nothing more.
    let stats = sim.stats();
    assert_eq!(stats.total as usize, work.customer_events());
    // And Target holds what the events say (beside the seeded attribute).
    for (n, mut expected) in profiles {
        expected.insert("seeded".into(), "1".into());
        let actual = match pos_profile_sync::generator::customer_id(n) {
            (true, id) => sim.profile_third_party(&id),
            (false, id) => sim.profile_pc(&id),
        };
        assert_eq!(actual, Some(expected));
    }
    assert!(
        app.log_text()
            .contains("Read-back verification of accepted updates: "),
        "{}",
        app.log_text()
    );
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}
