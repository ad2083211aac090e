//! The `[mapping]` configuration: rename, drop and add constant attributes.

use super::{Attribute, AttributeName, AttributeSource, Mapping, MAX_NAME_CHARS, MAX_VALUE_CHARS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How operators change the default attribute table.
///
/// ```toml
/// [mapping]
/// rename = { lastPurchaseTotal = "lastSpend" }
/// drop = ["lastPurchaseChannel"]
/// [mapping.constants]
/// source = "pos"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingSettings {
    /// Default attribute name → the name sent to Target.
    pub rename: BTreeMap<String, String>,
    /// Default attribute names not to send.
    pub drop: Vec<String>,
    /// Attributes with a fixed value, added to every update.
    pub constants: BTreeMap<String, String>,
}

impl MappingSettings {
    pub(super) fn build(&self) -> Result<Mapping, Vec<String>> {
        let mut problems = Vec::new();
        let known = || {
            AttributeSource::ALL
                .iter()
                .map(|s| s.default_name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let find = |name: &str| {
            AttributeSource::ALL
                .iter()
                .copied()
                .find(|s| s.default_name() == name)
        };
        for name in self.rename.keys() {
            if find(name).is_none() {
                problems.push(format!(
                    "mapping.rename: `{name}` is not a default attribute (known: {})",
                    known()
                ));
            }
        }
        for name in &self.drop {
            if find(name).is_none() {
                problems.push(format!(
                    "mapping.drop: `{name}` is not a default attribute (known: {})",
                    known()
                ));
            }
        }
        let mut entries = Vec::new();
        let mut used = BTreeSet::new();
        for source in AttributeSource::ALL {
            let default = source.default_name();
            if self.drop.iter().any(|d| d == default) {
                continue;
            }
            let name = self.rename.get(default).map_or(default, String::as_str);
            check_name(&format!("mapping.rename.{default}"), name, &mut problems);
            if !used.insert(name.to_owned()) {
                problems.push(format!(
                    "mapping.rename.{default}: `{name}` is already the name of another attribute"
                ));
            }
            entries.push((source, AttributeName::new(name)));
        }
        let mut constants = Vec::new();
        for (name, value) in &self.constants {
            check_name(&format!("mapping.constants.{name}"), name, &mut problems);
            if !used.insert(name.clone()) {
                problems.push(format!(
                    "mapping.constants.{name}: clashes with a derived attribute of that name; rename or drop it first"
                ));
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                problems.push(format!(
                    "mapping.constants.{name}: value is longer than {MAX_VALUE_CHARS} characters"
                ));
            }
            constants.push(Attribute {
                name: AttributeName::new(name),
                value: value.as_str().into(),
            });
        }
        if problems.is_empty() {
            Ok(Mapping { entries, constants })
        } else {
            Err(problems)
        }
    }
}

fn check_name(key: &str, name: &str, problems: &mut Vec<String>) {
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        problems.push(format!(
            "{key}: attribute names must be non-empty and contain no white space"
        ));
    } else if name.chars().count() > MAX_NAME_CHARS {
        problems.push(format!(
            "{key}: attribute names are at most {MAX_NAME_CHARS} characters"
        ));
    }
}
