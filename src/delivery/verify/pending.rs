//! The profiles waiting for their read-back, as plain data: at most `max`
//! profiles, each due `delay` after its latest accepted update, taken in the
//! order they fall due. Time is passed in.

use crate::event::{Identity, Timestamp};
use crate::mapping::ProfileUpdate;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use tokio::time::Instant;

/// What a profile should hold once its accepted updates are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Per attribute, the value of the latest `occurred_at` and that time.
    values: BTreeMap<String, (String, Timestamp)>,
    /// When Target accepted the latest update.
    pub accepted_at: OffsetDateTime,
    /// Fetches tried so far without a usable answer.
    pub attempts: u32,
}

impl Expected {
    fn new(accepted_at: SystemTime) -> Expected {
        Expected {
            values: BTreeMap::new(),
            accepted_at: OffsetDateTime::from(accepted_at),
            attempts: 0,
        }
    }

    /// Folds an update in: an attribute takes its value unless a later event set it.
    fn fold(&mut self, update: &ProfileUpdate) {
        for attribute in &update.attributes {
            let newer = self
                .values
                .get(&*attribute.name)
                .is_none_or(|(_, at)| *at <= update.occurred_at);
            if newer {
                self.values.insert(
                    attribute.name.to_string(),
                    (attribute.value.to_string(), update.occurred_at),
                );
            }
        }
    }

    /// Folds `older` (what an earlier wait expected) under this one.
    fn absorb(&mut self, older: Expected) {
        for (name, (value, at)) in older.values {
            let keep = self.values.get(&name).is_some_and(|(_, mine)| *mine >= at);
            if !keep {
                self.values.insert(name, (value, at));
            }
        }
    }

    /// The attributes and values to compare.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(name, (value, _))| (name.clone(), value.clone()))
            .collect()
    }
}

/// What [`PendingSet::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The profile now waits.
    Added,
    /// The profile was waiting already: the update folds in, the wait restarts.
    Merged,
    /// `max` profiles were waiting: not taken.
    Dropped,
}

#[derive(Debug)]
struct Waiting {
    expected: Expected,
    /// Which heap entry is current (older ones are skipped).
    seq: u64,
}

/// Profiles waiting for their read-back.
#[derive(Debug)]
pub struct PendingSet {
    max: usize,
    delay: Duration,
    waiting: HashMap<Identity, Waiting>,
    due: BinaryHeap<Reverse<(Instant, u64, Identity)>>,
    next_seq: u64,
}

impl PendingSet {
    /// At most `max` profiles, each read back `delay` after its latest update.
    pub fn new(max: usize, delay: Duration) -> PendingSet {
        PendingSet {
            max,
            delay,
            waiting: HashMap::new(),
            due: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    /// Profiles waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// An update Target accepted at `accepted_at`; `now` on the task's clock.
    pub fn offer(
        &mut self,
        update: &ProfileUpdate,
        accepted_at: SystemTime,
        now: Instant,
    ) -> Offered {
        if self.waiting.len() >= self.max && !self.waiting.contains_key(&update.identity) {
            return Offered::Dropped;
        }
        let seq = self.take_seq();
        let offered = match self.waiting.get_mut(&update.identity) {
            Some(waiting) => {
                waiting.expected.fold(update);
                waiting.expected.accepted_at = OffsetDateTime::from(accepted_at);
                waiting.seq = seq;
                Offered::Merged
            }
            None => {
                let mut expected = Expected::new(accepted_at);
                expected.fold(update);
                self.waiting
                    .insert(update.identity.clone(), Waiting { expected, seq });
                Offered::Added
            }
        };
        self.due
            .push(Reverse((now + self.delay, seq, update.identity.clone())));
        self.compact();
        offered
    }

    /// Puts back a profile whose fetch must be tried again at `at`; if it was
    /// offered again meanwhile, what it expected folds under the new wait.
    pub fn retry(&mut self, identity: Identity, expected: Expected, at: Instant) {
        if let Some(waiting) = self.waiting.get_mut(&identity) {
            let attempts = expected.attempts;
            waiting.expected.absorb(expected);
            waiting.expected.attempts = waiting.expected.attempts.max(attempts);
            return;
        }
        let seq = self.take_seq();
        self.waiting
            .insert(identity.clone(), Waiting { expected, seq });
        self.due.push(Reverse((at, seq, identity)));
    }

    /// When the next profile falls due.
    pub fn next_due(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.due.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next profile due by `now`, taken out.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Identity, Expected)> {
        self.drop_stale();
        let Reverse((at, _, _)) = self.due.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, _, identity)) = self.due.pop()?;
        let waiting = self.waiting.remove(&identity)?;
        Some((identity, waiting.expected))
    }

    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Drops heap entries of waits that were restarted since.
    fn drop_stale(&mut self) {
        while let Some(Reverse((_, seq, identity))) = self.due.peek() {
            if self.waiting.get(identity).is_some_and(|w| w.seq == *seq) {
                return;
            }
            self.due.pop();
        }
    }

