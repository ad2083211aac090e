//! Latency from produce to acceptance at half the budget.
//!
//! The service (in-process, budget `PPS_BENCH_LATENCY_BUDGET` [2000]/s) reads a topic
//! of 24 partitions while a producer thread writes `PPS_BENCH_LATENCY_RATE` [1000]
//! events/s into it for `PPS_BENCH_LATENCY_S` [20] s, over 10,000 customers drawn
//! uniformly (only sales with an identity). Each event's `total` is its sequence
//! number in cents and its `occurred_at` the wall clock at produce time, so a
//! profile's merged update carries the newest event it covers. The produce time is
//! taken just before the record is handed to the producer (5 ms linger follows).
//!
//! The service sends to a recording proxy in front of the simulator: the moment a
//! 2xx answer passes the proxy is the acceptance of every event of that profile up
//! to the sequence number the request carries. The proxy adds one loopback hop.
//! Events never covered by an accepted request are counted, not timed. Runs once
//! with `coalesce_window_ms` 0 and once with 1000 (`PPS_BENCH_LATENCY_WINDOWS`).
//! `PPS_BENCH_FETCH_WAIT_MS` sets the consumer's `fetch.wait.max.ms` through
//! `[kafka.properties]` (librdkafka's default is 500); on the mock cluster it
//! defaults to 10, since the mock holds a fetch that found nothing for the
//! whole wait where Kafka answers as soon as records arrive. The producer is
//! warmed up (producer id, connections, metadata) before the clock starts.
//! The line ends with the events over the goal by the second of the run they
//! were produced in.

use crate::common::{self, env_or, InProcess};
use crate::Bench;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pos_profile_sync::generator::{customer_id, EventKind, Generator, GeneratorConfig};
use pos_profile_sync::ops::config::PropertyValue;
use pps_target_simulator::Faults;
use rdkafka::producer::Producer as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 24;
/// `fetch.wait.max.ms` on the mock cluster unless `PPS_BENCH_FETCH_WAIT_MS` says.
const MOCK_FETCH_WAIT_MS: i64 = 10;

/// What passed the proxy with a 2xx: when, which profile, which newest event.
struct Proxy {
    target: String,
    client: reqwest::Client,
    accepted: Mutex<Vec<(Instant, String, u64)>>,
}

async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = proxy
        .client
        .request(method, format!("{}{path}", proxy.target));
    if let Some(kind) = headers.get(axum::http::header::CONTENT_TYPE) {
        request = request.header(axum::http::header::CONTENT_TYPE, kind.clone());
    }
    let Ok(response) = request.body(body.clone()).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = response.status();
    let answer = response.bytes().await.unwrap_or_default();
    if status.is_success() && uri.path().ends_with("/profile/update") {
        let at = Instant::now();
        let form = format!(
            "{}&{}",
            uri.query().unwrap_or(""),
            String::from_utf8_lossy(&body)
        );
        if let Some((id, seq)) = covered(&form) {
            proxy
                .accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((at, id, seq));
        }
    }
    (status, answer).into_response()
}

/// The profile id and the sequence number in `profile.lastPurchaseTotal`.
fn covered(form: &str) -> Option<(String, u64)> {
    let url = reqwest::Url::parse(&format!("http://x/?{form}")).ok()?;
    let (mut id, mut seq) = (None, None);
    for (key, value) in url.query_pairs() {
        match &*key {
            "mbox3rdPartyId" | "mboxPC" => id = Some(value.into_owned()),
            "profile.lastPurchaseTotal" => {
                seq = value
                    .parse::<f64>()
                    .ok()
                    .map(|v| (v * 100.0).round() as u64)
            }
            _ => {}
        }
    }
    Some((id?, seq?))
}

pub async fn run(bench: &Bench) -> anyhow::Result<Vec<String>> {
    let windows: String = env_or("PPS_BENCH_LATENCY_WINDOWS", "0,1000".to_owned())?;
    let mut lines = Vec::new();
    for window in windows.split(',') {
        lines.push(once(bench, window.trim().parse()?).await?);
    }
    Ok(lines)
}

