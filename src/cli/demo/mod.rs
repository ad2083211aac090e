//! `demo`: the whole job on one machine with nothing else installed.
//!
//! An in-process Kafka cluster (librdkafka's mock cluster: real Kafka
//! protocol on 127.0.0.1), the Target simulator on a free port, a day of
//! generated POS traffic, and the real `run` pipeline (this binary, as a
//! child process, so `--crash-every` can kill it with SIGKILL). While it
//! works, a progress line shows what Kafka and Target see; at the end the run
//! is verified from the outside and reported.

mod progress;
mod readback;
mod verify;

use super::EXIT_USAGE;
use crate::generator::{GeneratedEvent, Generator, GeneratorConfig};
use crate::kafka::inspect::Inspector;
use anyhow::Context as _;
use pps_target_simulator::{
    Existence, Failure, Faults, Latency, RetryAfter, Simulator, SimulatorConfig, SimulatorHandle,
};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const TOPIC: &str = "pos.purchases";
const DLQ: &str = "pos.purchases.dlq";
const GROUP: &str = "pos-profile-sync-demo";
const CLIENT: &str = "demo";

/// How Target misbehaves during the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultLevel {
    /// A perfect Target.
    None,
    /// A few milliseconds of latency, about 2% of 503s (retried), and now
    /// and then a 503 with `Retry-After: 1` (the whole pod pauses).
    Mild,
    /// 20 ms latency, 10% of 503s, frequent `Retry-After`, 1% of 400s
    /// (permanent rejections, dead-lettered as `target_rejected`).
    Storm,
}

/// Options of `demo`.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Runs the whole job on this machine with nothing else installed.

What is simulated:
  - Kafka: librdkafka's mock cluster, in this process (3 brokers, real Kafka protocol on 127.0.0.1),
    with the source topic pos.purchases and the dead-letter topic pos.purchases.dlq.
  - Point-of-sale traffic: a day of purchases and returns over --customers customers
    (repeat customers, loyalty tiers, multi-byte store and category names, about 5% anonymous
    buyers, who are skipped, and about 0.1% malformed events, which are dead-lettered).
  - Adobe Target: the built-in simulator (what `simulate-target` serves), with --faults. It
    follows Adobe's documented behaviour: 30% of the customers have a Target profile before the
    run; a single profile update to a profile that does not exist is answered 200 and changes
    nothing; only bulk v2 batches create profiles.

What is real: the pipeline is this binary's `run` subcommand, started as a child process with a
generated configuration. At the end the demo verifies from the outside: every profile, read back
through Target's profile fetch API as your own check would, must equal the attributes derived from
that customer's events; every malformed event must be on the dead-letter topic with its class; and
every offset must be committed. The report says how many profiles were updated, created through
batches and verified by read-back. It exits 0 only if nothing was lost."
)]
pub struct DemoArgs {
    /// POS events to generate.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Distinct customers.
    #[arg(long, default_value_t = 10_000)]
    customers: u64,
    /// The group's Target budget, requests per second.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// How Target misbehaves.
    #[arg(long, value_enum, default_value_t = FaultLevel::Mild)]
    faults: FaultLevel,
    /// Kill the pipeline with SIGKILL after every N events committed, and restart it (0: never).
    #[arg(long, default_value_t = 0)]
    crash_every: u64,
    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Partitions of the source topic.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// The share of customers with a Target profile before the run (the rest
    /// shop in stores only and never logged in on the web: batches create them).
    #[arg(long, default_value_t = 0.3)]
    known_share: f64,
    /// Profiles each pod remembers as confirmed (`existence.max_profiles`);
    /// 1 shows what the run costs without the existence cache, with a fetch
    /// before nearly every single update.
    #[arg(long, default_value_t = 100_000)]
    confirmed_profiles: u64,
}

