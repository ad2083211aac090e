//! How fast the whole `run` job moves purchases from Kafka to Target, what that
//! costs in CPU and memory, and how it compares with sending the same requests
//! without Kafka and with a naive one-at-a-time loop.
//!
//! Everything runs in this one process, on loopback:
//!
//! 1. **Pipeline.** The generator's events (default ratios) are produced with lz4 into
//!    librdkafka's mock cluster (3 brokers); the end offsets are checked against what
//!    was produced (the mock keeps only about 5 MB per partition and silently drops
//!    older batches). The real service (`service::run`) then starts in-process against
//!    the Target simulator (fixed injected latency, on its own runtime), with the budget
//!    unlimited. The clock runs from the call to `run` until a separate consumer sees
//!    every partition committed at its end offset. That span includes joining the group
//!    (the mock broker, like Kafka, waits 3 s before the first assignment) and the last
//!    commit interval, so it is also split into startup, delivery and commit tail, and
//!    the rate between 10 % and 90 % of the updates accepted is given as well.
//! 2. **Baselines.** The same HTTP requests (built with `UpdateEndpoint::request` from
//!    `Mapping::default().decide`, before the clock starts) sent by a plain
//!    `buffer_unordered` loop over one reqwest client at the same concurrency, against
//!    a fresh simulator with the same latency; and a sequential consume-send-commit
//!    loop (poll, decide, one request, synchronous commit, repeat).
//! 3. **CPU.** The process's user+sys time (`/proc/self/stat`) over each timed span,
//!    attributed per thread (`/proc/self/task/*/stat`, 10 ms ticks) to the simulator's
//!    runtime, the mock brokers, librdkafka client threads, the service's consumer
//!    thread and the async runtime that runs the service (or the baseline's client).
//!    The pipeline and the loop run again with 0 ms latency to show the cost floor.
//!    This machine's speed moves between phases as much as the ratio itself, so
//!    the ratio is also measured two more ways: pairs in turns (`PPS_BENCH_CPU_ROUNDS`,
//!    each other pair running its baseline first), with each pair also corrected by
//!    the simulator's CPU per request; and **side by side** (phase `together`): the
//!    baseline loop, made ready beforehand, runs on a runtime of its own (threads
//!    `side-rt*`, counted apart) from the pipeline's first accepted update, through
//!    its delivery, so both sides see the machine at the same moments. Both then
//!    share the 2 cores, so each side's figure includes that contention; the ratio
//!    is what counts.
//! 4. **Memory.** Peak RSS (`VmHWM`) after the pipeline phase, reset before it
//!    (`/proc/self/clear_refs`) where the kernel allows. Events are streamed into Kafka,
//!    not held, so the RSS before the phase is mostly the mock cluster's log.
//!
//! Run: `cargo bench --bench pipeline` (about a minute and a half on 2 cores). Smoke run:
//! `PPS_BENCH_EVENTS=5000 PPS_BENCH_SEQUENTIAL_EVENTS=50 cargo bench --bench pipeline`.
//!
//! Options (environment, defaults in brackets): `PPS_BENCH_EVENTS` [100000],
//! `PPS_BENCH_CUSTOMERS` [10000], `PPS_BENCH_PARTITIONS` [24], `PPS_BENCH_LATENCY_MS`
//! [20], `PPS_BENCH_IN_FLIGHT` [256], `PPS_BENCH_COMMIT_INTERVAL_MS` [1000] and
//! `PPS_BENCH_MAX_BUFFERED` [10000] (the service's defaults),
//! `PPS_BENCH_SEQUENTIAL_EVENTS` [500], `PPS_BENCH_PHASES`
//! [pipeline,baseline,together,floor,floor-baseline,sequential], `PPS_BENCH_SIM_THREADS` [2],
//! `PPS_BENCH_TIMEOUT_S` [180, per phase], `PPS_BENCH_THREADS` [0; 1 lists CPU by
//! thread name], `PPS_BENCH_CPU_ROUNDS` [1; more runs further pipeline and baseline
//! pairs in turns (ABBA), printing each pair's CPU ratio, also corrected for the
//! machine's speed (the service's CPU scaled by the simulator's CPU per request in
//! the baseline phase over that in the pipeline phase, the same work both times),
//! and their medians; the `together` phase runs that many times]; `RUST_LOG` [warn] for the
//! service's own logs; `PPS_TEST_BROKER=tansu`
//! with `PPS_TANSU_BIN` puts the events in tansu instead of the mock cluster.

