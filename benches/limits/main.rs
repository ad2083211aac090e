//! The service's limits, measured side by side in one run against librdkafka's mock
//! cluster and the Target simulator (no latency, no failures):
//!
//! 1. **rate**: the budget (`PPS_BENCH_RATE` [1000]/s, burst `PPS_BENCH_BURST` [10])
//!    with a backlog larger than it can clear, for `PPS_BENCH_RATE_S` [30] s after the
//!    first acceptance. The simulator counts requests by the whole second of its clock
//!    at which they arrived (`SimStats.requests_per_second`); the mean is over the
//!    whole seconds strictly between the first and the last (both partial), the
//!    busiest is over every second.
//! 2. **coalesce**: `PPS_BENCH_ZIPF_EVENTS` [1000000] events over
//!    `PPS_BENCH_ZIPF_CUSTOMERS` [100000] customers drawn from Zipf(1.1), produced into
//!    `PPS_BENCH_ZIPF_PARTITIONS` [200] partitions (end offsets checked; the hottest
//!    customer alone has about 13 % of the events, all in one partition, so when that
//!    partition passes what the mock cluster keeps the phase says so and falls back to
//!    `PPS_BENCH_ZIPF_FALLBACK` [300000] events), run to the
//!    last commit with `coalesce_window_ms = 1000` and no budget limit (1e9/s);
//!    requests per update event = the simulator's update requests / the events that
//!    make a call.
//! 3. **latency**: see [`latency`]; window 0 and 1000 ms.
//! 4. **rss**: see [`rss`]; the service as a child process.
//! 5. **failures** and 6. **overload**: see [`failures`]; throughput when Target
//!    fails a random share of requests, and when it is past its capacity.
//! 7. **dead-letters**: see [`dead_letters`]; letters per second in a storm of
//!    bad events.
//!
//! Run: `cargo bench --bench limits` (about 10 minutes on 2 cores). Smoke run:
//! `PPS_BENCH_RATE_S=5 PPS_BENCH_ZIPF_EVENTS=50000 PPS_BENCH_LATENCY_S=5
//! PPS_BENCH_RSS_BACKLOGS=20000,40000 PPS_BENCH_RSS_S=5 cargo bench --bench limits`.
//! Phases: `PPS_BENCH_PHASES` [rate,coalesce,latency,rss,failures,overload,dead-letters];
//! `RUST_LOG` [warn]. The failure phases alone:
//! `PPS_BENCH_PHASES=failures,overload cargo bench --bench limits`.

/// The allocator the binary ships with (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "../common/mod.rs"]
mod common;
mod dead_letters;
mod failures;
mod latency;
mod rss;

use anyhow::bail;
use common::{env_or, InProcess};
use pos_profile_sync::generator::{EventKind, Generator, GeneratorConfig};
use pps_target_simulator::Faults;
use pps_test_kit::broker::Kafka;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// The runtimes, the cluster and the backlogs produced so far (by size and exponent).
pub(crate) struct Bench {
    pub(crate) kafka: Kafka,
    pub(crate) simulators: Handle,
    backlogs: HashMap<(u64, u64), (String, Vec<i64>, usize)>,
    pub(crate) zipf_customers: u64,
    pub(crate) zipf_partitions: i32,
}

