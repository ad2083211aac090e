//! What the simulator saw on the update path, for tests and benchmarks to assert on:
//! counts by outcome, per-second histograms, per-profile counts and concurrency, and
//! the accepted updates that changed nothing because their profile did not exist; and,
//! apart from those, what it saw on the bulk path ([`BulkStats`]) and on the profile
//! fetch API ([`FetchStats`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::bulk::Settled;
use super::sharded::{lock, Sharded};
use super::store::{IdKind, ProfileKey};

/// A snapshot of the simulator's statistics (`GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Milliseconds since the simulator started.
    pub uptime_ms: u64,
    /// Update requests received, whatever became of them.
    pub total: u64,
    /// Update requests answered 2xx (those to an existing profile changed it; see
    /// `updates_to_unknown_profiles`).
    pub accepted: u64,
    /// Update requests answered 2xx that changed nothing because their profile did not
    /// exist, had expired or was not readable yet (Adobe's single update only updates).
    #[serde(default)]
    pub updates_to_unknown_profiles: u64,
    /// Update requests answered with any other status.
    pub rejected: u64,
    /// Update requests that drew a hang.
    pub hung: u64,
    /// Update requests whose connection was reset instead of answered.
    #[serde(default)]
    pub resets: u64,
    /// Update answers by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Accepted updates by the whole second since start at which they were accepted.
    pub accepted_per_second: PerSecond,
    /// All update requests by the whole second since start at which they arrived.
    pub requests_per_second: PerSecond,
    /// Update requests being handled now (waiting on hold, latency or a hang included).
    pub in_flight: u64,
    /// The most update requests ever in flight at once.
    pub max_in_flight: u64,
    /// Update requests waiting for the hold to be released, now.
    pub held: u64,
    /// Whether the hold is on.
    pub holding: bool,
    /// Update requests per profile, for requests that named exactly one profile.
    pub profiles: ProfileRequests,
    /// The bulk path, counted apart from updates (absent in older snapshots: zeros).
    #[serde(default)]
    pub bulk: BulkStats,
    /// The profile fetch API, counted apart from updates.
    #[serde(default)]
    pub fetch: FetchStats,
}

/// What the profile fetch API saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FetchStats {
    /// Fetch requests looked up (those refused 401 or 400 before are not counted).
    pub requests: u64,
    /// Fetches answered 200 with the profile.
    pub found: u64,
    /// Fetches answered 404 (no such profile, expired, not readable yet, or another
    /// client code).
    pub not_found: u64,
}

/// What the bulk path saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BulkStats {
    /// Batches accepted (`success=true`).
    pub batches_submitted: u64,
    /// Batches refused with `success=false` (undecodable, bad header, too many rows).
    pub batches_refused: u64,
    /// Rows of the accepted batches.
    pub rows_received: u64,
    /// Rows applied to profiles (failed rows, stuck batches and v1 rows of missing
    /// profiles never are).
    pub rows_applied: u64,
    /// Of the rows applied, those that created their profile (v2 batches only).
    pub profiles_created: u64,
    /// Rows of v1 batches whose profile did not exist: not applied.
    pub rows_not_found: u64,
    /// Status requests received.
    pub status_polls: u64,
    /// Bulk calls (submits and polls) answered 503 for passing `calls_per_minute`.
    pub throttled: u64,
}

/// Counts keyed by whole second since the simulator started (`{"0":12,"1":40}`);
/// seconds without any count are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerSecond(pub BTreeMap<u64, u64>);

impl PerSecond {
    /// The sum over all seconds.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The busiest second and its count; the earliest one on a tie.
    pub fn busiest(&self) -> Option<(u64, u64)> {
        self.0
            .iter()
            .map(|(&second, &count)| (second, count))
            .max_by_key(|&(second, count)| (count, std::cmp::Reverse(second)))
    }

    /// The mean count per second from the first to the last second with a count,
    /// both included; 0 when empty.
    pub fn mean(&self) -> f64 {
        match (self.0.keys().next(), self.0.keys().next_back()) {
            (Some(first), Some(last)) => self.total() as f64 / (last - first + 1) as f64,
            _ => 0.0,
        }
    }
}

