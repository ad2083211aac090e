//! The `run` job wired together: metrics and probes server, Target client,
//! send gate, dead-letter writer, consumer thread and coordinator. The
//! shutdown trigger is an argument, so tests stop the service the way
//! Kubernetes does.

use crate::delivery::attempt::UpdateAttempts;
use crate::delivery::batch_sender::{BatchSender, CallBudget};
use crate::delivery::concurrency::AdaptiveConcurrency;
use crate::delivery::coordinator::{
    BulkDelivery, Coordinator, CoordinatorSettings, ExistenceRouting,
};
use crate::delivery::fetch_budget::{FetchBudget, ProfileFetcher};
use crate::delivery::gate::{RateShare, SendGate};
use crate::delivery::verify::{self, Verifier};
use crate::kafka::consumer::ConsumerThread;
use crate::kafka::dead_letter::DeadLetterWriter;
use crate::mapping::Mapping;
use crate::ops::config::{BulkMode, ExistencePolicy, Settings};
use crate::ops::health::{self, Health};
use crate::ops::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::target::bulk::{BatchLimits, BulkClient};
use crate::target::fetch::FetchClient;
use crate::target::TargetClient;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Records handed from the consumer thread to the coordinator at most at
/// once: so many batches of at most `HANDOVER_BATCH` records.
const HANDOVER_CAPACITY: usize = 1024;

/// What a running service exposes to whoever started it (tests, the demo).
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
}

/// Runs the consumer until `shutdown` is cancelled, then drains and commits.
/// `on_start` receives the handle once everything is up.
pub async fn run(
    settings: Settings,
    shutdown: CancellationToken,
    on_start: impl FnOnce(ServiceHandle),
) -> anyhow::Result<()> {
    let mapping = Mapping::from_settings(&settings.mapping)
        .map_err(|problems| anyhow::anyhow!(problems.join("; ")))?;
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let metrics = Arc::new(Metrics::new());
    let delivery = &settings.delivery;
    let retry = delivery.retry();
    let gate = Arc::new(SendGate::new(
        RateShare::of_group(
            settings.rate_limit.per_second,
            settings.rate_limit.burst,
            0,
            1,
        ),
        retry,
    ));
    let health = Arc::new(Health::new(gate.readiness()));
    let server_stop = CancellationToken::new();
    let listen: SocketAddr = settings
        .server
        .listen
        .parse()
        .context("server.listen must be an address")?;
    let (http_addr, server) =
        health::serve(listen, health.clone(), metrics.clone(), server_stop.clone())
            .await
            .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let client = Arc::new(
        TargetClient::new(&settings.target, delivery.max_in_flight as usize)
            .context("cannot set up the Target client")?,
    );
    let dead_letters = Arc::new(DeadLetterWriter::new(
        &settings.kafka,
        retry,
        metrics.clone(),
    )?);
    let (events_tx, events_rx) =
        mpsc::channel(HANDOVER_CAPACITY / crate::kafka::consumer::HANDOVER_BATCH);
    let consumer = ConsumerThread::start(&settings, Arc::new(mapping), events_tx, metrics.clone())?;
    tracing::info!(
        topics = ?settings.kafka.topics,
        group = %settings.kafka.group_id,
        target = %client.endpoint_url(),
        http = %http_addr,
        "pos-profile-sync is running."
    );
    on_start(ServiceHandle {
        metrics: metrics.clone(),
        health: health.clone(),
        http_addr,
    });
    let bulk = bulk_delivery(&settings, retry, &metrics, &gate)?;
    let fetcher = profile_fetcher(&settings, &gate, &metrics)?;
    let verify_stop = CancellationToken::new();
    let verifier = Verifier::new(&settings.verify, metrics.clone());
    let verifying = verifier.clone().map(|verifier| {
        tracing::info!(
            sample_ratio = settings.verify.sample_ratio,
            delay_ms = settings.verify.delay_ms,
            "Read-back verification is on."
        );
        tokio::spawn(verify::task::run(
            verifier,
            fetcher.clone(),
            verify_stop.clone(),
        ))
    });
    let coordinator = Coordinator::new(
        CoordinatorSettings {
            max_buffered_per_partition: delivery.max_buffered_per_partition as usize,
            max_buffered: delivery.max_buffered as usize,
            commit_interval: delivery.commit_interval(),
            drain_timeout: delivery.drain_timeout(),
            per_second: settings.rate_limit.per_second,
            burst: settings.rate_limit.burst,
            daily_quota: settings.rate_limit.daily_quota,
            coalesce_window: delivery.coalesce_window(),
            group_id: Arc::from(settings.kafka.group_id.as_str()),
            bulk_mode: settings.bulk.mode,
            overflow_after_seconds: settings.bulk.overflow_after_seconds,
            bulk,
            verify: verifier,
            existence: ExistenceRouting {
                policy: settings.existence.policy,
                fetcher: (settings.existence.policy != ExistencePolicy::Trust)
                    .then(|| fetcher.clone()),
                confirmed_ttl: settings.existence.confirmed_ttl(),
                max_profiles: settings.existence.max_profiles as usize,
                max_fetches: delivery.max_in_flight as usize,
            },
            time_order: delivery.time_order,
        },
        consumer.consumer.clone(),
        events_rx,
        UpdateAttempts {
            client,
            gate,
            concurrency: AdaptiveConcurrency::new(
                delivery.max_in_flight as usize,
                metrics.concurrency_limit.clone(),
                metrics.target_in_flight.clone(),
            ),
            retry,
            max_attempts: delivery.max_attempts,
            metrics: metrics.clone(),
        },
        dead_letters,
        metrics,
        health,
    );
    consumer.stop_fetching_on(shutdown.clone());
    let delivered = coordinator
        .watch_consumer(consumer.stopped.clone())
        .run(shutdown)
        .await;
    verify_stop.cancel();
    if let Some(verifying) = verifying {
        let _ = verifying.await;
    }
    tokio::task::spawn_blocking(move || consumer.shut_down())
        .await
        .context("the consumer did not close")?;
    server_stop.cancel();
    let _ = server.await;
    let drained = delivered?;
    if drained.is_clean() {
        tracing::info!("pos-profile-sync stopped cleanly.");
    } else {
        // Nothing is lost (at-least-once): the next owner reads again what
        // was not committed, and Target sees those events twice.
        tracing::warn!(
            abandoned = drained.abandoned,
            offsets_committed = drained.committed,
            "pos-profile-sync stopped; the next owner re-reads from the last commit what this pod did not finish or commit."
        );
    }
    Ok(())
}

