//! `/healthz`, `/readyz` and `/metrics` on `server.listen`.
//!
//! `/healthz` answers 200 while the process serves HTTP at all. `/readyz`
//! answers 200 only when the pod has a partition assignment, Target is
//! reachable (the last attempt got an HTTP answer) and sending is not paused
//! for refused credentials (401/403); else 503 with the reason.

use super::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Target's part of readiness: written by whatever sends to Target (the
/// send gate), read by `/readyz`.
#[derive(Debug)]
pub struct TargetReadiness {
    /// Sending is paused because Target refused the credentials (401/403).
    auth_refused: AtomicBool,
    /// The last attempt got an HTTP answer.
    reachable: AtomicBool,
}

impl Default for TargetReadiness {
    fn default() -> Self {
        TargetReadiness {
            auth_refused: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
        }
    }
}

impl TargetReadiness {
    /// Records whether Target refuses the credentials; returns the previous value.
    pub fn set_auth_refused(&self, refused: bool) -> bool {
        self.auth_refused.swap(refused, Ordering::AcqRel)
    }

    /// Whether Target refuses the credentials.
    pub fn is_auth_refused(&self) -> bool {
        self.auth_refused.load(Ordering::Acquire)
    }

    /// Records whether the last attempt got an HTTP answer; returns the previous value.
    pub fn set_reachable(&self, reachable: bool) -> bool {
        self.reachable.swap(reachable, Ordering::AcqRel)
    }

    /// Whether the last attempt got an HTTP answer.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }
}

/// What readiness is made of.
#[derive(Debug)]
pub struct Health {
    /// Partitions assigned now.
    pub assigned: AtomicUsize,
    /// Target's side: credentials and reachability, as the send gate saw them.
    pub target: Arc<TargetReadiness>,
    /// The Kafka consumer stopped on its own: nothing is read any more.
    pub consumer_stopped: AtomicBool,
}

impl Health {
    /// Fresh: not ready until assigned.
    pub fn new(target: Arc<TargetReadiness>) -> Health {
        Health {
            assigned: AtomicUsize::new(0),
            target,
            consumer_stopped: AtomicBool::new(false),
        }
    }

    /// `None` when ready, else why not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.consumer_stopped.load(Ordering::Acquire) {
            Some("the Kafka consumer stopped")
        } else if self.assigned.load(Ordering::Acquire) == 0 {
            Some("no partition assignment")
        } else if self.target.is_auth_refused() {
            Some("Target refuses the credentials (401/403); sending paused")
        } else if !self.target.is_reachable() {
            Some("Target is not reachable")
        } else {
            None
        }
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Serves the endpoints until `shutdown`; returns the bound address at once.
pub async fn serve(
    listen: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(error = %error, "The metrics and probes server failed.");
        }
    });
    Ok((bound, task))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
