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
//! 4. **Memory.** Peak RSS (`VmHWM`) after the pipeline phase, reset before it
//!    (`/proc/self/clear_refs`) where the kernel allows. Events are streamed into Kafka,
//!    not held, so the RSS before the phase is mostly the mock cluster's log.
//!
//! Run: `cargo bench --bench pipeline` (about a minute on 2 cores). Smoke run:
//! `PPS_BENCH_EVENTS=5000 PPS_BENCH_SEQUENTIAL_EVENTS=50 cargo bench --bench pipeline`.
//!
//! Options (environment, defaults in brackets): `PPS_BENCH_EVENTS` [100000],
//! `PPS_BENCH_CUSTOMERS` [10000], `PPS_BENCH_PARTITIONS` [24], `PPS_BENCH_LATENCY_MS`
//! [20], `PPS_BENCH_IN_FLIGHT` [256], `PPS_BENCH_COMMIT_INTERVAL_MS` [1000] and
//! `PPS_BENCH_MAX_BUFFERED` [10000] (the service's defaults),
//! `PPS_BENCH_SEQUENTIAL_EVENTS` [500], `PPS_BENCH_PHASES`
//! [pipeline,baseline,floor,floor-baseline,sequential], `PPS_BENCH_SIM_THREADS` [2],
//! `PPS_BENCH_TIMEOUT_S` [180, per phase], `PPS_BENCH_THREADS` [0; 1 lists CPU by
//! thread name]; `RUST_LOG` [warn] for the service's own logs; `PPS_TEST_BROKER=tansu`
//! with `PPS_TANSU_BIN` puts the events in tansu instead of the mock cluster.

/// The allocator the binary ships with (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod common;

use anyhow::{bail, ensure};
use common::{env_or, Kafka, CLIENT_CODE};
use futures::StreamExt as _;
use pos_profile_sync::generator::{GeneratedEvent, Generator, GeneratorConfig};
use pos_profile_sync::mapping::{Decision, Mapping, ProfileUpdate};
use pos_profile_sync::ops::config::Settings;
use pos_profile_sync::service::{self, ServiceHandle};
use pos_profile_sync::target::request::{UpdateEndpoint, UpdateRequest};
use pps_target_simulator::{Faults, Latency, SimulatorHandle};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
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
        })
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

