//! Peak memory of the service with a backlog, and how it grows with the backlog.
//!
//! For each size in `PPS_BENCH_RSS_BACKLOGS` [250000,500000,1000000], a topic of that
//! many events over `PPS_BENCH_ZIPF_CUSTOMERS` [100000] customers drawn uniformly (a
//! Zipf backlog of 1M does not fit the mock cluster: its hottest partition overflows),
//! in `PPS_BENCH_ZIPF_PARTITIONS` [200] partitions, is read from the start by the release binary
//! run as a child process (`pos-profile-sync run --config`, so the mock cluster's log
//! in this process does not count) at a budget of `PPS_BENCH_RSS_RATE` [1000]/s with
//! `max_buffered_per_partition` = `PPS_BENCH_MAX_BUFFERED` [10000], for
//! `PPS_BENCH_RSS_S` [30] s. The peak is the child's `VmHWM` at the end; the records
//! consumed and the paused partitions are scraped from its `/metrics`.
//! `PPS_BENCH_SERVICE_BIN` runs another build of the service instead (to compare
//! two builds in turns on the same machine).

use crate::common::{self, env_or};
use crate::Bench;
use pps_target_simulator::Faults;
use pps_test_kit::app::{App, Launch};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

pub fn run(bench: &mut Bench, runtime: &Runtime) -> anyhow::Result<Vec<String>> {
    let sizes: String = env_or("PPS_BENCH_RSS_BACKLOGS", "250000,500000,1000000".to_owned())?;
    let mut lines = Vec::new();
    for size in sizes.split(',') {
        lines.push(once(bench, runtime, size.trim().parse()?)?);
    }
    Ok(lines)
}

fn once(bench: &mut Bench, runtime: &Runtime, size: u64) -> anyhow::Result<String> {
    let rate: f64 = env_or("PPS_BENCH_RSS_RATE", 1_000.0)?;
    let seconds: u64 = env_or("PPS_BENCH_RSS_S", 30)?;
    let max_buffered: u32 = env_or("PPS_BENCH_MAX_BUFFERED", 10_000)?;
    let (topic, ends, _) = bench.backlog(size, 0.0)?;
    let simulator = runtime.block_on(common::start_simulator(&bench.simulators, Faults::none()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let group = format!("bench-rss-{size}");
    let mut settings = common::settings(&bench.kafka, &simulator.base_url(), &topic, &group);
    settings.rate_limit.per_second = rate;
    settings.delivery.max_buffered_per_partition = max_buffered;
    settings.server.listen = format!("127.0.0.1:{port}");
    println!("  backlog {size}: the service as a child process for {seconds} s...");
    pos_profile_sync::kafka::validate(&settings)?;
    let binary = std::env::var("PPS_BENCH_SERVICE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_pos-profile-sync").to_owned());
    let launch = Launch {
        log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ..Launch::new(
            &binary,
            toml::to_string(&settings)?,
            settings.server.listen.parse()?,
        )
    };
    let mut child = App::start(launch)?;
    let started = Instant::now();
    let mut rss_samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        anyhow::ensure!(
            child.running(),
            "the service exited early; its log:\n{}",
            child.log_text()
        );
        rss_samples.push(child.status_kb("VmRSS").unwrap_or(0));
    }
    let peak_kb = child.status_kb("VmHWM").unwrap_or(0);
    let exposition = runtime
        .block_on(async {
            reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await?
                .text()
                .await
        })
        .unwrap_or_default();
    let sum = |prefix: &str| -> f64 {
        exposition
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let consumed = sum("pps_events_consumed");
    let accepted = sum("pps_events_accepted");
    let paused = sum("pps_paused_partitions");
    child.terminate(Duration::from_secs(60));
    let _ = runtime.block_on(bench.simulators.spawn(simulator.shutdown()));
    let mib = |kb: u64| kb as f64 / 1024.0;
    let trend: Vec<String> = rss_samples
        .iter()
        .step_by(5)
        .map(|kb| format!("{:.0}", mib(*kb)))
        .collect();
    Ok(format!(
        "backlog {size:>8} ({} partitions, max_buffered {max_buffered}): peak RSS (VmHWM) {:.1} MiB (goal <= 150), RSS every 5 s [{}] MiB; {consumed:.0} records consumed, {accepted:.0} accepted, {paused:.0} partitions paused after {seconds} s",
        ends.len(),
        mib(peak_kb),
        trend.join(", ")
    ))
}
