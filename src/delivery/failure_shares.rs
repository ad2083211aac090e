//! Whether Target's failures grow with the load the pod puts on it: the share
//! of failed requests by the concurrency each request met. The adaptive limit
//! needs it to tell an overloaded Target, which fails more requests the more
//! are in flight, from a Target that fails a share of requests whatever the
//! load (a bad edge node, a deploy, a load balancer), where shrinking the
//! limit only costs throughput.
//!
//! Every answer is tallied under its *level*: the pod's requests in flight
//! when it was sent, itself included. Even a pod held back by its budget
//! sends at several levels (requests come and go), so the comparison needs no
//! experiment. A level remembers about its last [`MEMORY`] answers (older ones
//! weigh less and less), so it describes the last time the pod sent at that
//! level, however long ago; but the levels asked about count only if answered
//! within [`RECENT`]. [`FailureShares::worse`] answers whether the requests at
//! a range of levels failed significantly more often than those at all lower
//! levels: a one-sided two-proportion z-test of at least [`Z`] deviations, a
//! gap of at least [`MIN_GAP`] between the shares, at least [`MIN_FAILURES`]
//! failures in the range and [`MIN_BELOW`] answers below it, so a handful of
//! unlucky answers proves nothing.
//!
//! Levels up to 32 are tallied one by one; above, levels within 10% of each
//! other share a tally, so the table stays small for any `max_in_flight`.
//!
//! What this cannot see: a Target whose failures follow the pod's *rate* over
//! a long window (a per-second quota that answers 503 without `Retry-After`)
//! fails requests at every level alike while the pod's rate is set by its
//! budget; only the explicit signals (429, `Retry-After`, timeouts, latency)
//! shrink the limit there.

use std::ops::RangeInclusive;
use std::time::Duration;
use tokio::time::Instant;

/// A level remembers about this many answers.
const MEMORY: f64 = 200.0;
/// Levels asked about count only if answered this recently.
pub const RECENT: Duration = Duration::from_secs(5);
/// Deviations the shares must be apart (one-sided; about 2 in 10,000 by chance).
const Z: f64 = 3.5;
/// The shares must also be this far apart. An overloaded Target sheds a
/// share that grows by only a few points per level just past its capacity
/// (1 - capacity/level: 5% at 21 for 20); with a 5-point gap the pod settled
/// two or three levels past it (108-114% of the capacity in the overload
/// bench), with 3 points at most one or two (103-110%).
const MIN_GAP: f64 = 0.03;
/// Failures the levels asked about need before they can be called worse.
const MIN_FAILURES: f64 = 5.0;
/// Answers at lower levels needed to compare with.
const MIN_BELOW: f64 = 20.0;
/// With fewer answers at lower levels, more failures above are
/// [`Trend::Unclear`] rather than [`Trend::Flat`].
const ENOUGH_BELOW: f64 = 50.0;
/// Levels tallied one by one.
const EXACT_LEVELS: usize = 32;
/// Above them, one tally per step of this ratio.
const LEVEL_RATIO: f64 = 1.1;

/// The answers of one level (or one group of levels), faded.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    answers: f64,
    failures: f64,
    /// When a request sent at this level was last answered.
    seen_at: Option<Instant>,
}

/// How failures at some levels compare with those at lower levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    /// Significantly more failures.
    Grows,
    /// More failures, but too few answers at lower levels to tell: only
    /// sending at a lower level can tell.
    Unclear,
    /// Not significantly more failures.
    Flat,
}

/// Failure shares by level.
#[derive(Debug, Clone)]
pub struct FailureShares {
    tallies: Vec<Tally>,
}

/// The tally that holds `level` (levels start at 1).
fn slot(level: usize) -> usize {
    let level = level.max(1);
    if level <= EXACT_LEVELS {
        level
    } else {
        let steps = ((level as f64 / EXACT_LEVELS as f64).ln() / LEVEL_RATIO.ln()).ceil();
        EXACT_LEVELS + steps as usize
    }
}

impl FailureShares {
    /// Room for levels up to `max_level`.
    pub fn new(max_level: usize) -> FailureShares {
        FailureShares {
            tallies: vec![Tally::default(); slot(max_level) + 1],
        }
    }

    /// A request sent at `level` was answered at `now`, failed or not.
    pub fn record(&mut self, level: usize, failed: bool, now: Instant) {
        let index = slot(level).min(self.tallies.len() - 1);
        let tally = &mut self.tallies[index];
        let keep = 1.0 - 1.0 / MEMORY;
        tally.answers = tally.answers * keep + 1.0;
        tally.failures = tally.failures * keep + f64::from(u8::from(failed));
        tally.seen_at = Some(now);
    }

    /// Whether requests sent at `levels` (those answered within [`RECENT`]
    /// of `now`) failed significantly more often than all requests sent at
    /// lower levels.
    pub fn worse(&self, levels: RangeInclusive<usize>, now: Instant) -> bool {
        self.trend(levels, now) == Trend::Grows
    }