/// Every phase, in the order they run.
const PHASES: [&str; 5] = [
    "pipeline",
    "baseline",
    "floor",
    "floor-baseline",
    "sequential",
];

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let options = Options::from_env()?;
    // As `run` does: export spans when OTEL_EXPORTER_OTLP_* says where (to
    // measure what tracing costs); otherwise no span is built.
    let trace_export = pos_profile_sync::ops::traces::init().map_err(anyhow::Error::msg)?;
    if trace_export.is_some() {
        println!("traces     exported over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT is set)");
    }
    // The simulator gets its own runtime (named threads), so its CPU can be told apart.
    let simulator_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.sim_threads)
        .thread_name("sim-rt")
        .enable_all()
        .build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-rt")
        .enable_all()
        .build()?;
    let simulators = simulator_runtime.handle().clone();
    let mut report = Report {
        load_before: load_average(),
        ..Report::default()
    };

    let started = Instant::now();
    let kafka = Kafka::start()?;
    report.broker = kafka.describe();
    // Streamed, not held: the baselines generate the same events again.
    let (workload, ends) = produce(&kafka, options.partitions, generate(&options))?;
    println!(
        "setup: {} events generated, produced (lz4) and verified in {:.1} s",
        workload.events,
        started.elapsed().as_secs_f64()
    );
    let latency = options.latency_ms;
    let pipeline_at = |latency| {
        runtime.block_on(pipeline(
            &options,
            &kafka,
            &ends,
            &workload,
            &simulators,
            latency,
        ))
    };
    let baseline_at = |latency| runtime.block_on(http_baseline(&options, &simulators, latency));
    if options.runs("pipeline") {
        report.pipeline = Some(pipeline_at(latency)?);
    }
    if options.runs("baseline") {
        report.baseline = Some(baseline_at(latency)?);
    }
    if options.runs("floor") {
        report.floor = Some(pipeline_at(0)?);
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
        common::send(&producer, TOPIC, &event.key, &event.payload);
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

fn service_settings(
    options: &Options,
    kafka: &Kafka,
    simulator: &SimulatorHandle,
    group: &str,
) -> Settings {
    let mut settings = common::settings(kafka, &simulator.base_url(), TOPIC, group);
    settings.rate_limit.per_second = 1e9;
    settings.rate_limit.burst = BURST;
    settings.delivery.max_in_flight = options.in_flight;
    settings.delivery.commit_interval_ms = options.commit_interval_ms;
    settings.delivery.max_buffered_per_partition = options.max_buffered;
    settings
}

/// What one pipeline phase measured.
struct PipelineResult {
    latency_ms: u64,
    events: usize,
    updates_needed: usize,
    total: Duration,
    startup: Duration,
    delivery: Duration,
    tail: Duration,
    /// From 10 % to 90 % of the updates accepted.
    middle: Duration,
    /// Requests in flight at the service, sampled over the middle 80 %.
    mean_in_flight: f64,
    /// The service's own request timing (send to end of body).
    mean_request: Duration,
    shutdown: Duration,
    sim_accepted: u64,
    sim_requests: u64,
    retries: u64,
    dead_letters: u64,
    cpu: CpuUse,
    rss_before_kb: Option<u64>,
    peak_rss_kb: Option<u64>,
    peak_was_reset: bool,
}

async fn pipeline(
    options: &Options,
    kafka: &Kafka,
    ends: &[i64],
    workload: &Workload,
    simulators: &Handle,
    latency_ms: u64,
) -> anyhow::Result<PipelineResult> {
    let group = format!("bench-pipeline-{latency_ms}ms");
    let simulator = start_simulator(simulators, latency_ms).await?;
    let settings = service_settings(options, kafka, &simulator, &group);
    pos_profile_sync::kafka::validate(&settings)?;
    let watcher = CommitWatcher::start(kafka, &group, ends)?;
    let updates_needed = workload.updates as u64;
    println!(
        "pipeline, {latency_ms} ms latency: running ({} events, {updates_needed} updates)...",
        workload.events
    );

    let rss_before_kb = proc_status_kb("VmRSS");
    let peak_was_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let cpu_before = CpuSnapshot::take();
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel::<ServiceHandle>();
    let mut service = tokio::spawn(service::run(settings, shutdown.clone(), move |handle| {
        let _ = handle_tx.send(handle);
    }));
    let Ok(handle) = handle_rx.await else {
        bail!("the service did not start: {:?}", (&mut service).await?);
    };
    let mut progress = Progress::default();
    let all_committed = loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let accepted = handle.metrics.events_accepted.get();
        progress.observe(
            accepted,
            updates_needed,
            handle.metrics.target_in_flight.get(),
        );
        if let Some(at) = watcher.done() {
            break at;
        }
        if service.is_finished() {
            bail!("the service stopped early: {:?}", service.await?);
        }
        if started.elapsed() > options.timeout {
            bail!(
                "not all committed after {:?} ({accepted} of {updates_needed} events accepted)",
                options.timeout
            );
        }
    };
    let cpu = CpuSnapshot::take().since(&cpu_before);
    let peak_rss_kb = proc_status_kb("VmHWM");
    let first_accept = progress.first.unwrap_or(all_committed);
    let all_accepted = progress.all.unwrap_or(all_committed);
    let middle = match (progress.tenth, progress.ninth) {
        (Some(from), Some(to)) => to - from,
        _ => Duration::ZERO,
    };
    // The histogram's sum and count are only readable through the exposition.
    let exposition = handle.metrics.encode();
    let series = |name: &str| -> f64 {
        exposition
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_default()
    };
    let mean_request = Duration::from_secs_f64(
        series("pps_target_request_duration_seconds_sum")
            / series("pps_target_request_duration_seconds_count").max(1.0),
    );
    let stats = simulator.stats();
    let dead_letters = ["invalid_json", "schema_violation", "unsupported_version"]
        .iter()
        .map(|class| handle.metrics.dead_letter_counter(class).get())
        .sum();
    let retries = handle.metrics.target_retries.get();

    let stopping = Instant::now();
    shutdown.cancel();
    service.await??;
    let shutdown_time = stopping.elapsed();
    stop_simulator(simulators, simulator).await;
    Ok(PipelineResult {
        latency_ms,
        events: workload.events,
        updates_needed: workload.updates,
        total: all_committed - started,
        startup: first_accept - started,
        delivery: all_accepted.saturating_duration_since(first_accept),
        tail: all_committed.saturating_duration_since(all_accepted),
        middle,
        mean_in_flight: progress.mean_in_flight(),
        mean_request,
        shutdown: shutdown_time,
        sim_accepted: stats.accepted,
        sim_requests: stats.total,
        retries,
        dead_letters,
        cpu,
        rss_before_kb,
        peak_rss_kb,
        peak_was_reset,
    })
}

