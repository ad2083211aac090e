//! Nothing secret or personal leaks: a run with a bearer token, a SASL
//! password read through `_file` and real customer ids, logging at debug
//! level, and none of them appears in the logs, the metrics or the
//! dead-letter headers. (The mock cluster speaks no SASL, so the password is
//! configured and handed to librdkafka but the connection stays plaintext.)

use crate::helpers::*;
use pos_profile_sync::generator::{customer_id, EventKind, GeneratorConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_metrics_and_dead_letters_carry_no_token_no_password_and_no_customer_id() {
    const TOKEN: &str = "tok-3c1f9e7a-secret";
    const PASSWORD: &str = "sasl-pw-0b6e58d2-secret";
    let kafka = Kafka::start(2);
    let work = Workload::new(GeneratorConfig {
        events: 600,
        customers: 120,
        bad_ratio: 0.05,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(Some(TOKEN)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_file(&token, &format!("{TOKEN}\n"));
    let mut config = AppConfig::new(&kafka, &sim);
    config.settings.target.token_file = token.display().to_string();
    let password = dir.path().join("sasl-password");
    write_file(&password, &format!("{PASSWORD}\n"));
    config.env.extend([
        (
            "PPS_KAFKA__PROPERTIES__SASL_USERNAME".to_owned(),
            "svc".to_owned(),
        ),
        (
            "PPS_KAFKA__PROPERTIES__SASL_PASSWORD_FILE".to_owned(),
            password.display().to_string(),
        ),
    ]);
    config.log_level = "debug".into();
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    assert_eq!(work.lost_profiles(&sim), Vec::<String>::new());

    let (_, metrics) = app.get("/metrics").await.unwrap();
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success());
    let log = app.log_text();
    assert!(log.lines().count() > 20, "the debug log is not empty");
    let headers: String = kafka
        .read_all(DLQ)
        .iter()
        .flat_map(|l| l.headers.iter().map(|(k, v)| format!("{k}={v}\n")))
        .collect();
    assert!(!headers.is_empty(), "some events were dead-lettered");

    let mut ids: Vec<String> = work
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Customer(n) => Some(customer_id(n).1),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    for (name, text) in [
        ("log", &log),
        ("metrics", &metrics),
        ("dead-letter headers", &headers),
    ] {
        assert!(!text.contains(TOKEN), "the token appears in the {name}");
        assert!(
            !text.contains(PASSWORD),
            "the SASL password appears in the {name}"
        );
        let leaked: Vec<&String> = ids.iter().filter(|id| text.contains(id.as_str())).collect();
        assert!(
            leaked.is_empty(),
            "customer ids appear in the {name}: {leaked:?}"
        );
    }
}