    /// How the failures at `levels` (those answered within [`RECENT`] of
    /// `now`) compare with those at all lower levels.
    pub fn trend(&self, levels: RangeInclusive<usize>, now: Instant) -> Trend {
        let last = self.tallies.len() - 1;
        let (first, end) = (
            slot(*levels.start()).min(last),
            slot(*levels.end()).min(last),
        );
        if end < first {
            return Trend::Flat;
        }
        let recent = |tally: &&Tally| {
            tally
                .seen_at
                .is_some_and(|at| now.saturating_duration_since(at) <= RECENT)
        };
        let (above, above_failed) = sum(self.tallies[first..=end].iter().filter(recent));
        let (below, below_failed) = sum(self.tallies[..first].iter());
        if above_failed < MIN_FAILURES {
            return Trend::Flat;
        }
        let share_above = above_failed / above;
        let share_below = if below > 0.0 {
            below_failed / below
        } else {
            0.0
        };
        if share_above - share_below < MIN_GAP {
            return Trend::Flat;
        }
        let pooled = (above_failed + below_failed) / (above + below);
        let deviation = (pooled * (1.0 - pooled) * (1.0 / above + 1.0 / below.max(1.0))).sqrt();
        if below >= MIN_BELOW && deviation > 0.0 && (share_above - share_below) / deviation >= Z {
            Trend::Grows
        } else if below < ENOUGH_BELOW {
            Trend::Unclear
        } else {
            Trend::Flat
        }
    }
}

/// Answers and failures of some tallies together.
fn sum<'a>(tallies: impl Iterator<Item = &'a Tally>) -> (f64, f64) {
    tallies.fold((0.0, 0.0), |(answers, failures), tally| {
        (answers + tally.answers, failures + tally.failures)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `answers` answers sent at `level`, every `1/share`-th one failed.
    fn answer(shares: &mut FailureShares, level: usize, answers: u32, share: f64, now: Instant) {
        let mut owed = 0.0;
        for _ in 0..answers {
            owed += share;
            let failed = owed >= 1.0 - 1e-9;
            if failed {
                owed -= 1.0;
            }
            shares.record(level, failed, now);
        }
    }

    #[test]
    fn levels_are_exact_up_to_32_and_grouped_by_a_tenth_above() {
        let slots: Vec<usize> = [1, 2, 31, 32, 33, 35, 36, 64, 65_536]
            .into_iter()
            .map(slot)
            .collect();
        assert_eq!(slots, [1, 2, 31, 32, 33, 33, 34, 40, 112]);
        assert_eq!(slot(0), 1, "no level is below one");
    }

    /// What `worse(range)` says after each level answered with its share.
    #[test]
    fn failures_count_as_load_only_when_they_grow_with_the_level() {
        let now = Instant::now();
        // (case, (level, answers, share) recorded, levels asked about, trend)
        type Case = (
            &'static str,
            Vec<(usize, u32, f64)>,
            RangeInclusive<usize>,
            Trend,
        );
        let table: Vec<Case> = vec![
            (
                "the same 30% everywhere",
                vec![(1, 200, 0.3), (2, 200, 0.3), (3, 200, 0.3), (4, 200, 0.3)],
                4..=4,
                Trend::Flat,
            ),
            (
                "the same 50% everywhere",
                vec![(1, 200, 0.5), (2, 200, 0.5), (3, 200, 0.5)],
                3..=3,
                Trend::Flat,
            ),
            (
                "none below, a third at the top",
                vec![(1, 200, 0.0), (2, 200, 0.0), (3, 200, 0.33)],
                3..=3,
                Trend::Grows,
            ),
            (
                "10% below, 40% at the top",
                vec![(10, 200, 0.1), (18, 200, 0.1), (20, 100, 0.4)],
                19..=20,
                Trend::Grows,
            ),
            (
                "3 points more at the top is within the noise",
                vec![(1, 200, 0.1), (2, 200, 0.1), (3, 200, 0.13)],
                3..=3,
                Trend::Flat,
            ),
            (
                "four failures prove nothing",
                vec![(1, 200, 0.0), (2, 8, 0.5)],
                2..=2,
                Trend::Flat,
            ),
            (
                "nothing below to compare with",
                vec![(4, 200, 0.5)],
                4..=4,
                Trend::Unclear,
            ),
            (
                "nothing answered in the range",
                vec![(1, 200, 0.0), (2, 200, 0.0)],
                3..=4,
                Trend::Flat,
            ),
            (
                "fewer failures at the top",
                vec![(1, 200, 0.5), (2, 200, 0.1)],
                2..=2,
                Trend::Flat,
            ),
            (
                "a few answers below, many failures above",
                vec![(1, 10, 0.0), (2, 200, 0.5)],
                2..=2,
                Trend::Unclear,
            ),
        ];
        for (case, answers, range, expected) in table {
            let mut shares = FailureShares::new(256);
            for (level, count, share) in answers {
                answer(&mut shares, level, count, share, now);
            }
            assert_eq!(shares.trend(range.clone(), now), expected, "{case}");
            assert_eq!(shares.worse(range, now), expected == Trend::Grows, "{case}");
        }
    }

    #[test]
    fn a_level_remembers_its_last_answers_not_its_first() {
        let now = Instant::now();
        let mut shares = FailureShares::new(16);
        answer(&mut shares, 1, 200, 0.0, now);
        answer(&mut shares, 2, 1000, 0.5, now);
        assert!(shares.worse(2..=2, now));
        // Target recovered: the last thousand answers at level 2 carry no failure.
        answer(&mut shares, 2, 1000, 0.0, now);
        assert!(!shares.worse(2..=2, now));
    }

    #[test]
    fn higher_levels_count_only_while_recent_and_lower_ones_always() {
        let start = Instant::now();
        let mut shares = FailureShares::new(16);
        answer(&mut shares, 1, 200, 0.0, start);
        answer(&mut shares, 2, 200, 0.4, start);
        assert!(shares.worse(2..=2, start + RECENT));
        assert!(
            !shares.worse(2..=2, start + RECENT + Duration::from_millis(1)),
            "an old verdict on a higher level does not hold the limit back for ever"
        );
        answer(&mut shares, 2, 200, 0.4, start + RECENT * 3);
        assert!(
            shares.worse(2..=2, start + RECENT * 3),
            "what lower levels showed long ago still counts"
        );
    }
}
