//! Adaptive request concurrency: how many updates may be on their way to
//! Target at once, learnt from Target's answers, in the spirit of Vector's
//! Adaptive Request Concurrency (additive increase, multiplicative decrease).
//!
//! A fixed limit is wrong both ways: too small and a fast Target is held
//! back; too large and a slow or overloaded Target gets thousands of requests
//! piled onto it, each one a timeout and a retry waiting to happen. So the
//! limit moves between 1 and `delivery.max_in_flight`, once per *cycle* (one
//! mean round-trip time):
//!
//! - it **shrinks** to 90% (at least by one) when the cycle saw back-pressure
//!   (503, 429, another retryable status, a timeout, a connection error) on a
//!   request sent after the last decrease (one storm, one decrease per round
//!   trip, as TCP does per window), or
//!   when the cycle's mean round trip rose above the past mean by more than
//!   2.5 mean deviations (and at least 50%);
//! - it **grows** when the cycle used the whole limit and answers showed
//!   that latency held: by
//!   doubling until the first decrease (slow start, so a fast Target is
//!   reached in a few round trips), by one afterwards;
//! - otherwise it stays: a pod held back by the rate budget never has the
//!   limit's worth of requests at Target, so it never grows the limit, and the
//!   work waits in the per-profile queues, where it can still coalesce.
//!
//! [`Aimd`] is the pure controller (time is an argument); [`AdaptiveConcurrency`]
//! shares it between senders and publishes `pps_concurrency_limit`. The limit
//! bounds two things: the coordinator starts no more senders than the limit,
//! and every attempt (retries too) first takes one of `limit` slots, *then*
//! waits for budget, then sends. Slot before budget, so a budget token is
//! never held while waiting and spent later in a burst; and a slot waiting for
//! budget is not a request at Target, so it does not count as using the limit.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
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

/// What an answered request says about Target's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer that is not a sign of load (2xx, a permanent 4xx): its round trip counts.
    Answered,
    /// Throttling or failure (503, 429, 5xx, timeout, connection error).
    Backpressure,
    /// Says nothing about load (refused credentials): ignored.
    Neutral,
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
    backpressure: bool,
    /// Requests in flight reached the limit at some point.
    saturated: bool,
}

impl Cycle {
    fn new(id: u64, started: Instant, saturated: bool) -> Cycle {
        Cycle {
            id,
            started,
            rtt_sum: 0.0,
            rtt_count: 0,
            backpressure: false,
            saturated,
        }
    }
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
    /// The cycle the last decrease ended: back-pressure on requests sent
    /// before it was already answered by that decrease.
    last_decrease: Option<u64>,
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

    /// A request is sent; returns the cycle to give back with its answer.
    pub fn started(&mut self) -> u64 {
        self.in_flight += 1;
        if self.in_flight >= self.limit {
            self.cycle.saturated = true;
        }
        self.cycle.id
    }