impl Bench {
    /// A topic holding `events` events over `zipf_customers` customers drawn from
    /// Zipf(`zipf`) (0: uniformly): its name, end offsets and how many of them make
    /// a Target call. Produced on first use.
    pub(crate) fn backlog(
        &mut self,
        events: u64,
        zipf: f64,
    ) -> anyhow::Result<(String, Vec<i64>, usize)> {
        let key = (events, zipf.to_bits());
        if let Some(found) = self.backlogs.get(&key) {
            return Ok(found.clone());
        }
        let config = GeneratorConfig {
            events,
            customers: self.zipf_customers,
            zipf,
            ..GeneratorConfig::default()
        };
        let topic = format!("zipf{zipf}-{events}");
        let started = Instant::now();
        let ends =
            self.kafka
                .backlog(&topic, self.zipf_partitions, Generator::new(config.clone()))?;
        let calls = Generator::new(config)
            .filter(|e| matches!(e.kind, EventKind::Customer(_)))
            .count();
        println!(
            "  {topic}: {events} events in {} partitions produced (lz4) and verified in {:.1} s; largest partition {} records",
            self.zipf_partitions,
            started.elapsed().as_secs_f64(),
            ends.iter().max().copied().unwrap_or(0)
        );
        let found = (topic, ends, calls);
        self.backlogs.insert(key, found.clone());
        Ok(found)
    }
}

fn main() -> anyhow::Result<()> {
    // As the binary does (src/main.rs).
    pos_profile_sync::ops::memory::return_large_c_buffers_at_once();
    common::init_logs();
    let phases = common::phases(
        "PPS_BENCH_PHASES",
        &[
            "rate",
            "coalesce",
            "latency",
            "rss",
            "failures",
            "overload",
            "dead-letters",
        ],
    )?;
    let (simulator_runtime, runtime) = common::runtimes(2)?;
    let mut bench = Bench {
        kafka: Kafka::from_env()?,
        simulators: simulator_runtime.handle().clone(),
        backlogs: HashMap::new(),
        zipf_customers: env_or("PPS_BENCH_ZIPF_CUSTOMERS", 100_000)?,
        zipf_partitions: env_or("PPS_BENCH_ZIPF_PARTITIONS", 200)?,
    };
    println!("broker: {}", bench.kafka.describe());
    let mut report = Vec::new();
    for phase in &phases {
        println!("{phase}:");
        let lines = match phase.as_str() {
            "rate" => runtime.block_on(rate(&bench))?,
            "coalesce" => {
                let mut lines = Vec::new();
                let mut events = env_or("PPS_BENCH_ZIPF_EVENTS", 1_000_000)?;
                let backlog = match bench.backlog(events, 1.1) {
                    Ok(backlog) => backlog,
                    Err(error) => {
                        lines.push(format!("{events} events do not fit: {error}"));
                        events = env_or("PPS_BENCH_ZIPF_FALLBACK", 300_000)?;
                        bench.backlog(events, 1.1)?
                    }
                };
                lines.extend(runtime.block_on(coalesce(&bench, events, backlog))?);
                lines
            }
            "latency" => runtime.block_on(latency::run(&bench))?,
            "rss" => rss::run(&mut bench, &runtime)?,
            "failures" => runtime.block_on(failures::random(&bench))?,
            "overload" => runtime.block_on(failures::overload(&bench))?,
            "dead-letters" => runtime.block_on(dead_letters::run())?,
            other => bail!("unknown phase {other}"),
        };
        for line in &lines {
            println!("  = {line}");
        }
        report.push((phase.clone(), lines));
    }
    println!();
    println!("=== limits ===");
    for (phase, lines) in report {
        for line in lines {
            println!("{phase:<9} {line}");
        }
    }
    drop(runtime);
    drop(simulator_runtime);
    Ok(())
}

/// Waits until the service accepted something; the moment it did.
pub(crate) async fn first_acceptance(service: &InProcess) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if service.handle.metrics.events_accepted.get() > 0 {
            return Ok(Instant::now());
        }
        if service.has_stopped() || started.elapsed() > Duration::from_secs(60) {
            bail!("nothing accepted within a minute");
        }
    }
}

