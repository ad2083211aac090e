//! Loading, overriding and validating the configuration.

// figment's `Jail` closures return `figment::Error`, which is large; the
// signature is the library's, not ours.
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;

fn valid_toml() -> &'static str {
    r#"
[kafka]
brokers = "k1:9092,k2:9092"
topics = ["pos.purchases"]

[target]
client_code = "acme"
"#
}

fn problems(result: Result<(), ConfigError>) -> String {
    result.unwrap_err().problems.join("\n")
}

#[test]
fn defaults_are_the_contract_defaults() {
    let settings = Settings::default();
    assert_eq!(settings.kafka.brokers, "localhost:9092");
    assert_eq!(settings.kafka.topics, ["pos.purchases"]);
    assert_eq!(settings.kafka.group_id, "pos-profile-sync");
    assert_eq!(settings.kafka.dlq_topic, "pos.purchases.dlq");
    assert_eq!(settings.target.timeout_ms, 10_000);
    assert_eq!(settings.rate_limit.per_second, 10.0);
    assert_eq!(settings.rate_limit.burst, 10);
    assert_eq!(settings.rate_limit.daily_quota, 1_000_000);
    assert_eq!(settings.delivery.max_in_flight, 256);
    assert_eq!(settings.delivery.coalesce_window_ms, 0);
    assert_eq!(settings.delivery.max_attempts, 0);
    assert_eq!(settings.delivery.drain_timeout_ms, 10_000);
    assert_eq!(settings.bulk.mode, BulkMode::Off);
    assert_eq!(settings.bulk.max_rows, 500_000);
    assert_eq!(settings.bulk.max_bytes, 50_000_000);
    assert_eq!(settings.bulk.max_age_ms, 60_000);
    assert_eq!(settings.bulk.commit_on, CommitOn::Complete);
    assert_eq!(settings.bulk.calls_per_minute, 50);
    assert_eq!(settings.server.listen, "0.0.0.0:9464");
}

#[test]
fn a_file_then_environment_variables_override_the_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", valid_toml())?;
        jail.set_env("PPS_RATE_LIMIT__PER_SECOND", "2.5");
        jail.set_env("PPS_KAFKA__BROKERS", "env:9092");
        jail.set_env("PPS_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SASL_SSL");
        jail.set_env("PPS_KAFKA__PROPERTIES__SASL_PASSWORD_FILE", "/run/pw");
        jail.set_env("PPS_BIN", "/not/config");
        let settings = Settings::load(Some(Path::new("c.toml"))).unwrap();
        assert_eq!(settings.rate_limit.per_second, 2.5);
        assert_eq!(settings.kafka.brokers, "env:9092");
        assert_eq!(settings.target.client_code, "acme");
        assert_eq!(
            settings.kafka.properties.get("security.protocol"),
            Some(&PropertyValue::Text("SASL_SSL".into()))
        );
        assert!(settings.kafka.properties.contains_key("sasl.password_file"));
        Ok(())
    });
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[kafka]\nbrokerz = \"x\"\n")?;
        let error = Settings::load(Some(Path::new("c.toml"))).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("brokerz"), "{text}");
        jail.create_file("d.toml", "")?;
        jail.set_env("PPS_DELIVERY__MAX_IN_FLIGT", "3");
        let text = Settings::load(Some(Path::new("d.toml")))
            .unwrap_err()
            .to_string();
        assert!(text.contains("max_in_fligt"), "{text}");
        Ok(())
    });
}

#[test]
fn wrong_types_and_missing_files_say_what_to_fix() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[delivery]\nmax_in_flight = \"many\"\n")?;
        let text = Settings::load(Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(text.contains("delivery.max_in_flight"), "{text}");
        let text = Settings::load(Some(Path::new("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(text.contains("missing.toml: no such file"), "{text}");
        Ok(())
    });
}

#[test]
fn property_values_may_be_strings_numbers_or_booleans() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[kafka.properties]\n\"fetch.min.bytes\" = 1\n\"enable.partition.eof\" = false\n\"auto.offset.reset\" = \"latest\"\n",
        )?;
        let settings = Settings::load(Some(Path::new("c.toml"))).unwrap();
        let props: BTreeMap<_, _> = settings
            .kafka
            .client_properties()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(props["fetch.min.bytes"], "1");
        assert_eq!(props["enable.partition.eof"], "false");
        assert_eq!(props["auto.offset.reset"], "latest");
        Ok(())
    });
}

#[test]
fn the_client_code_is_required_and_every_problem_is_listed() {
    let mut settings = Settings::default();
    settings.rate_limit.per_second = 0.0;
    settings.delivery.max_in_flight = 0;
    let text = problems(settings.validate());
    assert!(text.contains("target.client_code: required"), "{text}");
    assert!(text.contains("rate_limit.per_second"), "{text}");
    assert!(text.contains("delivery.max_in_flight"), "{text}");
}

#[test]
fn the_drain_deadline_must_be_below_the_session_timeout() {
    let mut settings = Settings::default();
    settings.target.client_code = "acme".into();
    assert!(settings.validate().is_ok());
    settings.delivery.drain_timeout_ms = 45_000;
    assert!(problems(settings.validate())
        .contains("delivery.drain_timeout_ms: 45000 must be below the session timeout (45000 ms"));
    settings
        .kafka
        .properties
        .insert("session.timeout.ms".into(), PropertyValue::Int(60_000));
    assert!(settings.validate().is_ok());
}

#[test]
fn offset_properties_owned_by_the_service_cannot_be_overridden() {
    let mut settings = Settings::default();
    settings.target.client_code = "acme".into();
    settings
        .kafka
        .properties
        .insert("enable.auto.commit".into(), PropertyValue::Bool(true));
    assert!(problems(settings.validate()).contains("kafka.properties.enable.auto.commit"));
}

#[test]
fn file_indirections_are_read_and_secrets_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    let mut settings = Settings::default();
    settings.kafka.properties.insert(
        "sasl.password_file".into(),
        PropertyValue::Text(secret.display().to_string()),
    );
    settings.kafka.properties.insert(
        "ssl.key.password".into(),
        PropertyValue::Text("inline-secret".into()),
    );
    let props = settings.kafka.client_properties().unwrap();
    assert!(props.contains(&("sasl.password".into(), "s3cr3t".into())));
    let shown = settings.to_masked_toml();
    assert!(!shown.contains("inline-secret"), "{shown}");
    assert!(shown.contains("********"));
    settings.kafka.properties.insert(
        "sasl.password_file".into(),
        PropertyValue::Text("/nonexistent/pw".into()),
    );
    settings.target.client_code = "acme".into();
    assert!(problems(settings.validate())
        .contains("kafka.properties.sasl.password_file: cannot read /nonexistent/pw"));
}

#[test]
fn budgets_above_adobes_daily_cap_are_warned_about() {
    let mut settings = Settings::default();
    assert_eq!(settings.warnings().len(), 0, "10/s is within the cap");
    settings.rate_limit.per_second = 11.58;
    assert!(settings.warnings()[0].contains("one million"));
}
