//! The fault model: what can go wrong on the update path, as plain data, and the pure
//! function that draws one request's fate from it.
//!
//! Hang, reset and the injected statuses share one draw: `[0, hang)` hangs, the next
//! `reset` resets the connection, then each [`Failure`] takes its own slice in order,
//! and the rest passes. Their probabilities therefore add up to at most 1. A request
//! that passes may still be shed by [`Overload`], more often the more requests are in
//! flight ([`Faults::draw_under_load`]). The rate limit is stateful and lives in
//! [`super::rate`]; latency applies to every request that is not rate limited.
//! The bulk path has faults of its own, [`BulkFaults`], carried in [`Faults::bulk`].

use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use super::bulk::BulkFaults;

/// Every fault the simulator injects on the update path. The default injects none.
///
/// As JSON (`PUT /_sim/faults`), every field is optional:
/// `{"failures":[{"status":503,"probability":0.3,"retry_after":{"seconds":2}}],
///   "latency":{"fixed_ms":20,"jitter_ms":5},"hang_probability":0.01,
///   "reset_probability":0.01,"rate_limit":{"per_second":10.0,"burst":10},
///   "overload":{"in_flight":20},
///   "bulk":{"completion_delay_ms":200,"stuck_probability":0.1}}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Statuses answered instead of accepting, each with its own probability.
    pub failures: Vec<Failure>,
    /// Delay added before every update request that passed the rate limit is answered.
    pub latency: Latency,
    /// Probability that a request is held unanswered for an hour (a client timeout).
    pub hang_probability: f64,
    /// Probability that the connection is reset (TCP RST) instead of answered.
    pub reset_probability: f64,
    /// Throughput that Target enforces; above it requests get 503 with `Retry-After: 1`.
    pub rate_limit: Option<RateLimit>,
    /// Target's capacity: past it, requests get 503 (no `Retry-After`) the more
    /// often the further past it they arrive.
    pub overload: Option<Overload>,
    /// The bulk path's faults; by default only Adobe's 50 calls a minute.
    pub bulk: BulkFaults,
    /// Update requests naming one of these profiles (an `mbox3rdPartyId` or
    /// `mboxPC` value) are answered 503, after every other check: one
    /// customer whose updates fail while the others go through.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failing_ids: Vec<String>,
}

/// One injected failure: answer `status` with probability `probability`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// An HTTP status from 400 to 599.
    pub status: u16,
    /// From 0 to 1.
    pub probability: f64,
    /// The `Retry-After` header sent with the failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<RetryAfter>,
}

/// A `Retry-After` header value, in either of the two forms HTTP allows.
///
/// JSON: `{"seconds":5}` or `{"http_date":5}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfter {
    /// `Retry-After: N` (delay in seconds).
    Seconds(u64),
    /// `Retry-After: <HTTP date>` set N seconds after the response.
    HttpDate(u64),
}

/// Added latency: `fixed_ms` plus a uniform draw from `0..=jitter_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// Always added.
    pub fixed_ms: u64,
    /// Upper bound of the uniform random part.
    pub jitter_ms: u64,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second; more than 0.
    pub per_second: f64,
    /// Bucket size; at least 1.
    pub burst: u32,
}

/// An overloaded Target: it works on `in_flight` update requests at once, and a
/// request that arrives with `n` in flight (itself included), `n` past that, is
/// answered 503 without `Retry-After` with probability `1 - in_flight / n`: at
/// twice the capacity half the requests fail, at four times three quarters. The
/// shed request still waits out the latency, as a queued request would.
///
/// A capacity in requests per second is `in_flight` divided by the latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Update requests Target works on at once; at least 1.
    pub in_flight: u64,
}

impl Overload {
    /// The probability that a request arriving with `in_flight` requests in
    /// flight (itself included) is shed.
    pub fn shed_probability(&self, in_flight: u64) -> f64 {
        if in_flight <= self.in_flight {
            0.0
        } else {
            1.0 - self.in_flight as f64 / in_flight as f64
        }
    }
}

/// Why a [`Faults`] value cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidFaults {
    /// A probability outside `0..=1` or not a number.
    #[error("probability {0} is not between 0 and 1")]
    Probability(f64),
    /// Hang, reset and failure probabilities add up to more than 1.
    #[error("hang, reset and failure probabilities add up to {0}, more than 1")]
    ProbabilitySum(f64),
    /// An injected status that is not an HTTP error.
    #[error("status {0} is not between 400 and 599")]
    Status(u16),
    /// A rate limit of zero, negative or not a number, or a burst of 0.
    #[error("rate limit needs per_second > 0 and burst >= 1")]
    RateLimit,
    /// An overload capacity of 0.
    #[error("overload needs in_flight >= 1")]
    Overload,
}

