//! The event `pos.purchase.v1`: raw bytes in, a validated [`Purchase`] out.
//!
//! This is the edge of the system ("parse, don't validate"): every rule of the
//! contract's sections 4 and 11 (`docs/contract.md`) is checked here, once, and nothing downstream
//! re-checks it. A failure is an [`EventError`] whose [`ErrorClass`] is what
//! the dead-letter header says and whose reason names the first offending field.

mod amount;
mod parse;
mod timestamp;
mod wellformed;

pub use amount::{parse_amount_number, parse_amount_string, AmountError};
pub use parse::parse;
pub use timestamp::{parse_rfc3339, Timestamp};
pub use wellformed::MAX_DEPTH;

use compact_str::CompactString;
use rust_decimal::Decimal;
use std::fmt;

/// Why an event cannot be turned into a profile update, as the dead-letter
/// header `pps-error-class` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Bytes that are not UTF-8 or not JSON.
    InvalidJson,
    /// JSON that breaks a rule of the event schema.
    SchemaViolation,
    /// A `schema_version` other than 1.
    UnsupportedVersion,
}

impl ErrorClass {
    /// The contract's name for this class.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidJson => "invalid_json",
            ErrorClass::SchemaViolation => "schema_violation",
            ErrorClass::UnsupportedVersion => "unsupported_version",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event that failed to parse: the class and a one-line reason of the form
/// `path: what is wrong` (for example `items[0].quantity: must be at least 1`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {reason}")]
pub struct EventError {
    /// The dead-letter class.
    pub class: ErrorClass,
    /// One line naming the first offending field.
    pub reason: String,
}

impl EventError {
    pub(crate) fn schema(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        EventError {
            class: ErrorClass::SchemaViolation,
            reason: format!("{path}: {message}"),
        }
    }
}

/// Sale or return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A purchase.
    Sale,
    /// Goods brought back.
    Return,
}

/// Where the purchase happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A physical store (the default).
    Store,
    /// The web shop.
    Online,
    /// The mobile app.
    Mobile,
    /// A self-service kiosk.
    Kiosk,
}

impl Channel {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Store => "store",
            Channel::Online => "online",
            Channel::Mobile => "mobile",
            Channel::Kiosk => "kiosk",
        }
    }
}

/// Whose profile an event updates: Target knows a visitor either by a
/// third-party id (`mbox3rdPartyId`) or by its own pc id (`mboxPC`).
///
/// Ids of up to 24 bytes (most CRM and pc ids) sit in the value itself:
/// the delivery's queues hash, compare and copy an identity several times
/// per update, without reaching for the heap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// `customer.third_party_id`, sent as `mbox3rdPartyId`.
    ThirdParty(CompactString),
    /// `customer.pc_id`, sent as `mboxPC`.
    Pc(CompactString),
}

impl Identity {
    /// The Target parameter name for this identity.
    pub fn param(&self) -> &'static str {
        match self {
            Identity::ThirdParty(_) => "mbox3rdPartyId",
            Identity::Pc(_) => "mboxPC",
        }
    }

    /// Whether Target's profile fetch API can address this profile: its id
    /// is a path segment there, and every HTTP client reads the ids `.` and
    /// `..` (and their percent-encoded forms) as path steps, so a fetch would
    /// ask for another resource. Updates name the id in a parameter and are
    /// not affected.
    pub fn is_fetchable(&self) -> bool {
        !matches!(self.id(), "." | "..")
    }

    /// The id itself.
    pub fn id(&self) -> &str {
        match self {
            Identity::ThirdParty(id) | Identity::Pc(id) => id,
        }
    }
}

/// One line of the basket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Stock keeping unit, 1 to 64 characters.
    pub sku: String,
    /// Product category, when the POS knows it (blank counts as absent).
    pub category: Option<String>,
    /// 1 to 10000.
    pub quantity: u32,
    /// Exact, at least 0.
    pub unit_price: Decimal,
}

/// A validated purchase or return: every field obeys the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// Producer's id of the event, 1 to 128 characters.
    pub event_id: String,
    /// Sale or return.
    pub kind: EventKind,
    /// When it happened (with the producer's offset, kept for rendering in UTC).
    pub occurred_at: Timestamp,
    /// 1 to 64 characters.
    pub store_id: String,
    /// Defaults to `store`.
    pub channel: Channel,
    /// The profile to update; `None` for an anonymous purchase.
    pub identity: Option<Identity>,
    /// `customer.loyalty_tier` when present and not blank.
    pub loyalty_tier: Option<String>,
    /// Three ASCII upper-case letters.
    pub currency: String,
    /// Exact, at least 0.
    pub total: Decimal,
    /// At most 1000 lines.
    pub items: Vec<Item>,
}