/// Update requests per profile, by namespace then id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRequests {
    /// Profiles named by `mbox3rdPartyId`.
    #[serde(rename = "thirdPartyId")]
    pub third_party: BTreeMap<String, ProfileCounts>,
    /// Profiles named by `mboxPC`.
    #[serde(rename = "pcId")]
    pub pc: BTreeMap<String, ProfileCounts>,
}

/// What happened to the update requests of one profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileCounts {
    /// Requests received (retries included).
    pub requests: u64,
    /// Requests accepted.
    pub accepted: u64,
}

/// HTTP statuses are below this.
const STATUS_SLOTS: usize = 600;

/// The live counters behind [`SimStats`].
#[derive(Debug)]
pub(crate) struct Recorder {
    started: Instant,
    total: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    hung: AtomicU64,
    resets: AtomicU64,
    by_status: Box<[AtomicU64]>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    held: AtomicU64,
    holding: AtomicBool,
    /// Index: second since `started`.
    requests_per_second: Mutex<Vec<u64>>,
    accepted_per_second: Mutex<Vec<u64>>,
    per_profile: Sharded<ProfileCounts>,
    unknown: AtomicU64,
    bulk: BulkCounters,
    fetch: FetchCounters,
}

/// The live counters behind [`FetchStats`].
#[derive(Debug, Default)]
struct FetchCounters {
    requests: AtomicU64,
    found: AtomicU64,
    not_found: AtomicU64,
}

/// The live counters behind [`BulkStats`].
#[derive(Debug, Default)]
struct BulkCounters {
    batches_submitted: AtomicU64,
    batches_refused: AtomicU64,
    rows_received: AtomicU64,
    rows_applied: AtomicU64,
    profiles_created: AtomicU64,
    rows_not_found: AtomicU64,
    status_polls: AtomicU64,
    throttled: AtomicU64,
}