pub(crate) fn main(args: DemoArgs) -> ExitCode {
    if let Err(problem) = args.check() {
        eprintln!("demo: {problem}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(run_demo(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

impl DemoArgs {
    fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.known_share) {
            return Err("--known-share must be between 0 and 1".into());
        }
        if self.confirmed_profiles == 0 {
            return Err("--confirmed-profiles must be at least 1".into());
        }
        if self.events == 0 {
            return Err("--events must be at least 1".into());
        }
        if self.customers == 0 {
            return Err("--customers must be at least 1".into());
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!(
                "--rate must be a number above 0 (requests per second), not {}",
                self.rate
            ));
        }
        if !(1..=1000).contains(&self.partitions) {
            return Err("--partitions must be 1 to 1000".into());
        }
        // The mock cluster keeps about 5 MB per partition.
        let needed = (self.events as f64 * 450.0 / 3.0 / 4_000_000.0).ceil() as i32;
        if needed > self.partitions {
            return Err(format!(
                "--events {} needs at least {needed} partitions in the embedded cluster (it keeps about 5 MB each); pass --partitions {needed}",
                self.events
            ));
        }
        Ok(())
    }

    fn faults(&self) -> Faults {
        match self.faults {
            FaultLevel::None => Faults::none(),
            FaultLevel::Mild => Faults {
                latency: Latency {
                    fixed_ms: 2,
                    jitter_ms: 4,
                },
                failures: vec![
                    Failure::new(503, 0.02),
                    Failure::new(503, 0.000_05).with_retry_after(RetryAfter::Seconds(1)),
                ],
                ..Faults::none()
            },
            FaultLevel::Storm => Faults {
                latency: Latency {
                    fixed_ms: 20,
                    jitter_ms: 20,
                },
                failures: vec![
                    Failure::new(503, 0.1),
                    Failure::new(503, 0.000_5).with_retry_after(RetryAfter::Seconds(1)),
                    Failure::new(400, 0.01),
                ],
                ..Faults::none()
            },
        }
    }
}

/// What the demo started, for the progress display and the report.
pub(crate) struct World {
    pub(crate) sim: SimulatorHandle,
    pub(crate) inspector: Inspector,
    pub(crate) events: Vec<GeneratedEvent>,
    pub(crate) end_offsets: Vec<i64>,
    pub(crate) rate: f64,
    pub(crate) restarts: u64,
    pub(crate) known_share: f64,
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    eprintln!(
        "Starting an embedded Kafka cluster, the Target simulator ({:?} faults) and {} POS events over {} customers...",
        args.faults, args.events, args.customers
    );
    let cluster = MockCluster::new(3).context("cannot start the embedded Kafka cluster")?;
    cluster.create_topic(TOPIC, args.partitions, 3)?;
    cluster.create_topic(DLQ, 1, 3)?;
    let bootstrap = cluster.bootstrap_servers();
    let mut config = SimulatorConfig::new(CLIENT);
    config.faults = args.faults();
    config.existence = Existence {
        known_share: args.known_share,
        ..Existence::faithful()
    };
    let sim = Simulator::start("127.0.0.1:0".parse()?, config).await?;

