//! Attribute names, interned: every update of every event carries the same
//! handful of names, so each is stored once for the life of the process and
//! an update holds only a pointer to it.
//!
//! Before, a name was an `Arc<str>`: cheap to clone, but every clone and
//! drop is an atomic count on a counter that the consumer thread (which
//! derives updates) and the coordinator (which drops them once accepted)
//! both write, for every attribute of every event. An interned name is
//! copied like an integer.
//!
//! Names come from the mapping settings (the contract's defaults, renames
//! and constants) and are checked to be at most [`MAX_NAME_CHARS`]
//! characters there, so what is kept is bounded by the configuration, not
//! by the events.
//!
//! [`MAX_NAME_CHARS`]: super::MAX_NAME_CHARS

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Mutex, OnceLock, PoisonError};

/// An attribute's name (without the `profile.` prefix), interned: `Copy`,
/// compared and hashed as its text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeName(&'static str);

impl AttributeName {
    /// The interned name equal to `name`: the same storage for the same text
    /// every time.
    pub fn new(name: &str) -> AttributeName {
        static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Mutex::default)
            .lock()
            // The set is only ever inserted into whole: a panic elsewhere
            // while it was held leaves it as good as before.
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(&known) = names.get(name) {
            return AttributeName(known);
        }
        let kept: &'static str = Box::leak(name.into());
        names.insert(kept);
        AttributeName(kept)
    }

    /// The name's text.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl Deref for AttributeName {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for AttributeName {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// Hashed and compared as its text (derived from the `&str` inside), so a
/// map keyed by names can be asked with a `&str`.
impl Borrow<str> for AttributeName {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl From<&str> for AttributeName {
    fn from(name: &str) -> AttributeName {
        AttributeName::new(name)
    }
}

impl PartialEq<str> for AttributeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AttributeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Debug for AttributeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for AttributeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
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
    fn names_order_and_print_as_their_text() {
        let mut names = [AttributeName::new("b"), AttributeName::new("a")];
        names.sort();
        assert_eq!(names.map(AttributeName::as_str), ["a", "b"]);
        assert_eq!(format!("{} {:?}", names[0], names[1]), "a \"b\"");
    }
}
