//! Retry delays: exponential from `delivery.retry_initial_ms`, doubling, capped
//! at `delivery.retry_max_ms` (the backoff crate's sequence), with full jitter
//! (a uniform delay between zero and that bound), so retrying pods spread out.

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;
use rand::Rng;
use std::time::Duration;

/// The retry schedule settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first bound.
    pub initial: Duration,
    /// The largest bound.
    pub max: Duration,
}

impl RetryPolicy {
    /// A fresh schedule for one request.
    pub fn schedule(&self) -> RetrySchedule {
        RetrySchedule {
            bounds: ExponentialBackoff {
                current_interval: self.initial,
                initial_interval: self.initial,
                randomization_factor: 0.0,
                multiplier: 2.0,
                max_interval: self.max,
                max_elapsed_time: None,
                ..ExponentialBackoff::default()
            },
        }
    }
}

/// The delays of one request's retries.
#[derive(Debug)]
pub struct RetrySchedule {
    bounds: ExponentialBackoff,
}

impl RetrySchedule {
    /// The upper bound of the next delay (no jitter): initial, ×2, ..., max.
    pub fn next_bound(&mut self) -> Duration {
        self.bounds
            .next_backoff()
            .unwrap_or(self.bounds.max_interval)
    }

    /// The next delay: uniform in `[0, bound]`.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.next_bound();
        let nanos = rand::rng().random_range(0..=bound.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_double_from_the_initial_delay_up_to_the_cap() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let mut schedule = policy.schedule();
        let bounds: Vec<u128> = (0..7).map(|_| schedule.next_bound().as_millis()).collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn delays_are_full_jitter_below_the_bound() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(100),
        };
        let mut schedule = policy.schedule();
        let delays: Vec<Duration> = (0..200).map(|_| schedule.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(50)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(50)));
    }
}
