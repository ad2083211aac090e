//! The partitions this pod owns, each in the assignment (epoch) it came
//! with: what each holds, whether it is paused or being given up, and which
//! offsets are confirmed. Pure bookkeeping with time and I/O left out: the
//! coordinator asks, then carries the answers out on the consumer (pause,
//! resume, commit) and on the work it runs.

use crate::delivery::watermark::CommitWatermark;
use crate::kafka::TopicPartition;
use foldhash::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One assignment of one partition.
#[derive(Debug)]
pub(super) struct PartitionState {
    /// Which assignment this is: every assignment gets a new number, so work
    /// and answers of an earlier one can be told apart.
    pub(super) epoch: u64,
    pub(super) watermark: CommitWatermark,
    /// Events of this partition inside running tasks.
    pub(super) in_flight: usize,
    pub(super) paused: bool,
    pub(super) revoking: bool,
    pub(super) last_committed: Option<i64>,
    /// Cancels this assignment's fetches, dead-letter writes and batch
    /// tasks: at the revoke deadline, when the partition is lost, or at the
    /// shutdown deadline (a child of the coordinator's `abandon`). Its
    /// update attempts are aborted then too, by the coordinator
    /// ([`Action::Abort`](super::Action::Abort)).
    pub(super) cancel: CancellationToken,
}

/// An offset to commit for one assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::delivery::coordinator) struct CommitOffset {
    pub(in crate::delivery::coordinator) tp: TopicPartition,
    pub(in crate::delivery::coordinator) epoch: u64,
    pub(in crate::delivery::coordinator) offset: i64,
}

/// The owned partitions.
#[derive(Debug, Default)]
pub(super) struct Partitions {
    map: HashMap<TopicPartition, PartitionState>,
    next_epoch: u64,
    /// Records held over all partitions, kept by their watermarks.
    buffered: Arc<AtomicUsize>,
    /// Some partition may be paused: false only once a look over every
    /// partition found none, so the check made for every finished event
    /// needs no such look while nothing is paused.
    maybe_paused: bool,
    /// Open batches were sealed because the pod's buffer filled: not again
    /// until partitions resume.
    sealed_when_full: bool,
}

/// A partition was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Paused {
    /// Seal the open batches now: nothing more can come in until work
    /// finishes, so they would only wait out their age. Once per time the
    /// pod fills (not for every partition that pauses while it is full),
    /// and whenever no partition may fetch.
    pub(super) seal_batches: bool,
}

impl Partitions {
    /// A new assignment of `tp`, cancelled by `cancel`. An earlier
    /// assignment still held (its revoke was not answered before the
    /// consumer stopped waiting) is stale: it is returned for the caller to
    /// stop its work.
    pub(super) fn assign(
        &mut self,
        tp: TopicPartition,
        cancel: CancellationToken,
    ) -> Option<PartitionState> {
        self.next_epoch += 1;
        let state = PartitionState {
            epoch: self.next_epoch,
            watermark: CommitWatermark::counted(self.buffered.clone()),
            in_flight: 0,
            paused: false,
            revoking: false,
            last_committed: None,
            cancel,
        };
        self.map.insert(tp, state)
    }

    /// The partition's current assignment.
    pub(super) fn get(&self, tp: &TopicPartition) -> Option<&PartitionState> {
        self.map.get(tp)
    }

    /// The partition's current assignment, to change.
    pub(super) fn get_mut(&mut self, tp: &TopicPartition) -> Option<&mut PartitionState> {
        self.map.get_mut(tp)
    }

    /// The partition's state if `epoch` is still its assignment.
    pub(super) fn current(&self, tp: &TopicPartition, epoch: u64) -> Option<&PartitionState> {
        self.map.get(tp).filter(|p| p.epoch == epoch)
    }

    /// Like [`Partitions::current`], to change.
    pub(super) fn current_mut(
        &mut self,
        tp: &TopicPartition,
        epoch: u64,
    ) -> Option<&mut PartitionState> {
        self.map.get_mut(tp).filter(|p| p.epoch == epoch)
    }

    /// Whether the partition is owned (in any assignment).
    pub(super) fn contains(&self, tp: &TopicPartition) -> bool {
        self.map.contains_key(tp)
    }