    let events: Vec<GeneratedEvent> = Generator::new(GeneratorConfig {
        events: args.events,
        customers: args.customers,
        seed: args.seed,
        ..GeneratorConfig::default()
    })
    .collect();
    produce(&bootstrap, &events)?;
    let inspector = Inspector::new(&bootstrap, &[("group.id".into(), GROUP.into())])
        .map_err(anyhow::Error::msg)?;
    let end_offsets = inspector.end_offsets(TOPIC).map_err(anyhow::Error::msg)?;
    let produced: i64 = end_offsets.iter().sum();
    anyhow::ensure!(
        produced == events.len() as i64,
        "the embedded cluster holds {produced} of {} events; use more --partitions",
        events.len()
    );
    eprintln!(
        "Produced {} events to {TOPIC} ({} partitions) in {:.1} s. Starting the pipeline: pos-profile-sync run.",
        events.len(),
        args.partitions,
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        pipeline_config(
            &bootstrap,
            &sim.base_url(),
            args.rate,
            args.confirmed_profiles,
        ),
    )?;
    let log_path = dir.path().join("pipeline.log");
    let mut world = World {
        sim,
        inspector,
        events,
        end_offsets,
        rate: args.rate,
        known_share: args.known_share,
        restarts: 0,
    };
    let pipeline_started = Instant::now();
    let mut child = PipelineProcess(spawn_pipeline(&config_path, &log_path)?);
    let mut display = progress::Progress::new(world.events.len() as u64);
    let mut next_crash = (args.crash_every > 0).then_some(args.crash_every);
    // Long runs (a soak) may take hours; only a pipeline that stops moving fails.
    let stall_limit = Duration::from_secs(300);
    let (mut last_committed, mut last_progress) = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let snapshot = progress::Snapshot::take(&world)?;
        if snapshot.committed != last_committed {
            (last_committed, last_progress) = (snapshot.committed, Instant::now());
        }
        display.show(&snapshot, &world);
        if snapshot.committed_all {
            break;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the pipeline exited with {status} before finishing; its log:\n{}",
                tail(&log_path)
            );
        }
        if let Some(at) = next_crash {
            if snapshot.committed >= at {
                child.kill()?; // SIGKILL: no drain, no commit, no goodbye.
                child.wait()?;
                world.restarts += 1;
                display.note(&format!(
                    "SIGKILL with {} events committed; restarting the pipeline",
                    snapshot.committed
                ));
                child = PipelineProcess(spawn_pipeline(&config_path, &log_path)?);
                next_crash = Some(at + args.crash_every);
            }
        }
        if last_progress.elapsed() > stall_limit {
            anyhow::bail!(
                "no progress for 5 minutes ({} events committed); pipeline log:\n{}",
                snapshot.committed,
                tail(&log_path)
            );
        }
    }
    let elapsed = pipeline_started.elapsed();
    display.finish();
    stop(&mut child)?;
    let report = verify::verify(&world, elapsed)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{report}");
    eprintln!("Pipeline log: {} (removed on exit)", log_path.display());
    drop(cluster);
    Ok(report.lost.is_empty())
}

fn produce(bootstrap: &str, events: &[GeneratedEvent]) -> anyhow::Result<()> {
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true")
        .create()?;
    for event in events {
        let mut record = BaseRecord::to(TOPIC)
            .key(&event.key[..])
            .payload(&event.payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

fn pipeline_config(bootstrap: &str, base_url: &str, rate: f64, confirmed_profiles: u64) -> String {
    format!(
        r#"# Generated by `pos-profile-sync demo`.
[kafka]
brokers = "{bootstrap}"
topics = ["{TOPIC}"]
group_id = "{GROUP}"
dlq_topic = "{DLQ}"

[kafka.properties]
# Short sessions, so a killed pipeline's partitions move on quickly.
"session.timeout.ms" = 4000
"heartbeat.interval.ms" = 500
"max.poll.interval.ms" = 10000

[target]
client_code = "{CLIENT}"
base_url = "{base_url}"
timeout_ms = 3000

[rate_limit]
per_second = {rate:?}
burst = {burst}

[delivery]
max_in_flight = 256
drain_timeout_ms = 3000
commit_interval_ms = 200
retry_initial_ms = 50
retry_max_ms = 2000

# Customers Target has no profile for go through bulk v2 batches, which
# create them; the others get single updates once a fetch confirmed them.
[existence]
policy = "create"
fetch_per_second = {rate:?}
fetch_burst = {burst}
max_profiles = {confirmed_profiles}

# A batch closes every second; its submit and polls stay within Adobe's 50 bulk
# calls a minute (bulk.calls_per_minute), which spaces them.
[bulk]
max_age_ms = 1000

[server]
listen = "127.0.0.1:0"
"#,
        burst = burst_of(rate),
    )
}

/// The group burst the demo gives the pipeline: a tenth of a second's budget.
fn burst_of(rate: f64) -> u32 {
    (rate / 10.0).ceil().max(1.0) as u32
}

/// The pipeline's process: killed when the demo leaves early (an error), never orphaned.
struct PipelineProcess(Child);

impl Drop for PipelineProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for PipelineProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for PipelineProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn spawn_pipeline(config: &Path, log: &PathBuf) -> anyhow::Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let exe = std::env::current_exe().context("cannot find this program to start the pipeline")?;
    Command::new(exe)
        .args(["run", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .context("cannot start the pipeline")
}

/// SIGTERM, then wait (the pipeline drains, commits and exits 0).
fn stop(child: &mut Child) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(
                status.success(),
                "the pipeline exited with {status} after SIGTERM"
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            child.kill()?;
            anyhow::bail!("the pipeline did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
