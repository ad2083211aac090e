//! The simulator's profile state: the last value of every attribute of every profile,
//! with when it changed, as Target's profile fetch API shows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use super::params::ProfileUpdate;
use super::sharded::Sharded;

/// The two namespaces of profile ids; the same string names two different profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum IdKind {
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
    pub(crate) fn new() -> Self {
        Self {
            profiles: Sharded::new(),
        }
    }

    /// Applies an accepted update at `now`, creating the profile if needed.
    pub(crate) fn apply(&self, update: ProfileUpdate, now: OffsetDateTime) {
        let ProfileUpdate { key, attributes } = update;
        let mut shard = self.profiles.shard(&key);
        let profile = shard.entry(key).or_insert_with(|| Profile {
            modified_at: now,
            attributes: BTreeMap::new(),
        });
        profile.modified_at = now;
        for (name, value) in attributes {
            profile.attributes.insert(
                name,
                Attribute {
                    value,
                    modified_at: now,
                },
            );
        }
    }

    /// A copy of one profile.
    pub(crate) fn get(&self, key: &ProfileKey) -> Option<Profile> {
        self.profiles.shard(key).get(key).cloned()
    }

    /// One profile's attribute values.
    pub(crate) fn values(&self, key: &ProfileKey) -> Option<BTreeMap<String, String>> {
        self.profiles.shard(key).get(key).map(Profile::values)
    }

    /// Every profile.
    pub(crate) fn dump(&self) -> ProfileDump {
        let mut dump = ProfileDump::default();
        self.profiles.for_each(|key, profile| {
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

    /// Forgets every profile.
    pub(crate) fn clear(&self) {
        self.profiles.clear();
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

    #[test]
    fn later_updates_overwrite_only_the_attributes_they_carry() {
        let store = ProfileStore::new();
        store.apply(
            update(IdKind::ThirdParty, "c1", &[("a", "1"), ("b", "1")]),
            at(0),
        );
        store.apply(update(IdKind::ThirdParty, "c1", &[("b", "2")]), at(10));
        let key = ProfileKey::new(IdKind::ThirdParty, "c1");
        let profile = store.get(&key).expect("stored");
        assert_eq!(profile.modified_at, at(10));
        assert_eq!(profile.attributes["a"].modified_at, at(0));
        assert_eq!(profile.attributes["b"].value, "2");
        assert_eq!(profile.attributes["b"].modified_at, at(10));
    }

    #[test]
    fn third_party_and_pc_ids_are_separate_namespaces() {
        let store = ProfileStore::new();
        store.apply(update(IdKind::ThirdParty, "same", &[("a", "t")]), at(0));
        store.apply(update(IdKind::Pc, "same", &[("a", "p")]), at(0));
        let dump = store.dump();
        assert_eq!(dump.third_party["same"].attributes["a"], "t");
        assert_eq!(dump.pc["same"].attributes["a"], "p");
        assert_eq!(dump.pc["same"].modified_at, "1970-01-01T00:00:00.000Z");
        store.clear();
        assert_eq!(store.dump(), ProfileDump::default());
    }
}
