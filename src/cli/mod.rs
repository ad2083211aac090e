//! The command line: one binary, one subcommand per job (`docs/contract.md` section 2).

mod check_config;
mod demo;
mod derive;
mod dlq;
mod kafka_options;
mod produce;
mod run;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for an unusable configuration or impossible options.
pub const EXIT_USAGE: u8 = 2;

/// Point-of-sale purchases from Kafka to Adobe Target profiles, at least once.
#[derive(Debug, Parser)]
#[command(name = "pos-profile-sync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the consumer (the production job).
    Run(run::RunArgs),
    /// The whole flow on this machine: embedded Kafka, Target simulator, generated POS traffic, a verified report.
    Demo(demo::DemoArgs),
    /// Read NDJSON events on stdin; write what `run` would do with each.
    Derive(derive::DeriveArgs),
    /// Load and validate the configuration; print it with secrets masked.
    CheckConfig(check_config::CheckConfigArgs),
    /// Serve the Target simulator (update, read-back, fault injection).
    SimulateTarget(pps_target_simulator::cli::SimulateTargetArgs),
    /// Publish generated POS events to a topic (load tests, staging, demos).
    Produce(produce::ProduceArgs),
    /// Dead-letter tools.
    Dlq(dlq::DlqArgs),
    /// Read NDJSON events, fetch each profile from Target and check it holds what they say (exit 0 when all do).
    Verify(verify::VerifyArgs),
}

/// `--config FILE`, shared by the subcommands that read configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// TOML configuration file; `PPS_SECTION__KEY` environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Parses the arguments and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Demo(args) => demo::main(args),
        Command::Derive(args) => derive::main(args),
        Command::CheckConfig(args) => check_config::main(args),
        Command::SimulateTarget(args) => simulate_target(args),
        Command::Produce(args) => produce::main(args),
        Command::Dlq(args) => dlq::main(args),
        Command::Verify(args) => verify::main(args),
    }
}

/// The multi-threaded async runtime of a subcommand, or the exit code when it
/// cannot start (said on stderr).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

fn simulate_target(args: pps_target_simulator::cli::SimulateTargetArgs) -> ExitCode {
    crate::ops::telemetry::init(crate::ops::config::LogFormat::Text);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let stop = crate::ops::shutdown::on_signals(std::time::Duration::from_secs(10));
        pps_target_simulator::cli::run(args, async move { stop.cancelled().await }).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("simulate-target: {error:#}");
            ExitCode::FAILURE
        }
    }
}