/// The allocator the binary ships with (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod baseline;
#[path = "../common/mod.rs"]
mod common;
mod cpu;
mod phase;
mod report;
mod sequential;

use anyhow::{bail, ensure};
use baseline::*;
use common::{env_or, CLIENT_CODE};
use cpu::*;
use futures::StreamExt as _;
use phase::*;
use pos_profile_sync::generator::{GeneratedEvent, Generator, GeneratorConfig};
use pos_profile_sync::mapping::{Decision, Mapping, ProfileUpdate};
use pos_profile_sync::ops::config::Settings;
use pos_profile_sync::service::{self, ServiceHandle};
use pos_profile_sync::target::request::{UpdateEndpoint, UpdateRequest};
use pps_target_simulator::{Faults, Latency, SimulatorHandle};
use pps_test_kit::broker::Kafka;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use report::*;
use sequential::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "pos.purchases";
const BURST: u32 = 1_000_000;
/// Linux reports `/proc` CPU times in USER_HZ, which is 100 on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// What to run, from the environment.
#[derive(Debug, Clone)]
struct Options {
    events: u64,
    customers: u64,
    partitions: i32,
    latency_ms: u64,
    in_flight: u32,
    commit_interval_ms: u64,
    max_buffered: u32,
    sequential: usize,
    phases: Vec<String>,
    sim_threads: usize,
    timeout: Duration,
    threads: bool,
    cpu_rounds: usize,
}

