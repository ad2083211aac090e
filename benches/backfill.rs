//! A backfill through bulk batches against single updates at the same budget.
//!
//! The generator's events (default ratios) are produced with lz4 into librdkafka's
//! mock cluster and the end offsets checked (the mock keeps only about 5 MB per
//! partition). The real service (`service::run`) then runs in this process twice
//! against the Target simulator (no latency, no failures), each time in its own
//! consumer group reading the whole backlog:
//!
//! 1. **bulk**: `bulk.mode = "always"`; the simulator completes a batch
//!    `completion_delay_ms` after it was submitted and allows `calls_per_minute` bulk
//!    calls (Adobe's 50 by default). It runs until every partition is committed at
//!    its end offset; the span is from the call to `run` (so it includes joining the
//!    group, about 3 s) to the commit watcher seeing the last commit. Afterwards every
//!    customer's profile at the simulator is compared with the updates folded in order.
//! 2. **single**: `bulk.mode = "off"`, the same `rate_limit.per_second` and burst. It
//!    is cut `single_seconds` after the first update was accepted; its rate is the
//!    updates accepted (`pps_events_accepted_total`) over that span.
//!
//! Both rates are given in updates/s (events that make a Target call); the bulk run
//! also in records/s (every record, skipped and dead-lettered ones included).
//!
//! Run: `cargo bench --bench backfill`. Smoke run:
//! `PPS_BENCH_EVENTS=20000 PPS_BENCH_CUSTOMERS=2000 PPS_BENCH_SINGLE_S=5 cargo bench --bench backfill`.
//!
//! Options (environment, defaults in brackets): `PPS_BENCH_EVENTS` [200000],
//! `PPS_BENCH_CUSTOMERS` [20000], `PPS_BENCH_PARTITIONS` [24], `PPS_BENCH_PER_SECOND`
//! [1000], `PPS_BENCH_BURST` [10], `PPS_BENCH_SINGLE_S` [30],
//! `PPS_BENCH_COMPLETION_DELAY_MS` [2000], `PPS_BENCH_CALLS_PER_MINUTE` [50, 0 =
//! unlimited; the service's `bulk.calls_per_minute` is set to the same],
//! `PPS_BENCH_MAX_AGE_MS` [service default 60000: `bulk.max_age_ms`],
//! `PPS_BENCH_MAX_ROWS` [service default 500000], `PPS_BENCH_PHASES` [bulk,single],
//! `PPS_BENCH_TIMEOUT_S` [600]; `RUST_LOG` [warn].

/// The allocator the binary ships with (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "common/mod.rs"]
mod common;

use anyhow::bail;
use common::{env_or, InProcess};
use pos_profile_sync::generator::{expected_profiles, Generator, GeneratorConfig};
use pos_profile_sync::ops::config::{BulkMode, Settings};
use pps_target_simulator::{BulkFaults, Faults, SimStats};
use pps_test_kit::broker::Kafka;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

const TOPIC: &str = "pos.purchases";

struct Options {
    events: u64,
    customers: u64,
    partitions: i32,
    per_second: f64,
    burst: u32,
    single: Duration,
    completion_delay_ms: u64,
    calls_per_minute: u32,
    max_age_ms: Option<u64>,
    max_rows: Option<u64>,
    phases: Vec<String>,
    timeout: Duration,
}

impl Options {
    fn from_env() -> anyhow::Result<Options> {
        let optional = |name: &str| -> anyhow::Result<Option<u64>> {
            Ok(match std::env::var(name) {
                Ok(_) => Some(env_or(name, 0)?),
                Err(_) => None,
            })
        };
        Ok(Options {
            events: env_or("PPS_BENCH_EVENTS", 200_000)?,
            customers: env_or("PPS_BENCH_CUSTOMERS", 20_000)?,
            partitions: env_or("PPS_BENCH_PARTITIONS", 24)?,
            per_second: env_or("PPS_BENCH_PER_SECOND", 1_000.0)?,
            burst: env_or("PPS_BENCH_BURST", 10)?,
            single: Duration::from_secs(env_or("PPS_BENCH_SINGLE_S", 30)?),
            completion_delay_ms: env_or("PPS_BENCH_COMPLETION_DELAY_MS", 2_000)?,
            calls_per_minute: env_or("PPS_BENCH_CALLS_PER_MINUTE", 50)?,
            max_age_ms: optional("PPS_BENCH_MAX_AGE_MS")?,
            max_rows: optional("PPS_BENCH_MAX_ROWS")?,
            phases: common::phases("PPS_BENCH_PHASES", &["bulk", "single"])?,
            timeout: Duration::from_secs(env_or("PPS_BENCH_TIMEOUT_S", 600)?),
        })
    }