    /// A request ended without an answer worth learning from (abandoned).
    pub fn cancelled(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A request sent in cycle `sent_in` was answered after `rtt`. Returns
    /// the new limit when this ended the cycle and the limit changed.
    pub fn answered(
        &mut self,
        now: Instant,
        sent_in: u64,
        rtt: Duration,
        signal: Signal,
    ) -> Option<usize> {
        self.in_flight = self.in_flight.saturating_sub(1);
        match signal {
            Signal::Answered => {
                self.cycle.rtt_sum += rtt.as_secs_f64();
                self.cycle.rtt_count += 1;
            }
            Signal::Backpressure => {
                if self.last_decrease.is_none_or(|cycle| sent_in > cycle) {
                    self.cycle.backpressure = true;
                }
            }
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
        if cycle.backpressure || rising {
            let shrunk = (self.limit as f64 * DECREASE_RATIO).floor() as usize;
            self.limit = shrunk.min(self.limit - 1).max(1);
            self.slow_start = false;
            self.last_decrease = Some(cycle.id);
        } else if cycle.saturated && mean.is_some() {
            let grown = if self.slow_start {
                self.limit * 2
            } else {
                self.limit + 1
            };
            self.limit = grown.min(self.max);
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

/// The controller and the slots it hands out.
#[derive(Debug)]
struct Shared {
    aimd: Aimd,
    /// Slots taken (waiting for budget or sending).
    reserved: usize,
}

/// The controller shared by every sender, its slots and its gauge.
#[derive(Debug)]
pub struct AdaptiveConcurrency {
    shared: Mutex<Shared>,
    /// Wakes attempts waiting for a slot.
    freed: Notify,
    gauge: Gauge,
}

impl AdaptiveConcurrency {
    /// Starts at one request; at most `max_in_flight`.
    pub fn new(max_in_flight: usize, gauge: Gauge) -> Arc<AdaptiveConcurrency> {
        let aimd = Aimd::new(max_in_flight, Instant::now());
        gauge.set(aimd.limit() as i64);
        Arc::new(AdaptiveConcurrency {
            shared: Mutex::new(Shared { aimd, reserved: 0 }),
            freed: Notify::new(),
            gauge,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // The controller holds plain numbers: a panic elsewhere cannot leave it half-updated.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The number of updates that may be under way now.
    pub fn limit(&self) -> usize {
        self.lock().aimd.limit()
    }

    /// Waits for one of `limit` slots.
    pub async fn reserve(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut shared = self.lock();
                if shared.reserved < shared.aimd.limit() {
                    shared.reserved += 1;
                    return Slot {
                        owner: self.clone(),
                        flight: None,
                        landed: false,
                    };
                }
            }
            freed.await;
        }
    }

    fn release(&self, flight: Option<(u64, Instant)>, signal: Signal) {
        let changed = {
            let mut shared = self.lock();
            shared.reserved -= 1;
            match flight {
                Some((sent_in, sent_at)) => {
                    let now = Instant::now();
                    shared
                        .aimd
                        .answered(now, sent_in, now.duration_since(sent_at), signal)
                }
                _ => None,
            }
        };
        if let Some(limit) = changed {
            self.gauge.set(limit as i64);
            tracing::debug!(limit, "Concurrency limit changed.");
            self.freed.notify_waiters();
        }
        self.freed.notify_one();
    }
}

/// One of `limit` slots: held from before the budget wait until the answer.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<AdaptiveConcurrency>,
    /// The cycle the request was sent in and when, once sent.
    flight: Option<(u64, Instant)>,
    landed: bool,
}

impl Slot {
    /// The request goes out now.
    pub fn send(&mut self) {
        if self.flight.is_none() {
            let sent_in = self.owner.lock().aimd.started();
            self.flight = Some((sent_in, Instant::now()));
        }
    }

    /// The request was answered (or failed) with `signal`; the slot is free.
    pub fn land(mut self, signal: Signal) {
        let flight = self.flight.take();
        self.owner.release(flight, signal);
        self.landed = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.landed {
            return;
        }
        // Abandoned: neither answered nor a sign of load.
        if self.flight.take().is_some() {
            self.owner.lock().aimd.cancelled();
        }
        self.owner.release(None, Signal::Neutral);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(20);

    /// Sends a full limit of requests and answers them all `rtt` later with `signal`.
    fn round(aimd: &mut Aimd, now: &mut Instant, rtt: Duration, signal: Signal) {
        let sent: Vec<u64> = (0..aimd.limit()).map(|_| aimd.started()).collect();
        *now += rtt;
        for cycle in sent {
            aimd.answered(*now, cycle, rtt, signal);
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
    fn backpressure_shrinks_by_a_tenth_once_and_ends_slow_start() {
        let mut now = Instant::now();
        let mut aimd = grown_to(64, 256, &mut now);
        round(&mut aimd, &mut now, RTT, Signal::Backpressure);
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
    fn a_storm_of_failures_brings_the_limit_down_to_one_and_never_below() {
        let mut now = Instant::now();
        let mut aimd = grown_to(64, 64, &mut now);
        let mut limits = Vec::new();
        for _ in 0..40 {
            round(&mut aimd, &mut now, RTT, Signal::Backpressure);
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
        round(&mut aimd, &mut now, RTT, Signal::Backpressure);
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
            for cycle in sent {
                aimd.answered(now, cycle, RTT, Signal::Answered);
            }
        }
        assert_eq!(aimd.limit(), 16);
    }

    #[test]
    fn the_limit_changes_at_most_once_per_round_trip() {
        let mut now = Instant::now();
        let mut aimd = grown_to(2, 256, &mut now);
        let sent = [aimd.started(), aimd.started()];
        for cycle in sent {
            now += RTT / 4;
            let changed = aimd.answered(now, cycle, RTT, Signal::Backpressure);
            assert_eq!(changed, None, "the round trip is not over");
        }
        now += RTT;
        let cycle = aimd.started();
        assert_eq!(
            aimd.answered(now, cycle, RTT, Signal::Backpressure),
            Some(1)
        );
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

    fn counts(shared: &AdaptiveConcurrency) -> (usize, usize) {
        let shared = shared.lock();
        (shared.reserved, shared.aimd.in_flight())
    }

    #[tokio::test]
    async fn a_dropped_slot_leaves_nothing_reserved_or_in_flight() {
        let shared = AdaptiveConcurrency::new(8, Gauge::default());
        let mut slot = shared.reserve().await;
        slot.send();
        assert_eq!(counts(&shared), (1, 1));
        drop(slot);
        assert_eq!(counts(&shared), (0, 0));
        let mut slot = shared.reserve().await;
        slot.send();
        slot.land(Signal::Answered);
        assert_eq!(counts(&shared), (0, 0));
    }

    #[tokio::test]
    async fn a_full_limit_holds_the_next_attempt_until_a_slot_is_freed() {
        let shared = AdaptiveConcurrency::new(8, Gauge::default());
        assert_eq!(shared.limit(), 1);
        let mut first = shared.reserve().await;
        let waiting = tokio::spawn({
            let shared = shared.clone();
            async move {
                let _slot = shared.reserve().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the only slot is taken");
        first.send();
        first.land(Signal::Answered);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("freed slot wakes the waiter")
            .expect("waiter");
    }
}
