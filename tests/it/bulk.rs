//! The bulk profile update API v2 over real HTTP: the project's encoder and
//! `BulkClient` against the simulator's `batchUpdate` and `batchStatus`. Values that
//! break forms and CSVs arrive exactly; batches complete only after their delay, stuck
//! ones never do; failed rows are listed and not applied; Adobe's 50 calls a minute,
//! wrong tokens and refused batches each become the error the caller acts on.

use crate::helpers::CLIENT;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use pos_profile_sync::event::{parse_rfc3339, Identity};
use pos_profile_sync::mapping::{Attribute, ProfileUpdate};
use pos_profile_sync::ops::config::TargetSettings;
use pos_profile_sync::target::bulk::{
    BatchEncoder, BatchKind, BatchReport, BatchState, BulkClient, BulkError, EncodedBatch,
    RetryCause,
};
use pps_target_simulator::{BulkFaults, Faults, Simulator, SimulatorConfig, SimulatorHandle};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(crate) async fn start(token: Option<&str>, bulk: BulkFaults) -> SimulatorHandle {
    let mut config = SimulatorConfig::new(CLIENT);
    config.token = token.map(str::to_owned);
    config.faults = Faults {
        bulk,
        ..Faults::none()
    };
    Simulator::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("the simulator starts")
}

fn client(sim: &SimulatorHandle, token_file: &str) -> BulkClient {
    BulkClient::new(&TargetSettings {
        client_code: CLIENT.into(),
        base_url: sim.base_url(),
        token_file: token_file.into(),
        timeout_ms: 5_000,
        ..TargetSettings::default()
    })
    .expect("a client")
}

