//! Adaptive request concurrency: how many updates may be on their way to
//! Target at once, learnt from Target's answers, in the spirit of Vector's
//! Adaptive Request Concurrency (additive increase, multiplicative decrease).
//!
//! A fixed limit is wrong both ways: too small and a fast Target is held
//! back; too large and a slow or overloaded Target gets thousands of requests
//! piled onto it, each one a timeout and a retry waiting to happen. So the
//! limit moves between 1 and `delivery.max_in_flight`, once per *cycle* (one
//! mean round-trip time).
//!
//! Not every failure means "too much". Target says so with a 429 or a
//! `Retry-After`, and a request that gets no answer in time is a sign of it
//! ([`Signal::Overload`]). A 503 or another 5xx without `Retry-After`, or a
//! broken connection ([`Signal::Failed`]), may be overload or may be a bad
//! edge node failing a share of requests whatever the load; shrinking the
//! limit for the latter only costs throughput while the failed updates are
//! retried anyway. Such failures count as overload only when they grow with
//! the load: when requests sent with more requests in flight failed
//! significantly more often than those sent with fewer (see
//! [`super::failure_shares`]).
//!
//! - The limit **shrinks** to 90% (at least by one) when the cycle saw an
//!   overload signal on a request sent after the last decrease (one storm,
//!   one decrease per round trip, as TCP does per window), or when the
//!   cycle's mean round trip rose above the past mean by more than 2.5 mean
//!   deviations (and at least 50%);
//! - it shrinks **below the level where failures grow** (at most to half the
//!   levels used) when the requests that met that many requests in flight
//!   or more failed significantly more often than those that met fewer (a
//!   request is filed under the most requests in flight at once while it
//!   was out, not the number when it was sent: later ones may overtake it);
//!   when
//!   the levels used fail more but too little is known of lower ones, it
//!   drops to half of them for a moment to learn (at most once a second). After
//!   either it stays put for 100 ms, and such decreases come at most that
//!   often;
//! - it **grows** when the cycle used the whole limit, answers showed that
//!   latency held, and the levels it would grow into did not recently fail
//!   significantly more often than those below: by doubling until the first
//!   decrease (slow start, so a fast Target is reached in a few round trips),
//!   by one afterwards;
//! - otherwise it stays: a pod held back by the rate budget never has the
//!   limit's worth of requests at Target, so it never grows the limit, and the
//!   work waits in the per-profile queues, where it can still coalesce.
//!
//! [`Aimd`] is the pure controller (time is an argument); [`AdaptiveConcurrency`]
//! shares it between senders and publishes `pps_concurrency_limit`. The limit
//! is enforced in one place: the coordinator starts no more attempts than
//! the limit (each task makes one attempt; a profile waiting out a retry
//! backoff holds no task). An attempt waiting for budget is not a request at
//! Target: only a [`Flight`], from sending to the answer, counts as in
//! flight for the controller, so a pod held back by its budget never uses
//! the limit in full and never grows it.

use super::failure_shares::{FailureShares, Trend};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// How the limit shrinks on back-pressure or rising latency.
const DECREASE_RATIO: f64 = 0.9;
/// Weight of the newest cycle in the round-trip averages.
const EWMA_ALPHA: f64 = 0.4;
/// Latency "rose" past this many mean deviations above the mean...
const RTT_DEVIATION_SCALE: f64 = 2.5;
/// ...and past this fraction above the mean, so a busy pod's own scheduling
/// delays (which rise with concurrency on a saturated CPU) are not read as
/// Target overload; overload shows as 503s, timeouts or much slower answers.
const RTT_MIN_RISE: f64 = 0.5;
/// Failures growing with the load shrink the limit at most this often, and
/// the limit does not grow for this long after such a decrease.
const SHARE_DECREASE_SPACING: Duration = Duration::from_millis(100);

/// The limit falls to learn about lower levels at most this often. A pod
/// using its limit in full sends almost every request at the limit's level,
/// so it learns about lower levels only by going there; waiting long between
/// such looks kept an overloaded Target at a third of its requests failed for
/// seconds after the start. One look is cheap where failures do not grow
/// with the load: it leaves the lower levels known, and the next one comes
/// only when the levels used move past them.
const PROBE_SPACING: Duration = Duration::from_millis(1000);

