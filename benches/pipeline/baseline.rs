//! The baseline: the same requests from a plain `buffer_unordered` loop over
//! one reqwest client.

use super::*;

/// What the plain HTTP loop measured.
pub(super) struct HttpResult {
    pub(super) latency_ms: u64,
    pub(super) requests: usize,
    pub(super) ok: usize,
    pub(super) elapsed: Duration,
    /// From 10 % to 90 % of the requests answered.
    pub(super) middle: Duration,
    pub(super) mean_request: Duration,
    pub(super) sim_accepted: u64,
    pub(super) cpu: CpuUse,
    /// Run beside a pipeline, on the side runtime.
    pub(super) alongside: bool,
}

pub(super) fn http_client(pool: usize) -> reqwest::Result<reqwest::Client> {
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

pub(super) async fn send(client: &reqwest::Client, request: &UpdateRequest) -> bool {
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

pub(super) async fn http_baseline(
    options: &Options,
    simulators: &Handle,
    latency_ms: u64,
) -> anyhow::Result<HttpResult> {
    Baseline::prepare(options, simulators, latency_ms)
        .await?
        .run(simulators, false)
        .await
}

/// A baseline ready to run: its simulator started, its requests built and
/// its client made, so that running it is only the timed loop.
pub(super) struct Baseline {
    latency_ms: u64,
    concurrency: usize,
    simulator: SimulatorHandle,
    requests: Vec<UpdateRequest>,
    client: reqwest::Client,
}

impl Baseline {
    pub(super) async fn prepare(
        options: &Options,
        simulators: &Handle,
        latency_ms: u64,
    ) -> anyhow::Result<Baseline> {
        let concurrency = options.in_flight as usize;
        let simulator = start_simulator(simulators, latency_ms).await?;
        let endpoint =
            UpdateEndpoint::new(&simulator.base_url(), CLIENT_CODE).map_err(anyhow::Error::msg)?;
        let requests: Vec<UpdateRequest> = updates(options)
            .iter()
            .map(|u| endpoint.request(u))
            .collect();
        Ok(Baseline {
            latency_ms,
            concurrency,
            simulator,
            requests,
            client: http_client(concurrency)?,
        })
    }

    /// Sends every request, `concurrency` at a time. `alongside`: the loop
    /// runs on the side runtime while a pipeline runs, and only that
    /// runtime's threads count as the client's CPU.
    pub(super) async fn run(
        self,
        simulators: &Handle,
        alongside: bool,
    ) -> anyhow::Result<HttpResult> {
        let Baseline {
            latency_ms,
            concurrency,
            simulator,
            requests,
            client,
        } = self;
        println!(
            "baseline HTTP loop, {latency_ms} ms latency: running ({} requests, {concurrency} at a time{})...",
            requests.len(),
            if alongside { ", beside the pipeline" } else { "" }
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
        let cpu = CpuSnapshot::take().since(&cpu_before, &HashSet::new());
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
            alongside,
        })
    }
}
