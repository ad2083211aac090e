//! The simulator's profile state: the last value of every attribute of every profile,
//! with when it changed, as Target's profile fetch API shows it; and which profiles
//! exist at a given moment under the [`Existence`] rules (known at start, expired after
//! their lifetime without writes, invisible for a while after a batch created them).
//!
//! Time is passed in: `now` is the simulator's clock (for lifetimes and delays), `wall`
//! the UTC time written in `modifiedAt`.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use super::existence::{known_at_start, Existence};
use super::params::ProfileUpdate;
use super::sharded::{lock, Sharded};

/// The two namespaces of profile ids; the same string names two different profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    /// `mbox3rdPartyId`, the customer's id.
    ThirdParty,
    /// `mboxPC`, Target's visitor id (also called tnt id).
    Pc,
}

/// One profile's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ProfileKey {
    kind: IdKind,
    id: String,
}

impl ProfileKey {
    pub(crate) fn new(kind: IdKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }

    pub(crate) fn kind(&self) -> IdKind {
        self.kind
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

/// A profile as stored.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) modified_at: OffsetDateTime,
    pub(crate) attributes: BTreeMap<String, Attribute>,
    /// The last applied write (for a profile known at start: the start), on the
    /// simulator's clock; the lifetime runs from here.
    active_at: Duration,
    /// From when the fetch API shows it and single updates land, on the same clock.
    readable_at: Duration,
}

/// Where one profile stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Never existed, or expired.
    Absent,
    /// Created by a batch and not yet visible.
    Unreadable,
    /// Exists and is visible.
    Readable,
}

/// What a write did to its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landing {
    /// An existing profile was updated.
    Updated,
    /// A missing profile was created with the write's attributes.
    Created,
    /// The profile does not exist (or is not visible yet) and the write may not create
    /// it: nothing changed.
    NotFound,
}

/// One attribute's last value.
#[derive(Debug, Clone)]
pub(crate) struct Attribute {
    pub(crate) value: String,
    pub(crate) modified_at: OffsetDateTime,
}

/// Every stored profile, by namespace then id (`GET /_sim/profiles`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileDump {
    /// Profiles named by `mbox3rdPartyId`.
    #[serde(rename = "thirdPartyId")]
    pub third_party: BTreeMap<String, StoredProfile>,
    /// Profiles named by `mboxPC`.
    #[serde(rename = "pcId")]
    pub pc: BTreeMap<String, StoredProfile>,
}

/// One profile in a [`ProfileDump`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProfile {
    /// When an accepted update last touched it, RFC 3339 UTC with milliseconds.
    #[serde(rename = "modifiedAt")]
    pub modified_at: String,
    /// The last value of every attribute.
    pub attributes: BTreeMap<String, String>,
}

/// All profiles, sharded by key.
#[derive(Debug)]
pub(crate) struct ProfileStore {
    profiles: Sharded<Profile>,
    /// When the profiles known at start began (the start, or the last reset): the
    /// simulator's clock and the wall clock.
    seeded: Mutex<(Duration, OffsetDateTime)>,
}

