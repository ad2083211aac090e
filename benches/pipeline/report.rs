//! The report: every figure with its goal, as one table.

use super::*;

#[derive(Default)]
pub(super) struct Report {
    /// Which broker the events were in.
    pub(super) broker: String,
    /// The 1-minute load average at the start and the end (others share the cores).
    pub(super) load_before: String,
    pub(super) load_after: String,
    pub(super) pipeline: Option<PipelineResult>,
    pub(super) baseline: Option<HttpResult>,
    pub(super) floor: Option<PipelineResult>,
    pub(super) floor_baseline: Option<HttpResult>,
    pub(super) sequential: Option<SequentialResult>,
    /// The CPU figures of each pipeline and baseline pair, the first one included.
    pub(super) cpu_rounds: Vec<CpuRound>,
    /// The CPU figures of each pipeline with a baseline beside it.
    pub(super) together_rounds: Vec<CpuRound>,
}

/// The CPU goal.
const CPU_GOAL: f64 = 1.3;

/// One pipeline phase and the baseline run after it, as CPU figures.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuRound {
    /// The service's CPU per event, µs.
    service_us: f64,
    /// The bare client's CPU per request, µs.
    client_us: f64,
    /// The simulator's CPU per request in the pipeline and in the baseline,
    /// µs: the same work both times, so it shows how far the machine's own
    /// speed moved between the two phases.
    simulator_us: (f64, f64),
}

impl CpuRound {
    pub(super) fn of(pipeline: &PipelineResult, baseline: &HttpResult) -> CpuRound {
        let requests = pipeline.sim_requests.max(1) as usize;
        CpuRound {
            service_us: micros_per(pipeline.cpu.service_s(), pipeline.events),
            client_us: micros_per(baseline.cpu.client_s(baseline.alongside), baseline.requests),
            simulator_us: (
                micros_per(pipeline.cpu.part("simulator"), requests),
                micros_per(baseline.cpu.part("simulator"), baseline.requests),
            ),
        }
    }

    fn ratio(&self) -> f64 {
        self.service_us / self.client_us
    }

    /// The ratio with the service's CPU scaled to the machine's speed in the
    /// baseline phase, by the simulator's CPU per request (the same work in
    /// both phases): what the pair would say had the machine not changed
    /// speed between its two phases.
    fn speed_corrected(&self) -> f64 {
        let (in_pipeline, in_baseline) = self.simulator_us;
        if in_pipeline > 0.0 {
            self.ratio() * in_baseline / in_pipeline
        } else {
            self.ratio()
        }
    }
}

/// The median of some figures (none: 0).
fn median(mut figures: Vec<f64>) -> f64 {
    if figures.is_empty() {
        return 0.0;
    }
    figures.sort_by(f64::total_cmp);
    let middle = figures.len() / 2;
    if figures.len() % 2 == 0 {
        (figures[middle - 1] + figures[middle]) / 2.0
    } else {
        figures[middle]
    }
}

/// A ratio with the goal's verdict.
fn against_goal(ratio: f64) -> String {
    let verdict = if ratio <= CPU_GOAL { "met" } else { "MISSED" };
    format!("{ratio:.2} {verdict}")
}

pub(super) fn rate(count: impl Into<f64>, span: Duration) -> f64 {
    count.into() / span.as_secs_f64().max(1e-9)
}

pub(super) fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |kb| format!("{:.0} MB", kb as f64 / 1024.0))
}

impl Report {
    pub(super) fn print(&self, options: &Options, workload: &Workload) {
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
        self.print_cpu_rounds();
        self.print_together_rounds();
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

    pub(super) fn print_pipeline(&self, options: &Options, result: &PipelineResult) {
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
            "    service (total - simulator - mock brokers - bench observer)",
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

    /// Each pair's CPU ratio and their median, when more than one pair ran.
    /// Pairs alternate which phase runs first (ABBA).
    fn print_cpu_rounds(&self) {
        if self.cpu_rounds.len() < 2 {
            return;
        }
        row(
            &format!(
                "CPU in {} pairs in turns: service / client (simulator per request in each)",
                self.cpu_rounds.len()
            ),
            String::new(),
        );
        for (index, round) in self.cpu_rounds.iter().enumerate() {
            let first = if baseline_first(index + 1) {
                "baseline"
            } else {
                "pipeline"
            };
            row(
                &format!("  pair {} ({first} first)", index + 1),
                format!(
                    "{:.1} / {:.1} us = {:.2} ({:.1} / {:.1} us; corrected {:.2})",
                    round.service_us,
                    round.client_us,
                    round.ratio(),
                    round.simulator_us.0,
                    round.simulator_us.1,
                    round.speed_corrected()
                ),
            );
        }
        let rounds = &self.cpu_rounds;
        row(
            &format!("  median service / client (goal <= {CPU_GOAL})"),
            against_goal(median(rounds.iter().map(CpuRound::ratio).collect())),
        );
        row(
            "  median corrected for the machine's speed (simulator per request)",
            against_goal(median(
                rounds.iter().map(CpuRound::speed_corrected).collect(),
            )),
        );
    }

    /// Each side-by-side round's CPU ratio and their median. Both simulators
    /// share one runtime, so there is no correction: both sides ran at the
    /// same moments.
    fn print_together_rounds(&self) {
        if self.together_rounds.is_empty() {
            return;
        }
        row(
            &format!(
                "CPU in {} runs side by side: service / client, the baseline beside the pipeline's delivery",
                self.together_rounds.len()
            ),
            String::new(),
        );
        for (index, round) in self.together_rounds.iter().enumerate() {
            row(
                &format!("  run {}", index + 1),
                format!(
                    "{:.1} / {:.1} us = {:.2}",
                    round.service_us,
                    round.client_us,
                    round.ratio()
                ),
            );
        }
        row(
            &format!("  median service / client (goal <= {CPU_GOAL})"),
            against_goal(median(
                self.together_rounds.iter().map(CpuRound::ratio).collect(),
            )),
        );
    }

    pub(super) fn print_baseline(&self, options: &Options, result: &HttpResult) {
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
            per_request(result.cpu.client_s(result.alongside)),
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
            row(
                &format!("  service CPU per event / client CPU per request (goal <= {CPU_GOAL})"),
                against_goal(CpuRound::of(p, result).ratio()),
            );
        }
    }
}

/// The parts of the process CPU is attributed to, in print order.
pub(super) const PARTS: [&str; 7] = [
    "simulator",
    "mock brokers",
    "bench observer",
    "librdkafka clients",
    "consumer thread",
    "async runtime",
    "other",
];

pub(super) fn row(name: &str, value: String) {
    println!("{name:<60} {value:>16}");
}