fn update(identity: Identity, attributes: &[(&str, &str)]) -> ProfileUpdate {
    ProfileUpdate {
        identity,
        attributes: attributes
            .iter()
            .map(|(n, v)| Attribute {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        occurred_at: parse_rfc3339("2026-11-28T10:15:00Z").unwrap(),
    }
}

fn batch(kind: BatchKind, rows: &[(&str, &[(&str, &str)])]) -> EncodedBatch {
    let mut encoder = BatchEncoder::new(kind);
    for (id, attributes) in rows {
        encoder
            .push(&update(kind.identity(*id), attributes))
            .expect("a valid row");
    }
    encoder.finish()
}

/// Polls until the batch is no longer `incomplete` (at most 5 s).
async fn settle(client: &BulkClient, status_url: &str) -> BatchReport {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = client.status(status_url).await.expect("a status");
        if report.state != BatchState::Incomplete || Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A profile's attributes through Target's profile fetch route.
async fn read_back(sim: &SimulatorHandle, path: &str) -> Option<BTreeMap<String, String>> {
    let url = format!("{}/rest/v1/profiles/{path}?client={CLIENT}", sim.base_url());
    let response = reqwest::get(&url).await.expect("read-back answers");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let body = response.bytes().await.expect("a body");
    let document: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let attributes = document["profileAttributes"]
        .as_object()
        .expect("attributes");
    Some(
        attributes
            .iter()
            .map(|(name, a)| (name.clone(), a["value"].as_str().unwrap().to_owned()))
            .collect(),
    )
}

fn third_party_path(id: &str) -> String {
    format!("thirdPartyId/{}", utf8_percent_encode(id, NON_ALPHANUMERIC))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

const TRICKY: &[(&str, &str)] = &[
    ("percent", "100% & 50%25 off"),
    ("plus", "a+b %2B c"),
    ("equals", "x=y&z=w"),
    ("csv", "one,two,\"three\"\r\nfour\nfive"),
    ("unicode", "Zürich Süd – 日本 🎉"),
    ("spaces", "  padded  "),
];

#[tokio::test]
async fn tricky_values_arrive_exactly_once_the_batch_completes_after_its_delay() {
    let sim = start(
        None,
        BulkFaults {
            completion_delay_ms: 600,
            ..BulkFaults::default()
        },
    )
    .await;
    let client = client(&sim, "");
    let tricky_id = "CRM & co, #1 é";
    let first = batch(
        BatchKind::ThirdParty,
        &[
            (tricky_id, TRICKY),
            ("CRM-2", &[("tier", "gold"), ("store", "S1")]),
        ],
    );
    let submitted = client.submit(first.body().clone()).await.expect("accepted");
    assert!(
        submitted.status_url.starts_with(&format!(
            "{}/m2/{CLIENT}/v2/profile/batchStatus?batchId=",
            sim.base_url()
        )),
        "{}",
        submitted.status_url
    );

    let early = client.status(&submitted.status_url).await.expect("status");
    assert_eq!(early.state, BatchState::Incomplete);
    assert_eq!(early.batch_size, Some(2));
    assert_eq!(early.consumed_count, Some(0));
    assert_eq!(read_back(&sim, &third_party_path("CRM-2")).await, None);
    assert_eq!(sim.stats().bulk.rows_applied, 0);

    let done = settle(&client, &submitted.status_url).await;
    assert_eq!(done.state, BatchState::Complete);
    assert_eq!(
        (done.successful_updates, done.failed_updates),
        (Some(2), Some(0))
    );
    assert_eq!(
        read_back(&sim, &third_party_path(tricky_id)).await,
        Some(map(TRICKY))
    );
    assert_eq!(
        read_back(&sim, &third_party_path("CRM-2")).await,
        Some(map(&[("tier", "gold"), ("store", "S1")]))
    );

    // An empty value never clears an attribute; a later value replaces one.
    let second = batch(
        BatchKind::ThirdParty,
        &[("CRM-2", &[("tier", ""), ("store", "S2")])],
    );
    let submitted = client
        .submit(second.body().clone())
        .await
        .expect("accepted");
    assert_eq!(
        settle(&client, &submitted.status_url).await.state,
        BatchState::Complete
    );
    assert_eq!(
        read_back(&sim, &third_party_path("CRM-2")).await,
        Some(map(&[("tier", "gold"), ("store", "S2")]))
    );
    let stats = sim.stats().bulk;
    assert_eq!(
        (
            stats.batches_submitted,
            stats.rows_received,
            stats.rows_applied
        ),
        (2, 3, 3)
    );
    // Only the bulk counters moved.
    assert_eq!(sim.stats().total, 0);
}

#[tokio::test]
async fn pc_id_batches_update_pc_profiles() {
    let sim = start(None, BulkFaults::default()).await;
    let client = client(&sim, "");
    let pc = batch(
        BatchKind::Pc,
        &[("1368007744041-575948.01_00", &[("tier", "silver")])],
    );
    let submitted = client.submit(pc.body().clone()).await.expect("accepted");
    assert_eq!(
        settle(&client, &submitted.status_url).await.state,
        BatchState::Complete
    );
    assert_eq!(
        sim.profile_pc("1368007744041-575948.01_00"),
        Some(map(&[("tier", "silver")]))
    );
    assert_eq!(sim.profile_third_party("1368007744041-575948.01_00"), None);
}

#[tokio::test]
async fn a_stuck_batch_stays_stuck_and_is_never_applied() {
    let sim = start(
        None,
        BulkFaults {
            stuck_probability: 1.0,
            ..BulkFaults::default()
        },
    )
    .await;
    let client = client(&sim, "");
    let submitted = client
        .submit(
            batch(BatchKind::ThirdParty, &[("CRM-1", &[("tier", "gold")])])
                .body()
                .clone(),
        )
        .await
        .expect("accepted");
    for _ in 0..3 {
        let report = client.status(&submitted.status_url).await.expect("status");
        assert_eq!(report.state, BatchState::Stuck);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(sim.profile_third_party("CRM-1"), None);
    assert_eq!(sim.stats().bulk.rows_applied, 0);
}

#[tokio::test]
async fn failed_rows_are_listed_with_details_and_not_applied() {
    let sim = start(
        None,
        BulkFaults {
            row_failure_ids: vec!["CRM-bad".into()],
            ..BulkFaults::default()
        },
    )
    .await;
    let client = client(&sim, "");
    let encoded = batch(
        BatchKind::ThirdParty,
        &[
            ("CRM-ok", &[("tier", "gold")]),
            ("CRM-bad", &[("tier", "bronze")]),
        ],
    );
    let submitted = client
        .submit(encoded.body().clone())
        .await
        .expect("accepted");
    let report = settle(&client, &submitted.status_url).await;
    assert_eq!(report.state, BatchState::Complete);
    assert_eq!(report.failed_ids, ["CRM-bad"]);
    assert_eq!(
        (
            report.batch_size,
            report.consumed_count,
            report.successful_updates,
            report.failed_updates
        ),
        (Some(2), Some(2), Some(1), Some(1))
    );
    let failed_rows: Vec<usize> = report
        .failed_ids
        .iter()
        .flat_map(|id| encoded.rows_with_id(id))
        .collect();
    assert_eq!(failed_rows, [1]);
    assert_eq!(sim.profile_third_party("CRM-bad"), None);
    assert_eq!(
        sim.profile_third_party("CRM-ok"),
        Some(map(&[("tier", "gold")]))
    );
}

#[tokio::test]
async fn the_51st_bulk_call_in_a_minute_is_a_503_to_retry() {
    let sim = start(None, BulkFaults::default()).await;
    let client = client(&sim, "");
    let encoded = batch(BatchKind::ThirdParty, &[("CRM-1", &[("tier", "gold")])]);
    let submitted = client
        .submit(encoded.body().clone())
        .await
        .expect("accepted");
    for call in 2..=50 {
        client
            .status(&submitted.status_url)
            .await
            .unwrap_or_else(|error| panic!("call {call}: {error}"));
    }
    let over = client.status(&submitted.status_url).await;
    assert!(
        matches!(
            over,
            Err(BulkError::Retry {
                cause: RetryCause::Status(503),
                ..
            })
        ),
        "{over:?}"
    );
    let over = client.submit(encoded.body().clone()).await;
    assert!(
        matches!(
            over,
            Err(BulkError::Retry {
                cause: RetryCause::Status(503),
                ..
            })
        ),
        "{over:?}"
    );
    let stats = sim.stats().bulk;
    assert_eq!((stats.throttled, stats.batches_submitted), (2, 1));
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_until_the_file_has_the_right_one() {
    let sim = start(Some("right-token"), BulkFaults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "wrong-token\n").unwrap();
    let client = client(&sim, path.to_str().unwrap());
    let encoded = batch(BatchKind::ThirdParty, &[("CRM-1", &[("tier", "gold")])]);
    assert_eq!(
        client.submit(encoded.body().clone()).await,
        Err(BulkError::AuthFailed { status: 401 })
    );
    let status_url = format!(
        "{}/m2/{CLIENT}/v2/profile/batchStatus?batchId=x",
        sim.base_url()
    );
    assert_eq!(
        client.status(&status_url).await,
        Err(BulkError::AuthFailed { status: 401 })
    );
    assert_eq!(sim.stats().bulk.batches_submitted, 0);

    std::fs::write(&path, "right-token\n").unwrap();
    let submitted = client
        .submit(encoded.body().clone())
        .await
        .expect("accepted");
    assert_eq!(
        settle(&client, &submitted.status_url).await.state,
        BatchState::Complete
    );
    assert_eq!(
        sim.profile_third_party("CRM-1"),
        Some(map(&[("tier", "gold")]))
    );
}

#[tokio::test]
async fn refused_batches_are_success_false_and_retried() {
    let sim = start(None, BulkFaults::default()).await;
    let client = client(&sim, "");
    // Not an id column Adobe knows.
    let bad_header = client
        .submit("batch=mbox3rdPartyId%2Ctier%0ACRM-1%2Cgold")
        .await;
    assert!(
        matches!(
            &bad_header,
            Err(BulkError::Retry {
                cause: RetryCause::Refused(message),
                retry_after: None,
            }) if message.contains("thirdPartyId or pcId")
        ),
        "{bad_header:?}"
    );
    // A raw % in a cell: Adobe's "Unexpected error", no batch id.
    let raw_percent = client
        .submit("batch=thirdPartyId%2Coff%0ACRM-1%2C100%25")
        .await;
    assert_eq!(
        raw_percent,
        Err(BulkError::Retry {
            cause: RetryCause::Refused("Unexpected error".into()),
            retry_after: None,
        })
    );
    let stats = sim.stats().bulk;
    assert_eq!((stats.batches_refused, stats.batches_submitted), (2, 0));
    assert_eq!(sim.profile_third_party("CRM-1"), None);
}

#[tokio::test]
async fn an_unknown_batch_is_a_permanent_error() {
    let sim = start(None, BulkFaults::default()).await;
    let client = client(&sim, "");
    let status_url = format!(
        "{}/m2/{CLIENT}/v2/profile/batchStatus?batchId=acme-0-0",
        sim.base_url()
    );
    assert_eq!(
        client.status(&status_url).await,
        Err(BulkError::Rejected {
            status: 404,
            message: "Batch not found".into()
        })
    );
}

#[tokio::test]
async fn batches_far_over_the_update_paths_body_limit_are_taken() {
    let sim = start(None, BulkFaults::default()).await;
    let client = client(&sim, "");
    let value = "v".repeat(200);
    let mut encoder = BatchEncoder::new(BatchKind::ThirdParty);
    for i in 0..20_000 {
        encoder
            .push(&update(
                Identity::ThirdParty(format!("CRM-{i}").into()),
                &[("note", &value)],
            ))
            .unwrap();
    }
    let encoded = encoder.finish();
    assert!(
        encoded.body().len() > 4 * 1024 * 1024,
        "{}",
        encoded.body().len()
    );
    let submitted = client
        .submit(encoded.body().clone())
        .await
        .expect("accepted");
    let report = settle(&client, &submitted.status_url).await;
    assert_eq!(report.successful_updates, Some(20_000));
    assert_eq!(
        sim.profile_third_party("CRM-19999"),
        Some(map(&[("note", &value)]))
    );
}

#[tokio::test]
async fn bulk_faults_are_set_through_the_admin_route() {
    let sim = start(None, BulkFaults::default()).await;
    let http = reqwest::Client::new();
    let faults_url = format!("{}/_sim/faults", sim.base_url());
    let shown: serde_json::Value = serde_json::from_slice(
        &http
            .get(&faults_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(shown["bulk"]["calls_per_minute"], 50);

    let refused = http
        .put(&faults_url)
        .body(r#"{"bulk":{"stuck_probability":2.0}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);

    let set = http
        .put(&faults_url)
        .body(r#"{"bulk":{"stuck_probability":1.0,"calls_per_minute":0}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), reqwest::StatusCode::OK);
    assert_eq!(sim.faults().bulk.stuck_probability, 1.0);
    assert_eq!(sim.faults().bulk.calls_per_minute, 0);

    let client = client(&sim, "");
    let submitted = client
        .submit(
            batch(BatchKind::ThirdParty, &[("CRM-1", &[("tier", "gold")])])
                .body()
                .clone(),
        )
        .await
        .expect("accepted");
    // No limit now: more than 50 calls in a row pass, and the batch is stuck.
    for _ in 0..60 {
        let report = client.status(&submitted.status_url).await.expect("status");
        assert_eq!(report.state, BatchState::Stuck);
    }
    assert_eq!(sim.stats().bulk.status_polls, 60);
    assert_eq!(sim.stats().bulk.throttled, 0);
}