/// What an answered request says about Target's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer that is not a sign of load (2xx, a permanent 4xx): its round trip counts.
    Answered,
    /// Target is overloaded: a 429, any answer with `Retry-After`, or no answer
    /// in time. The limit shrinks.
    Overload,
    /// A failure that is not by itself a sign of load (a 503 or another 5xx
    /// without `Retry-After`, a broken connection): it shrinks the limit only
    /// when such failures grow with the requests in flight.
    Failed,
    /// Says nothing about load (refused credentials): ignored.
    Neutral,
}

/// A request sent: the cycle it was sent in, its place in the order of
/// sending and the requests in flight then (itself included), to give back
/// with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    cycle: u64,
    seq: u64,
    level: usize,
}

/// The most requests in flight at once since any request still in flight was
/// sent, so an answer is filed under the busiest moment of its life.
///
/// A request sent with one other in flight can still meet three more at
/// Target: requests sent just after it overtake it on other connections, or
/// the answers of earlier ones are read late. Target only ever has fewer of
/// the pod's requests than the pod has in flight, so the peak during a
/// request's life bounds what it met there; the level at sending does not,
/// and filing failures under it made a Target overloaded past two requests
/// look as if it failed requests sent alone (seen in the overload bench at
/// 5 ms). Kept as a stack of (order of sending, level) with levels falling
/// from bottom to top: the peak since request `n` is the level of the first
/// entry at or after `n`. It holds at most one entry per level.
#[derive(Debug, Clone, Default)]
struct Peaks {
    next_seq: u64,
    stack: VecDeque<(u64, usize)>,
}

impl Peaks {
    /// A request is sent with `level` in flight; returns its order of sending.
    fn started(&mut self, level: usize) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        while self.stack.back().is_some_and(|&(_, top)| top <= level) {
            self.stack.pop_back();
        }
        self.stack.push_back((seq, level));
        seq
    }

    /// The most in flight at once since request `seq` was sent (at least `level`,
    /// the level it was sent at).
    fn since(&self, seq: u64, level: usize) -> usize {
        let first = self.stack.partition_point(|&(at, _)| at < seq);
        self.stack
            .get(first)
            .map_or(level, |&(_, peak)| peak.max(level))
    }
}

/// An exponentially weighted mean and mean absolute deviation.
#[derive(Debug, Clone, Copy)]
struct Ewma {
    mean: f64,
    deviation: f64,
}

impl Ewma {
    fn update(&mut self, value: f64) {
        self.deviation += EWMA_ALPHA * ((value - self.mean).abs() - self.deviation);
        self.mean += EWMA_ALPHA * (value - self.mean);
    }
}

/// The requests of the current cycle.
#[derive(Debug, Clone, Copy)]
struct Cycle {
    /// Counts cycles, so an answer knows the cycle its request was sent in.
    id: u64,
    started: Instant,
    rtt_sum: f64,
    rtt_count: u32,
    /// An overload signal on a request sent after the last decrease.
    overload: bool,
    /// Requests in flight reached the limit at some point.
    saturated: bool,
    /// The most requests in flight at once.
    top_level: usize,
}

impl Cycle {
    fn new(id: u64, started: Instant, saturated: bool) -> Cycle {
        Cycle {
            id,
            started,
            rtt_sum: 0.0,
            rtt_count: 0,
            overload: false,
            saturated,
            top_level: 0,
        }
    }
}

/// Failures that grow with the load shrink the limit below a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShareDecrease {
    /// Requests sent at `from` requests in flight and more failed more often.
    Grows { from: usize },
    /// More failures at the levels used, too little known of lower ones:
    /// send at `to` a while to learn.
    Probe { to: usize },
}

/// The additive-increase, multiplicative-decrease controller.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: usize,
    max: usize,
    in_flight: usize,
    slow_start: bool,
    past_rtt: Option<Ewma>,
    cycle: Cycle,
    /// The cycle the last decrease ended: overload signals on requests sent
    /// before it were already answered by that decrease.
    last_decrease: Option<u64>,
    /// Failure shares by requests in flight.
    shares: FailureShares,
    /// The busiest moment since each request in flight was sent.
    peaks: Peaks,
    /// When failures growing with the load last shrank the limit: the next
    /// such decrease waits [`SHARE_DECREASE_SPACING`], so that one unlucky
    /// tally costs one decrease.
    last_share_decrease: Option<Instant>,
    /// When the limit last fell to learn about lower levels.
    last_probe: Option<Instant>,
}

