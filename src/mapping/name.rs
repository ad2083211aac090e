//! Attribute names, interned: every update of every event carries the same
//! handful of names, so each is stored once for the life of the process and
//! an update holds only a pointer to it.
//!
//! Before, a name was an `Arc<str>`: cheap to clone, but every clone and
//! drop is an atomic count on a counter that the consumer thread (which
//! derives updates) and the coordinator (which drops them once accepted)
//! both write, for every attribute of every event. An interned name is
//! copied like an integer, and it keeps its request parameter's prefix
//! (`&profile.NAME=`, encoded once) beside its text, so an update request
//! encodes only the values.
//!
//! Names come from the mapping settings (the contract's defaults, renames
//! and constants) and are checked to be at most [`MAX_NAME_CHARS`]
//! characters there, so what is kept is bounded by the configuration, not
//! by the events.
//!
//! [`MAX_NAME_CHARS`]: super::MAX_NAME_CHARS

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Mutex, OnceLock, PoisonError};

/// How Target's request parameters are encoded: everything but RFC 3986's
/// unreserved characters, so a space is `%20` (`docs/contract.md` section 7).
pub const PARAMETER: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An attribute's name (without the `profile.` prefix), interned: `Copy`,
/// compared, ordered and hashed as its text.
#[derive(Clone, Copy)]
pub struct AttributeName(&'static Interned);

/// What is kept of a name.
#[derive(Debug)]
struct Interned {
    text: Box<str>,
    /// `&profile.NAME=`, NAME encoded as [`PARAMETER`] says.
    parameter: Box<str>,
}

/// The interned names, found by their text.
impl Borrow<str> for &'static Interned {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Interned {
    fn eq(&self, other: &Interned) -> bool {
        self.text == other.text
    }
}

impl Eq for Interned {}

impl Hash for Interned {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl AttributeName {
    /// The interned name equal to `name`: the same storage for the same text
    /// every time.
    pub fn new(name: &str) -> AttributeName {
        static NAMES: OnceLock<Mutex<HashSet<&'static Interned>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Mutex::default)
            .lock()
            // The set is only ever inserted into whole: a panic elsewhere
            // while it was held leaves it as good as before.
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(&known) = names.get(name) {
            return AttributeName(known);
        }
        let kept: &'static Interned = Box::leak(Box::new(Interned {
            text: name.into(),
            parameter: format!("&profile.{}=", utf8_percent_encode(name, PARAMETER)).into(),
        }));
        names.insert(kept);
        AttributeName(kept)
    }

    /// The name's text.
    pub fn as_str(self) -> &'static str {
        &self.0.text
    }

    /// What an update request writes before the attribute's value:
    /// `&profile.NAME=`, with NAME encoded as [`PARAMETER`] says.
    pub fn parameter_prefix(self) -> &'static str {
        &self.0.parameter
    }
}

impl PartialEq for AttributeName {
    fn eq(&self, other: &AttributeName) -> bool {
        // One storage per text: the same pointer is the same text.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for AttributeName {}

/// Hashed as its text, so a map keyed by names can be asked with a `&str`.
impl Hash for AttributeName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for AttributeName {
    fn partial_cmp(&self, other: &AttributeName) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AttributeName {
    fn cmp(&self, other: &AttributeName) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Deref for AttributeName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for AttributeName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for AttributeName {
    fn from(name: &str) -> AttributeName {
        AttributeName::new(name)
    }
}

impl fmt::Debug for AttributeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for AttributeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_same_text_is_stored_once() {
        let a = AttributeName::new("lastPurchaseStore");
        let b = AttributeName::new(&String::from("lastPurchaseStore"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_ne!(a, AttributeName::new("lastReturnStore"));
    }

    #[test]
    fn a_map_keyed_by_names_is_asked_with_text() {
        let mut map = HashMap::new();
        map.insert(AttributeName::new("loyaltyTier"), 1);
        assert_eq!(map.get("loyaltyTier"), Some(&1));
        assert_eq!(map.get("tier"), None);
    }

    #[test]
    fn a_name_keeps_its_parameter_prefix_encoded() {
        assert_eq!(
            AttributeName::new("lastPurchaseAt").parameter_prefix(),
            "&profile.lastPurchaseAt="
        );
        assert_eq!(
            AttributeName::new("Größe & Farbe").parameter_prefix(),
            "&profile.Gr%C3%B6%C3%9Fe%20%26%20Farbe="
        );
    }

    #[test]
    fn names_order_and_print_as_their_text() {
        let mut names = [AttributeName::new("b"), AttributeName::new("a")];
        names.sort();
        assert_eq!(names.map(AttributeName::as_str), ["a", "b"]);
        assert_eq!(format!("{} {:?}", names[0], names[1]), "a \"b\"");
    }
}
