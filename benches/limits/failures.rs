//! Throughput when Target fails some requests, and when it is overloaded.
//!
//! One in-process service (mock cluster, budget `PPS_BENCH_FAIL_BUDGET` [800]/s,
//! burst `PPS_BENCH_FAIL_BURST` [80]) reads a topic of `PPS_BENCH_FAIL_EVENTS` [8000]
//! generated events (24 partitions) with a fresh consumer group per case, and sends to
//! the simulator through a forwarding proxy that timestamps every request.
//!
//! 1. **failures**: the simulator answers 503 to a random share of the updates
//!    (`PPS_BENCH_FAIL_SHARES` [0,0.1,0.3,0.5]) at a fixed latency
//!    (`PPS_BENCH_FAIL_LATENCIES_MS` [5,50]); the proxy adds `Retry-After: 1` to at
//!    most one 503 every 5 s, so a compliant pod pauses at most a fifth of the time.
//!    The rate is the requests Target saw divided by the time from the first
//!    request to the moment 95% of the updates were accepted, less the seconds of
//!    `Retry-After` pauses in that time (the last 5%, profiles waiting out their
//!    backoff, say nothing of throughput; the whole run is printed too).
//! 2. **overload**: no random failures; the simulator's overload mode with a
//!    capacity of `PPS_BENCH_OVERLOAD_IN_FLIGHT` [20] requests in flight at 50 ms
//!    and [2] at 5 ms (400/s both: the capacity in requests per second is the
//!    capacity in flight divided by the latency), never `Retry-After`. The rate is
//!    measured the same way, against that capacity, with the share of 503s.
//!
//! Each case ends at the last commit or after `PPS_BENCH_FAIL_S` [90] s. The
//! busiest second (by the simulator's clock) is checked against budget + burst.

use crate::common::{self, env_or, InProcess};
use crate::Bench;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pos_profile_sync::generator::{EventKind, Generator, GeneratorConfig};
use pps_target_simulator::{Failure, Faults, Latency, Overload};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 24;
/// At most one `Retry-After: 1` this often.
const RETRY_AFTER_EVERY: Duration = Duration::from_secs(5);
/// How long a `Retry-After: 1` pauses the pod.
const PAUSE: Duration = Duration::from_secs(1);

/// Forwards to the simulator, timestamps requests, and adds `Retry-After`.
struct Proxy {
    target: String,
    client: reqwest::Client,
    /// Whether to add `Retry-After: 1` to a 503 at most every [`RETRY_AFTER_EVERY`].
    retry_after: bool,
    log: Mutex<Log>,
}

/// What passed the proxy.
#[derive(Default)]
struct Log {
    arrivals: Vec<Instant>,
    /// When a `Retry-After: 1` was sent.
    pauses: Vec<Instant>,
}

