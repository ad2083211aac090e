//! What the `backfill` and `limits` benches share: options from the environment,
//! a Kafka broker with a verified backlog (librdkafka's mock cluster, or with
//! `PPS_TEST_BROKER=tansu` the separate tansu broker of the test suite), the Target simulator on its own
//! runtime, the service's settings, the service run in-process or as a child process,
//! and reading back what the simulator ended up with.
//!
//! Each bench uses a part of it, hence `dead_code` is allowed here.
#![allow(dead_code)]

use anyhow::bail;
use pos_profile_sync::ops::config::Settings;
use pos_profile_sync::service::{self, ServiceHandle};
use pps_target_simulator::{Faults, Simulator, SimulatorConfig, SimulatorHandle};
use std::str::FromStr;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use pps_test_kit::broker::Kafka;

pub const CLIENT_CODE: &str = "bench";

/// A value from the environment, or the default when unset.
pub fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|error| anyhow::anyhow!("{name}={text}: {error}")),
        Err(_) => Ok(default),
    }
}
/// The phases named in `variable` (comma-separated), or all of `all`.
pub fn phases(variable: &str, all: &[&str]) -> anyhow::Result<Vec<String>> {
    Ok(env_or::<String>(variable, all.join(","))?
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect())
}

/// The simulator's runtime (threads named `sim-rt`, so its CPU can be told
/// apart) with `simulator_threads` workers, and the bench's own (`bench-rt`).
pub fn runtimes(
    simulator_threads: usize,
) -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
    let simulator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(simulator_threads)
        .thread_name("sim-rt")
        .enable_all()
        .build()?;
    let bench = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-rt")
        .enable_all()
        .build()?;
    Ok((simulator, bench))
}

/// Logs of the service to stderr, `warn` unless `RUST_LOG` says otherwise.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Starts the simulator with these faults on the simulators' runtime.
pub async fn start_simulator(
    simulators: &Handle,
    faults: Faults,
) -> anyhow::Result<SimulatorHandle> {
    let config = SimulatorConfig {
        faults,
        ..pps_test_kit::simulator_config(CLIENT_CODE)
    };
    Ok(simulators
        .spawn(Simulator::start(([127, 0, 0, 1], 0).into(), config))
        .await??)
}

/// The service's settings for one topic and group, otherwise its defaults
/// (the test kit's, with the benches' client code).
pub fn settings(kafka: &Kafka, base_url: &str, topic: &str, group: &str) -> Settings {
    pps_test_kit::app::service_settings(&kafka.bootstrap, base_url, topic, group, CLIENT_CODE)
}

/// The real service running in this process.
pub struct InProcess {
    pub handle: ServiceHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub async fn start(settings: Settings) -> anyhow::Result<InProcess> {
        pos_profile_sync::kafka::validate(&settings)?;
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<ServiceHandle>();
        let mut task = tokio::spawn(service::run(settings, shutdown.clone(), move |handle| {
            let _ = tx.send(handle);
        }));
        let Ok(handle) = rx.await else {
            bail!("the service did not start: {:?}", (&mut task).await?);
        };
        Ok(InProcess {
            handle,
            shutdown,
            task,
        })
    }

    pub fn has_stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// Sums the exposition's samples whose line starts with `prefix`.
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        self.handle
            .metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The exposition's lines that start with `prefix`.
    pub fn metric_lines(&self, prefix: &str) -> Vec<String> {
        self.handle
            .metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// SIGTERM's equivalent: drain, commit, stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
}