impl Aimd {
    /// A controller starting at one request, growing to at most `max`.
    pub fn new(max: usize, now: Instant) -> Aimd {
        Aimd {
            limit: 1,
            max: max.max(1),
            in_flight: 0,
            slow_start: true,
            past_rtt: None,
            cycle: Cycle::new(0, now, false),
            last_decrease: None,
            shares: FailureShares::new(max.max(1)),
            peaks: Peaks::default(),
            last_share_decrease: None,
            last_probe: None,
        }
    }

    /// The number of requests that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// A request is sent; returns what to give back with its answer.
    pub fn started(&mut self) -> Sent {
        self.in_flight += 1;
        if self.in_flight >= self.limit {
            self.cycle.saturated = true;
        }
        self.cycle.top_level = self.cycle.top_level.max(self.in_flight);
        Sent {
            cycle: self.cycle.id,
            seq: self.peaks.started(self.in_flight),
            level: self.in_flight,
        }
    }

    /// A request ended without an answer worth learning from (abandoned).
    pub fn cancelled(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A request `sent` was answered after `rtt`. Returns the new limit when
    /// this ended the cycle and the limit changed.
    pub fn answered(
        &mut self,
        now: Instant,
        sent: Sent,
        rtt: Duration,
        signal: Signal,
    ) -> Option<usize> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let level = self.peaks.since(sent.seq, sent.level);
        match signal {
            Signal::Answered => {
                self.cycle.rtt_sum += rtt.as_secs_f64();
                self.cycle.rtt_count += 1;
                self.shares.record(level, false, now);
            }
            Signal::Overload => {
                if self.last_decrease.is_none_or(|cycle| sent.cycle > cycle) {
                    self.cycle.overload = true;
                }
            }
            Signal::Failed => self.shares.record(level, true, now),
            Signal::Neutral => {}
        }
        let cycle_length = match self.past_rtt {
            Some(past) => Duration::from_secs_f64(past.mean),
            None => rtt,
        };
        if now.saturating_duration_since(self.cycle.started) < cycle_length {
            return None;
        }
        self.end_cycle(now)
    }

    /// Whether failures grow with the load, judged on the upper half of the
    /// levels used this cycle (up to `top`): a pod held back by its budget
    /// uses fewer levels than its limit allows, and those are the ones that
    /// tell. `None` when they do not, or cannot be told yet.
    fn failures_grow(&self, top: usize, now: Instant) -> Option<ShareDecrease> {
        let top = top.min(self.limit);
        let lowest = (top / 2 + 1).max(2);
        if lowest > top {
            return None;
        }
        // The highest range whose requests failed significantly more often
        // than those below it.
        if let Some(from) = (lowest..=top)
            .rev()
            .find(|from| self.shares.worse(*from..=top, now))
        {
            return Some(ShareDecrease::Grows { from });
        }
        // Failures at the top, but too little known of lower levels: go and
        // see, at most once in a while.
        let may_probe = self
            .last_probe
            .is_none_or(|at| now.saturating_duration_since(at) >= PROBE_SPACING);
        (may_probe && self.shares.trend(lowest..=top, now) == Trend::Unclear)
            .then_some(ShareDecrease::Probe { to: lowest - 1 })
    }

    /// The limit after a decrease: 90%, at least one less, at least 1.
    fn shrunk(&self) -> usize {
        let shrunk = (self.limit as f64 * DECREASE_RATIO).floor() as usize;
        shrunk.min(self.limit - 1).max(1)
    }

