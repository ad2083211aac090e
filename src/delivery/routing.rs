//! Single updates or bulk batches (`bulk.mode`, contract section 12): the
//! decision and its inputs, as plain data.
//!
//! - `off`: single updates only. `always`: batches only (backfills).
//! - `overflow`: single updates while they can keep up, batches when they
//!   cannot. Single updates are real time but capped twice: by the pod's
//!   share of `rate_limit.per_second`, and by its share of Adobe's one million
//!   per rolling 24 hours (`rate_limit.daily_quota`). Batches carry up to
//!   500,000 rows per call, 50 calls a minute, but Target takes minutes to
//!   apply them. With `T = bulk.overflow_after_seconds` and `r` the pod's
//!   budget per second, the pod moves to batches when
//!   - the backlog would take longer than `T` to send as single updates
//!     (`backlog > r·T`), or
//!   - the rest of its daily quota would run out within `T` at the budget
//!     (`quota left < r·T`);
//!
//!   and comes back when both have recovered with a margin (backlog below
//!   `r·T/2`, quota left above `2·r·T`), so it does not flap at the edge.

use crate::ops::config::BulkMode;

/// Where updates go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// One request per (coalesced) update.
    Single,
    /// Rows of a bulk batch.
    Batch,
}

impl Route {
    /// The label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Single => "single",
            Route::Batch => "batch",
        }
    }
}

/// What the overflow decision looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteInputs {
    /// Events this pod owns and has not finished: read and waiting, plus
    /// not yet read (Kafka lag).
    pub backlog: u64,
    /// The pod's share of `rate_limit.per_second`.
    pub per_second: f64,
    /// The pod's share of `rate_limit.daily_quota` minus what it spent in
    /// the last 24 hours (negative when over).
    pub quota_left: f64,
}

/// The routing state: the mode and, in overflow, where it stands.
#[derive(Debug, Clone)]
pub struct Router {
    mode: BulkMode,
    horizon_seconds: f64,
    current: Route,
}

impl Router {
    /// A router for `mode`; `overflow_after` is `bulk.overflow_after_seconds`.
    pub fn new(mode: BulkMode, overflow_after_seconds: u64) -> Router {
        Router {
            mode,
            horizon_seconds: overflow_after_seconds as f64,
            current: match mode {
                BulkMode::Always => Route::Batch,
                BulkMode::Off | BulkMode::Overflow => Route::Single,
            },
        }
    }

    /// The route in force.
    pub fn route(&self) -> Route {
        self.current
    }

    /// Whether the inputs matter (overflow mode).
    pub fn adapts(&self) -> bool {
        self.mode == BulkMode::Overflow
    }

    /// Re-decides from `inputs`; returns the new route when it changed.
    pub fn update(&mut self, inputs: RouteInputs) -> Option<Route> {
        if !self.adapts() {
            return None;
        }
        let reach = inputs.per_second.max(0.0) * self.horizon_seconds;
        let backlog = inputs.backlog as f64;
        let next = match self.current {
            Route::Single if backlog > reach || inputs.quota_left < reach => Route::Batch,
            Route::Batch if backlog < reach / 2.0 && inputs.quota_left > 2.0 * reach => {
                Route::Single
            }
            same => same,
        };
        (next != self.current).then(|| {
            self.current = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(backlog: u64, quota_left: f64) -> RouteInputs {
        RouteInputs {
            backlog,
            per_second: 10.0,
            quota_left,
        }
    }

    #[test]
    fn off_and_always_never_change_whatever_the_inputs() {
        let mut off = Router::new(BulkMode::Off, 60);
        let mut always = Router::new(BulkMode::Always, 60);
        for (backlog, quota) in [(0, 1e9), (1_000_000, -5.0), (10, 0.0)] {
            assert_eq!(off.update(inputs(backlog, quota)), None);
            assert_eq!(always.update(inputs(backlog, quota)), None);
        }
        assert_eq!(off.route(), Route::Single);
        assert_eq!(always.route(), Route::Batch);
    }

    #[test]
    fn overflow_moves_to_batches_when_the_backlog_outgrows_the_horizon_and_back_with_a_margin() {
        // Budget 10/s, horizon 60 s: single updates can clear 600 events.
        let mut router = Router::new(BulkMode::Overflow, 60);
        assert_eq!(router.update(inputs(600, 1e6)), None);
        assert_eq!(router.update(inputs(601, 1e6)), Some(Route::Batch));
        // Between half and the full reach it stays where it is.
        assert_eq!(router.update(inputs(400, 1e6)), None);
        assert_eq!(router.route(), Route::Batch);
        assert_eq!(router.update(inputs(299, 1e6)), Some(Route::Single));
        assert_eq!(router.update(inputs(500, 1e6)), None);
    }

    #[test]
    fn overflow_moves_to_batches_before_the_daily_quota_runs_out_and_back_when_it_recovers() {
        let mut router = Router::new(BulkMode::Overflow, 60);
        assert_eq!(router.update(inputs(0, 600.0)), None);
        assert_eq!(router.update(inputs(0, 599.0)), Some(Route::Batch));
        assert_eq!(
            router.update(inputs(0, 1_200.0)),
            None,
            "not yet twice the reach"
        );
        assert_eq!(router.update(inputs(0, 1_201.0)), Some(Route::Single));
        // Over quota (more spent than the share): batches.
        assert_eq!(router.update(inputs(0, -3.0)), Some(Route::Batch));
    }

    #[test]
    fn a_pod_without_budget_sends_everything_it_has_as_batches() {
        let mut router = Router::new(BulkMode::Overflow, 60);
        let none = RouteInputs {
            backlog: 1,
            per_second: 0.0,
            quota_left: 0.0,
        };
        assert_eq!(router.update(none), Some(Route::Batch));
    }
}
