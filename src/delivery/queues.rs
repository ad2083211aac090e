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

/// Work waiting per profile, and which profiles may send next.
#[derive(Debug)]
pub struct ProfileQueues<K: Ord, T> {
    profiles: HashMap<K, ProfileState<T>>,
    /// Profiles with waiting work and nothing in flight, by the arrival
    /// number of their oldest waiting item (entries may be stale; checked on pop).
    ready: BinaryHeap<Reverse<(u64, K)>>,
    waiting: usize,
    arrivals: u64,
}

#[derive(Debug)]
struct ProfileState<T> {
    /// Items with their arrival numbers, oldest first.
    pending: VecDeque<(u64, T)>,
    in_flight: bool,
}

impl<T> ProfileState<T> {
    fn new() -> Self {
        ProfileState {
            // Room for one: most profiles of a backlog wait with a single
            // update, and the default first growth (to four) would make
            // each buffered event cost three empty slots.
            pending: VecDeque::with_capacity(1),
            in_flight: false,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord, T> Default for ProfileQueues<K, T> {
    fn default() -> Self {
        ProfileQueues {
            profiles: HashMap::new(),
            ready: BinaryHeap::new(),
            waiting: 0,
            arrivals: 0,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord, T> ProfileQueues<K, T> {
    /// Adds work for a profile behind its earlier work.
    pub fn push(&mut self, key: K, item: T) {
        let arrival = self.arrivals;
        self.arrivals += 1;
        // The key is cloned only for a profile new to the map, not for
        // every item behind earlier work.
        let state = match self.profiles.get_mut(&key) {
            Some(state) => state,
            None => self
                .profiles
                .entry(key.clone())
                .or_insert_with(ProfileState::new),
        };
        state.pending.push_back((arrival, item));
        self.waiting += 1;
        if !state.in_flight && state.pending.len() == 1 {
            self.ready.push(Reverse((arrival, key)));
        }
    }

    /// The next profile allowed to send and up to `max` of its oldest items
    /// (1 without coalescing); the profile is then in flight until [`finish`].
    ///
    /// [`finish`]: ProfileQueues::finish
    pub fn next_ready(&mut self, max: usize) -> Option<(K, Vec<T>)> {
        while let Some(Reverse((arrival, key))) = self.ready.pop() {
            let Some(state) = self.profiles.get_mut(&key) else {
                continue;
            };
            if state.in_flight || state.pending.front().map(|(a, _)| *a) != Some(arrival) {
                // Stale entry: the profile was sent, or its head was removed
                // (a fresh entry exists when it is ready again).
                continue;
            }
            let take = max.max(1).min(state.pending.len());
            let items: Vec<T> = state.pending.drain(..take).map(|(_, item)| item).collect();
            self.waiting -= items.len();
            state.in_flight = true;
            return Some((key, items));
        }
        None
    }

    /// Drops the entries at the front of the ready order that no longer
    /// name a profile's oldest waiting item, so that [`head`] sees a valid one.
    ///
    /// [`head`]: ProfileQueues::head
    pub fn drop_stale_heads(&mut self) {
        while let Some(Reverse((arrival, key))) = self.ready.peek() {
            let valid = self.profiles.get(key).is_some_and(|state| {
                !state.in_flight && state.pending.front().map(|(a, _)| a) == Some(arrival)
            });
            if valid {
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
        let Reverse((_, key)) = self.ready.peek()?;
        self.profiles
            .get(key)?
            .pending
            .front()
            .map(|(_, item)| item)
    }

    /// The profile's request is done; its next item (if any) becomes ready.
    pub fn finish(&mut self, key: &K) {
        let Some(state) = self.profiles.get_mut(key) else {
            return;
        };
        state.in_flight = false;
        match state.pending.front() {
            None => {
                self.profiles.remove(key);
            }
            Some((arrival, _)) => self.ready.push(Reverse((*arrival, key.clone()))),
        }
    }

    /// Drops waiting items for which `keep` is false (revoked partitions,
    /// shutdown); returns them. In-flight work is not touched.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let ready = &mut self.ready;
        self.profiles.retain(|key, state| {
            let head = state.pending.front().map(|(a, _)| *a);
            let mut kept = VecDeque::with_capacity(state.pending.len());
            for (arrival, item) in state.pending.drain(..) {
                if drop(&item) {
                    removed.push(item);
                } else {
                    kept.push_back((arrival, item));
                }
            }
            state.pending = kept;
            let new_head = state.pending.front().map(|(a, _)| *a);
            if !state.in_flight && new_head.is_some() && new_head != head {
                if let Some(arrival) = new_head {
                    ready.push(Reverse((arrival, key.clone())));
                }
            }
            state.in_flight || !state.pending.is_empty()
        });
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
        self.profiles
            .entry(key)
            .or_insert_with(ProfileState::new)
            .in_flight = true;
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
        assert_eq!(q.profiles[&"a"].pending.capacity(), 1);
        q.push("a", [1u8; 128]);
        assert_eq!(q.profiles[&"a"].pending.len(), 2);
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
        assert!(q.profiles.is_empty());
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
        assert!(q.profiles.is_empty());
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
    }
}