/// What happens to one update request, drawn by [`Faults::draw`].
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Processed normally after `delay`.
    Pass {
        /// Injected latency.
        delay: Duration,
    },
    /// Answered with an injected failure after `delay`.
    Fail {
        /// Injected latency.
        delay: Duration,
        /// The failure drawn.
        failure: Failure,
    },
    /// Never answered (until the client gives up or the simulator stops).
    Hang,
    /// The connection is closed with a reset, without any answer.
    Reset,
}

impl Faults {
    /// No fault at all (the bulk path still enforces Adobe's 50 calls a minute, which
    /// is how Target behaves rather than a fault).
    pub fn none() -> Self {
        Self::default()
    }

    /// Checks the ranges documented on each field.
    pub fn validate(&self) -> Result<(), InvalidFaults> {
        let mut sum = check_probability(self.hang_probability)?;
        sum += check_probability(self.reset_probability)?;
        for failure in &self.failures {
            if !(400..=599).contains(&failure.status) {
                return Err(InvalidFaults::Status(failure.status));
            }
            sum += check_probability(failure.probability)?;
        }
        if sum > 1.0 + 1e-9 {
            return Err(InvalidFaults::ProbabilitySum(sum));
        }
        if let Some(rate) = &self.rate_limit {
            if !(rate.per_second > 0.0 && rate.per_second.is_finite()) || rate.burst == 0 {
                return Err(InvalidFaults::RateLimit);
            }
        }
        if self
            .overload
            .is_some_and(|overload| overload.in_flight == 0)
        {
            return Err(InvalidFaults::Overload);
        }
        self.bulk.validate()
    }

    /// Draws the fate of one request. Pure apart from `rng`.
    pub fn draw(&self, rng: &mut impl Rng) -> Fate {
        let delay = self.latency.draw(rng);
        let no_outcome = self.hang_probability <= 0.0
            && self.reset_probability <= 0.0
            && self.failures.is_empty();
        if no_outcome {
            return Fate::Pass { delay };
        }
        let u: f64 = rng.random();
        let mut edge = self.hang_probability;
        if u < edge {
            return Fate::Hang;
        }
        edge += self.reset_probability;
        if u < edge {
            return Fate::Reset;
        }
        for failure in &self.failures {
            edge += failure.probability;
            if u < edge {
                return Fate::Fail {
                    delay,
                    failure: failure.clone(),
                };
            }
        }
        Fate::Pass { delay }
    }
}

impl Faults {
    /// Draws the fate of one request that arrived with `in_flight` update requests
    /// in flight (itself included): [`Faults::draw`], then, if it passes, the
    /// [`Overload`] may shed it as a 503. Pure apart from `rng`.
    pub fn draw_under_load(&self, in_flight: u64, rng: &mut impl Rng) -> Fate {
        match (self.draw(rng), self.overload) {
            (Fate::Pass { delay }, Some(overload)) => {
                let shed = overload.shed_probability(in_flight);
                if shed > 0.0 && rng.random_bool(shed.min(1.0)) {
                    Fate::Fail {
                        delay,
                        failure: Failure::new(503, shed),
                    }
                } else {
                    Fate::Pass { delay }
                }
            }
            (fate, _) => fate,
        }
    }
}

fn check_probability(p: f64) -> Result<f64, InvalidFaults> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(InvalidFaults::Probability(p))
    }
}

impl Latency {
    /// A fixed latency without jitter.
    pub fn fixed_ms(fixed_ms: u64) -> Self {
        Self {
            fixed_ms,
            jitter_ms: 0,
        }
    }

    fn draw(&self, rng: &mut impl Rng) -> Duration {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            rng.random_range(0..=self.jitter_ms)
        };
        Duration::from_millis(self.fixed_ms.saturating_add(jitter))
    }
}

impl Failure {
    /// `status` with probability `probability`, without `Retry-After`.
    pub fn new(status: u16, probability: f64) -> Self {
        Self {
            status,
            probability,
            retry_after: None,
        }
    }

