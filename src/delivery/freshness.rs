//! Time order across updates: an attribute from an older event never
//! overwrites a newer value of it that this pod already delivered.
//!
//! Coalescing keeps the latest `(occurred_at, offset)` per attribute within
//! one update (`docs/contract.md`, section 5); across updates a till that
//! uploads late (an older `occurred_at` after a newer one was delivered)
//! would roll the attribute back. So the pod remembers, per profile and
//! attribute, the `occurred_at` of the value it delivered last, and leaves
//! out of later updates every attribute whose event is older. An update with
//! nothing left is not sent at all: its events are done (superseded).
//!
//! Bounded: at most `existence.max_profiles` profiles, the least recently
//! delivered forgotten first, and per pod (a partition's new owner starts
//! without it). What the pod remembers holds only for the assignment it
//! delivered under: once a partition has gone, another owner may have sent
//! older values since, so a profile's memory from an earlier assignment
//! leaves nothing out. Pure: no I/O, no clock.

use crate::event::{Identity, Timestamp};
use crate::mapping::AttributeName;
use crate::mapping::{Attribute, ProfileUpdate};
use std::collections::{HashMap, VecDeque};

/// What was delivered for one profile.
#[derive(Debug)]
struct Delivered {
    /// Its place in the delivery order.
    stamp: u64,
    /// The assignment (epoch) of the partition whose events delivered it.
    assignment: u64,
    /// The newest `occurred_at` per attribute index.
    times: Vec<(u16, Timestamp)>,
}

/// The newest delivered `occurred_at` per profile and attribute.
#[derive(Debug)]
pub struct Freshness {
    /// Attribute names seen, so a profile's entry holds small indexes.
    names: Vec<AttributeName>,
    profiles: HashMap<Identity, Delivered>,
    /// Delivery order, for forgetting the oldest first (stale slots skipped).
    order: VecDeque<(Identity, u64)>,
    next_stamp: u64,
    max_profiles: usize,
}

impl Freshness {
    /// Remembers at most `max_profiles` profiles.
    pub fn new(max_profiles: usize) -> Freshness {
        Freshness {
            names: Vec::new(),
            profiles: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            max_profiles: max_profiles.max(1),
        }
    }

    /// `update` (the merge of events whose times are `times`, one per
    /// attribute, read under `assignment`) without the attributes a newer
    /// value was delivered for under the same assignment; `None` when
    /// nothing is left to send.
    pub fn current(
        &self,
        update: ProfileUpdate,
        times: &[(AttributeName, Timestamp)],
        assignment: u64,
    ) -> Option<ProfileUpdate> {
        let Some(delivered) = self
            .profiles
            .get(&update.identity)
            .filter(|d| d.assignment == assignment)
        else {
            return Some(update);
        };
        let delivered = &delivered.times;
        let newer = |attribute: &Attribute| {
            let time = times.iter().find(|(n, _)| *n == attribute.name)?.1;
            let index = self.index_of(&attribute.name)?;
            delivered
                .iter()
                .find(|(i, _)| *i == index)
                .filter(|(_, at)| *at > time)
                .map(|_| ())
        };
        let mut update = update;
        update
            .attributes
            .retain(|attribute| newer(attribute).is_none());
        (!update.attributes.is_empty()).then_some(update)
    }