    fn end_cycle(&mut self, now: Instant) -> Option<usize> {
        let before = self.limit;
        let cycle = self.cycle;
        let mean = (cycle.rtt_count > 0).then(|| cycle.rtt_sum / f64::from(cycle.rtt_count));
        let rising = match (self.past_rtt, mean) {
            (Some(past), Some(mean)) => {
                let allowance =
                    (RTT_DEVIATION_SCALE * past.deviation).max(RTT_MIN_RISE * past.mean);
                mean > past.mean + allowance
            }
            _ => false,
        };
        // After failures growing with the load shrank the limit, it stays
        // put a while, to learn how the lower levels fare.
        let settled = self
            .last_share_decrease
            .is_none_or(|at| now.saturating_duration_since(at) >= SHARE_DECREASE_SPACING);
        let share_decrease = settled
            .then(|| self.failures_grow(cycle.top_level, now))
            .flatten();
        if cycle.overload || share_decrease.is_some() || rising {
            let below = match share_decrease {
                // Below the levels where failures grew.
                Some(ShareDecrease::Grows { from }) => from - 1,
                Some(ShareDecrease::Probe { to }) => {
                    self.last_probe = Some(now);
                    to
                }
                None => self.limit,
            };
            self.limit = self.shrunk().min(below).max(1);
            self.slow_start = false;
            self.last_decrease = Some(cycle.id);
            if share_decrease.is_some() {
                self.last_share_decrease = Some(now);
            }
        } else if cycle.saturated && mean.is_some() && settled {
            let grown = if self.slow_start {
                self.limit * 2
            } else {
                self.limit + 1
            }
            .min(self.max);
            // The levels the new limit reaches into did not recently fail more.
            if grown > self.limit && !self.shares.worse(self.limit + 1..=grown, now) {
                self.limit = grown;
            }
        }
        if let Some(mean) = mean {
            match &mut self.past_rtt {
                Some(past) => past.update(mean),
                None => {
                    self.past_rtt = Some(Ewma {
                        mean,
                        deviation: 0.0,
                    })
                }
            }
        }
        self.cycle = Cycle::new(cycle.id + 1, now, self.in_flight >= self.limit);
        (self.limit != before).then_some(self.limit)
    }
}

/// The controller shared by every sender, and its gauges.
#[derive(Debug)]
pub struct AdaptiveConcurrency {
    aimd: Mutex<Aimd>,
    /// The limit.
    gauge: Gauge,
    /// The requests under way: the controller's own count, published
    /// whenever it changes, so a flight dropped unanswered counts out too.
    in_flight: Gauge,
}

impl AdaptiveConcurrency {
    /// Starts at one request; at most `max_in_flight`. `gauge` shows the
    /// limit and `in_flight` the requests under way.
    pub fn new(max_in_flight: usize, gauge: Gauge, in_flight: Gauge) -> Arc<AdaptiveConcurrency> {
        let aimd = Aimd::new(max_in_flight, Instant::now());
        gauge.set(aimd.limit() as i64);
        in_flight.set(0);
        Arc::new(AdaptiveConcurrency {
            aimd: Mutex::new(aimd),
            gauge,
            in_flight,
        })
    }

    /// Publishes the requests under way, read under the lock that changed them.
    fn publish_in_flight(&self, aimd: &Aimd) {
        self.in_flight.set(aimd.in_flight() as i64);
    }

    fn lock(&self) -> MutexGuard<'_, Aimd> {
        // The controller holds plain numbers: a panic elsewhere cannot leave it half-updated.
        self.aimd
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The number of updates that may be under way now: the coordinator
    /// starts no more attempts than this (the one concurrency control).
    pub fn limit(&self) -> usize {
        self.lock().limit()
    }

    /// A request goes out now; land the flight with its answer.
    pub fn send(self: &Arc<Self>) -> Flight {
        let sent = {
            let mut aimd = self.lock();
            let sent = aimd.started();
            self.publish_in_flight(&aimd);
            sent
        };
        Flight {
            owner: self.clone(),
            sent,
            sent_at: Instant::now(),
            landed: false,
        }
    }

    fn answered(&self, sent: Sent, sent_at: Instant, signal: Signal) {
        let now = Instant::now();
        let changed = {
            let mut aimd = self.lock();
            let changed = aimd.answered(now, sent, now.duration_since(sent_at), signal);
            self.publish_in_flight(&aimd);
            changed
        };
        if let Some(limit) = changed {
            self.gauge.set(limit as i64);
            tracing::debug!(limit, "Concurrency limit changed.");
        }
    }
}

/// One request at Target, from sending until its answer.
#[derive(Debug)]
pub struct Flight {
    owner: Arc<AdaptiveConcurrency>,
    /// What the controller gave back when the request was sent.
    sent: Sent,
    sent_at: Instant,
    landed: bool,
}