/// When the accepted count crossed each mark, and the concurrency seen in between.
#[derive(Debug, Default)]
struct Progress {
    first: Option<Instant>,
    tenth: Option<Instant>,
    ninth: Option<Instant>,
    all: Option<Instant>,
    in_flight_sum: i64,
    in_flight_samples: u32,
}

impl Progress {
    fn observe(&mut self, accepted: u64, needed: u64, in_flight: i64) {
        let now = Instant::now();
        let mark = |slot: &mut Option<Instant>, reached: bool| {
            if reached && slot.is_none() {
                *slot = Some(now);
            }
        };
        mark(&mut self.first, accepted > 0);
        mark(&mut self.tenth, accepted * 10 >= needed);
        mark(&mut self.ninth, accepted * 10 >= needed * 9);
        mark(&mut self.all, accepted >= needed);
        if self.tenth.is_some() && self.ninth.is_none() {
            self.in_flight_sum += in_flight;
            self.in_flight_samples += 1;
        }
    }

    fn mean_in_flight(&self) -> f64 {
        self.in_flight_sum as f64 / f64::from(self.in_flight_samples.max(1))
    }
}

/// Polls a group's committed offsets on its own thread, every 100 ms, until
/// every partition is committed at its end offset.
struct CommitWatcher {
    done: tokio::sync::watch::Receiver<Option<Instant>>,
    stop: CancellationToken,
}

