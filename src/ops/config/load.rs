//! Loading: defaults, then the TOML file, then `PPS_SECTION__KEY`
//! environment variables (figment does the layering); keys and types are
//! checked here, values in `validate`.

use super::*;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use std::path::Path;

const ENV_PREFIX: &str = "PPS_";
const PROPERTIES_ENV: &str = "kafka__properties__";

impl Settings {
    /// Loads defaults, then the file (if any), then `PPS_` environment
    /// variables; checks keys and types but not values (see [`Settings::value_problems`]).
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::one(format!(
                    "--config {}: no such file; pass the path of a TOML file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::extract_with_env(figment)
    }

    /// [`Settings::load`] with the file's text given instead of its path
    /// (environment variables still apply): the same layering and errors.
    pub fn load_text(toml: &str) -> Result<Settings, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml));
        Self::extract_with_env(figment)
    }

    fn extract_with_env(mut figment: Figment) -> Result<Settings, ConfigError> {
        let unreadable = environment_problems();
        if !unreadable.is_empty() {
            return Err(ConfigError {
                problems: unreadable,
            });
        }
        // Only `PPS_SECTION__KEY` names are configuration (so `PPS_BIN` and
        // the like are left alone); unknown ones are errors.
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    key.contains("__") && !key.starts_with(PROPERTIES_ENV)
                })
                .split("__"),
        );
        // librdkafka property names have dots, which an environment variable
        // cannot carry: `PPS_KAFKA__PROPERTIES__SECURITY_PROTOCOL` stands for
        // `security.protocol` (a `_file` suffix keeps its underscore).
        let properties: BTreeMap<String, figment::value::Value> = std::env::vars_os()
            .filter_map(|(key, value)| {
                let (key, value) = (key.into_string().ok()?, value.into_string().ok()?);
                let key = key.to_ascii_lowercase();
                let name = key
                    .strip_prefix(&ENV_PREFIX.to_ascii_lowercase())?
                    .strip_prefix(PROPERTIES_ENV)?;
                let value = value.parse().unwrap_or_else(|_| value.clone().into());
                Some((property_name_from_env(name), value))
            })
            .collect();
        if !properties.is_empty() {
            figment = figment.merge(Serialized::default("kafka.properties", properties));
        }
        figment.extract().map_err(|error| ConfigError {
            problems: error.into_iter().map(describe_figment_error).collect(),
        })
    }
}

/// The most `[` and `{` one environment value may hold: figment parses them
/// recursively without a limit, so thousands of them overflow the stack.
pub(super) const MAX_ENV_BRACKETS: usize = 64;

/// `PPS_SECTION__KEY` variables whose values cannot be read faithfully: not
/// UTF-8, nested without bound (see [`MAX_ENV_BRACKETS`]), or a quoted string
/// holding both a backslash escape and a non-ASCII character, which figment's
/// value parser slices by character count as if it were a byte offset (a
/// panic, or a silently shortened value).
fn environment_problems() -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else {
            continue;
        };
        let lower = key.to_ascii_lowercase();
        if !lower.starts_with(&ENV_PREFIX.to_ascii_lowercase()) || !lower.contains("__") {
            continue;
        }
        match value.to_str() {
            None => problems.push(format!("{key}: the value is not UTF-8")),
            Some(value) if value.matches(['[', '{']).count() > MAX_ENV_BRACKETS => {
                problems.push(format!(
                    "{key}: more than {MAX_ENV_BRACKETS} '[' and '{{' in one value; set it in the configuration file instead"
                ))
            }
            Some(value) if value.contains('"') && value.contains('\\') && !value.is_ascii() => {
                problems.push(format!(
                    "{key}: a quoted value with both a backslash escape and a non-ASCII character cannot be read reliably; set it in the configuration file instead"
                ))
            }
            Some(_) => {}
        }
    }
    problems
}

fn property_name_from_env(name: &str) -> String {
    match name.strip_suffix("_file") {
        Some(base) => format!("{}_file", base.replace('_', ".")),
        None => name.replace('_', "."),
    }
}

fn describe_figment_error(error: figment::Error) -> String {
    let path = error.path.join(".");
    let source = error
        .metadata
        .as_ref()
        .and_then(|m| m.source.as_ref())
        .map(|s| format!(" (in {s})"))
        .unwrap_or_default();
    let kind = error.kind.to_string();
    if path.is_empty() {
        format!("{kind}{source}")
    } else {
        format!("{path}: {kind}{source}")
    }
}
