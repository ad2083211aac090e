//! The commit watermark of one partition: events finish out of order (different
//! profiles run concurrently), but the committed offset is always the first
//! offset not yet finished (accepted, dead-lettered or skipped).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One seen offset: whether it is finished, and when it was consumed (for
/// the age of the oldest unfinished event).
#[derive(Debug, Clone, Copy)]
struct Seen {
    offset: i64,
    finished: bool,
    consumed_at: Option<Instant>,
}

/// Offsets seen on one partition and which of them are finished.
///
/// Offsets arrive in increasing order (with gaps: compaction, transaction
/// markers). The committable position is the first unfinished offset, or one
/// past the last seen offset when everything seen is finished.
#[derive(Debug, Default)]
pub struct CommitWatermark {
    /// Seen offsets from the first unfinished one on.
    window: VecDeque<Seen>,
    /// One past the highest offset seen.
    next: Option<i64>,
    /// The pod's count of entries over all its watermarks, kept with every
    /// change here (and on drop), so the pod's total is read without a
    /// walk over its partitions for every record.
    pod: Option<Arc<AtomicUsize>>,
}

impl CommitWatermark {
    /// An empty watermark: nothing to commit yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty watermark whose entries are also counted in `pod`.
    pub fn counted(pod: Arc<AtomicUsize>) -> Self {
        CommitWatermark {
            window: VecDeque::new(),
            next: None,
            pod: Some(pod),
        }
    }