    /// The same failure, answered with a `Retry-After` header.
    pub fn with_retry_after(mut self, retry_after: RetryAfter) -> Self {
        self.retry_after = Some(retry_after);
        self
    }
}

impl RetryAfter {
    /// The header value for a response sent at `now`.
    pub fn header_value(&self, now: SystemTime) -> String {
        match *self {
            RetryAfter::Seconds(seconds) => seconds.to_string(),
            RetryAfter::HttpDate(seconds) => {
                httpdate::fmt_http_date(now + Duration::from_secs(seconds))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn tally(faults: &Faults, draws: usize) -> (usize, usize, usize) {
        let mut rng = SmallRng::seed_from_u64(7);
        let (mut pass, mut fail, mut hang) = (0, 0, 0);
        for _ in 0..draws {
            match faults.draw(&mut rng) {
                Fate::Pass { .. } => pass += 1,
                Fate::Fail { .. } => fail += 1,
                Fate::Hang | Fate::Reset => hang += 1,
            }
        }
        (pass, fail, hang)
    }

    #[test]
    fn no_faults_always_pass_without_delay() {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..1000 {
            assert_eq!(
                Faults::none().draw(&mut rng),
                Fate::Pass {
                    delay: Duration::ZERO
                }
            );
        }
    }

    #[test]
    fn failure_and_hang_frequencies_follow_their_probabilities() {
        let faults = Faults {
            failures: vec![Failure::new(503, 0.3)],
            hang_probability: 0.1,
            ..Faults::none()
        };
        let (pass, fail, hang) = tally(&faults, 100_000);
        assert!((29_000..31_000).contains(&fail), "fail {fail}");
        assert!((9_300..10_700).contains(&hang), "hang {hang}");
        assert_eq!(pass + fail + hang, 100_000);
    }

    #[test]
    fn resets_take_their_own_share_between_hangs_and_failures() {
        let faults = Faults {
            failures: vec![Failure::new(503, 0.2)],
            hang_probability: 0.1,
            reset_probability: 0.3,
            ..Faults::none()
        };
        let mut rng = SmallRng::seed_from_u64(5);
        let (mut resets, mut hangs, mut fails) = (0, 0, 0);
        for _ in 0..100_000 {
            match faults.draw(&mut rng) {
                Fate::Reset => resets += 1,
                Fate::Hang => hangs += 1,
                Fate::Fail { .. } => fails += 1,
                Fate::Pass { .. } => {}
            }
        }
        assert!((29_000..31_000).contains(&resets), "resets {resets}");
        assert!((9_300..10_700).contains(&hangs), "hangs {hangs}");
        assert!((19_000..21_000).contains(&fails), "fails {fails}");
        let over = Faults {
            reset_probability: 0.95,
            ..faults
        };
        assert!(matches!(
            over.validate(),
            Err(InvalidFaults::ProbabilitySum(_))
        ));
    }

    #[test]
    fn several_failures_each_take_their_own_share() {
        let faults = Faults {
            failures: vec![Failure::new(503, 0.2), Failure::new(500, 0.5)],
            ..Faults::none()
        };
        let mut rng = SmallRng::seed_from_u64(3);
        let mut by_status = std::collections::BTreeMap::new();
        for _ in 0..100_000 {
            if let Fate::Fail { failure, .. } = faults.draw(&mut rng) {
                *by_status.entry(failure.status).or_insert(0) += 1;
            }
        }
        assert!((19_000..21_000).contains(&by_status[&503]));
        assert!((49_000..51_000).contains(&by_status[&500]));
    }

    #[test]
    fn certain_failure_always_fails_and_zero_never_does() {
        let always = Faults {
            failures: vec![Failure::new(500, 1.0)],
            ..Faults::none()
        };
        assert_eq!(tally(&always, 1000), (0, 1000, 0));
        let never = Faults {
            failures: vec![Failure::new(500, 0.0)],
            ..Faults::none()
        };
        assert_eq!(tally(&never, 1000), (1000, 0, 0));
    }

    #[test]
    fn latency_stays_within_fixed_plus_jitter() {
        let faults = Faults {
            latency: Latency {
                fixed_ms: 20,
                jitter_ms: 5,
            },
            ..Faults::none()
        };
        let mut rng = SmallRng::seed_from_u64(9);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let Fate::Pass { delay } = faults.draw(&mut rng) else {
                panic!("no failure configured")
            };
            seen.insert(delay.as_millis());
        }
        assert_eq!(seen, (20..=25).collect());
    }

    #[test]
    fn validation_rejects_impossible_settings() {
        let with = |f: Faults| f.validate();
        let hang = |p| Faults {
            hang_probability: p,
            ..Faults::none()
        };
        assert_eq!(with(hang(1.5)), Err(InvalidFaults::Probability(1.5)));
        assert!(with(hang(f64::NAN)).is_err());
        let over = Faults {
            failures: vec![Failure::new(503, 0.6)],
            hang_probability: 0.6,
            ..Faults::none()
        };
        assert!(matches!(with(over), Err(InvalidFaults::ProbabilitySum(_))));
        let ok_status = Faults {
            failures: vec![Failure::new(200, 0.1)],
            ..Faults::none()
        };
        assert_eq!(with(ok_status), Err(InvalidFaults::Status(200)));
        let no_burst = Faults {
            rate_limit: Some(RateLimit {
                per_second: 1.0,
                burst: 0,
            }),
            ..Faults::none()
        };
        assert_eq!(with(no_burst), Err(InvalidFaults::RateLimit));
        assert_eq!(with(Faults::none()), Ok(()));
    }

    #[test]
    fn overload_sheds_more_the_further_past_the_capacity() {
        let overload = Overload { in_flight: 20 };
        let table = [(1, 0.0), (20, 0.0), (25, 0.2), (40, 0.5), (80, 0.75)];
        for (in_flight, shed) in table {
            let p = overload.shed_probability(in_flight);
            assert!((p - shed).abs() < 1e-9, "{in_flight} in flight: {p}");
        }
    }

    #[test]
    fn overloaded_requests_are_shed_as_503_at_their_share_and_others_pass() {
        let faults = Faults {
            overload: Some(Overload { in_flight: 10 }),
            latency: Latency::fixed_ms(5),
            ..Faults::none()
        };
        let mut rng = SmallRng::seed_from_u64(11);
        let shed_at = |in_flight: u64, rng: &mut SmallRng| {
            (0..100_000)
                .filter(|_| match faults.draw_under_load(in_flight, rng) {
                    Fate::Fail { delay, failure } => {
                        assert_eq!((failure.status, failure.retry_after), (503, None));
                        assert_eq!(delay, Duration::from_millis(5), "shed after the latency");
                        true
                    }
                    _ => false,
                })
                .count()
        };
        assert_eq!(shed_at(10, &mut rng), 0, "at the capacity nothing is shed");
        let twice = shed_at(20, &mut rng);
        assert!(
            (49_000..51_000).contains(&twice),
            "twice the capacity: {twice}"
        );
        let four = shed_at(40, &mut rng);
        assert!((74_000..76_000).contains(&four), "four times: {four}");
        // Other faults come first: a certain failure is never counted twice.
        let failing = Faults {
            failures: vec![Failure::new(500, 1.0)],
            ..faults.clone()
        };
        let Fate::Fail { failure, .. } = failing.draw_under_load(40, &mut rng) else {
            panic!("the injected failure")
        };
        assert_eq!(failure.status, 500);
        let zero = Faults {
            overload: Some(Overload { in_flight: 0 }),
            ..Faults::none()
        };
        assert_eq!(zero.validate(), Err(InvalidFaults::Overload));
    }

    #[test]
    fn retry_after_renders_seconds_or_a_date_in_the_future() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(RetryAfter::Seconds(5).header_value(now), "5");
        let date = RetryAfter::HttpDate(60).header_value(now);
        assert_eq!(
            httpdate::parse_http_date(&date).ok(),
            Some(now + Duration::from_secs(60))
        );
    }

    #[test]
    fn faults_round_trip_through_json() {
        let json = r#"{"failures":[{"status":503,"probability":0.3,"retry_after":{"http_date":2}}],
            "latency":{"fixed_ms":20},"rate_limit":{"per_second":5.0,"burst":2},
            "overload":{"in_flight":20}}"#;
        let faults: Faults = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(
            faults.failures[0].retry_after,
            Some(RetryAfter::HttpDate(2))
        );
        assert_eq!(faults.latency, Latency::fixed_ms(20));
        assert_eq!(faults.overload, Some(Overload { in_flight: 20 }));
        let back: Faults =
            serde_json::from_str(&serde_json::to_string(&faults).expect("serializes"))
                .expect("parses");
        assert_eq!(back, faults);
    }
}