impl Options {
    fn from_env() -> anyhow::Result<Options> {
        Ok(Options {
            events: env_or("PPS_BENCH_EVENTS", 100_000)?,
            customers: env_or("PPS_BENCH_CUSTOMERS", 10_000)?,
            partitions: env_or("PPS_BENCH_PARTITIONS", 24)?,
            latency_ms: env_or("PPS_BENCH_LATENCY_MS", 20)?,
            in_flight: env_or("PPS_BENCH_IN_FLIGHT", 256)?,
            commit_interval_ms: env_or("PPS_BENCH_COMMIT_INTERVAL_MS", 1_000)?,
            max_buffered: env_or("PPS_BENCH_MAX_BUFFERED", 10_000)?,
            sequential: env_or("PPS_BENCH_SEQUENTIAL_EVENTS", 500)?,
            phases: env_or::<String>("PPS_BENCH_PHASES", PHASES.join(","))?
                .split(',')
                .map(|p| p.trim().to_owned())
                .collect(),
            sim_threads: env_or("PPS_BENCH_SIM_THREADS", 2)?,
            timeout: Duration::from_secs(env_or("PPS_BENCH_TIMEOUT_S", 180)?),
            threads: env_or::<u8>("PPS_BENCH_THREADS", 0)? != 0,
            cpu_rounds: env_or("PPS_BENCH_CPU_ROUNDS", 1)?,
        })
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

/// Every phase, in the order they run.
const PHASES: [&str; 6] = [
    "pipeline",
    "baseline",
    "together",
    "floor",
    "floor-baseline",
    "sequential",
];

fn main() -> anyhow::Result<()> {
    // As the binary does (src/main.rs).
    pos_profile_sync::ops::memory::return_large_c_buffers_at_once();
    common::init_logs();
    let options = Options::from_env()?;
    // As `run` does: export spans when OTEL_EXPORTER_OTLP_* says where (to
    // measure what tracing costs); otherwise no span is built.
    let trace_export = pos_profile_sync::ops::traces::init()?;
    if trace_export.is_some() {
        println!("traces     exported over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT is set)");
    }
    let (simulator_runtime, runtime) = common::runtimes(options.sim_threads)?;
    let simulators = simulator_runtime.handle().clone();
    let mut report = Report {
        load_before: load_average(),
        ..Report::default()
    };

    let started = Instant::now();
    let kafka = Kafka::from_env()?;
    report.broker = kafka.describe();
    // Streamed, not held: the baselines generate the same events again.
    let (workload, ends) = produce(&kafka, options.partitions, generate(&options))?;
    println!(
        "setup: {} events generated, produced (lz4) and verified in {:.1} s",
        workload.events,
        started.elapsed().as_secs_f64()
    );
    let latency = options.latency_ms;
    let pipeline_told = |latency, round, delivering| {
        runtime.block_on(pipeline(
            &options,
            &kafka,
            &ends,
            &workload,
            &simulators,
            PhaseRun {
                latency_ms: latency,
                round,
                delivering,
            },
        ))
    };
    let pipeline_at = |latency, round| pipeline_told(latency, round, None);
    let baseline_at = |latency| runtime.block_on(http_baseline(&options, &simulators, latency));
    if options.runs("pipeline") {
        report.pipeline = Some(pipeline_at(latency, 1)?);
    }
    if options.runs("baseline") {
        report.baseline = Some(baseline_at(latency)?);
    }
    if let (Some(pipeline), Some(baseline)) = (&report.pipeline, &report.baseline) {
        report.cpu_rounds.push(CpuRound::of(pipeline, baseline));
        // More pairs in turns: this machine's speed moves between phases
        // as much as the figure itself, so the median of several says more.
        for round in 2..=options.cpu_rounds {
            let (pipeline, baseline) = if baseline_first(round) {
                let baseline = baseline_at(latency)?;
                (pipeline_at(latency, round)?, baseline)
            } else {
                let pipeline = pipeline_at(latency, round)?;
                (pipeline, baseline_at(latency)?)
            };
            report.cpu_rounds.push(CpuRound::of(&pipeline, &baseline));
        }
    }
    if options.runs("together") {
        let side = side_runtime()?;
        for round in 1..=options.cpu_rounds {
            // After the pairs' groups: every round reads the topic from the start.
            let round = options.cpu_rounds + round;
            let (pipeline, baseline) = side_by_side(&options, &simulators, &side, |delivering| {
                pipeline_told(latency, round, Some(delivering))
            })?;
            report
                .together_rounds
                .push(CpuRound::of(&pipeline, &baseline));
        }
    }
    if options.runs("floor") {
        report.floor = Some(pipeline_at(0, 1)?);
    }
    if options.runs("floor-baseline") {
        report.floor_baseline = Some(baseline_at(0)?);
    }
    if options.runs("sequential") && options.sequential > 0 {
        report.sequential = Some(sequential(&options, &kafka, &simulators)?);
    }
    drop(runtime);
    drop(simulator_runtime);
    report.load_after = load_average();
    report.print(&options, &workload);
    if let Some(export) = trace_export {
        export.shut_down(Duration::from_secs(5));
    }
    Ok(())
}

/// Whether pair `round` (from 1) runs its baseline first: every other pair
/// does (ABBA), so that whatever one phase leaves behind for the next counts
/// against each side equally often.
fn baseline_first(round: usize) -> bool {
    round % 2 == 0
}

/// The runtime a baseline beside a pipeline runs on, as many workers as
/// the bench's, its threads named so that their CPU is told apart.
fn side_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .thread_name(SIDE_RUNTIME)
        .enable_all()
        .build()?)
}

