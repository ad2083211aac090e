//! The controller in a closed loop with a model of Target, time passed in: a
//! pod with an endless backlog sends whenever the limit and its budget let it,
//! and Target answers each request a fixed round trip later, failing a share
//! of them that either stays the same whatever the load (random failures) or
//! grows the further the requests in flight are past a capacity (overload).

use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;

/// How Target fails requests.
#[derive(Debug, Clone, Copy)]
enum Model {
    /// This share of requests, whatever the load.
    Random(f64),
    /// This share of requests from this long after the start.
    RandomAfter(f64, Duration),
    /// `1 - capacity ÷ n` of the requests that arrive with `n` requests in
    /// flight (themselves included), once `n` is past `capacity`.
    Overload(usize),
}

/// What a run of the loop saw over its second half.
#[derive(Debug)]
struct Run {
    /// Requests per second the pod sent.
    rate: f64,
    /// Share of them that failed.
    failed: f64,
    /// Share of all requests that failed, from the start.
    failed_from_start: f64,
}

/// Runs the loop for `seconds` in steps of 100 µs with a budget of
/// `budget` requests per second (a bucket of one request).
fn run(model: Model, rtt: Duration, budget: f64, seconds: u64) -> Run {
    run_with_overhead(model, rtt, Duration::ZERO, budget, seconds)
}

/// [`run`] where each request spends `overhead` on its way to Target and
/// back (the pod's client, a proxy, the network) on top of the `service`
/// time Target works on it: the pod counts a request in flight for
/// `service + overhead`, Target for `service` only, so the requests in
/// flight at the pod overstate Target's.
fn run_with_overhead(
    model: Model,
    service: Duration,
    overhead: Duration,
    budget: f64,
    seconds: u64,
) -> Run {
    let rtt = service + overhead;
    let start = Instant::now();
    let step = Duration::from_micros(100);
    let steps = seconds * 10_000;
    let mut aimd = Aimd::new(256, start);
    let mut answers: VecDeque<(Instant, Sent, bool)> = VecDeque::new();
    // When each request still at Target was sent.
    let mut at_target: VecDeque<Instant> = VecDeque::new();
    let mut tokens = 1.0_f64;
    let mut rng = SmallRng::seed_from_u64(15);
    let (mut sent, mut failed) = (0u64, 0u64);
    let (mut sent_from_start, mut failed_from_start) = (0u64, 0u64);
    for i in 0..steps {
        let now = start + step * i as u32;
        let counting = i >= steps / 2;
        while answers.front().is_some_and(|(at, _, _)| *at <= now) {
            let Some((_, request, failure)) = answers.pop_front() else {
                break;
            };
            let signal = if failure {
                Signal::Failed
            } else {
                Signal::Answered
            };
            aimd.answered(now, request, rtt, signal);
        }
        tokens = (tokens + budget * step.as_secs_f64()).min(1.0);
        while tokens >= 1.0 && aimd.in_flight() < aimd.limit() {
            tokens -= 1.0;
            let request = aimd.started();
            while at_target.front().is_some_and(|sent| *sent + service <= now) {
                at_target.pop_front();
            }
            at_target.push_back(now);
            let in_flight = at_target.len();
            let share = match model {
                Model::Random(share) => share,
                Model::RandomAfter(share, after) => {
                    if now >= start + after {
                        share
                    } else {
                        0.0
                    }
                }
                Model::Overload(capacity) => (1.0 - capacity as f64 / in_flight as f64).max(0.0),
            };
            let failure = rng.random_bool(share);
            answers.push_back((now + rtt, request, failure));
            sent_from_start += 1;
            failed_from_start += u64::from(failure);
            if counting {
                sent += 1;
                failed += u64::from(failure);
            }
        }
    }
    let counted = (seconds as f64) / 2.0;
    Run {
        rate: sent as f64 / counted,
        failed: failed as f64 / sent.max(1) as f64,
        failed_from_start: failed_from_start as f64 / sent_from_start.max(1) as f64,
    }
}

