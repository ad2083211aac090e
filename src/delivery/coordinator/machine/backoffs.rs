//! Profiles waiting out a retry backoff, soonest first: a pure type with no
//! clock of its own (`now` is passed in) and no I/O, so its order is tested
//! on its own.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tokio::time::Instant;

/// Waiting entries by the time their backoff ends; entries ending at the
/// same time leave in the order they came.
#[derive(Debug)]
pub(super) struct Backoffs<T> {
    heap: BinaryHeap<Reverse<Due<T>>>,
    /// Keeps equal ends apart, in arrival order.
    seq: u64,
}

impl<T> Default for Backoffs<T> {
    fn default() -> Backoffs<T> {
        Backoffs {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> Backoffs<T> {
    /// `entry` waits until `at`.
    pub(super) fn push(&mut self, at: Instant, entry: T) {
        self.seq += 1;
        self.heap.push(Reverse(Due {
            at,
            seq: self.seq,
            entry,
        }));
    }

    /// When the soonest backoff ends.
    pub(super) fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(due)| due.at)
    }

    /// The soonest entry, if its backoff is over at `now` and `may_go`
    /// says there is room for it. Later entries wait behind it either way:
    /// the oldest work goes first.
    pub(super) fn pop_due(&mut self, now: Instant, may_go: impl Fn(&T) -> bool) -> Option<T> {
        let Reverse(due) = self.heap.peek()?;
        if due.at > now || !may_go(&due.entry) {
            return None;
        }
        self.heap.pop().map(|Reverse(due)| due.entry)
    }

    /// Whether nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// How many wait.
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Every entry, in no particular order, leaving none.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = T> {
        std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(due)| due.entry)
    }

    /// Passes every entry through `keep`: what it returns stays, at its old
    /// place in the order; `None` leaves.
    pub(super) fn retain_map(&mut self, mut keep: impl FnMut(T) -> Option<T>) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter_map(|Reverse(Due { at, seq, entry })| {
                keep(entry).map(|entry| Reverse(Due { at, seq, entry }))
            })
            .collect();
    }
}

/// An entry with the end of its backoff.
#[derive(Debug)]
struct Due<T> {
    at: Instant,
    seq: u64,
    entry: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Due<T>) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Due<T> {}
impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Due<T>) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Due<T> {
    fn cmp(&self, other: &Due<T>) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain_due(backoffs: &mut Backoffs<&'static str>, now: Instant) -> Vec<&'static str> {
        std::iter::from_fn(|| backoffs.pop_due(now, |_| true)).collect()
    }

    #[test]
    fn the_soonest_end_goes_first_and_equal_ends_keep_their_arrival_order() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut backoffs = Backoffs::default();
        backoffs.push(ms(30), "c");
        backoffs.push(ms(10), "a1");
        backoffs.push(ms(20), "b");
        backoffs.push(ms(10), "a2");
        backoffs.push(ms(10), "a3");
        assert_eq!(backoffs.next_at(), Some(ms(10)));
        assert_eq!(
            drain_due(&mut backoffs, ms(30)),
            ["a1", "a2", "a3", "b", "c"]
        );
        assert!(backoffs.is_empty());
        assert_eq!(backoffs.next_at(), None);
    }

    #[test]
    fn nothing_leaves_before_its_end_and_a_head_without_room_holds_the_rest() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut backoffs = Backoffs::default();
        backoffs.push(ms(10), "fetch");
        backoffs.push(ms(20), "update");
        assert_eq!(backoffs.pop_due(ms(9), |_| true), None);
        // The head has no room: the later entry waits behind it although it
        // would have room.
        assert_eq!(backoffs.pop_due(ms(25), |e| *e != "fetch"), None);
        assert_eq!(backoffs.len(), 2);
        assert_eq!(backoffs.pop_due(ms(10), |_| true), Some("fetch"));
        assert_eq!(backoffs.pop_due(ms(19), |_| true), None);
        assert_eq!(backoffs.next_at(), Some(ms(20)));
        assert_eq!(backoffs.pop_due(ms(20), |_| true), Some("update"));
    }

    #[test]
    fn entries_kept_by_retain_map_keep_their_places_and_changes() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut backoffs: Backoffs<Vec<u32>> = Backoffs::default();
        backoffs.push(ms(10), vec![1, 2]);
        backoffs.push(ms(10), vec![3]);
        backoffs.push(ms(5), vec![4, 5]);
        backoffs.push(ms(10), vec![6]);
        // Drop odd numbers; an entry left empty leaves.
        backoffs.retain_map(|entry| {
            let kept: Vec<u32> = entry.into_iter().filter(|n| n % 2 == 0).collect();
            (!kept.is_empty()).then_some(kept)
        });
        assert_eq!(backoffs.len(), 3);
        let order: Vec<Vec<u32>> =
            std::iter::from_fn(|| backoffs.pop_due(ms(10), |_| true)).collect();
        assert_eq!(order, [vec![4], vec![2], vec![6]]);
    }

    #[test]
    fn take_all_leaves_nothing_behind() {
        let now = Instant::now();
        let mut backoffs = Backoffs::default();
        backoffs.push(now, 1);
        backoffs.push(now + Duration::from_secs(1), 2);
        let mut all: Vec<i32> = backoffs.take_all().collect();
        all.sort();
        assert_eq!(all, [1, 2]);
        assert!(backoffs.is_empty());
    }
}