async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&proxy.log).arrivals.push(Instant::now());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = proxy
        .client
        .request(method, format!("{}{path}", proxy.target));
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, kind.clone());
    }
    let Ok(response) = request.body(body).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = response.status();
    let answer = response.bytes().await.unwrap_or_default();
    let mut response = (status, answer).into_response();
    if proxy.retry_after && status == StatusCode::SERVICE_UNAVAILABLE {
        let now = Instant::now();
        let mut log = lock(&proxy.log);
        if log
            .pauses
            .last()
            .is_none_or(|last| now.duration_since(*last) >= RETRY_AFTER_EVERY)
        {
            log.pauses.push(now);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
    }
    response
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// One case's settings.
struct Case {
    name: String,
    faults: Faults,
    retry_after: bool,
}

/// What one case measured.
struct Measured {
    /// Requests per second over the time to 95% accepted, less pauses.
    rate: f64,
    /// The same over the whole run (first to last request), less pauses.
    whole_rate: f64,
    /// Seconds to 95% accepted; seconds of pauses in them.
    busy_s: f64,
    paused_s: f64,
    total: u64,
    refused: u64,
    busiest: u64,
    all_committed: bool,
    mean_limit: f64,
}

pub async fn random(bench: &Bench) -> anyhow::Result<Vec<String>> {
    let shares: String = env_or("PPS_BENCH_FAIL_SHARES", "0,0.1,0.3,0.5".to_owned())?;
    let latencies: String = env_or("PPS_BENCH_FAIL_LATENCIES_MS", "5,50".to_owned())?;
    let budget: f64 = env_or("PPS_BENCH_FAIL_BUDGET", 800.0)?;
    let backlog = backlog(bench, "failures")?;
    let mut lines = Vec::new();
    for latency in latencies.split(',') {
        let latency_ms: u64 = latency.trim().parse()?;
        for share in shares.split(',') {
            let share: f64 = share.trim().parse()?;
            let case = Case {
                name: format!("random-{}-{latency_ms}", (share * 100.0).round()),
                faults: Faults {
                    failures: vec![Failure::new(503, share)],
                    latency: Latency::fixed_ms(latency_ms),
                    ..Faults::none()
                },
                retry_after: true,
            };
            let m = run(bench, &backlog, &case).await?;
            lines.push(format!(
                "503 at random {:>3.0}%, {latency_ms:>2} ms: {:>5.0} requests/s = {:>3.0}% of the budget over {:.1} s to 95% accepted less {:.0} s paused (goal >= 80% at 10% and 30%); whole run {:.0}/s; {} requests, {} answered 503; busiest second {} ({}); mean limit {:.1}{}",
                share * 100.0,
                m.rate,
                m.rate / budget * 100.0,
                m.busy_s,
                m.paused_s,
                m.whole_rate,
                m.total,
                m.refused,
                m.busiest,
                ceiling_check(m.busiest, bench_ceiling()?),
                m.mean_limit,
                if m.all_committed { "" } else { "; NOT all committed in time" },
            ));
        }
    }
    Ok(lines)
}

pub async fn overload(bench: &Bench) -> anyhow::Result<Vec<String>> {
    let capacity_50: u64 = env_or("PPS_BENCH_OVERLOAD_IN_FLIGHT", 20)?;
    let backlog = backlog(bench, "overload")?;
    let mut lines = Vec::new();
    for (latency_ms, in_flight) in [(50, capacity_50), (5, (capacity_50 / 10).max(1))] {
        let case = Case {
            name: format!("overload-{in_flight}-{latency_ms}"),
            faults: Faults {
                latency: Latency::fixed_ms(latency_ms),
                overload: Some(Overload { in_flight }),
                ..Faults::none()
            },
            retry_after: false,
        };
        let capacity = in_flight as f64 * 1000.0 / latency_ms as f64;
        let m = run(bench, &backlog, &case).await?;
        let refused = m.refused as f64 / m.total.max(1) as f64;
        lines.push(format!(
            "overload, capacity {in_flight} in flight at {latency_ms} ms = {capacity:.0}/s: {:.0} requests/s = {:.0}% of the capacity over {:.1} s to 95% accepted (goal 70-110%); {:.1}% answered 503 (goal < 15%); whole run {:.0}/s; {} requests; busiest second {} ({}); mean limit {:.1}{}",
            m.rate,
            m.rate / capacity * 100.0,
            m.busy_s,
            refused * 100.0,
            m.whole_rate,
            m.total,
            m.busiest,
            ceiling_check(m.busiest, bench_ceiling()?),
            m.mean_limit,
            if m.all_committed { "" } else { "; NOT all committed in time" },
        ));
    }
    Ok(lines)
}

fn bench_ceiling() -> anyhow::Result<f64> {
    let budget: f64 = env_or("PPS_BENCH_FAIL_BUDGET", 800.0)?;
    let burst: u32 = env_or("PPS_BENCH_FAIL_BURST", 80)?;
    Ok(budget + f64::from(burst))
}

fn ceiling_check(busiest: u64, ceiling: f64) -> String {
    if busiest as f64 <= ceiling {
        format!("never above budget + burst = {ceiling}")
    } else {
        format!("ABOVE budget + burst = {ceiling}")
    }
}

/// The topic every case of a phase reads: its name, end offsets and the
/// updates it makes.
struct Backlog {
    topic: String,
    ends: Vec<i64>,
    events: u64,
    calls: u64,
}

/// Produces `phase`'s topic.
fn backlog(bench: &Bench, phase: &str) -> anyhow::Result<Backlog> {
    let events: u64 = env_or("PPS_BENCH_FAIL_EVENTS", 8_000)?;
    let topic = format!("{phase}-{events}");
    let config = GeneratorConfig {
        events,
        ..GeneratorConfig::default()
    };
    let calls = Generator::new(config.clone())
        .filter(|e| matches!(e.kind, EventKind::Customer(_)))
        .count() as u64;
    let ends = bench
        .kafka
        .backlog(&topic, PARTITIONS, Generator::new(config))?;
    Ok(Backlog {
        topic,
        ends,
        events,
        calls,
    })
}

async fn run(bench: &Bench, backlog: &Backlog, case: &Case) -> anyhow::Result<Measured> {
    let budget: f64 = env_or("PPS_BENCH_FAIL_BUDGET", 800.0)?;
    let burst: u32 = env_or("PPS_BENCH_FAIL_BURST", 80)?;
    let cap = Duration::from_secs(env_or("PPS_BENCH_FAIL_S", 90)?);
    let Backlog {
        topic,
        ends,
        events,
        calls,
    } = backlog;
    let (events, calls) = (*events, *calls);
    let simulator = common::start_simulator(&bench.simulators, case.faults.clone()).await?;
    let proxy = Arc::new(Proxy {
        target: simulator.base_url().trim_end_matches('/').to_owned(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .build()?,
        retry_after: case.retry_after,
        log: Mutex::new(Log::default()),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    let server = bench
        .simulators
        .spawn(async move { axum::serve(listener, app).await });

    let group = format!("bench-{}", case.name);
    let mut settings = common::settings(&bench.kafka, &proxy_url, topic, &group);
    settings.rate_limit.per_second = budget;
    settings.rate_limit.burst = burst;
    println!(
        "  {}: {events} events ({calls} updates), budget {budget}/s burst {burst}...",
        case.name
    );
    let started = Instant::now();
    let service = InProcess::start(settings).await?;
    let mut busy_until = None;
    let (mut limit_sum, mut limit_samples) = (0.0, 0u64);
    let all_committed = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let accepted = service.handle.metrics.events_accepted.get();
        if busy_until.is_none() && accepted * 100 >= calls * 95 {
            busy_until = Some(Instant::now());
        }
        if !lock(&proxy.log).arrivals.is_empty() && busy_until.is_none() {
            limit_sum += service.handle.metrics.concurrency_limit.get() as f64;
            limit_samples += 1;
        }
        if accepted >= calls && bench.kafka.all_committed(&group, topic, ends) {
            break true;
        }
        if service.has_stopped() || started.elapsed() > cap {
            break false;
        }
    };
    service.stop().await?;
    server.abort();
    let stats = simulator.stats();
    let _ = bench.simulators.spawn(simulator.shutdown()).await;

    let log = lock(&proxy.log);
    let (Some(&first), Some(&last)) = (log.arrivals.first(), log.arrivals.last()) else {
        anyhow::bail!("{}: no request reached Target", case.name);
    };
    let busy_until = busy_until.unwrap_or(last);
    let paused_in = |end: Instant| -> f64 {
        log.pauses
            .iter()
            .map(|at| end.saturating_duration_since(*at).min(PAUSE).as_secs_f64())
            // A fold from +0 (a float sum starts at -0).
            .fold(0.0, |sum, paused| sum + paused)
    };
    let rate_until = |end: Instant| {
        let requests = log.arrivals.iter().filter(|at| **at <= end).count() as f64;
        let time = end.saturating_duration_since(first).as_secs_f64() - paused_in(end);
        requests / time.max(1e-3)
    };
    Ok(Measured {
        rate: rate_until(busy_until),
        whole_rate: rate_until(last),
        busy_s: busy_until.saturating_duration_since(first).as_secs_f64(),
        paused_s: paused_in(busy_until),
        total: stats.total,
        refused: stats.by_status.get(&503).copied().unwrap_or(0),
        busiest: stats.requests_per_second.busiest().unwrap_or_default().1,
        all_committed,
        mean_limit: limit_sum / limit_samples.max(1) as f64,
    })
}