async fn rate(bench: &Bench) -> anyhow::Result<Vec<String>> {
    let per_second: f64 = env_or("PPS_BENCH_RATE", 1_000.0)?;
    let burst: u32 = env_or("PPS_BENCH_BURST", 10)?;
    let seconds: u64 = env_or("PPS_BENCH_RATE_S", 30)?;
    let events = (per_second as u64) * (seconds + 20);
    let generator = Generator::new(GeneratorConfig {
        events,
        ..GeneratorConfig::default()
    });
    let ends = bench.kafka.backlog("rate", 24, generator)?;
    let simulator = common::start_simulator(&bench.simulators, Faults::none()).await?;
    let mut settings = common::settings(&bench.kafka, &simulator.base_url(), "rate", "bench-rate");
    settings.rate_limit.per_second = per_second;
    settings.rate_limit.burst = burst;
    println!(
        "  {} events backlog; budget {per_second}/s burst {burst} for {seconds} s...",
        ends.iter().sum::<i64>()
    );
    let service = InProcess::start(settings).await?;
    first_acceptance(&service).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let stats = simulator.stats();
    service.stop().await?;
    let _ = bench.simulators.spawn(simulator.shutdown()).await;

    let per = &stats.requests_per_second.0;
    let whole: Vec<u64> = match (per.keys().next(), per.keys().next_back()) {
        (Some(&first), Some(&last)) if last > first + 1 => ((first + 1)..last)
            .map(|s| per.get(&s).copied().unwrap_or(0))
            .collect(),
        _ => bail!("fewer than three seconds of requests"),
    };
    let mean = whole.iter().sum::<u64>() as f64 / whole.len() as f64;
    let (busiest_at, busiest) = stats.requests_per_second.busiest().unwrap_or_default();
    let quietest = whole.iter().min().copied().unwrap_or(0);
    let ceiling = per_second + f64::from(burst);
    Ok(vec![
        format!(
            "budget {per_second}/s burst {burst}: mean {mean:.1}/s over {} whole seconds ({:+.2}% of the budget; goal within 2%)",
            whole.len(),
            (mean / per_second - 1.0) * 100.0
        ),
        format!(
            "busiest second {busiest} (second {busiest_at}), quietest whole second {quietest}; budget + burst = {ceiling} ({})",
            if (busiest as f64) <= ceiling { "never above" } else { "ABOVE" }
        ),
        format!(
            "simulator: {} requests, {} accepted, {} rejected; per whole second: {whole:?}",
            stats.total, stats.accepted, stats.rejected
        ),
    ])
}

async fn coalesce(
    bench: &Bench,
    events: u64,
    (topic, ends, calls): (String, Vec<i64>, usize),
) -> anyhow::Result<Vec<String>> {
    let simulator = common::start_simulator(&bench.simulators, Faults::none()).await?;
    let group = "bench-coalesce";
    let mut settings = common::settings(&bench.kafka, &simulator.base_url(), &topic, group);
    settings.rate_limit.per_second = 1e9;
    settings.rate_limit.burst = 1_000_000;
    settings.delivery.coalesce_window_ms = 1_000;
    println!("  running to the last commit...");
    let started = Instant::now();
    let service = InProcess::start(settings).await?;
    while !bench.kafka.all_committed(group, &topic, &ends) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if service.has_stopped() || started.elapsed() > Duration::from_secs(900) {
            bail!("coalesce: not all committed");
        }
    }
    let elapsed = started.elapsed();
    let accepted = service.handle.metrics.events_accepted.get();
    service.stop().await?;
    let stats = simulator.stats();
    let profiles = stats.profiles.third_party.len() + stats.profiles.pc.len();
    let _ = bench.simulators.spawn(simulator.shutdown()).await;
    Ok(vec![
        format!(
            "{events} events (Zipf 1.1, {} customers, {} partitions), {calls} make a call; window 1000 ms, no budget limit; all committed in {:.1} s",
            bench.zipf_customers,
            ends.len(),
            elapsed.as_secs_f64()
        ),
        format!(
            "{} update requests ({} accepted) for {calls} events: {:.3} requests/event (goal <= 0.5); {profiles} distinct profiles ({:.3}/event is the floor); pps_events_accepted {accepted}",
            stats.total,
            stats.accepted,
            stats.total as f64 / calls as f64,
            profiles as f64 / calls as f64
        ),
    ])
}
