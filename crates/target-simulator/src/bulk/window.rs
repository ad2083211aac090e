//! Adobe's limit of calls a minute on the bulk path, as a sliding window: a call is
//! admitted when fewer than the limit were admitted in the 60 s before it. Time is
//! passed in so that tests control it. Separate from the update path's token bucket.

use std::collections::VecDeque;
use std::time::Duration;

/// The window's length.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// The times of the calls admitted in the last [`WINDOW`].
#[derive(Debug, Default)]
pub(crate) struct CallWindow {
    admitted: VecDeque<Duration>,
}

impl CallWindow {
    /// Admits (and records) a call at `now` unless `limit` calls were admitted in the
    /// window `(now - 60 s, now]`; a limit of 0 admits everything. Refused calls are not
    /// recorded. A `now` earlier than a previous one counts as that previous time.
    pub(crate) fn try_call(&mut self, now: Duration, limit: u32) -> bool {
        let now = self.admitted.back().map_or(now, |&last| last.max(now));
        while let Some(&oldest) = self.admitted.front() {
            if oldest + WINDOW <= now {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
        if limit == 0 {
            return true;
        }
        if self.admitted.len() < limit as usize {
            self.admitted.push_back(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_call_after_the_limit_within_a_minute_is_refused() {
        let mut window = CallWindow::default();
        assert!((0..50).all(|i| window.try_call(at(i * 100), 50)));
        assert!(!window.try_call(at(5_000), 50));
        assert!(!window.try_call(at(59_999), 50));
    }

    #[test]
    fn calls_come_back_sixty_seconds_after_they_were_made() {
        let mut window = CallWindow::default();
        assert!(window.try_call(at(0), 2));
        assert!(window.try_call(at(30_000), 2));
        assert!(!window.try_call(at(59_999), 2));
        assert!(window.try_call(at(60_000), 2));
        assert!(!window.try_call(at(89_999), 2));
        assert!(window.try_call(at(90_000), 2));
    }

    #[test]
    fn no_sixty_second_window_ever_holds_more_than_the_limit() {
        let mut window = CallWindow::default();
        let mut admitted = Vec::new();
        for ms in (0..300_000).step_by(250) {
            if window.try_call(at(ms), 7) {
                admitted.push(ms);
            }
        }
        for (i, &start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|&&t| t < start + 60_000)
                .count();
            assert!(within <= 7, "{within} calls from {start} ms");
        }
        // 5 minutes at the limit: 7 per minute.
        assert_eq!(admitted.len(), 35);
    }

    #[test]
    fn a_zero_limit_admits_everything() {
        let mut window = CallWindow::default();
        assert!((0..1000).all(|_| window.try_call(at(0), 0)));
    }
}
