//! The Target client against the simulator over real HTTP: every kind of
//! answer is classified as the contract says, parameters arrive intact (in
//! the query string or, past 8 KB, in a form body), and the token file is
//! honoured and re-read.

use crate::helpers::*;
use pos_profile_sync::event::{parse_rfc3339, Identity};
use pos_profile_sync::mapping::{Attribute, ProfileUpdate};
use pos_profile_sync::ops::config::TargetSettings;
use pos_profile_sync::target::{TargetClient, Verdict};
use pps_target_simulator::{Failure, Faults, RetryAfter};
use std::time::Duration;

fn settings(base_url: String, timeout_ms: u64, token_file: String) -> TargetSettings {
    TargetSettings {
        client_code: CLIENT.into(),
        base_url,
        token_file,
        timeout_ms,
        ..TargetSettings::default()
    }
}

fn update(id: &str, attributes: &[(&str, &str)]) -> ProfileUpdate {
    ProfileUpdate {
        identity: Identity::ThirdParty(id.into()),
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

#[tokio::test]
async fn every_kind_of_answer_is_classified_over_real_http() {
    let sim = start_simulator(None).await;
    let client = TargetClient::new(&settings(sim.base_url(), 300, String::new()), 4).unwrap();
    let profile = update("CRM-1", &[("lastPurchaseTotal", "12.50")]);

    let ok = client.send(&profile).await;
    assert_eq!((ok.verdict, ok.status), (Verdict::Accepted, Some(200)));

    sim.set_faults(Faults {
        failures: vec![Failure::new(400, 1.0)],
        ..Faults::none()
    })
    .unwrap();
    assert_eq!(
        client.send(&profile).await.verdict,
        Verdict::Rejected { status: 400 }
    );

    sim.set_faults(Faults {
        failures: vec![Failure::new(503, 1.0).with_retry_after(RetryAfter::Seconds(2))],
        ..Faults::none()
    })
    .unwrap();
    assert_eq!(
        client.send(&profile).await.verdict,
        Verdict::Retry {
            status: Some(503),
            retry_after: Some(Duration::from_secs(2))
        }
    );

    sim.set_faults(Faults {
        hang_probability: 1.0,
        ..Faults::none()
    })
    .unwrap();
    let hung = client.send(&profile).await;
    assert_eq!(
        hung.verdict,
        Verdict::Retry {
            status: None,
            retry_after: None
        }
    );
    assert!(
        hung.timed_out,
        "a hang ends as a timeout after target.timeout_ms"
    );
    assert!(hung.elapsed < Duration::from_secs(2));

    sim.set_faults(Faults {
        reset_probability: 1.0,
        ..Faults::none()
    })
    .unwrap();
    let reset = client.send(&profile).await;
    assert_eq!(
        (reset.verdict, reset.status, reset.timed_out),
        (
            Verdict::Retry {
                status: None,
                retry_after: None
            },
            None,
            false
        ),
        "a reset connection is retried"
    );
    assert_eq!(sim.stats().resets, 1);

    sim.set_faults(Faults::none()).unwrap();
    assert_eq!(
        client.send(&profile).await.verdict,
        Verdict::Accepted,
        "the pool recovers after a reset"
    );
    let closed = TargetClient::new(
        &settings(
            format!("http://127.0.0.1:{}", free_port()),
            300,
            String::new(),
        ),
        1,
    )
    .unwrap();
    let refused = closed.send(&profile).await;
    assert_eq!(
        refused.verdict,
        Verdict::Retry {
            status: None,
            retry_after: None
        }
    );
    assert!(!refused.timed_out);
}

#[tokio::test]
async fn values_arrive_intact_in_the_query_and_in_a_form_body() {
    let sim = start_simulator(None).await;
    let client = TargetClient::new(&settings(sim.base_url(), 2000, String::new()), 4).unwrap();
    let tricky = "Zürich Süd & Co: 50% + 10 = \"deal\", a,b\nnext 東京 🎉";
    let small = update("CRM 1/+&", &[("store", tricky)]);
    assert_eq!(client.send(&small).await.verdict, Verdict::Accepted);
    let stored = sim.profile_third_party("CRM 1/+&").expect("stored");
    assert_eq!(stored.get("store").map(String::as_str), Some(tricky));

    // 4 × 256 characters of 3-byte UTF-8: over 8 KB encoded, so a form body.
    let long = "日".repeat(256);
    let attributes: Vec<(String, String)> =
        (0..4).map(|i| (format!("a{i}"), long.clone())).collect();
    let refs: Vec<(&str, &str)> = attributes
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        client.send(&update("CRM-2", &refs)).await.verdict,
        Verdict::Accepted
    );
    let stored = sim.profile_third_party("CRM-2").expect("stored");
    assert_eq!(stored.len(), 4);
    assert!(stored.values().all(|v| v == &long));
}

#[tokio::test]
async fn the_token_file_is_sent_and_a_replaced_one_is_picked_up() {
    let sim = start_simulator(Some("second")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    write_file(&path, "first\n");
    let client = TargetClient::new(
        &settings(sim.base_url(), 2000, path.display().to_string()),
        4,
    )
    .unwrap();
    let profile = update("CRM-3", &[("x", "1")]);
    assert_eq!(
        client.send(&profile).await.verdict,
        Verdict::AuthFailed { status: 401 }
    );
    write_file(&path, "  second\n");
    // A refused token is re-read at once.
    assert_eq!(client.send(&profile).await.verdict, Verdict::Accepted);
}
