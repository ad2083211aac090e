//! Loading, overriding and validating the configuration.

// figment's `Jail` closures return `figment::Error`, which is large; the
// signature is the library's, not ours.
#![allow(clippy::result_large_err)]

use super::load::MAX_ENV_BRACKETS;
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
        assert_eq!(Settings::load_text(valid_toml()), Ok(settings));
        jail.create_file("bad.toml", "[delivery]\nmax_in_flight = \"many\"\n")?;
        let from_file = Settings::load(Some(Path::new("bad.toml"))).unwrap_err();
        let from_text = Settings::load_text("[delivery]\nmax_in_flight = \"many\"\n").unwrap_err();
        assert!(from_file.problems[0].starts_with("delivery.max_in_flight: invalid type"));
        assert!(from_text.problems[0].starts_with("delivery.max_in_flight: invalid type"));
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
    let text = problems(crate::kafka::validate(&settings));
    assert!(text.contains("target.client_code: required"), "{text}");
    assert!(text.contains("rate_limit.per_second"), "{text}");
    assert!(text.contains("delivery.max_in_flight"), "{text}");
}

#[test]
fn the_drain_deadline_must_be_below_the_session_timeout() {
    let mut settings = Settings::default();
    settings.target.client_code = "acme".into();
    assert!(crate::kafka::validate(&settings).is_ok());
    settings.delivery.drain_timeout_ms = 45_000;
    assert!(problems(crate::kafka::validate(&settings))
        .contains("delivery.drain_timeout_ms: 45000 must be below the session timeout (45000 ms"));
    settings
        .kafka
        .properties
        .insert("session.timeout.ms".into(), PropertyValue::Int(60_000));
    assert!(crate::kafka::validate(&settings).is_ok());
}

#[test]
fn offset_properties_owned_by_the_service_cannot_be_overridden() {
    let mut settings = Settings::default();
    settings.target.client_code = "acme".into();
    settings
        .kafka
        .properties
        .insert("enable.auto.commit".into(), PropertyValue::Bool(true));
    assert!(
        problems(crate::kafka::validate(&settings)).contains("kafka.properties.enable.auto.commit")
    );
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
    assert!(problems(crate::kafka::validate(&settings))
        .contains("kafka.properties.sasl.password_file: cannot read /nonexistent/pw"));
}

#[test]
fn budgets_above_adobes_daily_cap_are_warned_about() {
    let mut settings = Settings::default();
    assert_eq!(settings.warnings().len(), 0, "10/s is within the cap");
    settings.rate_limit.per_second = 11.58;
    assert!(settings.warnings()[0].contains("one million"));
}

#[test]
fn committing_batches_on_submission_is_warned_about() {
    let mut settings = Settings::default();
    settings.bulk.mode = BulkMode::Always;
    assert!(settings.warnings().is_empty(), "complete is the default");
    settings.bulk.commit_on = CommitOn::Submitted;
    assert!(settings.warnings()[0].contains("crash in between loses those dead letters"));
}

#[test]
fn a_ca_file_that_cannot_be_read_or_holds_no_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings: Settings = Settings::default();
    settings.target.client_code = "acme".into();
    settings.target.ca_file = dir.path().join("missing-ca.pem").display().to_string();
    let shown = problems(crate::kafka::validate(&settings));
    assert!(
        shown.contains("target.ca_file: cannot read") && shown.contains("missing-ca.pem"),
        "{shown}"
    );

    let garbage = dir.path().join("garbage-ca.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    settings.target.ca_file = garbage.display().to_string();
    let shown = problems(crate::kafka::validate(&settings));
    assert!(
        shown.contains("target.ca_file:") && shown.contains("garbage-ca.pem"),
        "{shown}"
    );

    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "").unwrap();
    settings.target.ca_file = empty.display().to_string();
    assert!(
        problems(crate::kafka::validate(&settings)).contains("empty-ca.pem is not a PEM bundle")
    );

    let ca = pps_target_simulator::TlsIdentity::generate().unwrap();
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, ca.trust_pem()).unwrap();
    settings.target.ca_file = good.display().to_string();
    assert_eq!(crate::kafka::validate(&settings), Ok(()));
    assert_eq!(settings.target.ca_certificates().unwrap().len(), 1);
}

#[test]
fn unreadable_certificate_files_and_unknown_sasl_mechanisms_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.target.client_code = "acme".into();
    let text = |v: &str| PropertyValue::Text(v.into());
    let properties = &mut settings.kafka.properties;
    properties.insert("security.protocol".into(), text("SASL_SSL"));
    properties.insert("ssl.ca.location".into(), text("/nonexistent/ca.pem"));
    properties.insert("ssl.key.location".into(), text("/nonexistent/client.key"));
    properties.insert("sasl.mechanism".into(), text("SCRAM-SHA-1"));
    let shown = problems(crate::kafka::validate(&settings));
    assert!(
        shown.contains("kafka.properties.ssl.ca.location: cannot read /nonexistent/ca.pem"),
        "{shown}"
    );
    assert!(
        shown.contains("kafka.properties.ssl.key.location: cannot read /nonexistent/client.key"),
        "{shown}"
    );
    assert!(
        shown.contains("kafka.properties.sasl.mechanism: unknown SASL mechanism \"SCRAM-SHA-1\""),
        "{shown}"
    );

    // A directory of CA certificates and librdkafka's `probe` are fine.
    let properties = &mut settings.kafka.properties;
    properties.insert("sasl.mechanism".into(), text("SCRAM-SHA-256"));
    properties.remove("ssl.key.location");
    for location in [dir.path().display().to_string(), "probe".into()] {
        settings
            .kafka
            .properties
            .insert("ssl.ca.location".into(), text(&location));
        assert_eq!(
            settings.value_problems(),
            Vec::<String>::new(),
            "{location}"
        );
    }
}