impl CommitWatcher {
    fn start(kafka: &Kafka, group: &str, ends: &[i64]) -> anyhow::Result<CommitWatcher> {
        let consumer: BaseConsumer = kafka.config().set("group.id", group).create()?;
        let partitions = ends.len() as i32;
        let ends = ends.to_vec();
        let (tx, done) = tokio::sync::watch::channel(None);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("commit-watcher".into())
            .spawn(move || {
                while !stopped.is_cancelled() {
                    let committed = common::committed_offsets(&consumer, TOPIC, partitions);
                    if committed.ok().as_deref() == Some(&ends[..]) {
                        let _ = tx.send(Some(Instant::now()));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })?;
        Ok(CommitWatcher { done, stop })
    }

    fn done(&self) -> Option<Instant> {
        *self.done.borrow()
    }
}

impl Drop for CommitWatcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the plain HTTP loop measured.
struct HttpResult {
    latency_ms: u64,
    requests: usize,
    ok: usize,
    elapsed: Duration,
    /// From 10 % to 90 % of the requests answered.
    middle: Duration,
    mean_request: Duration,
    sim_accepted: u64,
    cpu: CpuUse,
}

fn http_client(pool: usize) -> reqwest::Result<reqwest::Client> {
    // As the service's Target client is built.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

async fn send(client: &reqwest::Client, request: &UpdateRequest) -> bool {
    let mut builder = client.post(request.url.clone());
    if let Some(body) = &request.form_body {
        builder = builder
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.clone());
    }
    match builder.send().await {
        Ok(response) => {
            let ok = response.status().is_success();
            response.bytes().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

async fn http_baseline(
    options: &Options,
    simulators: &Handle,
    latency_ms: u64,
) -> anyhow::Result<HttpResult> {
    let concurrency = options.in_flight as usize;
    let simulator = start_simulator(simulators, latency_ms).await?;
    let endpoint =
        UpdateEndpoint::new(&simulator.base_url(), CLIENT_CODE).map_err(anyhow::Error::msg)?;
    let requests: Vec<UpdateRequest> = updates(options)
        .iter()
        .map(|u| endpoint.request(u))
        .collect();
    let client = http_client(concurrency)?;
    println!(
        "baseline HTTP loop, {latency_ms} ms latency: running ({} requests, {concurrency} at a time)...",
        requests.len()
    );
    let cpu_before = CpuSnapshot::take();
    let started = Instant::now();
    let timed = requests.iter().map(|request| {
        let client = &client;
        async move {
            let sent = Instant::now();
            let ok = send(client, request).await;
            (ok, Instant::now(), sent.elapsed())
        }
    });
    let mut done: Vec<(bool, Instant, Duration)> = futures::stream::iter(timed)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = CpuSnapshot::take().since(&cpu_before);
    let sim_accepted = simulator.stats().accepted;
    stop_simulator(simulators, simulator).await;
    done.sort_by_key(|(_, at, _)| *at);
    let ok = done.iter().filter(|(ok, _, _)| *ok).count();
    let at = |fraction: f64| {
        done.get((done.len() as f64 * fraction) as usize)
            .map(|d| d.1)
    };
    let middle = match (at(0.1), at(0.9)) {
        (Some(from), Some(to)) => to - from,
        _ => Duration::ZERO,
    };
    let total_time: Duration = done.iter().map(|d| d.2).sum();
    Ok(HttpResult {
        latency_ms,
        requests: requests.len(),
        ok,
        elapsed,
        middle,
        mean_request: total_time / done.len().max(1) as u32,
        sim_accepted,
        cpu,
    })
}

/// What the sequential loop measured.
struct SequentialResult {
    events: usize,
    requests: usize,
    elapsed: Duration,
}

/// Poll one record, decide, send its update (if any) and wait for the answer,
/// commit synchronously, repeat. Timed from the first record.
fn sequential(
    options: &Options,
    kafka: &Kafka,
    simulators: &Handle,
) -> anyhow::Result<SequentialResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let simulator = runtime.block_on(start_simulator(simulators, options.latency_ms))?;
    let endpoint =
        UpdateEndpoint::new(&simulator.base_url(), CLIENT_CODE).map_err(anyhow::Error::msg)?;
    let client = http_client(1)?;
    let mapping = Mapping::default();
    let consumer: BaseConsumer = kafka
        .config()
        .set("group.id", "bench-sequential")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..options.partitions {
        assignment.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    println!(
        "sequential consume-send-commit loop, {} ms latency: running ({} events)...",
        options.latency_ms, options.sequential
    );
    let (mut events, mut requests, mut started) = (0, 0, None);
    let deadline = Instant::now() + options.timeout;
    while events < options.sequential {
        ensure!(Instant::now() < deadline, "sequential loop timed out");
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        started.get_or_insert_with(Instant::now);
        if let Decision::Update(update) = mapping.decide(message.payload().unwrap_or_default()) {
            let request = endpoint.request(&update);
            ensure!(
                runtime.block_on(send(&client, &request)),
                "the simulator did not accept an update"
            );
            requests += 1;
        }
        consumer.commit_message(&message, CommitMode::Sync)?;
        events += 1;
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    runtime.block_on(stop_simulator(simulators, simulator));
    Ok(SequentialResult {
        events,
        requests,
        elapsed,
    })
}

/// CPU seconds used by the process and by each live thread, from `/proc`.
struct CpuSnapshot {
    process_ticks: u64,
    threads: HashMap<String, (String, u64)>,
}

/// CPU seconds over a span, in total and by part of the process.
#[derive(Debug, Clone, Default)]
struct CpuUse {
    total_s: f64,
    parts: BTreeMap<&'static str, f64>,
    /// By thread name, for `PPS_BENCH_THREADS=1`.
    threads: BTreeMap<String, f64>,
}

/// The part of the process a thread belongs to, by its name.
fn part_of(thread_name: &str) -> &'static str {
    match thread_name {
        name if name.starts_with("sim-rt") => "simulator",
        "rdk:mock" => "mock brokers",
        name if name.starts_with("rdk:") || name == "producer pollin" => "librdkafka clients",
        "kafka-consumer" => "consumer thread",
        name if name.starts_with("bench-rt") => "async runtime",
        _ => "other",
    }
}

/// `(comm, utime + stime)` from a `stat` file.
fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_owned();
    // After the name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

impl CpuSnapshot {
    fn take() -> CpuSnapshot {
        let mut threads = HashMap::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let tid = task.file_name().to_string_lossy().into_owned();
                if let Some(entry) = stat_ticks(&format!("/proc/self/task/{tid}/stat")) {
                    threads.insert(tid, entry);
                }
            }
        }
        CpuSnapshot {
            process_ticks: stat_ticks("/proc/self/stat").map_or(0, |(_, t)| t),
            threads,
        }
    }

    /// Use since `earlier`; CPU of threads that ended meanwhile is "other".
    fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let mut parts: BTreeMap<&'static str, f64> = BTreeMap::new();
        let mut threads: BTreeMap<String, f64> = BTreeMap::new();
        let mut attributed = 0;
        for (tid, (name, ticks)) in &self.threads {
            let before = earlier.threads.get(tid).map_or(0, |(_, t)| *t);
            let used = ticks.saturating_sub(before);
            attributed += used;
            *parts.entry(part_of(name)).or_default() += seconds(used);
            *threads.entry(name.clone()).or_default() += seconds(used);
        }
        let total = self.process_ticks.saturating_sub(earlier.process_ticks);
        *parts.entry("other").or_default() += seconds(total.saturating_sub(attributed));
        CpuUse {
            total_s: seconds(total),
            parts,
            threads,
        }
    }
}

impl CpuUse {
    fn part(&self, name: &str) -> f64 {
        self.parts.get(name).copied().unwrap_or_default()
    }

    /// The service's own CPU: everything but the simulator and the mock brokers.
    fn service_s(&self) -> f64 {
        self.total_s - self.part("simulator") - self.part("mock brokers")
    }

    /// The bare client's CPU: everything but the simulator.
    fn client_s(&self) -> f64 {
        self.total_s - self.part("simulator")
    }
}

/// Microseconds per item.
fn micros_per(seconds: f64, count: usize) -> f64 {
    seconds * 1e6 / count.max(1) as f64
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".into())
}

/// A `kB` field of `/proc/self/status`.
fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

#[derive(Default)]
struct Report {
    /// Which broker the events were in.
    broker: String,
    /// The 1-minute load average at the start and the end (others share the cores).
    load_before: String,
    load_after: String,
    pipeline: Option<PipelineResult>,
    baseline: Option<HttpResult>,
    floor: Option<PipelineResult>,
    floor_baseline: Option<HttpResult>,
    sequential: Option<SequentialResult>,
}

fn rate(count: impl Into<f64>, span: Duration) -> f64 {
    count.into() / span.as_secs_f64().max(1e-9)
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |kb| format!("{:.0} MB", kb as f64 / 1024.0))
}

impl Report {
    fn print(&self, options: &Options, workload: &Workload) {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!(
            "workload   {} events ({} updates, {} anonymous skips, {} malformed), {} customers uniform, seed 42, mean payload {} B",
            workload.events,
            workload.updates,
            workload.skipped,
            workload.malformed,
            options.customers,
            workload.payload_bytes / workload.events.max(1)
        );
        println!(
            "kafka      {}, {} partitions, lz4; end offsets verified",
            self.broker, options.partitions
        );
        println!(
            "service    rate_limit.per_second = 1e9, burst = {BURST}, delivery.max_in_flight = {}, commit_interval_ms = {}, max_buffered_per_partition = {}, other settings default",
            options.in_flight, options.commit_interval_ms, options.max_buffered
        );
        println!(
            "target     in-process simulator on its own {}-thread runtime, fixed latency {} ms (0 ms for the floor)",
            options.sim_threads, options.latency_ms
        );
        println!(
            "machine    {cores} cores visible, shared (1-min load average {} at start, {} at end); all of the above in this one process",
            self.load_before, self.load_after
        );
        println!();
        println!("{:<60} {:>16}", "figure", "value");
        for result in [&self.pipeline, &self.floor].into_iter().flatten() {
            self.print_pipeline(options, result);
        }
        for result in [&self.baseline, &self.floor_baseline].into_iter().flatten() {
            self.print_baseline(options, result);
        }
        if let Some(s) = &self.sequential {
            let events_per_s = rate(s.events as f64, s.elapsed);
            row(
                &format!(
                    "sequential consume-send-commit, {} ms, {} events: events/s",
                    options.latency_ms, s.events
                ),
                format!("{events_per_s:.1}"),
            );
            row(
                "  requests sent / time (from the first record)",
                format!("{} / {:.1} s", s.requests, s.elapsed.as_secs_f64()),
            );
            if let Some(p) = &self.pipeline {
                row(
                    "  pipeline events/s (end to end) / sequential",
                    format!("x{:.0}", rate(p.events as f64, p.total) / events_per_s),
                );
            }
        }
    }

