//! SIGTERM and SIGINT become one cancellation token passed into `run`; a
//! watchdog makes sure the process ends within the drain deadline plus 5 s.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. After `hard_limit` past
/// the signal, the process exits (code 1) whatever is still running.
pub fn on_signals(hard_limit: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Stop signal received; draining.");
        cancel.cancel();
        tokio::time::sleep(hard_limit).await;
        tracing::error!(
            limit_ms = hard_limit.as_millis() as u64,
            "Shutdown took too long; exiting now."
        );
        std::process::exit(1);
    });
    token
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