/// Timestamps as Target's fetch API writes them: `2026-11-28T10:15:00.123Z`.
const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Renders a UTC time as [`TIMESTAMP`].
pub(crate) fn render_time(at: OffsetDateTime) -> String {
    at.format(TIMESTAMP)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

impl ProfileStore {
    /// No stored profile; the profiles known at start begin at `now` (`wall`).
    pub(crate) fn new(now: Duration, wall: OffsetDateTime) -> Self {
        Self {
            profiles: Sharded::new(),
            seeded: Mutex::new((now, wall)),
        }
    }

    /// Applies a single update at `now`: it lands on a readable profile, creates a
    /// missing one only when `rules.single_update_creates`, and otherwise changes nothing.
    pub(crate) fn update(
        &self,
        update: ProfileUpdate,
        now: Duration,
        wall: OffsetDateTime,
        rules: &Existence,
    ) -> Landing {
        let may_create = rules.single_update_creates;
        self.write(update, now, wall, rules, |standing| match standing {
            Standing::Readable => Some((Landing::Updated, now)),
            Standing::Unreadable if may_create => Some((Landing::Updated, now)),
            Standing::Absent if may_create => Some((Landing::Created, now)),
            Standing::Unreadable | Standing::Absent => None,
        })
    }

    /// Applies one row of a bulk batch at `now`. A v2 batch (`creates`) updates any
    /// existing profile and creates a missing one, visible after `readable_after`; a v1
    /// batch only updates readable profiles, as single updates do.
    pub(crate) fn batch_row(
        &self,
        update: ProfileUpdate,
        creates: bool,
        now: Duration,
        wall: OffsetDateTime,
        rules: &Existence,
    ) -> Landing {
        let visible_from = now.saturating_add(rules.readable_after());
        self.write(update, now, wall, rules, |standing| match standing {
            Standing::Readable => Some((Landing::Updated, now)),
            Standing::Unreadable if creates => Some((Landing::Updated, now)),
            Standing::Absent if creates => Some((Landing::Created, visible_from)),
            Standing::Unreadable | Standing::Absent => None,
        })
    }

    /// Writes `update` when `decide` (given the profile's standing) says how it lands and
    /// from when a created profile is readable.
    fn write(
        &self,
        update: ProfileUpdate,
        now: Duration,
        wall: OffsetDateTime,
        rules: &Existence,
        decide: impl FnOnce(Standing) -> Option<(Landing, Duration)>,
    ) -> Landing {
        let seeded = *lock(&self.seeded);
        let ProfileUpdate { key, attributes } = update;
        let mut shard = self.profiles.shard(&key);
        let standing = standing(shard.get(&key), &key, now, seeded.0, rules);
        let Some((landing, readable_at)) = decide(standing) else {
            return Landing::NotFound;
        };
        let fresh = |active_at, modified_at| Profile {
            modified_at,
            attributes: BTreeMap::new(),
            active_at,
            readable_at,
        };
        let profile = match shard.entry(key) {
            // A new profile replaces whatever expired under its key.
            Entry::Occupied(mut entry) if landing == Landing::Created => {
                entry.insert(fresh(now, wall));
                entry.into_mut()
            }
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) if landing == Landing::Created => entry.insert(fresh(now, wall)),
            // A profile known at start, written for the first time.
            Entry::Vacant(entry) => entry.insert(fresh(seeded.0, seeded.1)),
        };
        profile.modified_at = wall;
        profile.active_at = now;
        for (name, value) in attributes {
            profile.attributes.insert(
                name,
                Attribute {
                    value,
                    modified_at: wall,
                },
            );
        }
        landing
    }

    /// The profile the fetch API shows at `now`: readable, stored or known at start.
    pub(crate) fn fetch(
        &self,
        key: &ProfileKey,
        now: Duration,
        rules: &Existence,
    ) -> Option<Profile> {
        let (seeded_at, seeded_wall) = *lock(&self.seeded);
        let shard = self.profiles.shard(key);
        let stored = shard.get(key);
        if standing(stored, key, now, seeded_at, rules) != Standing::Readable {
            return None;
        }
        Some(stored.cloned().unwrap_or(Profile {
            modified_at: seeded_wall,
            attributes: BTreeMap::new(),
            active_at: seeded_at,
            readable_at: Duration::ZERO,
        }))
    }

    /// One stored profile's attribute values, unless it expired (readable or not; a
    /// profile known at start appears once written).
    pub(crate) fn values(
        &self,
        key: &ProfileKey,
        now: Duration,
        rules: &Existence,
    ) -> Option<BTreeMap<String, String>> {
        self.profiles
            .shard(key)
            .get(key)
            .filter(|profile| alive(profile, now, rules))
            .map(Profile::values)
    }

    /// Every stored profile that has not expired (see [`ProfileStore::values`]).
    pub(crate) fn dump(&self, now: Duration, rules: &Existence) -> ProfileDump {
        let mut dump = ProfileDump::default();
        self.profiles.for_each(|key, profile| {
            if !alive(profile, now, rules) {
                return;
            }
            let stored = StoredProfile {
                modified_at: render_time(profile.modified_at),
                attributes: profile.values(),
            };
            let namespace = match key.kind() {
                IdKind::ThirdParty => &mut dump.third_party,
                IdKind::Pc => &mut dump.pc,
            };
            namespace.insert(key.id().to_owned(), stored);
        });
        dump
    }

    /// Forgets every profile; the profiles known at start begin again at `now`.
    pub(crate) fn clear(&self, now: Duration, wall: OffsetDateTime) {
        self.profiles.clear();
        *lock(&self.seeded) = (now, wall);
    }
}