async fn once(bench: &Bench, window_ms: u64) -> anyhow::Result<String> {
    let budget: f64 = env_or("PPS_BENCH_LATENCY_BUDGET", 2_000.0)?;
    let rate: f64 = env_or("PPS_BENCH_LATENCY_RATE", 1_000.0)?;
    let seconds: u64 = env_or("PPS_BENCH_LATENCY_S", 20)?;
    // The mock cluster answers a fetch that finds no data only after the
    // whole `fetch.wait.max.ms`, even when records arrive meanwhile (its
    // `rdkafka_mock_handlers.c` says so: "that is too much of a hassle
    // here"); Kafka answers as soon as `fetch.min.bytes` are there. On the
    // mock, 10 ms stands in for Kafka's behaviour with the default 500.
    let fetch_wait: Option<i64> = match std::env::var("PPS_BENCH_FETCH_WAIT_MS") {
        Ok(_) => Some(env_or("PPS_BENCH_FETCH_WAIT_MS", 500)?),
        Err(_) if bench.kafka.is_mock() => Some(MOCK_FETCH_WAIT_MS),
        Err(_) => None,
    };
    let simulator = common::start_simulator(&bench.simulators, Faults::none()).await?;
    let proxy = Arc::new(Proxy {
        target: simulator.base_url().trim_end_matches('/').to_owned(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .build()?,
        accepted: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    let server = bench
        .simulators
        .spawn(async move { axum::serve(listener, app).await });

    let topic = format!("latency-{window_ms}");
    bench
        .kafka
        .backlog(&topic, PARTITIONS, std::iter::empty())?;
    let group = format!("bench-{topic}");
    let mut settings = common::settings(&bench.kafka, &proxy_url, &topic, &group);
    settings.rate_limit.per_second = budget;
    settings.delivery.coalesce_window_ms = window_ms;
    if let Some(wait) = fetch_wait {
        settings
            .kafka
            .properties
            .insert("fetch.wait.max.ms".into(), PropertyValue::Int(wait));
    }
    let service = InProcess::start(settings).await?;
    let assigned = Instant::now();
    while service.handle.metrics.assigned_partitions.get() < i64::from(PARTITIONS) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        anyhow::ensure!(
            assigned.elapsed() < Duration::from_secs(60),
            "no assignment"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("  window {window_ms} ms: producing {rate}/s for {seconds} s at budget {budget}/s...");
    let producer = warm_producer(bench, &topic)?;
    let count = (rate * seconds as f64) as u64;
    let produced = tokio::task::spawn_blocking(move || {
        let events = Generator::new(GeneratorConfig {
            events: count * 2,
            customers: 10_000,
            bad_ratio: 0.0,
            anonymous_ratio: 0.0,
            return_ratio: 0.0,
            seed: 7 + window_ms,
            ..GeneratorConfig::default()
        });
        let started = Instant::now();
        let mut produced = Vec::with_capacity(count as usize);
        for (seq, event) in (1..=count).zip(events) {
            let EventKind::Customer(n) = event.kind else {
                continue;
            };
            let due = started + Duration::from_secs_f64((seq - 1) as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let mut payload: serde_json::Value = serde_json::from_slice(&event.payload)?;
            let now = time::OffsetDateTime::now_utc();
            payload["total"] = format!("{}.{:02}", seq / 100, seq % 100).into();
            payload["occurred_at"] = now
                .format(&time::format_description::well_known::Rfc3339)?
                .into();
            let at = Instant::now();
            pps_test_kit::broker::send(
                &producer,
                &topic,
                &event.key,
                &serde_json::to_vec(&payload)?,
            );
            produced.push((customer_id(n).1, seq, at));
        }
        producer.flush(Duration::from_secs(10))?;
        anyhow::Ok(produced)
    })
    .await??;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut latencies, mut missing);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (latencies, missing) = measure(&produced, &proxy);
        if missing == 0 || Instant::now() > deadline {
            break;
        }
    }
    let requests = simulator.stats().total;
    service.stop().await?;
    server.abort();
    let _ = bench.simulators.spawn(simulator.shutdown()).await;
    // Where the slow ones are: by the second of the run they were produced in.
    let goal = window_ms as f64 + 100.0;
    let start = produced.first().map(|(_, _, at)| *at);
    let mut late_by_second = std::collections::BTreeMap::<u64, usize>::new();
    for (latency, at) in &latencies {
        if latency.as_secs_f64() * 1000.0 > goal {
            let second = start.map_or(0, |s| at.saturating_duration_since(s).as_secs());
            *late_by_second.entry(second).or_default() += 1;
        }
    }
    let late = late_by_second
        .iter()
        .map(|(second, n)| format!("{second}s:{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut latencies: Vec<Duration> = latencies.into_iter().map(|(l, _)| l).collect();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let p99 = at(0.99);
    Ok(format!(
        "window {window_ms:>4} ms, fetch.wait.max.ms {}: {} events at {rate}/s, budget {budget}/s: p50 {:.1} ms, p90 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms (goal p99 <= {goal} ms: {}); {missing} never accepted; {requests} requests; over the goal by second produced: [{late}]",
        fetch_wait.map_or("default (500)".to_owned(), |w| w.to_string()),
        produced.len(),
        at(0.5),
        at(0.9),
        at(1.0),
        if p99 <= goal { "met" } else { "MISSED" }
    ))
}

/// A producer that is ready to send at once: its producer id taken, a
/// connection open to every broker, the topic's leaders known. A new
/// producer spends its first few hundred milliseconds on that, which would
/// otherwise be timed as the service's latency.
fn warm_producer(
    bench: &Bench,
    topic: &str,
) -> anyhow::Result<rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>>
{
    let producer = bench.kafka.producer()?;
    let warm_up = format!("{topic}-warm-up");
    bench.kafka.create_topic(&warm_up, PARTITIONS)?;
    for partition in 0..PARTITIONS {
        let record = rdkafka::producer::BaseRecord::to(&warm_up)
            .partition(partition)
            .key("warm-up")
            .payload("warm-up");
        producer.send(record).map_err(|(error, _)| error)?;
    }
    producer.flush(Duration::from_secs(10))?;
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(producer)
}

/// Each covered event's latency, and how many are not covered yet.
fn measure(
    produced: &[(String, u64, Instant)],
    proxy: &Proxy,
) -> (Vec<(Duration, Instant)>, usize) {
    let accepted = proxy.accepted.lock().unwrap_or_else(|p| p.into_inner());
    let mut by_profile: HashMap<&str, Vec<(Instant, u64)>> = HashMap::new();
    for (at, id, seq) in accepted.iter() {
        by_profile.entry(id).or_default().push((*at, *seq));
    }
    for list in by_profile.values_mut() {
        list.sort();
    }
    let (mut latencies, mut missing) = (Vec::new(), 0);
    for (id, seq, at) in produced {
        let first = by_profile
            .get(id.as_str())
            .and_then(|list| list.iter().find(|(_, s)| s >= seq));
        match first {
            Some((accepted_at, _)) => {
                latencies.push((accepted_at.saturating_duration_since(*at), *at))
            }
            None => missing += 1,
        }
    }
    (latencies, missing)
}