#[test]
fn secret_values_inline_or_from_files_are_redacted_from_messages() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "from-a-file-42\n").unwrap();
    let mut kafka = KafkaSettings::default();
    kafka.properties.insert(
        "sasl.oauthbearer.client.secret_file".into(),
        PropertyValue::Text(secret.display().to_string()),
    );
    kafka.properties.insert(
        "sasl.password".into(),
        PropertyValue::Text("inline-7".into()),
    );
    kafka
        .properties
        .insert("sasl.username".into(), PropertyValue::Text("svc".into()));
    let message =
        "refused: sasl.oauthbearer.client.secret from-a-file-42, sasl.password inline-7, user svc";
    assert_eq!(
        kafka.redact(message),
        "refused: sasl.oauthbearer.client.secret ********, sasl.password ********, user svc"
    );
}

#[test]
fn environment_values_figment_would_misread_are_problems_not_panics() {
    // Found by fuzzing: figment slices a quoted value by character count as
    // if it were a byte offset, so `"é\n"` panicked and `"éé\n"` lost a character.
    for value in ["\"é\\n\"", "\"éé\\n\"", "[\"ü\\t\"]"] {
        Jail::expect_with(|jail| {
            jail.set_env("PPS_KAFKA__BROKERS", value);
            let error = Settings::load(None).unwrap_err();
            assert_eq!(error.problems.len(), 1, "{value}: {error}");
            assert!(
                error.problems[0].starts_with("PPS_KAFKA__BROKERS: a quoted value"),
                "{error}"
            );
            assert!(Settings::load_text("").is_err());
            Ok(())
        });
    }
    Jail::expect_with(|jail| {
        // Plain non-ASCII values and ASCII escapes are fine.
        jail.set_env("PPS_TARGET__CLIENT_CODE", "café");
        jail.set_env("PPS_KAFKA__BROKERS", "\"k1:9092\\t\"");
        let settings = Settings::load(None).unwrap();
        assert_eq!(settings.target.client_code, "café");
        assert_eq!(settings.kafka.brokers, "k1:9092\t");
        Ok(())
    });
}

#[test]
fn a_configuration_variable_that_is_not_utf8_is_a_problem_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    Jail::expect_with(|_jail| {
        let bytes = std::ffi::OsStr::from_bytes(b"k1:9092\xff");
        std::env::set_var("PPS_KAFKA__PROPERTIES__CLIENT_ID", bytes);
        // A variable that is not configuration may hold anything.
        std::env::set_var("PPS_TEST_UNRELATED", bytes);
        let result = Settings::load(None);
        std::env::remove_var("PPS_KAFKA__PROPERTIES__CLIENT_ID");
        std::env::remove_var("PPS_TEST_UNRELATED");
        assert_eq!(
            result.unwrap_err().problems,
            vec!["PPS_KAFKA__PROPERTIES__CLIENT_ID: the value is not UTF-8".to_owned()]
        );
        Ok(())
    });
}

#[test]
fn environment_values_nested_too_deep_are_problems_not_a_stack_overflow() {
    // Found by fuzzing: figment parses `[`/`{` in a variable's value
    // recursively without a limit, so a long run of them overflowed the stack.
    let deep = "[".repeat(3000);
    Jail::expect_with(|jail| {
        jail.set_env("PPS_KAFKA__BROKERS", &deep);
        let error = Settings::load(None).unwrap_err();
        assert_eq!(
            error.problems,
            vec![format!(
                "PPS_KAFKA__BROKERS: more than {MAX_ENV_BRACKETS} '[' and '{{' in one value; set it in the configuration file instead"
            )]
        );
        // Lists and tables of ordinary size still work.
        jail.set_env("PPS_KAFKA__BROKERS", "k1:9092");
        jail.set_env("PPS_KAFKA__TOPICS", "[\"a\", \"b\"]");
        let settings = Settings::load(None).unwrap();
        assert_eq!(settings.kafka.topics, vec!["a", "b"]);
        Ok(())
    });
    // The TOML parser has its own depth limit: an error, not a crash.
    assert!(Settings::load_text(&format!("[kafka]\nbrokers = {deep}\n")).is_err());
}

#[test]
fn the_typed_accessors_read_their_millisecond_keys() {
    let settings = Settings::load_text(
        "[delivery]\ncoalesce_window_ms = 250\ndrain_timeout_ms = 7000\ncommit_interval_ms = 300\nretry_initial_ms = 40\nretry_max_ms = 9000\n[bulk]\nmax_age_ms = 1500\n",
    )
    .unwrap();
    let delivery = &settings.delivery;
    assert_eq!(delivery.coalesce_window(), Duration::from_millis(250));
    assert_eq!(delivery.drain_timeout(), Duration::from_secs(7));
    assert_eq!(delivery.commit_interval(), Duration::from_millis(300));
    assert_eq!(
        delivery.retry(),
        crate::retry::RetryPolicy {
            initial: Duration::from_millis(40),
            max: Duration::from_secs(9),
        }
    );
    assert_eq!(settings.bulk.max_age(), Duration::from_millis(1500));
}
