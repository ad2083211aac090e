//! SIGTERM and SIGINT become one cancellation token passed into `run`; a
//! watchdog makes sure the process ends within the drain deadline plus 5 s.
//!
//! The watchdog is an OS thread, not a task: a blocking call that never
//! returns (a commit the group coordinator never answers) holds the async
//! runtime's drop, which would drop a watchdog task with it.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. After `hard_limit` past
/// the signal, the process exits (code 1) whatever is still running, even
/// after the runtime is gone; a second signal ends it at once (code 1):
/// what was not committed is read again by the next owner.
pub fn on_signals(hard_limit: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Stop signal received; draining (a second signal stops at once).");
        cancel.cancel();
        watchdog(hard_limit);
        wait_for_signal().await;
        tracing::warn!("Second stop signal; exiting now without finishing.");
        std::process::exit(1);
    });
    token
}

/// Ends the process (code 1) `limit` from now, on a thread of its own.
fn watchdog(limit: Duration) {
    let started = std::thread::Builder::new()
        .name("pps-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(
                limit_ms = limit.as_millis() as u64,
                "Shutdown took too long; exiting now."
            );
            std::process::exit(1);
        });
    if let Err(error) = started {
        tracing::warn!(error = %error, "Cannot start the shutdown watchdog.");
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