    /// Target accepted `update`, whose attributes' events happened at
    /// `times` and were read under `assignment`.
    pub fn delivered(
        &mut self,
        update: &ProfileUpdate,
        times: &[(AttributeName, Timestamp)],
        assignment: u64,
    ) {
        let mut indexes = Vec::with_capacity(update.attributes.len());
        for attribute in &update.attributes {
            if let Some((_, time)) = times.iter().find(|(n, _)| *n == attribute.name) {
                indexes.push((self.intern(attribute.name), *time));
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let entry = self
            .profiles
            .entry(update.identity.clone())
            .or_insert_with(|| Delivered {
                stamp,
                assignment,
                times: Vec::new(),
            });
        entry.stamp = stamp;
        if entry.assignment != assignment {
            // Remembered under an earlier assignment: void now.
            entry.assignment = assignment;
            entry.times.clear();
        }
        for (index, time) in indexes {
            match entry.times.iter_mut().find(|(i, _)| *i == index) {
                Some((_, at)) => *at = (*at).max(time),
                None => entry.times.push((index, time)),
            }
        }
        self.order.push_back((update.identity.clone(), stamp));
        while self.profiles.len() > self.max_profiles {
            let Some((oldest, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.profiles.get(&oldest).is_some_and(|e| e.stamp == stamp) {
                self.profiles.remove(&oldest);
            }
        }
        if self.order.len() > 2 * self.max_profiles {
            let profiles = &self.profiles;
            self.order
                .retain(|(id, stamp)| profiles.get(id).is_some_and(|e| e.stamp == *stamp));
        }
    }

    fn index_of(&self, name: &str) -> Option<u16> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .and_then(|i| u16::try_from(i).ok())
    }

    fn intern(&mut self, name: AttributeName) -> u16 {
        if let Some(index) = self.index_of(&name) {
            return index;
        }
        self.names.push(name);
        u16::try_from(self.names.len() - 1).unwrap_or(u16::MAX)
    }
}

/// Each attribute of the merge of `updates` with the `occurred_at` of the
/// event its value comes from (the latest event that carries it).
pub fn attribute_times<'a>(
    updates: impl IntoIterator<Item = &'a ProfileUpdate>,
) -> Vec<(AttributeName, Timestamp)> {
    let mut times: Vec<(AttributeName, Timestamp)> = Vec::new();
    for update in updates {
        for attribute in &update.attributes {
            match times.iter_mut().find(|(n, _)| *n == attribute.name) {
                Some((_, at)) => *at = (*at).max(update.occurred_at),
                None => times.push((attribute.name, update.occurred_at)),
            }
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_rfc3339;

    /// The assignment the tests' events are read under.
    const ASSIGNMENT: u64 = 1;

    fn update(id: &str, at: &str, attributes: &[(&str, &str)]) -> ProfileUpdate {
        ProfileUpdate {
            identity: Identity::ThirdParty(id.into()),
            attributes: attributes
                .iter()
                .map(|(n, v)| Attribute {
                    name: AttributeName::new(n),
                    value: (*v).into(),
                })
                .collect(),
            occurred_at: parse_rfc3339(at).unwrap(),
        }
    }

    fn names(update: &Option<ProfileUpdate>) -> Vec<&str> {
        update
            .iter()
            .flat_map(|u| u.attributes.iter().map(|a| &*a.name))
            .collect()
    }

    #[test]
    fn a_late_event_leaves_out_what_a_newer_one_delivered_and_keeps_the_rest() {
        let mut freshness = Freshness::new(10);
        let sale = update(
            "a",
            "2026-11-28T10:00:00Z",
            &[("lastPurchaseAt", "10:00"), ("tier", "gold")],
        );
        freshness.delivered(&sale, &attribute_times([&sale]), ASSIGNMENT);
        // Uploaded late: a sale and a return of 09:00.
        let late = update(
            "a",
            "2026-11-28T09:00:00Z",
            &[("lastPurchaseAt", "09:00"), ("lastReturnAt", "09:00")],
        );
        let sent = freshness.current(late.clone(), &attribute_times([&late]), ASSIGNMENT);
        assert_eq!(names(&sent), ["lastReturnAt"]);
        // Nothing newer than what was delivered: nothing to send.
        let older = update("a", "2026-11-28T08:00:00Z", &[("tier", "silver")]);
        assert!(freshness
            .current(older.clone(), &attribute_times([&older]), ASSIGNMENT)
            .is_none());
        // Newer, or as new (a later offset), goes.
        let newer = update("a", "2026-11-28T10:00:00Z", &[("tier", "platinum")]);
        assert_eq!(
            names(&freshness.current(newer.clone(), &attribute_times([&newer]), ASSIGNMENT)),
            ["tier"]
        );
        // Another profile is not affected.
        let other = update("b", "2026-11-28T08:00:00Z", &[("tier", "silver")]);
        assert_eq!(
            names(&freshness.current(other.clone(), &attribute_times([&other]), ASSIGNMENT)),
            ["tier"]
        );
    }

    #[test]
    fn what_was_delivered_under_an_earlier_assignment_leaves_nothing_out() {
        let mut freshness = Freshness::new(10);
        let sale = update("a", "2026-11-28T10:00:00Z", &[("lastPurchaseAt", "10:00")]);
        freshness.delivered(&sale, &attribute_times([&sale]), ASSIGNMENT);
        // The partition went and came back: another owner may have sent an
        // older value meanwhile, so an older event goes.
        let older = update("a", "2026-11-28T09:30:00Z", &[("lastPurchaseAt", "09:30")]);
        let times = attribute_times([&older]);
        assert!(freshness
            .current(older.clone(), &times, ASSIGNMENT)
            .is_none());
        assert_eq!(
            names(&freshness.current(older.clone(), &times, ASSIGNMENT + 1)),
            ["lastPurchaseAt"]
        );
        // Delivered under the new assignment, it is what counts from then on.
        freshness.delivered(&older, &times, ASSIGNMENT + 1);
        let oldest = update("a", "2026-11-28T09:00:00Z", &[("lastPurchaseAt", "09:00")]);
        assert!(freshness
            .current(oldest.clone(), &attribute_times([&oldest]), ASSIGNMENT + 1)
            .is_none());
    }

    #[test]
    fn an_attributes_time_is_the_latest_event_that_carries_it() {
        let a = update("a", "2026-11-28T10:00:00Z", &[("x", "1"), ("y", "1")]);
        let b = update("a", "2026-11-28T11:00:00Z", &[("x", "2")]);
        let times = attribute_times([&b, &a]);
        let time = |n: &str| times.iter().find(|(m, _)| &**m == n).unwrap().1;
        assert_eq!(time("x"), b.occurred_at);
        assert_eq!(time("y"), a.occurred_at);
    }

    #[test]
    fn profiles_delivered_least_recently_are_forgotten_beyond_the_bound() {
        let mut freshness = Freshness::new(2);
        for id in ["a", "b", "c"] {
            let u = update(id, "2026-11-28T10:00:00Z", &[("x", "1")]);
            freshness.delivered(&u, &attribute_times([&u]), ASSIGNMENT);
        }
        assert_eq!(freshness.profiles.len(), 2);
        let old_a = update("a", "2026-11-28T09:00:00Z", &[("x", "0")]);
        assert!(
            freshness
                .current(old_a.clone(), &attribute_times([&old_a]), ASSIGNMENT)
                .is_some(),
            "a was forgotten"
        );
        let old_c = update("c", "2026-11-28T09:00:00Z", &[("x", "0")]);
        assert!(freshness
            .current(old_c.clone(), &attribute_times([&old_c]), ASSIGNMENT)
            .is_none());
    }
}