const BUDGET: f64 = 800.0;
/// What the budget lets out in steps of 100 µs: one request every 13 steps.
const PACED: f64 = 10_000.0 / 13.0;

#[test]
fn random_failures_do_not_hold_the_pod_below_its_budget() {
    // (share of requests failed, round trip)
    let table = [
        (0.0, 5),
        (0.1, 5),
        (0.3, 5),
        (0.5, 5),
        (0.0, 50),
        (0.1, 50),
        (0.3, 50),
        (0.5, 50),
    ];
    for (share, rtt_ms) in table {
        let run = run(
            Model::Random(share),
            Duration::from_millis(rtt_ms),
            BUDGET,
            20,
        );
        assert!(
            run.rate >= 0.95 * PACED,
            "{share} failed at {rtt_ms} ms: {run:?}"
        );
    }
}

#[test]
fn failures_that_grow_with_the_rate_settle_the_pod_near_the_capacity() {
    // (capacity in requests per second, round trip)
    // (capacity in requests in flight, round trip)
    let table = [(2, 5), (20, 50), (10, 50), (30, 50)];
    for (capacity, rtt_ms) in table {
        let run = run(
            Model::Overload(capacity),
            Duration::from_millis(rtt_ms),
            BUDGET,
            20,
        );
        let capacity = capacity as f64 / (rtt_ms as f64 / 1000.0);
        assert!(
            (0.7 * capacity..=1.1 * capacity).contains(&run.rate),
            "capacity {capacity} at {rtt_ms} ms: {run:?}"
        );
        assert!(
            run.failed < 0.15,
            "capacity {capacity} at {rtt_ms} ms: {run:?}"
        );
    }
}

#[test]
fn an_overloaded_target_seen_through_a_slower_client_settles_the_pod_near_its_capacity() {
    // The pod's round trip is longer than Target's work on a request (by
    // `overhead`), so the pod sees more requests in flight than Target does,
    // and its levels map onto Target's only loosely. Holding `capacity`
    // requests in flight at the pod is the least it should manage
    // (`capacity / (service + overhead)` per second); Target's capacity
    // (`capacity / service`) the most. Failures count from the start: the
    // first seconds, before the controller knows the levels, are part of
    // what a pod costs an overloaded Target.
    // Not covered: an overhead several times Target's time (5 + 20 ms),
    // where a pod held back by its budget sends at one level only and the
    // failures cannot be seen to grow with it.
    // (capacity in requests in flight at Target, Target's time, overhead)
    let table = [
        (2, 5, 3),
        (2, 5, 5),
        (20, 50, 25),
        (20, 50, 50),
        (10, 20, 30),
    ];
    for (capacity, service_ms, overhead_ms) in table {
        let run = run_with_overhead(
            Model::Overload(capacity),
            Duration::from_millis(service_ms),
            Duration::from_millis(overhead_ms),
            BUDGET,
            20,
        );
        let least = capacity as f64 / ((service_ms + overhead_ms) as f64 / 1000.0);
        let most = capacity as f64 / (service_ms as f64 / 1000.0);
        let case = format!("capacity {most}/s at {service_ms} + {overhead_ms} ms: {run:?}");
        assert!((0.7 * least..=1.1 * most).contains(&run.rate), "{case}");
        assert!(run.failed_from_start < 0.15, "{case}");
    }
}

#[test]
fn random_failures_that_start_mid_run_cost_a_moment_not_the_budget() {
    // Five seconds without failures teach the controller that low levels do
    // not fail; then a third of all requests fail, at every level alike.
    for rtt_ms in [5, 50] {
        let run = run(
            Model::RandomAfter(0.3, Duration::from_secs(5)),
            Duration::from_millis(rtt_ms),
            BUDGET,
            20,
        );
        assert!(run.rate >= 0.95 * PACED, "at {rtt_ms} ms: {run:?}");
    }
}