    fn count_added(&self) {
        if let Some(pod) = &self.pod {
            pod.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_removed(&self, entries: usize) {
        if let (Some(pod), 1..) = (&self.pod, entries) {
            pod.fetch_sub(entries, Ordering::Relaxed);
        }
    }

    /// Records a consumed offset as unfinished. Returns `false` (and changes
    /// nothing) for an offset not above every offset seen before.
    pub fn track(&mut self, offset: i64) -> bool {
        self.track_seen(offset, None)
    }

    /// [`CommitWatermark::track`], remembering when the offset was consumed.
    pub fn track_at(&mut self, offset: i64, consumed_at: Instant) -> bool {
        self.track_seen(offset, Some(consumed_at))
    }

    fn track_seen(&mut self, offset: i64, consumed_at: Option<Instant>) -> bool {
        if self.next.is_some_and(|next| offset < next) || offset < 0 {
            return false;
        }
        self.window.push_back(Seen {
            offset,
            finished: false,
            consumed_at,
        });
        self.count_added();
        self.next = Some(offset + 1);
        true
    }

    /// Marks an offset finished. Returns `false` for an offset that is not
    /// tracked or already finished.
    pub fn finish(&mut self, offset: i64) -> bool {
        let Some(index) = self.index_of(offset) else {
            return false;
        };
        let entry = &mut self.window[index];
        if entry.finished {
            return false;
        }
        entry.finished = true;
        let before = self.window.len();
        while self.window.front().is_some_and(|seen| seen.finished) {
            self.window.pop_front();
        }
        self.count_removed(before - self.window.len());
        true
    }

    /// Where `offset` sits in the window. Offsets rise by at least one per
    /// entry, so an offset `n` past the first sits at index `n` unless
    /// there are gaps (compaction, transaction markers), and then before it:
    /// the common case is one look, the rest a binary search.
    fn index_of(&self, offset: i64) -> Option<usize> {
        let first = self.window.front()?.offset;
        let guess = usize::try_from(offset.checked_sub(first)?).ok()?;
        match self.window.get(guess) {
            Some(seen) if seen.offset == offset => Some(guess),
            _ => self
                .window
                .binary_search_by_key(&offset, |seen| seen.offset)
                .ok(),
        }
    }

    /// The offset to commit: the first unfinished one, or one past the last
    /// seen; `None` before anything was seen.
    pub fn committable(&self) -> Option<i64> {
        match self.window.front() {
            Some(seen) => Some(seen.offset),
            None => self.next,
        }
    }

    /// When the first unfinished offset (the one the committed position waits
    /// for) was consumed; `None` when nothing is unfinished or the offset was
    /// tracked without a time.
    pub fn oldest_unfinished_since(&self) -> Option<Instant> {
        self.window.front().and_then(|seen| seen.consumed_at)
    }

    /// Entries held in memory (unfinished ones and finished ones behind them).
    pub fn buffered(&self) -> usize {
        self.window.len()
    }

    /// Whether every offset seen is finished.
    pub fn is_idle(&self) -> bool {
        self.window.is_empty()
    }
}

impl Drop for CommitWatermark {
    fn drop(&mut self) {
        self.count_removed(self.window.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nothing_is_committable_before_anything_is_seen() {
        assert_eq!(CommitWatermark::new().committable(), None);
    }

    #[test]
    fn the_watermark_stops_at_the_first_unfinished_offset() {
        let mut w = CommitWatermark::new();
        for offset in [10, 11, 13, 14] {
            assert!(w.track(offset));
        }
        assert_eq!(w.committable(), Some(10));
        assert!(w.finish(11));
        assert!(w.finish(14));
        assert_eq!(w.committable(), Some(10));
        assert!(w.finish(10));
        assert_eq!(w.committable(), Some(13));
        assert!(w.finish(13));
        assert_eq!(w.committable(), Some(15));
        assert!(w.is_idle());
    }

    #[test]
    fn unknown_repeated_and_backward_offsets_change_nothing() {
        let mut w = CommitWatermark::new();
        assert!(w.track(5));
        assert!(!w.track(5));
        assert!(!w.track(3));
        assert!(!w.finish(4));
        assert!(w.finish(5));
        assert!(!w.finish(5));
        assert_eq!(w.committable(), Some(6));
    }

    #[test]
    fn offsets_in_gaps_and_past_the_end_are_not_tracked_ones() {
        // Gaps (compaction, transaction markers) put an offset before the
        // index its distance from the first would give.
        let mut w = CommitWatermark::new();
        for offset in [100, 101, 104, 105, 109] {
            assert!(w.track(offset));
        }
        for untracked in [99, 102, 103, 106, 108, 110, 1000, i64::MIN, i64::MAX] {
            assert!(!w.finish(untracked), "{untracked}");
        }
        for offset in [105, 109, 101, 104] {
            assert!(w.finish(offset), "{offset}");
        }
        assert_eq!(w.committable(), Some(100));
        assert!(w.finish(100));
        assert_eq!(w.committable(), Some(110));
    }

    #[test]
    fn the_oldest_unfinished_time_is_the_first_unfinished_offsets_consumption() {
        let start = Instant::now();
        let at = |ms| start + std::time::Duration::from_millis(ms);
        let mut w = CommitWatermark::new();
        assert_eq!(w.oldest_unfinished_since(), None);
        assert!(w.track_at(7, at(0)));
        assert!(w.track_at(8, at(10)));
        assert!(w.track_at(9, at(20)));
        assert_eq!(w.oldest_unfinished_since(), Some(at(0)));
        // Later offsets finishing do not move it: 7 still holds the commit.
        assert!(w.finish(8));
        assert!(w.finish(9));
        assert_eq!(w.oldest_unfinished_since(), Some(at(0)));
        assert!(w.finish(7));
        assert_eq!(w.oldest_unfinished_since(), None);
        assert!(w.track_at(10, at(30)));
        assert!(w.track_at(11, at(40)));
        assert!(w.finish(10));
        assert_eq!(w.oldest_unfinished_since(), Some(at(40)));
    }

    proptest! {
        #[test]
        fn random_completion_orders_never_commit_past_an_unfinished_offset(
            gaps in prop::collection::vec(1i64..4, 1..200),
            order_seed in prop::collection::vec(any::<u32>(), 1..200),
        ) {
            let offsets: Vec<i64> = gaps.iter().scan(0i64, |at, gap| { *at += gap; Some(*at) }).collect();
            let mut w = CommitWatermark::new();
            for &offset in &offsets {
                prop_assert!(w.track(offset));
            }
            let mut order: Vec<usize> = (0..offsets.len()).collect();
            for (i, seed) in order_seed.iter().enumerate().take(offsets.len()) {
                let j = (*seed as usize) % offsets.len();
                order.swap(i, j);
            }
            let mut finished = vec![false; offsets.len()];
            for index in order {
                prop_assert!(w.finish(offsets[index]));
                finished[index] = true;
                let committable = w.committable().unwrap();
                // Every offset below the committed position is finished...
                for (k, &offset) in offsets.iter().enumerate() {
                    if offset < committable {
                        prop_assert!(finished[k], "committed {} past unfinished {}", committable, offset);
                    }
                }
                // ...and the position is as far as it may go.
                let first_unfinished = offsets.iter().zip(&finished).find(|(_, f)| !**f).map(|(o, _)| *o);
                prop_assert_eq!(committable, first_unfinished.unwrap_or(offsets[offsets.len() - 1] + 1));
            }
            prop_assert_eq!(w.committable(), Some(offsets[offsets.len() - 1] + 1));
            prop_assert!(w.is_idle());
        }

        #[test]
        fn the_pod_count_is_the_sum_of_its_watermarks_entries_through_any_changes(
            steps in prop::collection::vec((0usize..3, 0u8..3, 0i64..40), 1..300),
        ) {
            let pod = Arc::new(AtomicUsize::new(0));
            let mut marks: Vec<Option<CommitWatermark>> = (0..3).map(|_| None).collect();
            for (which, action, offset) in steps {
                match action {
                    // Assigned (again): a fresh watermark replaces (drops) the old one.
                    0 if offset % 5 == 0 => marks[which] = Some(CommitWatermark::counted(pod.clone())),
                    // Revoked: dropped with whatever it held.
                    0 => marks[which] = None,
                    1 => { if let Some(w) = &mut marks[which] { w.track(offset); } }
                    _ => { if let Some(w) = &mut marks[which] { w.finish(offset); } }
                }
                let sum: usize = marks.iter().flatten().map(CommitWatermark::buffered).sum();
                prop_assert_eq!(pod.load(Ordering::Relaxed), sum);
            }
            marks.clear();
            prop_assert_eq!(pod.load(Ordering::Relaxed), 0);
        }
    }
}
