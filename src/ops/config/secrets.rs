//! Secrets: `_file` indirections read, secret properties recognised, masked
//! in the printed configuration and cut out of librdkafka's messages.

use super::*;

impl Settings {
    /// The effective settings as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for (key, value) in shown.kafka.properties.iter_mut() {
            if is_secret_property(key) {
                *value = PropertyValue::Text("********".into());
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

impl KafkaSettings {
    /// The properties handed to librdkafka, with `NAME_file` indirections read.
    pub fn client_properties(&self) -> Result<Vec<(String, String)>, String> {
        let mut resolved = Vec::with_capacity(self.properties.len());
        for (key, value) in &self.properties {
            match key.strip_suffix("_file") {
                Some(name) => {
                    let path = value.to_string();
                    let content = std::fs::read_to_string(&path).map_err(|error| {
                        format!("kafka.properties.{key}: cannot read {path} ({error}); it holds the value of {name}")
                    })?;
                    resolved.push((name.to_owned(), content.trim().to_owned()));
                }
                None => resolved.push((key.clone(), value.to_string())),
            }
        }
        Ok(resolved)
    }
}

impl KafkaSettings {
    /// `text` with the value of every secret property (inline or read through
    /// `_file`) replaced by `********`: librdkafka quotes values in its errors.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let Ok(properties) = self.client_properties() else {
            return text;
        };
        for (key, value) in properties {
            if is_secret_property(&key) && !value.is_empty() {
                text = text.replace(&value, "********");
            }
        }
        text
    }
}

/// Whether a librdkafka property holds a secret (never printed or logged).
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_file")
        && [
            "password",
            "secret",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
            "sasl.jaas",
        ]
        .iter()
        .any(|needle| key.contains(needle))
}
