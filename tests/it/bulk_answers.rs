//! Bulk answers as Target gives them, through the batch sender and the
//! simulator over real HTTP: a batch Target keeps refusing (`success=false`)
//! is given up after a bounded number of answers with Target's message; a
//! batch Target forgot is sent again and completes; a batch Target keeps
//! losing (`stuck`) is sent again a bounded number of times, then given up.
//! The coordinator dead-letters a given-up batch's events as `target_rejected`
//! with that message.

use crate::helpers::{profile_update, CLIENT};
use bytes::Bytes;
use pos_profile_sync::delivery::batch_sender::{
    BatchSender, CallBudget, Completion, Submission, MAX_REFUSALS, MAX_RESUBMISSIONS,
};
use pos_profile_sync::delivery::gate::{RateShare, SendGate};
use pos_profile_sync::delivery::resubmissions::Resubmissions;
use pos_profile_sync::event::Identity;
use pos_profile_sync::ops::config::TargetSettings;
use pos_profile_sync::ops::metrics::Metrics;
use pos_profile_sync::retry::RetryPolicy;
use pos_profile_sync::target::bulk::{BatchEncoder, BatchKind, BulkClient};
use pps_target_simulator::{BulkFaults, SimulatorHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn start(bulk: BulkFaults) -> SimulatorHandle {
    crate::bulk::start(None, bulk).await
}

fn sender(sim: &SimulatorHandle) -> BatchSender {
    let client = BulkClient::new(&TargetSettings {
        client_code: CLIENT.into(),
        base_url: sim.base_url(),
        timeout_ms: 5_000,
        ..TargetSettings::default()
    })
    .expect("a client");
    let quick = RetryPolicy {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
    };
    BatchSender {
        client: Arc::new(client),
        calls: Arc::new(CallBudget::new(60_000)),
        retry: quick,
        poll: quick,
        metrics: Arc::new(Metrics::new()),
        resubmissions: Arc::new(Resubmissions::default()),
        gate: Arc::new(SendGate::new(
            RateShare {
                per_second: 1000.0,
                burst: 10,
            },
            quick,
        )),
    }
}

fn body(id: &str) -> Bytes {
    let mut encoder = BatchEncoder::new(BatchKind::ThirdParty);
    encoder
        .push(&profile_update(
            Identity::ThirdParty(id.into()),
            &[("tier", "gold")],
        ))
        .expect("a row");
    encoder.finish().body().clone()
}

/// Submits and waits as the coordinator does, sending again while Target
/// loses the batch; every submission and how it ended.
async fn deliver(sender: &BatchSender, body: &Bytes) -> (u32, Submission) {
    let abandon = CancellationToken::new();
    let mut accepted = 0;
    loop {
        match sender.submit(body, &abandon).await {
            Submission::Submitted { status_url } => {
                accepted += 1;
                match sender.await_completion(&status_url, &abandon).await {
                    Completion::Resubmit { .. } => continue,
                    Completion::Complete { failed_ids, .. } => {
                        assert!(failed_ids.is_empty());
                        return (accepted, Submission::Submitted { status_url });
                    }
                    Completion::Abandoned => panic!("nothing abandons"),
                }
            }
            other => return (accepted, other),
        }
    }
}

#[tokio::test]
async fn a_batch_target_keeps_refusing_is_given_up_with_its_message_after_a_bounded_number_of_answers(
) {
    let sim = start(BulkFaults::default()).await;
    let sender = sender(&sim);
    // Not a batch Target can read: it answers HTTP 200 with success=false.
    let refused = Bytes::from_static(b"batch=customerId%2Ctier%0ACRM-1%2Cgold");
    let (accepted, submission) = deliver(&sender, &refused).await;
    assert_eq!(accepted, 0);
    match submission {
        Submission::Rejected { status, message } => {
            assert_eq!(status, Some(200));
            assert!(
                message.starts_with(&format!(
                    "Target answered success=false {MAX_REFUSALS} times: "
                )),
                "{message}"
            );
            assert!(
                message.len() > "Target answered success=false 3 times: ".len(),
                "Target's own message follows: {message}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(sim.stats().bulk.batches_refused, u64::from(MAX_REFUSALS));
    assert!(sender.resubmissions.is_empty());
}

#[tokio::test]
async fn a_batch_target_forgot_is_sent_again_and_its_profile_lands() {
    let sim = start(BulkFaults {
        completion_delay_ms: 300,
        ..BulkFaults::default()
    })
    .await;
    let sender = sender(&sim);
    let batch = body("CRM-1");
    let abandon = CancellationToken::new();
    let Submission::Submitted { status_url } = sender.submit(&batch, &abandon).await else {
        panic!("submitted");
    };
    // Target forgets every batch (as after ten newer ones, or 24 hours).
    sim.reset();
    match sender.await_completion(&status_url, &abandon).await {
        Completion::Resubmit { why } => assert!(
            why.contains("the status call was refused with HTTP 404"),
            "{why}"
        ),
        other => panic!("expected a resubmission, got {other:?}"),
    }
    assert_eq!(
        sim.profile_third_party("CRM-1"),
        None,
        "the forgotten batch never applied"
    );
    let (accepted, submission) = deliver(&sender, &batch).await;
    assert_eq!(accepted, 1);
    assert!(matches!(submission, Submission::Submitted { .. }));
    assert_eq!(
        sim.profile_third_party("CRM-1").map(|p| p["tier"].clone()),
        Some("gold".to_owned())
    );
    assert!(
        sender.resubmissions.is_empty(),
        "a completed batch is forgotten"
    );
}

#[tokio::test]
async fn a_batch_target_keeps_losing_is_sent_again_a_bounded_number_of_times_then_given_up() {
    let sim = start(BulkFaults {
        stuck_probability: 1.0,
        ..BulkFaults::default()
    })
    .await;
    let sender = sender(&sim);
    let (accepted, submission) = deliver(&sender, &body("CRM-1")).await;
    assert_eq!(
        accepted,
        1 + MAX_RESUBMISSIONS,
        "sent once, then again {MAX_RESUBMISSIONS} times"
    );
    assert_eq!(
        sim.stats().bulk.batches_submitted,
        u64::from(1 + MAX_RESUBMISSIONS)
    );
    match submission {
        Submission::Rejected { status, message } => {
            assert_eq!(status, Some(200));
            assert!(
                message.starts_with(
                    "Target lost track of the batch 4 times (last: Target reports batch "
                ),
                "{message}"
            );
            assert!(message.ends_with(" stuck); not sent again"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(sender.resubmissions.is_empty());
    assert!(sender
        .metrics
        .encode()
        .contains("pps_bulk_batches_total{status=\"lost\"} 1"));
}
