//! Derived profile attributes: a validated [`Purchase`] in, a [`ProfileUpdate`]
//! out. The default table is section 5 of `docs/contract.md`; operators may rename,
//! drop and add constant attributes through [`MappingSettings`], so the
//! mapping is data ([`Mapping`]) interpreted by pure functions.

mod attribute;
mod merge;
mod name;
mod settings;

pub use attribute::{categories_by_spend, render_total, truncate_chars, AttributeSource};
pub use merge::merge_updates;
pub use name::{AttributeName, PARAMETER};
pub use settings::MappingSettings;

use crate::event::{self, EventError, EventKind, Identity, Purchase, Timestamp};
use compact_str::CompactString;
use smallvec::SmallVec;

/// The longest value Target keeps for a profile attribute, in characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// The longest attribute name Adobe documents, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// One attribute of a profile update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Name without the `profile.` prefix.
    pub name: AttributeName,
    /// The value, at most [`MAX_VALUE_CHARS`] characters: kept in the
    /// value itself up to 24 bytes (most are: dates, stores, totals), so
    /// most attributes cost no allocation to derive, buffer and drop.
    pub value: CompactString,
}

/// What one Target request says about one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUpdate {
    /// Whose profile.
    pub identity: Identity,
    /// In mapping order; names are unique.
    pub attributes: Vec<Attribute>,
    /// When the (latest) event it carries happened: coalescing keeps the
    /// latest value per attribute, and metrics measure age from it.
    pub occurred_at: Timestamp,
}

/// What the pipeline does with one Kafka record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this update to Target.
    Update(ProfileUpdate),
    /// Deliberately not sent, counted and committed (an anonymous purchase).
    Skip(SkipReason),
    /// Invalid: goes to the dead-letter topic with this error.
    DeadLetter(EventError),
}

/// Why an event is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither `third_party_id` nor `pc_id`.
    NoIdentity,
}

impl SkipReason {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoIdentity => "no_identity",
        }
    }
}

/// The attribute table in force: which attributes, under which names, plus constants.
#[derive(Debug, Clone)]
pub struct Mapping {
    entries: Vec<(AttributeSource, AttributeName)>,
    constants: Vec<Attribute>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            entries: AttributeSource::ALL
                .iter()
                .map(|source| (*source, AttributeName::new(source.default_name())))
                .collect(),
            constants: Vec::new(),
        }
    }
}

impl Mapping {
    /// Builds the mapping from settings, or says everything that is wrong with them.
    pub fn from_settings(settings: &MappingSettings) -> Result<Mapping, Vec<String>> {
        settings.build()
    }

    /// Bytes of a Kafka record to a decision: parse, validate, then derive.
    /// An event is validated before its identity is looked at.
    pub fn decide(&self, bytes: &[u8]) -> Decision {
        match event::parse(bytes) {
            Err(error) => Decision::DeadLetter(error),
            // The identity is moved into the update, not copied: no
            // attribute is derived from it.
            Ok(mut purchase) => match purchase.identity.take() {
                Some(identity) => Decision::Update(self.update_for(identity, &purchase)),
                None => Decision::Skip(SkipReason::NoIdentity),
            },
        }
    }

    /// The update for a purchase, `None` when it has no identity.
    pub fn derive(&self, purchase: &Purchase) -> Option<ProfileUpdate> {
        let identity = purchase.identity.clone()?;
        Some(self.update_for(identity, purchase))
    }

    /// The update of `identity`'s profile for `purchase`.
    fn update_for(&self, identity: Identity, purchase: &Purchase) -> ProfileUpdate {
        // Gathered on the stack first, then moved into a vector of exactly
        // their number: an update may wait in the buffer a long time, so it
        // keeps no empty room for the attributes this event did not have,
        // and no allocation is made and then shrunk for every event.
        let mut attributes: SmallVec<[Attribute; 16]> = SmallVec::new();
        let mut ranking = attribute::Ranking::default();
        for (source, name) in &self.entries {
            if let Some(value) = source.value_ranked(purchase, &mut ranking) {
                attributes.push(Attribute {
                    name: *name,
                    value: truncate_chars(value, MAX_VALUE_CHARS),
                });
            }
        }
        attributes.extend(self.constants.iter().cloned());
        ProfileUpdate {
            identity,
            attributes: attributes.into_iter().collect(),
            occurred_at: purchase.occurred_at,
        }
    }

    /// The attribute names this mapping can produce for an event kind, in order.
    pub fn names_for(&self, kind: EventKind) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(move |(source, _)| source.applies_to(kind))
            .map(|(_, name)| &**name)
            .chain(self.constants.iter().map(|c| &*c.name))
    }
}

#[cfg(test)]
mod tests;