    fn print_pipeline(&self, options: &Options, result: &PipelineResult) {
        let seconds = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        let needed = result.updates_needed as f64;
        row(
            &format!("pipeline {} ms: start -> all committed", result.latency_ms),
            seconds(result.total),
        );
        row(
            "  startup (start -> first accept; group join)",
            seconds(result.startup),
        );
        row(
            "  delivery (first -> last accept)",
            seconds(result.delivery),
        );
        row(
            "  commit tail (last accept -> all committed)",
            seconds(result.tail),
        );
        row(
            "  events/s, end to end",
            format!("{:.0}", rate(result.events as f64, result.total)),
        );
        row(
            "  Target updates/s: end to end / delivery / middle 80 %",
            format!(
                "{:.0} / {:.0} / {:.0}",
                rate(result.sim_accepted as f64, result.total),
                rate(needed, result.delivery),
                rate(needed * 0.8, result.middle)
            ),
        );
        row(
            "  mean in flight (middle 80 %) / mean request time",
            format!(
                "{:.0} / {:.1} ms",
                result.mean_in_flight,
                result.mean_request.as_secs_f64() * 1e3
            ),
        );
        row(
            "  simulator accepted / updates needed",
            format!("{} / {}", result.sim_accepted, result.updates_needed),
        );
        row(
            "  duplicates / requests / retries / dead letters",
            format!(
                "{} / {} / {} / {}",
                result
                    .sim_accepted
                    .saturating_sub(result.updates_needed as u64),
                result.sim_requests,
                result.retries,
                result.dead_letters
            ),
        );
        let cpu = &result.cpu;
        let per_event = |s: f64| format!("{:.1} us", micros_per(s, result.events));
        row("  CPU per event, whole process", per_event(cpu.total_s));
        for part in PARTS {
            row(&format!("    {part}"), per_event(cpu.part(part)));
        }
        row(
            "    service (total - simulator - mock brokers)",
            per_event(cpu.service_s()),
        );
        if options.threads {
            for (name, used) in cpu.threads.iter().filter(|(_, s)| **s > 0.0) {
                row(&format!("      thread {name}"), format!("{used:.2} s"));
            }
        }
        row(
            "  cores busy (CPU time / wall time)",
            format!("{:.2}", cpu.total_s / result.total.as_secs_f64()),
        );
        let scope = if result.peak_was_reset {
            "phase"
        } else {
            "process"
        };
        row(
            &format!(
                "  peak RSS of the {scope} (RSS before: {})",
                mb(result.rss_before_kb)
            ),
            mb(result.peak_rss_kb),
        );
        row(
            "  shutdown (cancel -> run returned)",
            seconds(result.shutdown),
        );
    }

