//! What the operator tools that talk to Kafka themselves (`produce`,
//! `dlq replay`) share: the service configuration for brokers and
//! `[kafka.properties]` (TLS, SASL), a `--brokers` override, extra
//! `--property KEY=VALUE` pairs, and a runtime that turns Ctrl-C and SIGTERM
//! into a stop request the blocking work checks between records.

use crate::ops::config::{KafkaSettings, PropertyValue, Settings};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One `--property KEY=VALUE`: a librdkafka property for this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The librdkafka name, e.g. `security.protocol`.
    pub key: String,
    /// Its value, passed as is.
    pub value: String,
}

/// Properties the tools set themselves, and what to do instead.
const SET_BY_THE_TOOLS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use --brokers"),
    ("group.id", "use --group"),
    (
        "enable.auto.commit",
        "offsets are committed only after the replayed records are acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed only after the replayed records are acknowledged",
    ),
    (
        "enable.idempotence",
        "the tools always produce idempotently",
    ),
];

/// Parses `KEY=VALUE` (clap value parser).
pub fn parse_property(text: &str) -> Result<Property, String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "expected KEY=VALUE (a librdkafka property), e.g. security.protocol=SASL_SSL; got {text:?}"
        ));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err("the property name before '=' is empty".into());
    }
    if let Some((_, instead)) = SET_BY_THE_TOOLS.iter().find(|(name, _)| *name == key) {
        return Err(format!("{key} cannot be set here: {instead}"));
    }
    Ok(Property {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// The `[kafka]` settings of a tool: defaults, the configuration file (if
/// any) and `PPS_` environment variables, then `--brokers` and `--property`
/// over them. Errors say which option or key to fix.
pub fn kafka_settings(
    config: Option<&Path>,
    brokers: Option<&str>,
    properties: &[Property],
) -> Result<KafkaSettings, String> {
    let mut kafka = Settings::load(config)
        .map_err(|error| error.to_string())?
        .kafka;
    if let Some(brokers) = brokers {
        kafka.brokers = brokers.to_owned();
    }
    if kafka.brokers.trim().is_empty() {
        return Err(
            "no brokers: pass --brokers HOST:PORT[,HOST:PORT...] or set kafka.brokers in --config"
                .into(),
        );
    }
    for property in properties {
        kafka.properties.insert(
            property.key.clone(),
            PropertyValue::Text(property.value.clone()),
        );
    }
    kafka.client_properties()?;
    Ok(kafka)
}

/// Runs `job` on a blocking thread of a fresh runtime whose first SIGINT or
/// SIGTERM cancels the token `job` receives; `hard_limit` after that signal
/// the process exits whatever `job` is doing. `Err` when the runtime cannot
/// start or `job` panicked.
pub fn run_until_signal<T: Send + 'static>(
    hard_limit: Duration,
    job: impl FnOnce(CancellationToken) -> T + Send + 'static,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    runtime.block_on(async move {
        let stop = crate::ops::shutdown::on_signals(hard_limit);
        tokio::task::spawn_blocking(move || job(stop))
            .await
            .map_err(|error| format!("the job failed: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_property_is_split_at_its_first_equals_sign() {
        assert_eq!(
            parse_property("sasl.jaas.config=a=b").unwrap(),
            Property {
                key: "sasl.jaas.config".into(),
                value: "a=b".into()
            }
        );
        assert_eq!(parse_property("linger.ms=").unwrap().value, "");
    }

    #[test]
    fn malformed_or_reserved_properties_say_what_to_do() {
        assert!(parse_property("linger.ms")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(parse_property("=5").unwrap_err().contains("empty"));
        assert!(parse_property("bootstrap.servers=x:9092")
            .unwrap_err()
            .contains("--brokers"));
        assert!(parse_property("enable.idempotence=false")
            .unwrap_err()
            .contains("idempotently"));
    }

    #[test]
    fn brokers_and_properties_given_on_the_command_line_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[kafka]\nbrokers = \"file:9092\"\n[kafka.properties]\n\"linger.ms\" = 5\n",
        )
        .unwrap();
        let extra = [parse_property("linger.ms=50").unwrap()];
        let kafka = kafka_settings(Some(&path), Some("flag:9092"), &extra).unwrap();
        assert_eq!(kafka.brokers, "flag:9092");
        assert_eq!(
            kafka.client_properties().unwrap(),
            vec![("linger.ms".to_owned(), "50".to_owned())]
        );
        let from_file = kafka_settings(Some(&path), None, &[]).unwrap();
        assert_eq!(from_file.brokers, "file:9092");
    }

    #[test]
    fn empty_brokers_are_refused_with_the_option_to_use() {
        let error = kafka_settings(None, Some(" "), &[]).unwrap_err();
        assert!(error.contains("--brokers"), "{error}");
    }
}
