//! What this pod knows about which profiles Target has.
//!
//! Adobe's single update API only updates: an update for a profile Target
//! does not have is answered 2xx and changes nothing (`docs/contract.md`,
//! section 13). So before a single update, the coordinator asks this
//! directory: a profile a fetch found recently gets single updates; a
//! profile a fetch did not find goes through a bulk v2 batch (which creates
//! it) or is dead-lettered, as `existence.policy` says; any other profile is
//! fetched first. Partitions are keyed by customer, so a profile lives on one
//! pod, and a per-pod directory is enough.
//!
//! Bounded twice: an answer is trusted for a limited time (a confirmation for
//! `existence.confirmed_ttl_ms`, below Adobe's 14-day inactivity expiry; a
//! "not found" for [`ABSENT_TTL`], about the time Adobe takes to make a
//! created profile readable), and at most `existence.max_profiles` profiles
//! are remembered, the oldest answers forgotten first. Pure: time is an
//! argument.

use crate::event::Identity;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// How long a "no such profile" is trusted: Adobe makes a profile created by
/// a batch readable "in about an hour", so asking sooner mostly wastes a fetch.
pub const ABSENT_TTL: Duration = Duration::from_secs(3600);

/// What the directory says about a profile now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge {
    /// A fetch found it recently: single updates land.
    Exists,
    /// A fetch did not find it recently (or a batch is creating it).
    Absent,
    /// Nothing recent: fetch it first.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    exists: bool,
    until: Instant,
    /// Which insertion this entry came from (older queue slots are stale).
    stamp: u64,
}

/// The bounded directory of profiles Target has or has not.
#[derive(Debug)]
pub struct ProfileDirectory {
    entries: HashMap<Identity, Entry>,
    /// Insertion order, for forgetting the oldest answers first.
    order: VecDeque<(Identity, u64)>,
    next_stamp: u64,
    confirmed_ttl: Duration,
    max_profiles: usize,
}

impl ProfileDirectory {
    /// A directory trusting confirmations for `confirmed_ttl`, holding at
    /// most `max_profiles` answers.
    pub fn new(confirmed_ttl: Duration, max_profiles: usize) -> ProfileDirectory {
        ProfileDirectory {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            confirmed_ttl,
            max_profiles: max_profiles.max(1),
        }
    }

    /// What is known about `profile` at `now`.
    pub fn lookup(&self, profile: &Identity, now: Instant) -> Knowledge {
        match self.entries.get(profile) {
            Some(entry) if entry.until > now && entry.exists => Knowledge::Exists,
            Some(entry) if entry.until > now => Knowledge::Absent,
            _ => Knowledge::Unknown,
        }
    }

    /// A fetch found `profile` at `now`.
    pub fn confirmed(&mut self, profile: Identity, now: Instant) {
        self.remember(profile, true, now + self.confirmed_ttl);
    }

    /// A fetch did not find `profile` at `now` (or a batch is creating it,
    /// which makes it readable only later).
    pub fn absent(&mut self, profile: Identity, now: Instant) {
        self.remember(profile, false, now + ABSENT_TTL);
    }

    /// Profiles remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn remember(&mut self, profile: Identity, exists: bool, until: Instant) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.entries.insert(
            profile.clone(),
            Entry {
                exists,
                until,
                stamp,
            },
        );
        self.order.push_back((profile, stamp));
        while self.entries.len() > self.max_profiles {
            let Some((oldest, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&oldest).is_some_and(|e| e.stamp == stamp) {
                self.entries.remove(&oldest);
            }
        }
        // Stale slots (answers replaced since) go once they pile up.
        if self.order.len() > 2 * self.max_profiles {
            let entries = &self.entries;
            self.order
                .retain(|(id, stamp)| entries.get(id).is_some_and(|e| e.stamp == *stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Identity {
        Identity::ThirdParty(name.into())
    }

    #[test]
    fn a_confirmation_holds_for_its_time_to_live_then_the_profile_is_unknown() {
        let now = Instant::now();
        let mut directory = ProfileDirectory::new(Duration::from_secs(60), 10);
        assert_eq!(directory.lookup(&id("a"), now), Knowledge::Unknown);
        directory.confirmed(id("a"), now);
        assert_eq!(directory.lookup(&id("a"), now), Knowledge::Exists);
        let later = now + Duration::from_secs(59);
        assert_eq!(directory.lookup(&id("a"), later), Knowledge::Exists);
        let expired = now + Duration::from_secs(60);
        assert_eq!(directory.lookup(&id("a"), expired), Knowledge::Unknown);
    }

    #[test]
    fn not_found_is_trusted_for_about_the_time_adobe_takes_to_make_a_profile_readable() {
        let now = Instant::now();
        let mut directory = ProfileDirectory::new(Duration::from_secs(86_400), 10);
        directory.absent(id("a"), now);
        assert_eq!(directory.lookup(&id("a"), now), Knowledge::Absent);
        assert_eq!(
            directory.lookup(&id("a"), now + ABSENT_TTL),
            Knowledge::Unknown
        );
        // A later fetch that finds it wins.
        directory.confirmed(id("a"), now + Duration::from_secs(1));
        assert_eq!(
            directory.lookup(&id("a"), now + ABSENT_TTL),
            Knowledge::Exists
        );
    }

    #[test]
    fn the_oldest_answers_are_forgotten_first_and_the_size_stays_bounded() {
        let now = Instant::now();
        let mut directory = ProfileDirectory::new(Duration::from_secs(60), 3);
        for name in ["a", "b", "c"] {
            directory.confirmed(id(name), now);
        }
        // "a" answered again: now the newest.
        directory.confirmed(id("a"), now);
        directory.confirmed(id("d"), now);
        assert_eq!(directory.len(), 3);
        assert_eq!(directory.lookup(&id("b"), now), Knowledge::Unknown);
        for name in ["a", "c", "d"] {
            assert_eq!(
                directory.lookup(&id(name), now),
                Knowledge::Exists,
                "{name}"
            );
        }
        for round in 0..100 {
            directory.absent(id(&format!("x{round}")), now);
        }
        assert_eq!(directory.len(), 3);
        assert!(directory.order.len() <= 6);
    }

    #[test]
    fn the_two_kinds_of_identity_are_different_profiles() {
        let now = Instant::now();
        let mut directory = ProfileDirectory::new(Duration::from_secs(60), 10);
        directory.confirmed(Identity::ThirdParty("1".into()), now);
        assert_eq!(
            directory.lookup(&Identity::Pc("1".into()), now),
            Knowledge::Unknown
        );
    }
}