    fn print_baseline(&self, options: &Options, result: &HttpResult) {
        let per_request = |s: f64| format!("{:.1} us", micros_per(s, result.requests));
        let baseline = rate(result.ok as f64, result.elapsed);
        let middle = rate(result.requests as f64 * 0.8, result.middle);
        row(
            &format!(
                "baseline HTTP loop {} ms, {} concurrent: requests/s",
                result.latency_ms, options.in_flight
            ),
            format!("{baseline:.0}"),
        );
        row(
            "  requests/s, middle 80 % / mean request time",
            format!(
                "{middle:.0} / {:.1} ms",
                result.mean_request.as_secs_f64() * 1e3
            ),
        );
        row(
            "  ok / requests / simulator accepted",
            format!(
                "{} / {} / {}",
                result.ok, result.requests, result.sim_accepted
            ),
        );
        row(
            "  CPU per request, whole process",
            per_request(result.cpu.total_s),
        );
        row("    simulator", per_request(result.cpu.part("simulator")));
        row(
            "    client (total - simulator)",
            per_request(result.cpu.client_s()),
        );
        let pipeline = [&self.pipeline, &self.floor]
            .into_iter()
            .flatten()
            .find(|p| p.latency_ms == result.latency_ms);
        if let Some(p) = pipeline {
            let needed = p.updates_needed as f64;
            row(
                "  pipeline / baseline: end to end / delivery / middle 80 %",
                format!(
                    "{:.2} / {:.2} / {:.2}",
                    rate(p.sim_accepted as f64, p.total) / baseline,
                    rate(needed, p.delivery) / baseline,
                    rate(needed * 0.8, p.middle) / middle
                ),
            );
            let service = p.cpu.service_s() / p.events.max(1) as f64;
            let client = result.cpu.client_s() / result.requests.max(1) as f64;
            let ratio = service / client;
            row(
                "  service CPU per event / client CPU per request (goal <= 1.3)",
                format!("{ratio:.2} {}", if ratio <= 1.3 { "met" } else { "MISSED" }),
            );
        }
    }
}

/// The parts of the process CPU is attributed to, in print order.
const PARTS: [&str; 6] = [
    "simulator",
    "mock brokers",
    "librdkafka clients",
    "consumer thread",
    "async runtime",
    "other",
];

fn row(name: &str, value: String) {
    println!("{name:<60} {value:>16}");
}
