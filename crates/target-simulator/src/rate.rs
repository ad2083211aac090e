//! The token bucket that enforces [`RateLimit`] on the update path, with time passed in
//! so that tests control it.

use std::time::Duration;

use super::faults::RateLimit;

/// `burst` tokens, refilled continuously at `per_second`; one request takes one token.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    /// Time of the last refill, on the caller's clock.
    refilled_at: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub(crate) fn new(limit: RateLimit, now: Duration) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            refilled_at: now,
        }
    }

    /// The limit this bucket enforces.
    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token if one is left at `now`; `false` means the request is over the rate.
    /// A `now` earlier than a previous one counts as no time passing.
    pub(crate) fn try_take(&mut self, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.refilled_at);
        self.refilled_at = self.refilled_at.max(now);
        let burst = f64::from(self.limit.burst);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.limit.per_second).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: f64, burst: u32) -> TokenBucket {
        TokenBucket::new(RateLimit { per_second, burst }, Duration::ZERO)
    }

    fn taken(bucket: &mut TokenBucket, at: Duration, attempts: usize) -> usize {
        (0..attempts).filter(|_| bucket.try_take(at)).count()
    }

    #[test]
    fn a_full_bucket_admits_exactly_the_burst_at_once() {
        let mut b = bucket(10.0, 5);
        assert_eq!(taken(&mut b, Duration::ZERO, 100), 5);
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let mut b = bucket(10.0, 5);
        taken(&mut b, Duration::ZERO, 5);
        assert!(!b.try_take(Duration::from_millis(99)));
        assert!(b.try_take(Duration::from_millis(100)));
        assert!(!b.try_take(Duration::from_millis(150)));
        assert_eq!(taken(&mut b, Duration::from_millis(1100), 100), 5);
    }

    #[test]
    fn over_a_long_run_admissions_match_rate_times_time_plus_burst() {
        let mut b = bucket(20.0, 10);
        let mut admitted = 0;
        // 1000 attempts per second for 10 s.
        for ms in 0..10_000 {
            admitted += taken(&mut b, Duration::from_millis(ms), 1);
        }
        // 10 at start, then 20/s for 9.999 s.
        assert!((208..=210).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn idle_time_never_fills_past_the_burst() {
        let mut b = bucket(100.0, 3);
        assert_eq!(taken(&mut b, Duration::from_secs(3600), 100), 3);
    }

    #[test]
    fn a_clock_going_backwards_grants_nothing() {
        let mut b = bucket(1.0, 1);
        assert!(b.try_take(Duration::from_secs(10)));
        assert!(!b.try_take(Duration::from_secs(5)));
        assert!(!b.try_take(Duration::from_millis(10_500)));
        assert!(b.try_take(Duration::from_secs(11)));
    }

    #[test]
    fn fractional_rates_work() {
        let mut b = bucket(0.5, 1);
        assert!(b.try_take(Duration::ZERO));
        assert!(!b.try_take(Duration::from_millis(1999)));
        assert!(b.try_take(Duration::from_secs(2)));
    }
}
