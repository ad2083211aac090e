//! Per-profile order with cross-profile concurrency: a profile's updates are
//! sent one at a time in arrival (partition) order, while different profiles
//! run side by side. Among profiles that may send, the one whose waiting work
//! arrived first goes first, so partition watermarks (and with them the
//! commits) advance as early as possible and a crash repeats little work.
//! Pure bookkeeping; the coordinator does the sending.

use foldhash::{HashMap, HashMapExt as _};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::Hash;

/// Up to this many waiting items, a profile's queue grows one item at a
/// time; beyond, it doubles as usual.
const SMALL_QUEUE: usize = 4;

/// Work waiting per profile, and which profiles may send next.
///
/// Each profile with work waiting or in flight has a slot; the profile's key
/// is hashed once per [`push`] and [`finish`], and the ready order names
/// slots, so picking the next profile hashes nothing and clones no key.
///
/// [`push`]: ProfileQueues::push
/// [`finish`]: ProfileQueues::finish
#[derive(Debug)]
pub struct ProfileQueues<K: Ord, T> {
    /// The slot of each profile that has one.
    slot_of: HashMap<K, u32>,
    slots: Vec<Slot<K, T>>,
    /// Slots no profile holds, for reuse.
    free: Vec<u32>,
    /// Slots with waiting work and nothing in flight, by the arrival number
    /// of their oldest waiting item. Entries may be stale (the profile sent,
    /// its head was removed, or the slot went to another profile); arrival
    /// numbers are never reused, so a stale entry never matches its slot's
    /// head and is skipped when met.
    ready: BinaryHeap<Reverse<(u64, u32)>>,
    waiting: usize,
    arrivals: u64,
}

#[derive(Debug)]
struct Slot<K, T> {
    /// The profile holding the slot; `None` while the slot is free.
    key: Option<K>,
    /// Items with their arrival numbers, oldest first.
    pending: VecDeque<(u64, T)>,
    /// The arrival number of the oldest item, kept beside the queue: the
    /// ready order and `finish` look at it for every update, and the
    /// queue's buffer is usually cold by then.
    head: Option<u64>,
    in_flight: bool,
}

impl<K, T> Slot<K, T> {
    /// Whether the ready entry `(arrival, this slot)` names this slot's
    /// oldest waiting item of a profile free to send.
    fn ready_with(&self, arrival: u64) -> bool {
        !self.in_flight && self.head == Some(arrival)
    }

    /// Notes the oldest item's arrival after the queue changed.
    fn note_head(&mut self) {
        self.head = self.pending.front().map(|(a, _)| *a);
    }
}

