//! `run`: the production job.

use super::{ConfigArg, EXIT_USAGE};
use crate::ops::config::{LogFormat, Settings};
use crate::ops::{shutdown, telemetry};
use std::process::ExitCode;
use std::time::Duration;

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
        .and_then(|s| s.validate().map(|()| s))
    {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    telemetry::init(args.log_format.unwrap_or(settings.log.format));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let hard_limit =
            Duration::from_millis(settings.delivery.drain_timeout_ms) + Duration::from_millis(4500);
        let stop = shutdown::on_signals(hard_limit);
        crate::service::run(settings, stop, |_| {}).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "pos-profile-sync failed.");
            ExitCode::FAILURE
        }
    }
}