    fn generator(&self) -> Generator {
        Generator::new(GeneratorConfig {
            events: self.events,
            customers: self.customers,
            ..GeneratorConfig::default()
        })
    }

    fn settings(&self, kafka: &Kafka, base_url: &str, group: &str, mode: BulkMode) -> Settings {
        let mut settings = common::settings(kafka, base_url, TOPIC, group);
        settings.rate_limit.per_second = self.per_second;
        settings.rate_limit.burst = self.burst;
        settings.bulk.mode = mode;
        settings.bulk.calls_per_minute = if self.calls_per_minute == 0 {
            1_000_000
        } else {
            self.calls_per_minute
        };
        if let Some(age) = self.max_age_ms {
            settings.bulk.max_age_ms = age;
        }
        if let Some(rows) = self.max_rows {
            settings.bulk.max_rows = rows;
        }
        settings
    }

    fn faults(&self) -> Faults {
        Faults {
            bulk: BulkFaults {
                completion_delay_ms: self.completion_delay_ms,
                calls_per_minute: self.calls_per_minute,
                ..BulkFaults::default()
            },
            ..Faults::none()
        }
    }
}

fn main() -> anyhow::Result<()> {
    // As the binary does (src/main.rs).
    pos_profile_sync::ops::memory::return_large_c_buffers_at_once();
    common::init_logs();
    let options = Options::from_env()?;
    let (simulator_runtime, runtime) = common::runtimes(2)?;
    let simulators = simulator_runtime.handle().clone();

    let started = Instant::now();
    let kafka = Kafka::from_env()?;
    let ends = kafka.backlog(TOPIC, options.partitions, options.generator())?;
    let records: i64 = ends.iter().sum();
    let customers = expected_profiles(options.generator()).len();
    let update_events = options
        .generator()
        .filter(|e| matches!(e.kind, pos_profile_sync::generator::EventKind::Customer(_)))
        .count();
    println!(
        "setup: {records} records ({update_events} update events, {customers} customers) over {} partitions (largest {} records), produced (lz4) and verified in {:.1} s",
        options.partitions,
        ends.iter().max().copied().unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    let bulk = if options.phases.iter().any(|p| p == "bulk") {
        Some(runtime.block_on(bulk(&options, &kafka, &ends, &simulators))?)
    } else {
        None
    };
    let single = if options.phases.iter().any(|p| p == "single") {
        Some(runtime.block_on(single(&options, &kafka, &simulators))?)
    } else {
        None
    };

    println!();
    println!(
        "budget: rate_limit.per_second = {}, burst = {}; bulk calls/min = {} (0 = unlimited), completion delay {} ms",
        options.per_second, options.burst, options.calls_per_minute, options.completion_delay_ms
    );
    let mut bulk_rate = None;
    if let Some(b) = &bulk {
        let secs = b.elapsed.as_secs_f64();
        let rate = update_events as f64 / secs;
        bulk_rate = Some(rate);
        println!(
            "bulk (always):   all {records} records committed in {secs:.1} s (from run(), group join included): {:.0} records/s, {rate:.0} updates/s",
            records as f64 / secs
        );
        println!(
            "                 batches submitted {}, refused {}, rows received {}, applied {}, status polls {}, bulk calls {} (throttled {}), single updates {}",
            b.stats.bulk.batches_submitted,
            b.stats.bulk.batches_refused,
            b.stats.bulk.rows_received,
            b.stats.bulk.rows_applied,
            b.stats.bulk.status_polls,
            b.stats.bulk.batches_submitted + b.stats.bulk.batches_refused + b.stats.bulk.status_polls,
            b.stats.bulk.throttled,
            b.stats.total,
        );
        println!(
            "                 lost: {} of {customers} profiles differ from the updates folded in order{}",
            b.lost.len(),
            match b.lost.first() {
                Some(n) => format!(" (first: customer {n})"),
                None => String::new(),
            }
        );
    }
    if let Some(s) = &single {
        let secs = s.span.as_secs_f64();
        let rate = s.accepted as f64 / secs;
        println!(
            "single (off):    {} updates accepted in {secs:.1} s after the first: {rate:.0} updates/s (simulator: {} requests, {} accepted); all {update_events} would need ~{:.0} s",
            s.accepted,
            s.stats.total,
            s.stats.accepted,
            update_events as f64 / rate.max(1e-9)
        );
        if let Some(b) = bulk_rate {
            println!("ratio bulk/single: {:.1}x (updates/s)", b / rate.max(1e-9));
        }
    }
    drop(runtime);
    drop(simulator_runtime);
    Ok(())
}

struct BulkResult {
    elapsed: Duration,
    stats: SimStats,
    lost: Vec<u64>,
}

async fn bulk(
    options: &Options,
    kafka: &Kafka,
    ends: &[i64],
    simulators: &Handle,
) -> anyhow::Result<BulkResult> {
    let simulator = common::start_simulator(simulators, options.faults()).await?;
    let group = "bench-backfill-bulk";
    let settings = options.settings(kafka, &simulator.base_url(), group, BulkMode::Always);
    println!("bulk: running until every partition is committed...");
    let started = Instant::now();
    let service = InProcess::start(settings).await?;
    let mut last_report = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if kafka.all_committed(group, TOPIC, ends) {
            break;
        }
        if service.has_stopped() {
            bail!("the service stopped early: {:?}", service.stop().await);
        }
        if started.elapsed() > options.timeout {
            bail!("bulk: not all committed after {:?}", options.timeout);
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            let bulk = simulator.stats().bulk;
            println!(
                "  {:.0} s: records consumed {}, batches {}, rows applied {}",
                started.elapsed().as_secs_f64(),
                service.metric_sum("pps_events_consumed"),
                bulk.batches_submitted,
                bulk.rows_applied
            );
        }
    }
    let elapsed = started.elapsed();
    for line in service.metric_lines("pps_bulk_") {
        println!("  {line}");
    }
    service.stop().await?;
    let stats = simulator.stats();
    let lost =
        pps_test_kit::workload::lost_profiles(&expected_profiles(options.generator()), &simulator);
    let _ = simulators.spawn(simulator.shutdown()).await;
    Ok(BulkResult {
        elapsed,
        stats,
        lost,
    })
}

struct SingleResult {
    span: Duration,
    accepted: u64,
    stats: SimStats,
}

async fn single(
    options: &Options,
    kafka: &Kafka,
    simulators: &Handle,
) -> anyhow::Result<SingleResult> {
    let simulator = common::start_simulator(simulators, options.faults()).await?;
    let group = "bench-backfill-single";
    let settings = options.settings(kafka, &simulator.base_url(), group, BulkMode::Off);
    println!(
        "single: running for {:?} after the first acceptance...",
        options.single
    );
    let started = Instant::now();
    let service = InProcess::start(settings).await?;
    let accepted = || service.handle.metrics.events_accepted.get();
    let first = loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if accepted() > 0 {
            break (Instant::now(), accepted());
        }
        if service.has_stopped() || started.elapsed() > options.timeout {
            bail!("single: nothing accepted");
        }
    };
    tokio::time::sleep(options.single).await;
    let (now, count) = (Instant::now(), accepted());
    let stats = simulator.stats();
    service.stop().await?;
    let _ = simulators.spawn(simulator.shutdown()).await;
    Ok(SingleResult {
        span: now - first.0,
        accepted: count - first.1,
        stats,
    })
}
