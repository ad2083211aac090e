//! Which profiles exist at Target, as plain data: the share of customers who already
//! have a profile when the simulator starts, how long a profile lives without writes,
//! how long a created profile stays invisible to the fetch API, and the switch back to
//! the lenient behaviour where a single update creates a missing profile.
//!
//! The default is Adobe's documented behaviour: the single profile update API only
//! updates ("If nothing is found, a profile is not created"), profiles expire after
//! 14 days of inactivity, only bulk v2 batches create profiles; and no customer has a
//! profile at start, the case of a store chain whose buyers never logged in on the web.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Adobe's default profile lifetime: 14 days of inactivity.
pub const ADOBE_PROFILE_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);

/// The profile existence rules (`GET`/`PUT /_sim/existence`, `--known-share` and the
/// other existence flags of `simulate-target`).
///
/// As JSON, every field is optional:
/// `{"known_share":0.3,"lifetime_ms":1209600000,"readable_after_ms":0,
///   "single_update_creates":false}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Existence {
    /// The share of ids (0 to 1) whose profile exists when the simulator starts (or is
    /// reset); which ones is decided by [`known_at_start`], a stable hash of the id.
    pub known_share: f64,
    /// A profile that receives no applied write for this long is gone (Adobe: 14 days).
    pub lifetime_ms: u64,
    /// A profile created by a bulk v2 batch is invisible this long: the fetch API answers
    /// 404 and single updates do not land (Adobe: about an hour; 0 for tests).
    pub readable_after_ms: u64,
    /// The lenient behaviour of older simulators: a single update to a missing profile
    /// creates it (and it is readable at once). Not what Adobe does.
    pub single_update_creates: bool,
}

impl Default for Existence {
    fn default() -> Self {
        Self {
            known_share: 0.0,
            lifetime_ms: duration_ms(ADOBE_PROFILE_LIFETIME),
            readable_after_ms: 0,
            single_update_creates: false,
        }
    }
}

/// Why an [`Existence`] cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidExistence {
    /// `known_share` outside `0..=1` or not a number.
    #[error("known_share {0} is not between 0 and 1")]
    KnownShare(f64),
    /// A lifetime of 0 would make every profile gone at once.
    #[error("lifetime_ms must be at least 1")]
    Lifetime,
}

impl Existence {
    /// Adobe's rules with no profile at start (the default).
    pub fn faithful() -> Self {
        Self::default()
    }

    /// Adobe's rules with every customer's profile existing at start: single updates
    /// land, as they do for a tenant whose customers all come from the web.
    pub fn all_known() -> Self {
        Self {
            known_share: 1.0,
            ..Self::default()
        }
    }

    /// No profile at start, but a single update creates a missing profile (the lenient
    /// behaviour, for tests written before the simulator followed Adobe).
    pub fn lenient() -> Self {
        Self {
            single_update_creates: true,
            ..Self::default()
        }
    }

    /// Checks the ranges documented on each field.
    pub fn validate(&self) -> Result<(), InvalidExistence> {
        if !(0.0..=1.0).contains(&self.known_share) {
            return Err(InvalidExistence::KnownShare(self.known_share));
        }
        if self.lifetime_ms == 0 {
            return Err(InvalidExistence::Lifetime);
        }
        Ok(())
    }

    /// [`Existence::lifetime_ms`] as a duration.
    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms)
    }

    /// [`Existence::readable_after_ms`] as a duration.
    pub fn readable_after(&self) -> Duration {
        Duration::from_millis(self.readable_after_ms)
    }
}

/// Whether the profile of `id` exists at start when a share `known_share` of customers
/// is known. The same id in either namespace (`mbox3rdPartyId`, `mboxPC`) gets the same
/// answer. Stable across runs and platforms, so tests and scripts can compute it: the
/// 64-bit FNV-1a hash of the id's UTF-8 bytes, passed through SplitMix64's finalizer
/// (FNV alone spreads similar ids such as `CRM-1`, `CRM-2` unevenly), divided by 2^64,
/// is below `known_share`.
pub fn known_at_start(id: &str, known_share: f64) -> bool {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let fnv = id.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    let mut mixed = (fnv ^ (fnv >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^= mixed >> 31;
    (mixed as f64 / 18_446_744_073_709_551_616.0) < known_share
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_adobes_behaviour_with_no_profile_at_start() {
        let rules = Existence::default();
        assert_eq!(rules.known_share, 0.0);
        assert_eq!(rules.lifetime(), Duration::from_secs(1_209_600));
        assert_eq!(rules.readable_after(), Duration::ZERO);
        assert!(!rules.single_update_creates);
        assert_eq!(rules.validate(), Ok(()));
    }

    #[test]
    fn the_known_share_picks_about_that_share_of_ids_and_always_the_same_ones() {
        let known = (0..100_000)
            .filter(|n| known_at_start(&format!("CRM-{n}"), 0.3))
            .count();
        assert!((29_000..31_000).contains(&known), "{known}");
        for n in 0..1000 {
            let id = format!("CRM-{n}");
            assert_eq!(known_at_start(&id, 0.3), known_at_start(&id, 0.3));
            assert!(known_at_start(&id, 1.0));
            assert!(!known_at_start(&id, 0.0));
            // A larger share keeps every id a smaller one knew.
            assert!(!known_at_start(&id, 0.3) || known_at_start(&id, 0.5));
        }
    }

    #[test]
    fn the_hash_is_published_so_other_tools_can_compute_it() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; mixed, about 0.01075 of 2^64.
        assert!(known_at_start("a", 0.0108));
        assert!(!known_at_start("a", 0.0107));
    }

    #[test]
    fn impossible_rules_are_refused() {
        let share = |known_share| Existence {
            known_share,
            ..Existence::default()
        };
        assert_eq!(
            share(1.5).validate(),
            Err(InvalidExistence::KnownShare(1.5))
        );
        assert!(share(f64::NAN).validate().is_err());
        let no_life = Existence {
            lifetime_ms: 0,
            ..Existence::default()
        };
        assert_eq!(no_life.validate(), Err(InvalidExistence::Lifetime));
    }

    #[test]
    fn rules_round_trip_through_json_and_missing_fields_take_the_defaults() {
        let rules: Existence = serde_json::from_str(r#"{"known_share":0.3}"#).expect("valid JSON");
        assert_eq!(rules.known_share, 0.3);
        assert_eq!(rules.lifetime(), ADOBE_PROFILE_LIFETIME);
        assert!(serde_json::from_str::<Existence>(r#"{"share":1}"#).is_err());
        let back: Existence =
            serde_json::from_str(&serde_json::to_string(&rules).expect("serializes"))
                .expect("parses");
        assert_eq!(back, rules);
    }
}
