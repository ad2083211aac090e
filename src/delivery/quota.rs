//! Updates Target accepted in the last 24 hours, in one-minute buckets: what
//! this pod spent of Adobe's rolling daily cap (contract section 9).

/// Minutes in the rolling window.
const MINUTES: usize = 24 * 60;

/// A rolling 24-hour count with one-minute resolution.
#[derive(Debug, Clone)]
pub struct RollingDay {
    /// Count per minute slot, and the minute it belongs to.
    slots: Vec<(u64, u64)>,
}

impl Default for RollingDay {
    fn default() -> Self {
        RollingDay {
            slots: vec![(u64::MAX, 0); MINUTES],
        }
    }
}

impl RollingDay {
    /// Counts `n` updates at `minute` (minutes since any fixed origin).
    pub fn add(&mut self, minute: u64, n: u64) {
        let slot = &mut self.slots[(minute % MINUTES as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 += n;
    }

    /// Updates in the 24 hours up to and including `minute`.
    pub fn total(&self, minute: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(at, _)| *at <= minute && minute - *at < MINUTES as u64)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_roll_off_after_24_hours() {
        let mut day = RollingDay::default();
        day.add(10, 5);
        day.add(11, 7);
        assert_eq!(day.total(11), 12);
        assert_eq!(day.total(10 + 1439), 12);
        assert_eq!(day.total(10 + 1440), 7, "minute 10 left the window");
        assert_eq!(day.total(11 + 1440), 0);
        // A slot reused a day later starts from zero.
        day.add(10 + 1440, 1);
        assert_eq!(
            day.total(10 + 1440),
            1 + 7,
            "minute 11 is still in the window"
        );
        assert_eq!(day.total(11 + 1440), 1);
    }
}