impl BulkCounters {
    fn all(&self) -> [&AtomicU64; 8] {
        [
            &self.batches_submitted,
            &self.batches_refused,
            &self.rows_received,
            &self.rows_applied,
            &self.profiles_created,
            &self.rows_not_found,
            &self.status_polls,
            &self.throttled,
        ]
    }
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            total: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            held: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            requests_per_second: Mutex::new(Vec::new()),
            accepted_per_second: Mutex::new(Vec::new()),
            per_profile: Sharded::new(),
            unknown: AtomicU64::new(0),
            bulk: BulkCounters::default(),
            fetch: FetchCounters::default(),
        }
    }

    /// Time since the simulator started; the clock of the histograms and rate limit.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts an arriving update request; it stays in flight until the guard drops.
    pub(crate) fn arrived(&self) -> InFlight<'_> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        bump(&self.requests_per_second, self.elapsed());
        InFlight(&self.in_flight)
    }

    /// Update requests in flight now (an arrived one included).
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request naming `key`.
    pub(crate) fn profile_requested(&self, key: &ProfileKey) {
        let mut shard = self.per_profile.shard(key);
        match shard.get_mut(key) {
            Some(counts) => counts.requests += 1,
            None => {
                let counts = ProfileCounts {
                    requests: 1,
                    accepted: 0,
                };
                shard.insert(key.clone(), counts);
            }
        }
    }

    /// Counts an accepted update of `key` (after [`Recorder::profile_requested`]).
    pub(crate) fn profile_accepted(&self, key: &ProfileKey) {
        if let Some(counts) = self.per_profile.shard(key).get_mut(key) {
            counts.accepted += 1;
        }
    }

    /// Counts an answer.
    pub(crate) fn answered(&self, status: u16) {
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        if (200..300).contains(&status) {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            bump(&self.accepted_per_second, self.elapsed());
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request that drew a hang.
    pub(crate) fn hung(&self) {
        self.hung.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a batch accepted with `rows` rows.
    pub(crate) fn batch_submitted(&self, rows: u64) {
        self.bulk.batches_submitted.fetch_add(1, Ordering::Relaxed);
        self.bulk.rows_received.fetch_add(rows, Ordering::Relaxed);
    }

    /// Counts a batch refused with `success=false`.
    pub(crate) fn batch_refused(&self) {
        self.bulk.batches_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what settling batches did to profiles.
    pub(crate) fn batch_rows_settled(&self, settled: Settled) {
        let Settled {
            applied,
            created,
            not_found,
        } = settled;
        self.bulk.rows_applied.fetch_add(applied, Ordering::Relaxed);
        self.bulk
            .profiles_created
            .fetch_add(created, Ordering::Relaxed);
        self.bulk
            .rows_not_found
            .fetch_add(not_found, Ordering::Relaxed);
    }

    /// Counts an accepted update that changed nothing: its profile does not exist.
    pub(crate) fn update_to_unknown_profile(&self) {
        self.unknown.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a fetch and whether it found the profile.
    pub(crate) fn fetched(&self, found: bool) {
        self.fetch.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = if found {
            &self.fetch.found
        } else {
            &self.fetch.not_found
        };
        outcome.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a status request.
    pub(crate) fn status_polled(&self) {
        self.bulk.status_polls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a bulk call answered 503 for passing the calls-a-minute limit.
    pub(crate) fn bulk_throttled(&self) {
        self.bulk.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request whose connection was reset instead of answered.
    pub(crate) fn connection_reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Tracks the hold switch and the requests waiting on it.
    pub(crate) fn set_holding(&self, holding: bool) {
        self.holding.store(holding, Ordering::Relaxed);
    }

    pub(crate) fn held(&self) -> InFlight<'_> {
        self.held.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.held)
    }

    /// Zeroes every count; the clock and the gauges (in flight, held) keep running.
    pub(crate) fn reset(&self) {
        let fetch = [
            &self.fetch.requests,
            &self.fetch.found,
            &self.fetch.not_found,
        ];
        for counter in [
            &self.total,
            &self.accepted,
            &self.rejected,
            &self.hung,
            &self.unknown,
        ]
        .into_iter()
        .chain(self.bulk.all())
        .chain(fetch)
        {
            counter.store(0, Ordering::Relaxed);
        }
        self.resets.store(0, Ordering::Relaxed);
        for slot in self.by_status.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        self.max_in_flight.store(in_flight, Ordering::Relaxed);
        lock(&self.requests_per_second).clear();
        lock(&self.accepted_per_second).clear();
        self.per_profile.clear();
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        let by_status = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(status, count)| {
                let count = count.load(Ordering::Relaxed);
                let status = u16::try_from(status).ok()?;
                (count > 0).then_some((status, count))
            })
            .collect();
        let mut profiles = ProfileRequests::default();
        self.per_profile.for_each(|key, counts| {
            let namespace = match key.kind() {
                IdKind::ThirdParty => &mut profiles.third_party,
                IdKind::Pc => &mut profiles.pc,
            };
            namespace.insert(key.id().to_owned(), *counts);
        });
        SimStats {
            uptime_ms: u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX),
            total: self.total.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            updates_to_unknown_profiles: self.unknown.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            hung: self.hung.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            by_status,
            accepted_per_second: histogram(&self.accepted_per_second),
            requests_per_second: histogram(&self.requests_per_second),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            holding: self.holding.load(Ordering::Relaxed),
            profiles,
            bulk: BulkStats {
                batches_submitted: self.bulk.batches_submitted.load(Ordering::Relaxed),
                batches_refused: self.bulk.batches_refused.load(Ordering::Relaxed),
                rows_received: self.bulk.rows_received.load(Ordering::Relaxed),
                rows_applied: self.bulk.rows_applied.load(Ordering::Relaxed),
                profiles_created: self.bulk.profiles_created.load(Ordering::Relaxed),
                rows_not_found: self.bulk.rows_not_found.load(Ordering::Relaxed),
                status_polls: self.bulk.status_polls.load(Ordering::Relaxed),
                throttled: self.bulk.throttled.load(Ordering::Relaxed),
            },
            fetch: FetchStats {
                requests: self.fetch.requests.load(Ordering::Relaxed),
                found: self.fetch.found.load(Ordering::Relaxed),
                not_found: self.fetch.not_found.load(Ordering::Relaxed),
            },
        }
    }
}

/// Adds one to the count of the second `at` falls in.
fn bump(histogram: &Mutex<Vec<u64>>, at: Duration) {
    let Ok(second) = usize::try_from(at.as_secs()) else {
        return;
    };
    let mut counts = lock(histogram);
    if counts.len() <= second {
        counts.resize(second + 1, 0);
    }
    counts[second] += 1;
}

fn histogram(counts: &Mutex<Vec<u64>>) -> PerSecond {
    PerSecond(
        lock(counts)
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
            .map(|(second, &count)| (second as u64, count))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_finds_the_busiest_second_and_the_mean_rate() {
        let per_second = PerSecond([(2, 10), (3, 30), (5, 30)].into_iter().collect());
        assert_eq!(per_second.total(), 70);
        assert_eq!(per_second.busiest(), Some((3, 30)));
        assert_eq!(per_second.mean(), 70.0 / 4.0);
        assert_eq!(PerSecond::default().busiest(), None);
        assert_eq!(PerSecond::default().mean(), 0.0);
    }

    #[test]
    fn counts_follow_arrivals_and_answers() {
        let recorder = Recorder::new();
        let key = ProfileKey::new(IdKind::Pc, "p");
        {
            let _first = recorder.arrived();
            let _second = recorder.arrived();
            assert_eq!(recorder.snapshot().in_flight, 2);
            recorder.profile_requested(&key);
            recorder.profile_requested(&key);
            recorder.profile_accepted(&key);
            recorder.answered(200);
            recorder.answered(503);
        }
        let stats = recorder.snapshot();
        assert_eq!((stats.total, stats.accepted, stats.rejected), (2, 1, 1));
        assert_eq!((stats.in_flight, stats.max_in_flight), (0, 2));
        assert_eq!(stats.by_status, [(200, 1), (503, 1)].into_iter().collect());
        assert_eq!(stats.accepted_per_second.total(), 1);
        assert_eq!(stats.requests_per_second.total(), 2);
        assert_eq!(
            stats.profiles.pc["p"],
            ProfileCounts {
                requests: 2,
                accepted: 1
            }
        );
        recorder.reset();
        assert_eq!(recorder.snapshot().total, 0);
        assert!(recorder.snapshot().profiles.pc.is_empty());
    }

    #[test]
    fn bulk_fetch_and_unknown_profile_counts_are_kept_apart_and_reset_with_the_rest() {
        let recorder = Recorder::new();
        recorder.batch_submitted(3);
        recorder.batch_submitted(2);
        recorder.batch_refused();
        recorder.batch_rows_settled(Settled {
            applied: 4,
            created: 3,
            not_found: 1,
        });
        recorder.status_polled();
        recorder.bulk_throttled();
        recorder.fetched(true);
        recorder.fetched(false);
        recorder.update_to_unknown_profile();
        let stats = recorder.snapshot();
        assert_eq!(
            stats.bulk,
            BulkStats {
                batches_submitted: 2,
                batches_refused: 1,
                rows_received: 5,
                rows_applied: 4,
                profiles_created: 3,
                rows_not_found: 1,
                status_polls: 1,
                throttled: 1,
            }
        );
        assert_eq!(
            stats.fetch,
            FetchStats {
                requests: 2,
                found: 1,
                not_found: 1
            }
        );
        assert_eq!(stats.updates_to_unknown_profiles, 1);
        assert_eq!((stats.total, stats.accepted, stats.rejected), (0, 0, 0));
        recorder.reset();
        let stats = recorder.snapshot();
        assert_eq!(stats.bulk, BulkStats::default());
        assert_eq!(stats.fetch, FetchStats::default());
        assert_eq!(stats.updates_to_unknown_profiles, 0);
    }

    #[test]
    fn a_snapshot_without_bulk_counts_still_parses() {
        let mut json = serde_json::to_value(Recorder::new().snapshot()).expect("serializes");
        json.as_object_mut().expect("an object").remove("bulk");
        let stats: SimStats = serde_json::from_value(json).expect("parses");
        assert_eq!(stats.bulk, BulkStats::default());
    }

    #[test]
    fn stats_survive_a_json_round_trip() {
        let recorder = Recorder::new();
        let _request = recorder.arrived();
        recorder.answered(429);
        let stats = recorder.snapshot();
        let json = serde_json::to_string(&stats).expect("serializes");
        assert!(json.contains(r#""by_status":{"429":1}"#), "{json}");
        let back: SimStats = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, stats);
    }
}