impl Flight {
    /// The request was answered (or failed) with `signal`.
    pub fn land(mut self, signal: Signal) {
        self.owner.answered(self.sent, self.sent_at, signal);
        self.landed = true;
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.landed {
            // Abandoned: neither answered nor a sign of load.
            let mut aimd = self.owner.lock();
            aimd.cancelled();
            self.owner.publish_in_flight(&aimd);
        }
    }
}

#[cfg(test)]
mod closed_loop;

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(20);

    /// Sends a full limit of requests and answers them all `rtt` later with `signal`.
    fn round(aimd: &mut Aimd, now: &mut Instant, rtt: Duration, signal: Signal) {
        let sent: Vec<Sent> = (0..aimd.limit()).map(|_| aimd.started()).collect();
        *now += rtt;
        for sent in sent {
            aimd.answered(*now, sent, rtt, signal);
        }
    }

    fn grown_to(limit: usize, max: usize, now: &mut Instant) -> Aimd {
        let mut aimd = Aimd::new(max, *now);
        while aimd.limit() < limit {
            round(&mut aimd, now, RTT, Signal::Answered);
        }
        assert_eq!(aimd.limit(), limit);
        aimd
    }

    #[test]
    fn the_peak_since_a_request_is_the_most_in_flight_at_once_after_it_was_sent() {
        let mut peaks = Peaks::default();
        // Levels at sending: 1 2 3 2 1 4 1.
        let seqs: Vec<u64> = [1, 2, 3, 2, 1, 4, 1]
            .into_iter()
            .map(|level| peaks.started(level))
            .collect();
        let since: Vec<usize> = seqs
            .iter()
            .zip([1, 2, 3, 2, 1, 4, 1])
            .map(|(&seq, level)| peaks.since(seq, level))
            .collect();
        assert_eq!(since, [4, 4, 4, 4, 4, 4, 1]);
        assert!(peaks.stack.len() <= 2, "one entry per level at most");
        let mut quiet = Peaks::default();
        let first = quiet.started(1);
        let second = quiet.started(2);
        let _third = quiet.started(1);
        assert_eq!((quiet.since(first, 1), quiet.since(second, 2)), (2, 2));
    }

    #[test]
    fn a_failure_is_filed_under_the_most_requests_its_life_met_not_its_level_at_sending() {
        // Target sheds two of every three requests that meet three in flight,
        // and none below. Each round, three go out close together and the
        // last one sent overtakes the others and passes; then two go out and
        // pass. Filed under the level at sending, levels 1 and 2 would carry
        // every failure and level 3 none: no sign of load at all.
        let mut now = Instant::now();
        let mut aimd = grown_to(4, 8, &mut now);
        for _ in 0..60 {
            let sent: Vec<Sent> = (0..3).map(|_| aimd.started()).collect();
            now += RTT;
            aimd.answered(now, sent[2], RTT, Signal::Answered);
            aimd.answered(now, sent[0], RTT, Signal::Failed);
            aimd.answered(now, sent[1], RTT, Signal::Failed);
            let pair: Vec<Sent> = (0..2).map(|_| aimd.started()).collect();
            now += RTT;
            for sent in pair {
                aimd.answered(now, sent, RTT, Signal::Answered);
            }
        }
        assert_eq!(
            aimd.shares.trend(3..=3, now),
            Trend::Grows,
            "requests that met three in flight fail more than those that met fewer"
        );
        assert!(
            aimd.limit() < 3,
            "the limit left the failing level: {}",
            aimd.limit()
        );
    }

    #[test]
    fn slow_start_doubles_to_the_maximum_while_latency_holds() {
        let mut now = Instant::now();
        let mut aimd = Aimd::new(256, now);
        let mut limits = vec![aimd.limit()];
        for _ in 0..10 {
            round(&mut aimd, &mut now, RTT, Signal::Answered);
            limits.push(aimd.limit());
        }
        assert_eq!(limits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
    }

    #[test]
    fn overload_shrinks_by_a_tenth_once_and_ends_slow_start() {
        let mut now = Instant::now();
        let mut aimd = grown_to(64, 256, &mut now);
        round(&mut aimd, &mut now, RTT, Signal::Overload);
        assert_eq!(
            aimd.limit(),
            57,
            "64 failures of one round are one decrease"
        );
        round(&mut aimd, &mut now, RTT, Signal::Answered);
        assert_eq!(aimd.limit(), 58, "additive after the first decrease");
        round(&mut aimd, &mut now, RTT, Signal::Answered);
        assert_eq!(aimd.limit(), 59);
    }

    #[test]
    fn a_storm_of_overload_brings_the_limit_down_to_one_and_never_below() {
        let mut now = Instant::now();
        let mut aimd = grown_to(64, 64, &mut now);
        let mut limits = Vec::new();
        for _ in 0..40 {
            round(&mut aimd, &mut now, RTT, Signal::Overload);
            limits.push(aimd.limit());
        }
        assert_eq!(
            &limits[..8],
            [57, 51, 45, 40, 36, 32, 28, 25],
            "each round of failures takes a tenth"
        );
        assert_eq!(aimd.limit(), 1);
        // Small limits still shrink by at least one.
        let mut aimd = grown_to(4, 64, &mut now);
        round(&mut aimd, &mut now, RTT, Signal::Overload);
        assert_eq!(aimd.limit(), 3);
    }

    #[test]
    fn rising_latency_shrinks_the_limit_and_steady_latency_does_not() {
        let mut now = Instant::now();
        let mut aimd = grown_to(128, 10_000, &mut now);
        // 40% slower is within the allowance: slow start goes on.
        round(&mut aimd, &mut now, RTT * 140 / 100, Signal::Answered);
        assert_eq!(aimd.limit(), 256);
        // Five times slower is overload: within two rounds (the first is
        // still mostly answers of the faster round), the limit drops by a tenth.
        let mut before = aimd.limit();
        let mut decreased = None;
        for _ in 0..2 {
            before = aimd.limit();
            round(&mut aimd, &mut now, RTT * 5, Signal::Answered);
            if aimd.limit() < before {
                decreased = Some(aimd.limit());
                break;
            }
        }
        assert_eq!(decreased, Some(before * 9 / 10));
    }

    #[test]
    fn a_pod_held_back_by_the_budget_does_not_grow_its_limit() {
        let mut now = Instant::now();
        let mut aimd = grown_to(16, 256, &mut now);
        // The budget lets only two requests out at a time: the limit is never used.
        for _ in 0..200 {
            let sent = [aimd.started(), aimd.started()];
            now += RTT;
            for sent in sent {
                aimd.answered(now, sent, RTT, Signal::Answered);
            }
        }
        assert_eq!(aimd.limit(), 16);
    }

    #[test]
    fn the_limit_changes_at_most_once_per_round_trip() {
        let mut now = Instant::now();
        let mut aimd = grown_to(2, 256, &mut now);
        let sent = [aimd.started(), aimd.started()];
        for sent in sent {
            now += RTT / 4;
            let changed = aimd.answered(now, sent, RTT, Signal::Overload);
            assert_eq!(changed, None, "the round trip is not over");
        }
        now += RTT;
        let sent = aimd.started();
        assert_eq!(aimd.answered(now, sent, RTT, Signal::Overload), Some(1));
    }

    #[test]
    fn refused_credentials_neither_grow_nor_shrink_the_limit() {
        let mut now = Instant::now();
        let mut aimd = grown_to(8, 256, &mut now);
        // The first round's cycle still holds the last good round's answers.
        round(&mut aimd, &mut now, RTT, Signal::Neutral);
        let settled = aimd.limit();
        for _ in 0..10 {
            round(&mut aimd, &mut now, RTT, Signal::Neutral);
        }
        // Saturated rounds would grow it, but these say nothing of latency.
        assert_eq!(aimd.limit(), settled);
    }

    #[test]
    fn a_dropped_flight_leaves_nothing_in_flight_and_a_landed_one_is_counted_once() {
        let in_flight = Gauge::default();
        let shared = AdaptiveConcurrency::new(8, Gauge::default(), in_flight.clone());
        let flight = shared.send();
        assert_eq!(shared.lock().in_flight(), 1);
        assert_eq!(in_flight.get(), 1);
        drop(flight);
        assert_eq!(shared.lock().in_flight(), 0);
        assert_eq!(in_flight.get(), 0);
        let flight = shared.send();
        assert_eq!(in_flight.get(), 1);
        flight.land(Signal::Answered);
        assert_eq!(shared.lock().in_flight(), 0);
        assert_eq!(in_flight.get(), 0);
    }
}