/// A pipeline phase with a baseline beside it: the baseline's simulator,
/// requests and client are made first; its loop starts, on the `side`
/// runtime and a thread of its own, when the pipeline's first update is
/// accepted, and so runs through the pipeline's delivery. Both see the
/// machine at the same moments, whatever its speed does meanwhile.
fn side_by_side(
    options: &Options,
    simulators: &Handle,
    side: &tokio::runtime::Runtime,
    run_pipeline: impl FnOnce(tokio::sync::oneshot::Sender<()>) -> anyhow::Result<PipelineResult>,
) -> anyhow::Result<(PipelineResult, HttpResult)> {
    let prepared = side.block_on(Baseline::prepare(options, simulators, options.latency_ms))?;
    let (delivering, go) = tokio::sync::oneshot::channel();
    // The loop's thread lives until the pipeline has taken its CPU figures:
    // a thread that ended would count as the service's ("other").
    let (pipeline_done, wait_for_pipeline) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let beside = std::thread::Builder::new()
            .name(format!("{SIDE_RUNTIME}-loop"))
            .spawn_scoped(scope, move || {
                let result = side.block_on(async {
                    go.await
                        .map_err(|_| anyhow::anyhow!("the pipeline ended before delivering"))?;
                    prepared.run(simulators, true).await
                });
                let _ = wait_for_pipeline.recv();
                result
            })?;
        let pipeline = run_pipeline(delivering);
        drop(pipeline_done);
        let baseline = beside
            .join()
            .map_err(|_| anyhow::anyhow!("the baseline beside the pipeline panicked"))?;
        Ok((pipeline?, baseline?))
    })
}

/// The generator's events for these options (the same every time).
fn generate(options: &Options) -> Generator {
    Generator::new(GeneratorConfig {
        events: options.events,
        customers: options.customers,
        ..GeneratorConfig::default()
    })
}

/// The updates the generated events decide to, in event order.
fn updates(options: &Options) -> Vec<ProfileUpdate> {
    let mapping = Mapping::default();
    generate(options)
        .filter_map(|event| match mapping.decide(&event.payload) {
            Decision::Update(update) => Some(update),
            _ => None,
        })
        .collect()
}

/// What the generated events are.
#[derive(Debug, Default)]
struct Workload {
    events: usize,
    updates: usize,
    skipped: usize,
    malformed: usize,
    payload_bytes: usize,
}

impl Workload {
    fn count(&mut self, event: &GeneratedEvent, mapping: &Mapping) {
        self.events += 1;
        self.payload_bytes += event.payload.len();
        match mapping.decide(&event.payload) {
            Decision::Update(_) => self.updates += 1,
            Decision::Skip(_) => self.skipped += 1,
            Decision::DeadLetter(_) => self.malformed += 1,
        }
    }
}

/// Creates the source topic, produces the events into it (keyed as
/// generated), waits for every ack and says what they were, with the
/// verified end offsets.
fn produce(
    kafka: &Kafka,
    partitions: i32,
    events: impl Iterator<Item = GeneratedEvent>,
) -> anyhow::Result<(Workload, Vec<i64>)> {
    kafka.create_topic(TOPIC, partitions)?;
    let producer = kafka.producer()?;
    let (mapping, mut workload) = (Mapping::default(), Workload::default());
    for event in events {
        workload.count(&event, &mapping);
        pps_test_kit::broker::send(&producer, TOPIC, &event.key, &event.payload);
    }
    producer.flush(Duration::from_secs(60))?;
    let ends = kafka.verified_end_offsets(TOPIC, partitions, workload.events)?;
    Ok((workload, ends))
}

async fn start_simulator(simulators: &Handle, latency_ms: u64) -> anyhow::Result<SimulatorHandle> {
    common::start_simulator(
        simulators,
        Faults {
            latency: Latency::fixed_ms(latency_ms),
            ..Faults::none()
        },
    )
    .await
}

async fn stop_simulator(simulators: &Handle, simulator: SimulatorHandle) {
    let _ = simulators.spawn(simulator.shutdown()).await;
}