    /// Keeps the heap within a few times the profiles waiting.
    fn compact(&mut self) {
        if self.due.len() <= 4 * self.waiting.len().max(16) {
            return;
        }
        let waiting = &self.waiting;
        self.due.retain(|Reverse((_, seq, identity))| {
            waiting.get(identity).is_some_and(|w| w.seq == *seq)
        });
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::event::parse_rfc3339;
    use crate::mapping::Attribute;

    /// An update of third-party profile `id` at `at`.
    pub(in crate::delivery::verify) fn update(
        id: &str,
        at: &str,
        attributes: &[(&str, &str)],
    ) -> ProfileUpdate {
        ProfileUpdate {
            identity: Identity::ThirdParty(id.into()),
            attributes: attributes
                .iter()
                .map(|(n, v)| Attribute {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            occurred_at: parse_rfc3339(at).unwrap(),
        }
    }

    fn values(expected: &Expected) -> Vec<(String, String)> {
        expected.attributes().into_iter().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_profile_falls_due_a_delay_after_its_latest_update_with_everything_folded_in() {
        let delay = Duration::from_secs(600);
        let mut set = PendingSet::new(10, delay);
        let t0 = Instant::now();
        let accepted = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a1 = update(
            "a",
            "2026-11-28T10:00:00Z",
            &[("total", "1"), ("store", "S1")],
        );
        // Delivered later but happened earlier: it does not override `total`.
        let a0 = update(
            "a",
            "2026-11-28T09:00:00Z",
            &[("total", "0"), ("tier", "gold")],
        );
        assert_eq!(set.offer(&a1, accepted, t0), Offered::Added);
        assert_eq!(
            set.offer(
                &update("b", "2026-11-28T10:00:00Z", &[("x", "1")]),
                accepted,
                t0 + Duration::from_secs(1)
            ),
            Offered::Added
        );
        assert_eq!(
            set.offer(
                &a0,
                accepted + Duration::from_secs(5),
                t0 + Duration::from_secs(5)
            ),
            Offered::Merged
        );
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.next_due(),
            Some(t0 + Duration::from_secs(1) + delay),
            "b first"
        );
        assert!(set.pop_due(t0 + delay).is_none());
        let (first, _) = set.pop_due(t0 + delay + Duration::from_secs(1)).unwrap();
        assert_eq!(first, Identity::ThirdParty("b".into()));
        assert!(
            set.pop_due(t0 + delay + Duration::from_secs(4)).is_none(),
            "a's wait restarted"
        );
        let (second, expected) = set.pop_due(t0 + delay + Duration::from_secs(5)).unwrap();
        assert_eq!(second, Identity::ThirdParty("a".into()));
        assert_eq!(
            values(&expected),
            [
                ("store".to_owned(), "S1".to_owned()),
                ("tier".to_owned(), "gold".to_owned()),
                ("total".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(
            expected.accepted_at,
            OffsetDateTime::from(accepted + Duration::from_secs(5))
        );
        assert!(set.is_empty());
        assert_eq!(set.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_set_drops_new_profiles_but_still_folds_waiting_ones() {
        let mut set = PendingSet::new(1, Duration::from_secs(1));
        let now = Instant::now();
        let at = SystemTime::UNIX_EPOCH;
        assert_eq!(
            set.offer(&update("a", "2026-11-28T10:00:00Z", &[]), at, now),
            Offered::Added
        );
        assert_eq!(
            set.offer(&update("b", "2026-11-28T10:00:00Z", &[]), at, now),
            Offered::Dropped
        );
        assert_eq!(
            set.offer(&update("a", "2026-11-28T10:00:01Z", &[]), at, now),
            Offered::Merged
        );
        // Many restarts of one wait keep the heap small.
        for _ in 0..1_000 {
            set.offer(&update("a", "2026-11-28T10:00:01Z", &[]), at, now);
        }
        assert!(set.due.len() <= 64, "{}", set.due.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_profile_comes_back_at_its_time_and_joins_a_newer_wait() {
        let mut set = PendingSet::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let at = SystemTime::UNIX_EPOCH;
        set.offer(
            &update("a", "2026-11-28T10:00:00Z", &[("x", "1"), ("y", "1")]),
            at,
            now,
        );
        let (id, mut expected) = set.pop_due(now + Duration::from_secs(60)).unwrap();
        expected.attempts = 1;
        set.retry(id.clone(), expected.clone(), now + Duration::from_secs(62));
        assert!(set.pop_due(now + Duration::from_secs(61)).is_none());
        let (_, back) = set.pop_due(now + Duration::from_secs(62)).unwrap();
        assert_eq!(back.attempts, 1);
        // Offered again while its fetch was out: the retry folds under the new wait.
        set.offer(
            &update("a", "2026-11-28T11:00:00Z", &[("x", "2")]),
            at,
            now + Duration::from_secs(63),
        );
        set.retry(id, back, now + Duration::from_secs(64));
        assert_eq!(set.len(), 1);
        assert!(
            set.pop_due(now + Duration::from_secs(64)).is_none(),
            "the newer wait decides"
        );
        let (_, merged) = set.pop_due(now + Duration::from_secs(123)).unwrap();
        assert_eq!(
            values(&merged),
            [
                ("x".to_owned(), "2".to_owned()),
                ("y".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(merged.attempts, 1);
    }
}
