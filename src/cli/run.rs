//! `run`: the production job.

use super::{ConfigArg, EXIT_USAGE};
use crate::ops::config::{LogFormat, Settings};
use crate::ops::{shutdown, telemetry, traces};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The longest the last span export may take at exit.
const TRACE_FLUSH_MAX: Duration = Duration::from_secs(2);

/// The longest the exit waits for blocking calls still running.
const RUNTIME_STOP_MAX: Duration = Duration::from_millis(200);

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

pub(super) fn main(args: RunArgs) -> ExitCode {
    let settings = match Settings::load(args.config.config.as_deref())
        .and_then(|s| crate::kafka::validate(&s).map(|()| s))
    {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    telemetry::init(args.log_format.unwrap_or(settings.log.format));
    // Before the runtime: the exporter's blocking HTTP client is built here.
    let trace_export = traces::init().unwrap_or_else(|error| {
        tracing::warn!("{error}; running without trace export.");
        None
    });
    let stopped_at = Arc::new(OnceLock::new());
    let hard_limit = settings.delivery.drain_timeout() + Duration::from_millis(4500);
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let stop = shutdown::on_signals(hard_limit);
        let (watch, stopped) = (stop.clone(), stopped_at.clone());
        tokio::spawn(async move {
            watch.cancelled().await;
            let _ = stopped.set(Instant::now());
        });
        crate::service::run(settings, stop, |_| {}).await
    });
    if let Some(export) = trace_export {
        // The watchdog still runs: finish before it would end the process.
        let budget = stopped_at
            .get()
            .map(|at| (*at + hard_limit).saturating_duration_since(Instant::now()))
            .map_or(TRACE_FLUSH_MAX, |left| {
                left.saturating_sub(Duration::from_millis(250))
                    .min(TRACE_FLUSH_MAX)
            });
        export.shut_down(budget);
    }
    // A blocking call still waiting on Kafka (a final commit given up) must
    // not hold the exit: the next owner re-reads what it did not commit.
    runtime.shutdown_timeout(RUNTIME_STOP_MAX);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "pos-profile-sync failed.");
            ExitCode::FAILURE
        }
    }
}