impl<K: Clone + Eq + Hash + Ord, T> Default for ProfileQueues<K, T> {
    fn default() -> Self {
        ProfileQueues {
            slot_of: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            ready: BinaryHeap::new(),
            waiting: 0,
            arrivals: 0,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord, T> ProfileQueues<K, T> {
    /// The profile's slot, taking a free one (or a new one) for a profile
    /// without. The key is cloned only for a profile new to the queues.
    fn slot_for(&mut self, key: K) -> u32 {
        if let Some(&slot) = self.slot_of.get(&key) {
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len())
                    .expect("fewer than 2^32 profiles waiting at once");
                self.slots.push(Slot {
                    key: None,
                    // Room for one: most profiles of a backlog wait with a
                    // single update, and the default first growth (to four)
                    // would make each buffered event cost three empty slots.
                    pending: VecDeque::with_capacity(1),
                    head: None,
                    in_flight: false,
                });
                slot
            }
        };
        self.slot_of.insert(key.clone(), slot);
        self.slots[slot as usize].key = Some(key);
        slot
    }

    /// Gives the slot back once its profile has nothing waiting or in flight.
    fn release_if_idle(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        if entry.in_flight || !entry.pending.is_empty() {
            return;
        }
        if let Some(key) = entry.key.take() {
            self.slot_of.remove(&key);
            // The next profile most likely waits with one item: room for
            // more, kept in every free slot, would cost the pod memory per
            // buffered event (a queue item is about 240 bytes).
            if entry.pending.capacity() > 1 {
                entry.pending = VecDeque::with_capacity(1);
            }
            self.free.push(slot);
        }
    }

    /// Adds work for a profile behind its earlier work.
    pub fn push(&mut self, key: K, item: T) {
        let arrival = self.arrivals;
        self.arrivals += 1;
        let slot = self.slot_for(key);
        let entry = &mut self.slots[slot as usize];
        // A profile with a few waiting grows one item at a time: the default
        // growth (one to four) would leave most of the room empty.
        let pending = &mut entry.pending;
        if pending.len() == pending.capacity() && pending.capacity() < SMALL_QUEUE {
            pending.reserve_exact(1);
        }
        pending.push_back((arrival, item));
        entry.head.get_or_insert(arrival);
        self.waiting += 1;
        if !entry.in_flight && entry.pending.len() == 1 {
            self.ready.push(Reverse((arrival, slot)));
        }
    }

    /// The next profile allowed to send and up to `max` of its oldest items
    /// (1 without coalescing); the profile is then in flight until [`finish`].
    ///
    /// [`finish`]: ProfileQueues::finish
    pub fn next_ready(&mut self, max: usize) -> Option<(K, Vec<T>)> {
        while let Some(Reverse((arrival, slot))) = self.ready.pop() {
            let entry = &mut self.slots[slot as usize];
            if !entry.ready_with(arrival) {
                continue;
            }
            let Some(key) = entry.key.clone() else {
                continue;
            };
            let take = max.max(1).min(entry.pending.len());
            let items: Vec<T> = entry.pending.drain(..take).map(|(_, item)| item).collect();
            entry.note_head();
            self.waiting -= items.len();
            entry.in_flight = true;
            return Some((key, items));
        }
        None
    }

    /// Drops the entries at the front of the ready order that no longer
    /// name a profile's oldest waiting item, so that [`head`] sees a valid one.
    ///
    /// [`head`]: ProfileQueues::head
    pub fn drop_stale_heads(&mut self) {
        while let Some(&Reverse((arrival, slot))) = self.ready.peek() {
            if self.slots[slot as usize].ready_with(arrival) {
                return;
            }
            self.ready.pop();
        }
    }

    /// The oldest waiting item of the profile that would go next, if any
    /// (the one [`next_ready`] would start with): valid after
    /// [`drop_stale_heads`] and before the next change. It only reads, so
    /// the caller may look at other state while it holds the item.
    ///
    /// [`next_ready`]: ProfileQueues::next_ready
    /// [`drop_stale_heads`]: ProfileQueues::drop_stale_heads
    pub fn head(&self) -> Option<&T> {
        let Reverse((_, slot)) = self.ready.peek()?;
        self.slots[*slot as usize]
            .pending
            .front()
            .map(|(_, item)| item)
    }

    /// The profile's request is done; its next item (if any) becomes ready.
    pub fn finish(&mut self, key: &K) {
        let Some(&slot) = self.slot_of.get(key) else {
            return;
        };
        let entry = &mut self.slots[slot as usize];
        entry.in_flight = false;
        match entry.head {
            None => self.release_if_idle(slot),
            Some(arrival) => self.ready.push(Reverse((arrival, slot))),
        }
    }

    /// Drops waiting items for which `keep` is false (revoked partitions,
    /// shutdown); returns them. In-flight work is not touched.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        for slot in 0..self.slots.len() {
            let entry = &mut self.slots[slot];
            // A free slot has nothing waiting.
            if entry.pending.is_empty() {
                continue;
            }
            let head = entry.head;
            let mut kept = VecDeque::with_capacity(entry.pending.len());
            for (arrival, item) in entry.pending.drain(..) {
                if drop(&item) {
                    removed.push(item);
                } else {
                    kept.push_back((arrival, item));
                }
            }
            entry.pending = kept;
            entry.note_head();
            let slot = slot as u32;
            match entry.head {
                Some(arrival) if !entry.in_flight && Some(arrival) != head => {
                    self.ready.push(Reverse((arrival, slot)));
                }
                _ => self.release_if_idle(slot),
            }
        }
        self.waiting -= removed.len();
        removed
    }

    /// Items waiting (not in flight).
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Marks the profile in flight without taking anything (its work left
    /// the queue earlier, e.g. into a bulk batch now sent): its later items
    /// wait until [`finish`].
    ///
    /// [`finish`]: ProfileQueues::finish
    pub fn hold(&mut self, key: K) {
        let slot = self.slot_for(key);
        self.slots[slot as usize].in_flight = true;
    }

    /// Profiles holding a slot (waiting or in flight).
    #[cfg(test)]
    fn profiles(&self) -> usize {
        self.slot_of.len()
    }

    /// The queue of a profile, for tests.
    #[cfg(test)]
    fn pending_of(&self, key: &K) -> &VecDeque<(u64, T)> {
        &self.slots[self.slot_of[key] as usize].pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_profile_waiting_with_one_item_holds_room_for_one() {
        // A backlog is mostly profiles with one buffered event each: spare
        // slots there are the pod's memory, paid per event.
        let mut q = ProfileQueues::default();
        q.push("a", [0u8; 128]);
        assert_eq!(q.pending_of(&"a").capacity(), 1);
        q.push("a", [1u8; 128]);
        assert_eq!(q.pending_of(&"a").len(), 2);
    }

    #[test]
    fn a_queue_grows_one_item_at_a_time_while_small_and_doubles_beyond() {
        let mut q = ProfileQueues::default();
        let mut rooms = Vec::new();
        for item in 0..6 {
            q.push("a", [item; 128]);
            rooms.push(q.pending_of(&"a").capacity());
        }
        assert_eq!(rooms[..4], [1, 2, 3, 4]);
        assert!(rooms[4] >= 8, "beyond four it doubles: {rooms:?}");
    }

    #[test]
    fn a_slot_given_back_after_a_burst_keeps_room_for_one_item() {
        // Free slots are reused by the next profiles, most with one item:
        // the burst's room would otherwise be held for each of them.
        let mut q = ProfileQueues::default();
        for item in 0..3 {
            q.push("a", [item; 128]);
        }
        assert_eq!(q.next_ready(3).map(|(_, items)| items.len()), Some(3));
        q.finish(&"a");
        assert_eq!(q.profiles(), 0);
        q.push("b", [9; 128]);
        assert_eq!(q.slots.len(), 1, "b reuses a's slot");
        assert_eq!(q.pending_of(&"b").capacity(), 1);
    }

    #[test]
    fn one_profile_sends_one_at_a_time_in_order_while_others_run() {
        let mut q = ProfileQueues::default();
        q.push("a", 1);
        q.push("a", 2);
        q.push("b", 3);
        assert_eq!(q.next_ready(1), Some(("a", vec![1])));
        assert_eq!(q.next_ready(1), Some(("b", vec![3])));
        assert_eq!(q.next_ready(1), None, "a is in flight: 2 must wait");
        q.finish(&"a");
        assert_eq!(q.next_ready(1), Some(("a", vec![2])));
        q.finish(&"a");
        q.finish(&"b");
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.profiles(), 0);
    }

    #[test]
    fn a_held_profile_waits_until_finished() {
        let mut q = ProfileQueues::default();
        q.push("a", 1);
        assert_eq!(q.next_ready(usize::MAX), Some(("a", vec![1])));
        q.finish(&"a");
        q.hold("a");
        q.push("a", 2);
        q.push("b", 3);
        assert_eq!(q.next_ready(1), Some(("b", vec![3])));
        assert_eq!(q.next_ready(1), None, "a is held");
        q.finish(&"a");
        assert_eq!(q.next_ready(1), Some(("a", vec![2])));
        q.finish(&"a");
        q.finish(&"b");
        assert_eq!(q.profiles(), 0);
    }

    #[test]
    fn the_profile_with_the_oldest_waiting_work_goes_first() {
        let mut q = ProfileQueues::default();
        q.push("a", 1);
        q.push("a", 2);
        q.push("b", 3);
        q.push("c", 4);
        assert_eq!(q.next_ready(1), Some(("a", vec![1])));
        assert_eq!(q.next_ready(1), Some(("b", vec![3])));
        q.finish(&"a");
        // a's next item arrived before c's: it goes before c.
        assert_eq!(q.next_ready(1), Some(("a", vec![2])));
        assert_eq!(q.next_ready(1), Some(("c", vec![4])));
    }

    #[test]
    fn peek_shows_what_goes_next_and_skips_stale_entries() {
        let mut q = ProfileQueues::default();
        q.push("a", 1);
        q.push("b", 2);
        q.drop_stale_heads();
        assert_eq!(q.head(), Some(&1));
        assert_eq!(q.next_ready(1), Some(("a", vec![1])));
        q.remove_where(|item| *item == 2);
        q.drop_stale_heads();
        assert_eq!(q.head(), None);
    }

    #[test]
    fn coalescing_takes_every_waiting_item_of_the_profile() {
        let mut q = ProfileQueues::default();
        for i in 0..5 {
            q.push("a", i);
        }
        assert_eq!(q.next_ready(usize::MAX), Some(("a", vec![0, 1, 2, 3, 4])));
    }

    #[test]
    fn removed_items_never_send_and_in_flight_profiles_stay_blocked() {
        let mut q = ProfileQueues::default();
        q.push("a", 1);
        q.push("a", 2);
        q.push("b", 10);
        assert_eq!(q.next_ready(1), Some(("a", vec![1])));
        let mut removed = q.remove_where(|item| *item >= 2);
        removed.sort();
        assert_eq!(removed, vec![2, 10]);
        assert_eq!(q.next_ready(1), None);
        q.push("a", 3);
        assert_eq!(q.next_ready(1), None, "a is still in flight");
        q.finish(&"a");
        assert_eq!(q.next_ready(1), Some(("a", vec![3])));
    }

    proptest! {
        #[test]
        fn every_item_is_sent_once_in_per_profile_order(
            pushes in prop::collection::vec((0u8..6, any::<bool>()), 1..300),
        ) {
            let mut q = ProfileQueues::default();
            let mut next_seq = 0u32;
            let mut sent: Vec<(u8, u32)> = Vec::new();
            let mut in_flight: Vec<u8> = Vec::new();
            for (profile, complete_one) in pushes {
                q.push(profile, next_seq);
                next_seq += 1;
                while let Some((key, items)) = q.next_ready(1) {
                    prop_assert!(!in_flight.contains(&key), "two in flight for {}", key);
                    in_flight.push(key);
                    sent.extend(items.into_iter().map(|i| (key, i)));
                }
                if complete_one && !in_flight.is_empty() {
                    let key = in_flight.remove(0);
                    q.finish(&key);
                }
            }
            loop {
                while let Some((key, items)) = q.next_ready(1) {
                    prop_assert!(!in_flight.contains(&key));
                    in_flight.push(key);
                    sent.extend(items.into_iter().map(|i| (key, i)));
                }
                if in_flight.is_empty() { break; }
                let key = in_flight.remove(0);
                q.finish(&key);
            }
            prop_assert_eq!(sent.len() as u32, next_seq);
            for profile in 0u8..6 {
                let seqs: Vec<u32> = sent.iter().filter(|(k, _)| *k == profile).map(|(_, s)| *s).collect();
                prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order for {}: {:?}", profile, seqs);
            }
            prop_assert_eq!(q.waiting(), 0);
        }

        #[test]
        fn removals_and_slot_reuse_lose_nothing_and_keep_order(
            steps in prop::collection::vec((0u8..8, 0u8..4), 1..400),
        ) {
            // Step kinds: 0 and 1 push, 2 finishes the oldest in flight,
            // 3 removes the waiting items of the step's profile and some
            // of others (as a revoke does, leaving a queue's later items). Every item ends sent or removed, once, and each
            // profile's sent items keep their order.
            let mut q = ProfileQueues::default();
            let mut next_seq = 0u32;
            let mut sent: Vec<(u8, u32)> = Vec::new();
            let mut removed: Vec<(u8, u32)> = Vec::new();
            let mut in_flight: Vec<u8> = Vec::new();
            let drain = |q: &mut ProfileQueues<u8, (u8, u32)>, sent: &mut Vec<(u8, u32)>, in_flight: &mut Vec<u8>| {
                while let Some((key, items)) = q.next_ready(2) {
                    assert!(!in_flight.contains(&key), "two in flight for {key}");
                    assert!(items.iter().all(|(k, _)| *k == key));
                    in_flight.push(key);
                    sent.extend(items);
                }
            };
            for (profile, kind) in steps {
                match kind {
                    0 | 1 => {
                        q.push(profile, (profile, next_seq));
                        next_seq += 1;
                    }
                    2 => {
                        if !in_flight.is_empty() {
                            let key = in_flight.remove(0);
                            q.finish(&key);
                        }
                    }
                    _ => removed.extend(q.remove_where(|(k, s)| *k == profile || s % 3 == 0)),
                }
                if kind != 1 {
                    drain(&mut q, &mut sent, &mut in_flight);
                }
            }
            loop {
                drain(&mut q, &mut sent, &mut in_flight);
                if in_flight.is_empty() { break; }
                let key = in_flight.remove(0);
                q.finish(&key);
            }
            let mut all: Vec<u32> = sent.iter().chain(&removed).map(|(_, s)| *s).collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..next_seq).collect::<Vec<_>>());
            for profile in 0u8..8 {
                let seqs: Vec<u32> = sent.iter().filter(|(k, _)| *k == profile).map(|(_, s)| *s).collect();
                prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order for {}: {:?}", profile, seqs);
            }
            prop_assert_eq!(q.waiting(), 0);
            prop_assert_eq!(q.profiles(), 0);
        }
    }
}