/// Profile fetches within this pod's share of `existence.fetch_per_second`,
/// which follows the partitions it owns as the update budget does.
fn profile_fetcher(
    settings: &Settings,
    gate: &Arc<SendGate>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<ProfileFetcher> {
    let client = FetchClient::new(&settings.target, 4)
        .context("cannot set up the Target profile fetch client")?;
    let group = settings.rate_limit.per_second;
    let share_of = gate.clone();
    let existence = &settings.existence;
    let budget = FetchBudget::new(
        existence.fetch_per_second,
        existence.fetch_burst,
        Box::new(move || share_of.share().per_second / group),
        metrics.clone(),
    );
    Ok(ProfileFetcher {
        client: Arc::new(client),
        budget: Arc::new(budget),
        metrics: metrics.clone(),
        gate: Some(gate.clone()),
    })
}

/// The bulk side of delivery, unless `bulk.mode = "off"`.
fn bulk_delivery(
    settings: &Settings,
    retry: RetryPolicy,
    metrics: &Arc<Metrics>,
    gate: &Arc<SendGate>,
) -> anyhow::Result<Option<BulkDelivery>> {
    let bulk = &settings.bulk;
    // Unknown profiles go through v2 batches under the default existence
    // policy, whatever bulk.mode says about routing by backlog.
    if bulk.mode == BulkMode::Off && settings.existence.policy != ExistencePolicy::Create {
        return Ok(None);
    }
    let client =
        BulkClient::new(&settings.target).context("cannot set up the Target bulk client")?;
    Ok(Some(BulkDelivery {
        sender: BatchSender {
            client: Arc::new(client),
            calls: Arc::new(CallBudget::new(bulk.calls_per_minute)),
            retry,
            poll: RetryPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            metrics: metrics.clone(),
            gate: gate.clone(),
            resubmissions: Arc::default(),
        },
        limits: BatchLimits::from_settings(bulk),
        max_age: bulk.max_age(),
        commit_on: bulk.commit_on,
    }))
}