    /// Every owned partition, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &PartitionState)> {
        self.map.iter()
    }

    /// Partitions owned and not being given up.
    pub(super) fn owned(&self) -> usize {
        self.map.values().filter(|p| !p.revoking).count()
    }

    /// Partitions paused for back-pressure.
    pub(super) fn paused(&self) -> usize {
        self.map.values().filter(|p| p.paused).count()
    }

    /// Records held by the pod: read and not finished, over all partitions.
    pub(super) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Marks these partitions as being given up; the assignments found,
    /// with their epochs, are what the revoke is for.
    pub(super) fn start_revoke(
        &mut self,
        partitions: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, u64)> {
        let mut revoked = Vec::with_capacity(partitions.len());
        for tp in partitions {
            if let Some(state) = self.map.get_mut(&tp) {
                state.revoking = true;
                revoked.push((tp, state.epoch));
            }
        }
        revoked
    }

    /// Whether these assignments have no work in flight (or are gone).
    pub(super) fn drained(&self, assignments: &[(TopicPartition, u64)]) -> bool {
        assignments
            .iter()
            .all(|(tp, epoch)| self.current(tp, *epoch).is_none_or(|p| p.in_flight == 0))
    }

    /// Removes these assignments and returns them; a partition assigned
    /// again since (a later epoch) is left alone.
    pub(super) fn take(
        &mut self,
        assignments: &[(TopicPartition, u64)],
    ) -> Vec<(TopicPartition, PartitionState)> {
        let mut taken = Vec::new();
        for (tp, epoch) in assignments {
            if self.current(tp, *epoch).is_some() {
                if let Some(state) = self.map.remove(tp) {
                    taken.push((tp.clone(), state));
                }
            }
        }
        taken
    }

    /// Owned partitions, not being given up, whose committable offset is
    /// not yet confirmed.
    pub(super) fn changed_offsets(&self) -> Vec<CommitOffset> {
        self.map
            .iter()
            .filter(|(_, state)| !state.revoking)
            .filter_map(|(tp, state)| {
                let offset = state.watermark.committable()?;
                (state.last_committed != Some(offset)).then(|| CommitOffset {
                    tp: tp.clone(),
                    epoch: state.epoch,
                    offset,
                })
            })
            .collect()
    }

    /// The broker confirmed these offsets: each counts for its own
    /// assignment only.
    pub(super) fn committed(&mut self, offsets: &[CommitOffset]) {
        for confirmed in offsets {
            if let Some(state) = self.current_mut(&confirmed.tp, confirmed.epoch) {
                state.last_committed = Some(confirmed.offset);
            }
        }
    }

    /// Pauses `tp` if its buffer holds `limit` records or the pod holds
    /// `pod_limit`; `Some` when it paused now.
    pub(super) fn pause_if_full(
        &mut self,
        tp: &TopicPartition,
        limit: usize,
        pod_limit: usize,
    ) -> Option<Paused> {
        let pod_full = self.buffered() >= pod_limit;
        let state = self.map.get_mut(tp)?;
        if state.paused || (state.watermark.buffered() < limit && !pod_full) {
            return None;
        }
        state.paused = true;
        self.maybe_paused = true;
        let seal_batches = (pod_full && !self.sealed_when_full) || self.all_held_back();
        if seal_batches {
            self.sealed_when_full |= pod_full;
        }
        Some(Paused { seal_batches })
    }

    /// Whether no owned partition may fetch: each is paused or being given up.
    pub(super) fn all_held_back(&self) -> bool {
        self.map.values().all(|p| p.paused || p.revoking)
    }

    /// Resumes paused partitions once both their own buffer and the pod's
    /// are down to half their limits (so fetching does not flap); returns
    /// those resumed. Cheap while nothing is paused: it runs for every
    /// finished event.
    pub(super) fn resume_if_room(&mut self, limit: usize, pod_limit: usize) -> Vec<TopicPartition> {
        if !self.maybe_paused || self.buffered() > pod_limit / 2 {
            return Vec::new();
        }
        let mut resumed = Vec::new();
        for (tp, state) in &mut self.map {
            if state.paused && !state.revoking && state.watermark.buffered() <= limit / 2 {
                state.paused = false;
                resumed.push(tp.clone());
            }
        }
        self.maybe_paused = self.map.values().any(|p| p.paused);
        if !resumed.is_empty() {
            self.sealed_when_full = false;
        }
        resumed
    }

    /// Owned partitions the pod does not hold back: the ones the consumer
    /// should be fetching.
    pub(super) fn fetchable(&self) -> impl Iterator<Item = &TopicPartition> {
        self.map
            .iter()
            .filter(|(_, p)| !p.paused && !p.revoking)
            .map(|(tp, _)| tp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition {
            topic: "pos.purchases".into(),
            partition,
        }
    }

    /// Partition 0 holding offsets 0..held, the first `done` of them finished.
    fn holding(partitions: &mut Partitions, held: i64, done: i64) -> u64 {
        partitions.assign(tp(0), CancellationToken::new());
        let state = partitions.get_mut(&tp(0)).unwrap();
        for offset in 0..held {
            state.watermark.track(offset);
        }
        for offset in 0..done {
            state.watermark.finish(offset);
        }
        state.epoch
    }

    #[test]
    fn a_stale_epoch_is_ignored() {
        let mut partitions = Partitions::default();
        let first = holding(&mut partitions, 4, 2);
        partitions.start_revoke(vec![tp(0)]);
        // Assigned again before the revoke was answered.
        let stale = partitions.assign(tp(0), CancellationToken::new()).unwrap();
        assert_eq!(stale.epoch, first);
        let second = partitions.get(&tp(0)).unwrap().epoch;
        assert!(second > first);
        // A late commit answer, the drain check and the revoke answer of the
        // first assignment leave the second alone.
        partitions.committed(&[CommitOffset {
            tp: tp(0),
            epoch: first,
            offset: 2,
        }]);
        assert_eq!(partitions.get(&tp(0)).unwrap().last_committed, None);
        assert!(partitions.current(&tp(0), first).is_none());
        assert!(partitions.drained(&[(tp(0), first)]));
        assert!(partitions.take(&[(tp(0), first)]).is_empty());
        assert_eq!(partitions.get(&tp(0)).unwrap().epoch, second);
        assert!(!partitions.get(&tp(0)).unwrap().revoking);
    }

    #[test]
    fn a_revoke_answers_with_the_committable_offsets() {
        let mut partitions = Partitions::default();
        let epoch = holding(&mut partitions, 5, 3);
        partitions.get_mut(&tp(0)).unwrap().in_flight = 1;
        let revoke = partitions.start_revoke(vec![tp(0), tp(9)]);
        assert_eq!(revoke, vec![(tp(0), epoch)]);
        // Not committed on the tick while being given up: the revoke answers.
        assert!(partitions.changed_offsets().is_empty());
        assert!(!partitions.drained(&revoke));
        partitions.get_mut(&tp(0)).unwrap().in_flight = 0;
        assert!(partitions.drained(&revoke));
        let taken = partitions.take(&revoke);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.watermark.committable(), Some(3));
        assert!(!partitions.contains(&tp(0)));
    }

    #[test]
    fn confirmed_offsets_are_not_committed_again() {
        let mut partitions = Partitions::default();
        let epoch = holding(&mut partitions, 5, 3);
        let changed = partitions.changed_offsets();
        assert_eq!(
            changed,
            vec![CommitOffset {
                tp: tp(0),
                epoch,
                offset: 3
            }]
        );
        partitions.committed(&changed);
        assert!(partitions.changed_offsets().is_empty());
        partitions.get_mut(&tp(0)).unwrap().watermark.finish(3);
        assert_eq!(partitions.changed_offsets()[0].offset, 4);
    }

    #[test]
    fn a_partition_pauses_when_full_and_resumes_at_half() {
        let (limit, pod_limit) = (4, 100);
        let mut partitions = Partitions::default();
        holding(&mut partitions, 3, 0);
        assert_eq!(partitions.pause_if_full(&tp(0), limit, pod_limit), None);
        partitions.get_mut(&tp(0)).unwrap().watermark.track(3);
        assert!(partitions.pause_if_full(&tp(0), limit, pod_limit).is_some());
        assert_eq!(
            partitions.pause_if_full(&tp(0), limit, pod_limit),
            None,
            "once"
        );
        assert_eq!(partitions.paused(), 1);
        assert!(partitions.all_held_back());
        assert_eq!(partitions.fetchable().count(), 0);
        partitions.get_mut(&tp(0)).unwrap().watermark.finish(0);
        assert!(
            partitions.resume_if_room(limit, pod_limit).is_empty(),
            "3 > 4 / 2"
        );
        partitions.get_mut(&tp(0)).unwrap().watermark.finish(1);
        assert_eq!(partitions.resume_if_room(limit, pod_limit), vec![tp(0)]);
        assert_eq!(partitions.paused(), 0);
        assert_eq!(partitions.fetchable().collect::<Vec<_>>(), vec![&tp(0)]);
    }

    #[test]
    fn a_full_pod_pauses_the_partition_that_grew_and_a_revoking_one_stays_paused() {
        let mut partitions = Partitions::default();
        holding(&mut partitions, 2, 0);
        partitions.assign(tp(1), CancellationToken::new());
        partitions.get_mut(&tp(1)).unwrap().watermark.track(0);
        assert_eq!(partitions.buffered(), 3);
        // Each partition is below its own limit of 10; the pod is at 3.
        assert!(partitions.pause_if_full(&tp(1), 10, 3).is_some());
        assert!(partitions.pause_if_full(&tp(0), 10, 3).is_some());
        partitions.start_revoke(vec![tp(1)]);
        partitions.get_mut(&tp(0)).unwrap().watermark.finish(0);
        partitions.get_mut(&tp(0)).unwrap().watermark.finish(1);
        partitions.get_mut(&tp(1)).unwrap().watermark.finish(0);
        assert_eq!(partitions.resume_if_room(10, 3), vec![tp(0)]);
        assert!(partitions.get(&tp(1)).unwrap().paused);
    }

    #[test]
    fn a_full_pod_seals_its_batches_once_until_partitions_resume() {
        let seal = |paused: Option<Paused>| paused.expect("paused").seal_batches;
        let track = |partitions: &mut Partitions, p: i32, offsets: std::ops::Range<i64>| {
            for offset in offsets {
                partitions.get_mut(&tp(p)).unwrap().watermark.track(offset);
            }
        };
        let mut partitions = Partitions::default();
        for p in 0..3 {
            partitions.assign(tp(p), CancellationToken::new());
        }
        // The pod fills (3 of 3): the first pause seals the open batches.
        track(&mut partitions, 0, 0..3);
        assert!(seal(partitions.pause_if_full(&tp(0), 10, 3)));
        // A record still arriving for another partition pauses it, once,
        // and does not seal again while one partition may still fetch.
        track(&mut partitions, 1, 0..1);
        assert!(!seal(partitions.pause_if_full(&tp(1), 10, 3)));
        assert_eq!(partitions.pause_if_full(&tp(1), 10, 3), None);
        // The last fetching partition pauses: nothing can come in, seal.
        track(&mut partitions, 2, 0..1);
        assert!(seal(partitions.pause_if_full(&tp(2), 10, 3)));
        // Work finishes and the partitions resume; the next time the pod
        // fills seals again.
        for (p, offsets) in [(0, 0..3), (1, 0..1), (2, 0..1)] {
            for offset in offsets {
                partitions.get_mut(&tp(p)).unwrap().watermark.finish(offset);
            }
        }
        assert_eq!(partitions.resume_if_room(10, 3).len(), 3);
        track(&mut partitions, 0, 3..6);
        assert!(seal(partitions.pause_if_full(&tp(0), 10, 3)));
    }

    #[test]
    fn a_partition_lost_while_paused_comes_back_fetchable_and_gives_its_count_back() {
        let mut partitions = Partitions::default();
        let epoch = holding(&mut partitions, 4, 0);
        assert!(partitions.pause_if_full(&tp(0), 4, 100).is_some());
        assert_eq!(partitions.buffered(), 4);
        let lost = partitions.start_revoke(vec![tp(0)]);
        assert_eq!(lost, vec![(tp(0), epoch)]);
        drop(partitions.take(&lost));
        assert_eq!(partitions.buffered(), 0);
        partitions.assign(tp(0), CancellationToken::new());
        let back = partitions.get(&tp(0)).unwrap();
        assert!(!back.paused && !back.revoking);
        assert_eq!(partitions.fetchable().collect::<Vec<_>>(), vec![&tp(0)]);
        assert_eq!(partitions.paused(), 0);
    }
}