/// Whether `profile` has had a write within its lifetime at `now`.
fn alive(profile: &Profile, now: Duration, rules: &Existence) -> bool {
    now.saturating_sub(profile.active_at) < rules.lifetime()
}

/// Where the profile `key` stands at `now`, given what is stored under it.
fn standing(
    stored: Option<&Profile>,
    key: &ProfileKey,
    now: Duration,
    seeded_at: Duration,
    rules: &Existence,
) -> Standing {
    match stored {
        Some(profile) if !alive(profile, now, rules) => Standing::Absent,
        Some(profile) if now < profile.readable_at => Standing::Unreadable,
        Some(_) => Standing::Readable,
        None if known_at_start(key.id(), rules.known_share)
            && now.saturating_sub(seeded_at) < rules.lifetime() =>
        {
            Standing::Readable
        }
        None => Standing::Absent,
    }
}

impl Profile {
    fn values(&self) -> BTreeMap<String, String> {
        self.attributes
            .iter()
            .map(|(name, attribute)| (name.clone(), attribute.value.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(kind: IdKind, id: &str, attributes: &[(&str, &str)]) -> ProfileUpdate {
        ProfileUpdate {
            key: ProfileKey::new(kind, id),
            attributes: attributes
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).expect("in range")
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn third_party(id: &str) -> ProfileKey {
        ProfileKey::new(IdKind::ThirdParty, id)
    }

    /// A store under `rules`, started at 0.
    fn store() -> ProfileStore {
        ProfileStore::new(Duration::ZERO, at(0))
    }

    #[test]
    fn later_updates_overwrite_only_the_attributes_they_carry() {
        let store = store();
        let rules = Existence::lenient();
        let created = store.update(
            update(IdKind::ThirdParty, "c1", &[("a", "1"), ("b", "1")]),
            secs(0),
            at(0),
            &rules,
        );
        assert_eq!(created, Landing::Created);
        let updated = store.update(
            update(IdKind::ThirdParty, "c1", &[("b", "2")]),
            secs(10),
            at(10),
            &rules,
        );
        assert_eq!(updated, Landing::Updated);
        let profile = store
            .fetch(&third_party("c1"), secs(10), &rules)
            .expect("stored");
        assert_eq!(profile.modified_at, at(10));
        assert_eq!(profile.attributes["a"].modified_at, at(0));
        assert_eq!(profile.attributes["b"].value, "2");
        assert_eq!(profile.attributes["b"].modified_at, at(10));
    }

    #[test]
    fn third_party_and_pc_ids_are_separate_namespaces() {
        let store = store();
        let rules = Existence::lenient();
        store.update(
            update(IdKind::ThirdParty, "same", &[("a", "t")]),
            secs(0),
            at(0),
            &rules,
        );
        store.update(
            update(IdKind::Pc, "same", &[("a", "p")]),
            secs(0),
            at(0),
            &rules,
        );
        let dump = store.dump(secs(0), &rules);
        assert_eq!(dump.third_party["same"].attributes["a"], "t");
        assert_eq!(dump.pc["same"].attributes["a"], "p");
        assert_eq!(dump.pc["same"].modified_at, "1970-01-01T00:00:00.000Z");
        store.clear(secs(1), at(1));
        assert_eq!(store.dump(secs(1), &rules), ProfileDump::default());
    }

    #[test]
    fn a_single_update_to_a_missing_profile_changes_nothing() {
        let store = store();
        let rules = Existence::faithful();
        let landing = store.update(
            update(IdKind::ThirdParty, "new", &[("a", "1")]),
            secs(1),
            at(1),
            &rules,
        );
        assert_eq!(landing, Landing::NotFound);
        assert_eq!(store.values(&third_party("new"), secs(1), &rules), None);
        assert!(store.fetch(&third_party("new"), secs(1), &rules).is_none());
        assert_eq!(store.dump(secs(1), &rules), ProfileDump::default());
    }

    #[test]
    fn a_profile_known_at_start_is_readable_empty_and_takes_updates() {
        let store = store();
        let rules = Existence::all_known();
        let empty = store
            .fetch(&third_party("k"), secs(5), &rules)
            .expect("known at start");
        assert!(empty.attributes.is_empty());
        assert_eq!(empty.modified_at, at(0));
        assert_eq!(store.dump(secs(5), &rules), ProfileDump::default());
        let landing = store.update(
            update(IdKind::ThirdParty, "k", &[("a", "1")]),
            secs(5),
            at(5),
            &rules,
        );
        assert_eq!(landing, Landing::Updated);
        assert_eq!(
            store.values(&third_party("k"), secs(5), &rules),
            Some([("a".to_owned(), "1".to_owned())].into())
        );
    }

    #[test]
    fn profiles_expire_after_their_lifetime_without_writes() {
        let store = store();
        let rules = Existence {
            lifetime_ms: 10_000,
            ..Existence::all_known()
        };
        let key = third_party("k");
        let write = |now| {
            store.update(
                update(IdKind::ThirdParty, "k", &[("a", "1")]),
                secs(now),
                at(0),
                &rules,
            )
        };
        assert_eq!(write(9), Landing::Updated);
        // Alive 10 s after its last write, not after.
        assert!(store.fetch(&key, secs(18), &rules).is_some());
        assert!(store.fetch(&key, secs(19), &rules).is_none());
        assert_eq!(store.values(&key, secs(19), &rules), None);
        assert_eq!(write(19), Landing::NotFound);
        // Untouched profiles known at start expire 10 s after the start.
        assert!(store
            .fetch(&third_party("other"), secs(9), &rules)
            .is_some());
        assert!(store
            .fetch(&third_party("other"), secs(10), &rules)
            .is_none());
        // A reset brings the profiles known at start back.
        store.clear(secs(30), at(30));
        assert!(store.fetch(&key, secs(31), &rules).is_some());
    }

    #[test]
    fn v2_rows_create_missing_profiles_readable_after_the_delay_and_v1_rows_do_not() {
        let store = store();
        let rules = Existence {
            readable_after_ms: 3_000,
            ..Existence::faithful()
        };
        let row = |id, creates, now| {
            store.batch_row(
                update(IdKind::ThirdParty, id, &[("a", "1")]),
                creates,
                secs(now),
                at(0),
                &rules,
            )
        };
        assert_eq!(row("v1", false, 1), Landing::NotFound);
        assert_eq!(store.values(&third_party("v1"), secs(1), &rules), None);
        assert_eq!(row("v2", true, 1), Landing::Created);
        assert!(store.values(&third_party("v2"), secs(1), &rules).is_some());
        // Invisible until 3 s after it was created: no fetch, no single update, no v1 row.
        assert!(store.fetch(&third_party("v2"), secs(3), &rules).is_none());
        let single = store.update(
            update(IdKind::ThirdParty, "v2", &[("a", "2")]),
            secs(3),
            at(0),
            &rules,
        );
        assert_eq!(single, Landing::NotFound);
        assert_eq!(row("v2", false, 3), Landing::NotFound);
        assert_eq!(row("v2", true, 3), Landing::Updated);
        let visible = store
            .fetch(&third_party("v2"), secs(4), &rules)
            .expect("readable");
        assert_eq!(visible.attributes["a"].value, "1");
        assert_eq!(row("v2", false, 4), Landing::Updated);
    }
}
