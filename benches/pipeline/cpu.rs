//! CPU time of the process and its threads, from `/proc`, by part of the process.

use super::*;

/// CPU seconds used by the process and by each live thread, from `/proc`.
pub(super) struct CpuSnapshot {
    pub(super) process_ticks: u64,
    pub(super) threads: HashMap<String, (String, u64)>,
}

/// CPU seconds over a span, in total and by part of the process.
#[derive(Debug, Clone, Default)]
pub(super) struct CpuUse {
    pub(super) total_s: f64,
    pub(super) parts: BTreeMap<&'static str, f64>,
    /// By thread name, for `PPS_BENCH_THREADS=1`.
    pub(super) threads: BTreeMap<String, f64>,
}

/// The name of the threads a baseline run beside a pipeline uses.
pub(super) const SIDE_RUNTIME: &str = "side-rt";

/// The part of the process a thread belongs to, by its name.
pub(super) fn part_of(thread_name: &str) -> &'static str {
    match thread_name {
        name if name.starts_with("sim-rt") => "simulator",
        "rdk:mock" => "mock brokers",
        name if name.starts_with("rdk:") || name == "producer pollin" => "librdkafka clients",
        "kafka-consumer" => "consumer thread",
        name if name.starts_with("bench-rt") => "async runtime",
        name if name.starts_with(SIDE_RUNTIME) => "side client",
        _ => "other",
    }
}

/// `(comm, utime + stime)` from a `stat` file.
pub(super) fn stat_ticks(path: &str) -> Option<(String, u64)> {
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
    pub(super) fn take() -> CpuSnapshot {
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

    /// The ids of the threads alive now.
    pub(super) fn thread_ids() -> HashSet<String> {
        CpuSnapshot::take().threads.into_keys().collect()
    }

    /// Use since `earlier`; CPU of threads that ended meanwhile is "other",
    /// and of the threads in `observer` (the bench's own commit watcher and
    /// its librdkafka threads, by id: their names are the service's too)
    /// "bench observer".
    pub(super) fn since(&self, earlier: &CpuSnapshot, observer: &HashSet<String>) -> CpuUse {
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let mut parts: BTreeMap<&'static str, f64> = BTreeMap::new();
        let mut threads: BTreeMap<String, f64> = BTreeMap::new();
        let mut attributed = 0;
        for (tid, (name, ticks)) in &self.threads {
            let before = earlier.threads.get(tid).map_or(0, |(_, t)| *t);
            let used = ticks.saturating_sub(before);
            attributed += used;
            let part = if observer.contains(tid) {
                "bench observer"
            } else {
                part_of(name)
            };
            *parts.entry(part).or_default() += seconds(used);
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
    pub(super) fn part(&self, name: &str) -> f64 {
        self.parts.get(name).copied().unwrap_or_default()
    }

    /// The service's own CPU: everything but the simulator, the mock
    /// brokers, the bench's commit watcher and a baseline run beside it.
    pub(super) fn service_s(&self) -> f64 {
        self.total_s
            - self.part("simulator")
            - self.part("mock brokers")
            - self.part("bench observer")
            - self.part("side client")
    }

    /// The bare client's CPU: everything but the simulator; or, for a
    /// baseline run beside a pipeline, only the side runtime's threads.
    pub(super) fn client_s(&self, alongside: bool) -> f64 {
        if alongside {
            self.part("side client")
        } else {
            self.total_s - self.part("simulator")
        }
    }
}

/// Microseconds per item.
pub(super) fn micros_per(seconds: f64, count: usize) -> f64 {
    seconds * 1e6 / count.max(1) as f64
}

/// The 1-minute load average.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".into())
}

/// A `kB` field of `/proc/self/status`.
pub(super) fn proc_status_kb(field: &str) -> Option<u64> {
    pps_test_kit::status_kb("/proc/self/status", field)
}
