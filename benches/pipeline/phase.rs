//! The pipeline phase: the real service in this process, timed from its start
//! to the last partition committed at its end offset.

use super::*;

pub(super) fn service_settings(
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

/// Which run of the pipeline phase this is.
pub(super) struct PhaseRun {
    /// The simulator's latency.
    pub(super) latency_ms: u64,
    /// Names the run's consumer group: each reads the topic from the start.
    pub(super) round: usize,
    /// Told when the first update is accepted (the group has joined).
    pub(super) delivering: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What one pipeline phase measured.
pub(super) struct PipelineResult {
    pub(super) latency_ms: u64,
    pub(super) events: usize,
    pub(super) updates_needed: usize,
    pub(super) total: Duration,
    pub(super) startup: Duration,
    pub(super) delivery: Duration,
    pub(super) tail: Duration,
    /// From 10 % to 90 % of the updates accepted.
    pub(super) middle: Duration,
    /// Requests in flight at the service, sampled over the middle 80 %.
    pub(super) mean_in_flight: f64,
    /// The service's own request timing (send to end of body).
    pub(super) mean_request: Duration,
    pub(super) shutdown: Duration,
    pub(super) sim_accepted: u64,
    pub(super) sim_requests: u64,
    pub(super) retries: u64,
    pub(super) dead_letters: u64,
    pub(super) cpu: CpuUse,
    pub(super) rss_before_kb: Option<u64>,
    pub(super) peak_rss_kb: Option<u64>,
    pub(super) peak_was_reset: bool,
}

pub(super) async fn pipeline(
    options: &Options,
    kafka: &Kafka,
    ends: &[i64],
    workload: &Workload,
    simulators: &Handle,
    run: PhaseRun,
) -> anyhow::Result<PipelineResult> {
    let PhaseRun {
        latency_ms,
        round,
        mut delivering,
    } = run;
    // A group of its own per round: every round reads the topic from the start.
    let group = format!("bench-pipeline-{latency_ms}ms-{round}");
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
        // Told once, at the first update accepted: the group has joined.
        if progress.first.is_some() {
            if let Some(delivering) = delivering.take() {
                let _ = delivering.send(());
            }
        }
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
    let cpu = CpuSnapshot::take().since(&cpu_before, &watcher.threads);
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
pub(super) struct Progress {
    pub(super) first: Option<Instant>,
    pub(super) tenth: Option<Instant>,
    pub(super) ninth: Option<Instant>,
    pub(super) all: Option<Instant>,
    pub(super) in_flight_sum: i64,
    pub(super) in_flight_samples: u32,
}

impl Progress {
    pub(super) fn observe(&mut self, accepted: u64, needed: u64, in_flight: i64) {
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

    pub(super) fn mean_in_flight(&self) -> f64 {
        self.in_flight_sum as f64 / f64::from(self.in_flight_samples.max(1))
    }
}

/// Polls a group's committed offsets on its own thread, every 100 ms, until
/// every partition is committed at its end offset. The thread and its
/// consumer live on until the watcher is dropped, so that their CPU is
/// seen (by thread id) and kept out of the service's.
pub(super) struct CommitWatcher {
    pub(super) done: tokio::sync::watch::Receiver<Option<Instant>>,
    pub(super) stop: CancellationToken,
    /// The ids of the threads it started: its own and its consumer's.
    pub(super) threads: HashSet<String>,
}

impl CommitWatcher {
    pub(super) fn start(kafka: &Kafka, group: &str, ends: &[i64]) -> anyhow::Result<CommitWatcher> {
        let before = CpuSnapshot::thread_ids();
        let consumer: BaseConsumer = kafka.config().set("group.id", group).create()?;
        // librdkafka starts a thread per broker once it knows the brokers:
        // ask for them now, so those threads exist before the ids are read.
        consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_millis(200));
        let partitions = ends.len() as i32;
        let ends = ends.to_vec();
        let (tx, done) = tokio::sync::watch::channel(None);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("commit-watcher".into())
            .spawn(move || {
                let mut done = false;
                while !stopped.is_cancelled() {
                    if !done {
                        let committed =
                            pps_test_kit::broker::committed_offsets(&consumer, TOPIC, partitions);
                        if committed.ok().as_deref() == Some(&ends[..]) {
                            let _ = tx.send(Some(Instant::now()));
                            done = true;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                drop(consumer);
            })?;
        // The watcher's thread is started; its consumer's threads were
        // started when it was created.
        let mut threads = CpuSnapshot::thread_ids();
        threads.retain(|tid| !before.contains(tid));
        Ok(CommitWatcher {
            done,
            stop,
            threads,
        })
    }

    pub(super) fn done(&self) -> Option<Instant> {
        *self.done.borrow()
    }
}

impl Drop for CommitWatcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
