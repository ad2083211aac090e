//! What a read-back says about an update Target accepted: the one pure
//! comparison between the attributes a profile should have and what the
//! profile fetch found.
//!
//! - `applied`: every expected attribute holds its value.
//! - `not_yet_applied`: some attribute is missing, or holds a value Target set
//!   before the reference time (the update was accepted, or the event
//!   happened, after it): Target has not applied the update yet. Adobe applies
//!   updates "generally under an hour", at most in 24 hours.
//! - `not_found`: Target has no such profile. Its single update API does not
//!   create profiles, so an update to a profile it does not have is answered
//!   2xx and changes nothing.
//! - `different`: some attribute holds another value that Target set at or
//!   after the reference time (or without saying when): something else wrote
//!   it, or the update was not applied as sent.
//!
//! Empty expected values are not compared: Adobe never clears an attribute
//! with an empty value.

use crate::target::fetch::FetchedAttributes;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The result of one read-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReadBack {
    /// Every attribute as expected.
    Applied,
    /// Missing or older values.
    NotYetApplied,
    /// Target has no such profile.
    NotFound,
    /// Another value, set since the reference time.
    Different,
    /// No usable answer from the fetch API (after retries), or it was refused.
    Failed,
}

impl ReadBack {
    /// Every result, in report order.
    pub const ALL: [ReadBack; 5] = [
        ReadBack::Applied,
        ReadBack::NotYetApplied,
        ReadBack::NotFound,
        ReadBack::Different,
        ReadBack::Failed,
    ];

    /// The `result` label of `pps_verify_total` and the subcommand's output.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadBack::Applied => "applied",
            ReadBack::NotYetApplied => "not_yet_applied",
            ReadBack::NotFound => "not_found",
            ReadBack::Different => "different",
            ReadBack::Failed => "failed",
        }
    }
}

/// One attribute that is not as expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The attribute's name.
    pub name: String,
    /// The value the update set.
    pub expected: String,
    /// What Target holds, `None` when it has no such attribute.
    pub found: Option<String>,
    /// Whether Target set it before the reference time.
    pub older: bool,
}

/// Compares a found profile with what it should hold. `reference` is when the
/// update was accepted (or its event happened); a value Target set before it
/// is an older one.
pub fn compare(
    expected: &BTreeMap<String, String>,
    found: &FetchedAttributes,
    reference: OffsetDateTime,
) -> (ReadBack, Vec<Mismatch>) {
    let mut mismatches = Vec::new();
    for (name, value) in expected {
        if value.is_empty() {
            continue;
        }
        let mismatch = match found.get(name) {
            Some(attribute) if &attribute.value == value => continue,
            Some(attribute) => Mismatch {
                name: name.clone(),
                expected: value.clone(),
                found: Some(attribute.value.clone()),
                older: attribute.modified_at.is_some_and(|at| at < reference),
            },
            None => Mismatch {
                name: name.clone(),
                expected: value.clone(),
                found: None,
                older: true,
            },
        };
        mismatches.push(mismatch);
    }
    let result = if mismatches.is_empty() {
        ReadBack::Applied
    } else if mismatches.iter().all(|m| m.older) {
        ReadBack::NotYetApplied
    } else {
        ReadBack::Different
    };
    (result, mismatches)
}

/// Counts of results, for the interval log line and the subcommand's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    counts: BTreeMap<ReadBack, u64>,
}

impl Tally {
    /// Counts one result.
    pub fn add(&mut self, result: ReadBack) {
        *self.counts.entry(result).or_default() += 1;
    }

    /// How many had this result.
    pub fn count(&self, result: ReadBack) -> u64 {
        self.counts.get(&result).copied().unwrap_or(0)
    }

    /// How many in all.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// This result's share of all, 0 when there are none.
    pub fn share(&self, result: ReadBack) -> f64 {
        match self.total() {
            0 => 0.0,
            total => self.count(result) as f64 / total as f64,
        }
    }

    /// Whether every profile was applied (and there was at least one).
    pub fn all_applied(&self) -> bool {
        self.total() > 0 && self.count(ReadBack::Applied) == self.total()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = ReadBack::ALL
            .iter()
            .map(|&result| {
                format!(
                    "{} {} ({:.1}%)",
                    self.count(result),
                    result.as_str().replace('_', " "),
                    100.0 * self.share(result)
                )
            })
            .collect();
        write!(f, "{} profiles: {}", self.total(), parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::fetch::FetchedAttribute;
    use time::macros::datetime;

    fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn found(pairs: &[(&str, &str, Option<OffsetDateTime>)]) -> FetchedAttributes {
        pairs
            .iter()
            .map(|(n, v, at)| {
                (
                    (*n).to_owned(),
                    FetchedAttribute {
                        value: (*v).to_owned(),
                        modified_at: *at,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn every_kind_of_read_back_is_told_apart() {
        let accepted = datetime!(2026-11-28 10:15 UTC);
        let before = Some(datetime!(2026-11-28 10:00 UTC));
        let after = Some(datetime!(2026-11-28 10:20 UTC));
        let want = expected(&[("total", "12.50"), ("store", "S1"), ("note", "")]);
        let table = [
            (
                found(&[
                    ("total", "12.50", after),
                    ("store", "S1", before),
                    ("other", "x", None),
                ]),
                ReadBack::Applied,
            ),
            (found(&[("total", "12.50", after)]), ReadBack::NotYetApplied),
            (
                found(&[("total", "9.99", before), ("store", "S0", before)]),
                ReadBack::NotYetApplied,
            ),
            (found(&[]), ReadBack::NotYetApplied),
            (
                found(&[("total", "9.99", after), ("store", "S1", after)]),
                ReadBack::Different,
            ),
            (
                found(&[("total", "9.99", None), ("store", "S1", after)]),
                ReadBack::Different,
            ),
            (
                found(&[("total", "9.99", after), ("store", "S0", before)]),
                ReadBack::Different,
            ),
        ];
        for (profile, result) in table {
            assert_eq!(compare(&want, &profile, accepted).0, result, "{profile:?}");
        }
        let (_, mismatches) = compare(&want, &found(&[("total", "9.99", after)]), accepted);
        assert_eq!(
            mismatches,
            [
                Mismatch {
                    name: "store".into(),
                    expected: "S1".into(),
                    found: None,
                    older: true
                },
                Mismatch {
                    name: "total".into(),
                    expected: "12.50".into(),
                    found: Some("9.99".into()),
                    older: false
                }
            ]
        );
    }

    #[test]
    fn the_tally_gives_shares_and_says_when_all_were_applied() {
        let mut tally = Tally::default();
        assert!(!tally.all_applied(), "nothing read back proves nothing");
        assert_eq!(tally.share(ReadBack::Applied), 0.0);
        for _ in 0..3 {
            tally.add(ReadBack::Applied);
        }
        assert!(tally.all_applied());
        tally.add(ReadBack::NotFound);
        assert!(!tally.all_applied());
        assert_eq!(tally.share(ReadBack::Applied), 0.75);
        assert_eq!(
            tally.to_string(),
            "4 profiles: 3 applied (75.0%), 0 not yet applied (0.0%), 1 not found (25.0%), \
             0 different (0.0%), 0 failed (0.0%)"
        );
    }
}
