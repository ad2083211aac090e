//! Test harness: the test kit's broker, service process and workload
//! (`pps-test-kit`, shared with the benches), the Target simulator over real
//! HTTP as the tests start it, and small waits and builders.

use pps_target_simulator::{Simulator, SimulatorHandle};
pub use pps_test_kit::app::{App, AppConfig};
pub use pps_test_kit::broker::Kafka;
pub use pps_test_kit::tansu;
pub use pps_test_kit::workload::Workload;
pub use pps_test_kit::{free_port, CLIENT, DLQ, TOPIC};
use std::io::Write;
use std::time::{Duration, Instant};

/// A record read back from Kafka.
pub type Consumed = pos_profile_sync::kafka::inspect::StoredRecord;

/// Starts `pos-profile-sync run` with this configuration.
pub fn spawn_app(config: &AppConfig) -> App {
    App::spawn(env!("CARGO_BIN_EXE_pos-profile-sync"), config)
}

/// Starts the simulator on a free port, with every customer's profile existing at
/// start (Adobe's rules otherwise): single updates land, as the delivery tests expect.
pub async fn start_simulator(token: Option<&str>) -> SimulatorHandle {
    let mut config = pps_test_kit::simulator_config(CLIENT);
    config.token = token.map(str::to_owned);
    Simulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("simulator")
}

/// The most update requests the simulator received in one whole second.
pub fn busiest_second(sim: &SimulatorHandle) -> u64 {
    sim.stats()
        .requests_per_second
        .busiest()
        .map_or(0, |(_, n)| n)
}

/// Polls `done` every 100 ms until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the app owns `partitions` partitions. The group join comes
/// before what a test then checks, and on a loaded machine it alone can
/// take longer than the time the test gives the behaviour it checks.
pub async fn wait_assigned(app: &App, partitions: f64, limit: Duration) {
    let started = Instant::now();
    loop {
        let owned = app.metric("pps_assigned_partitions").await;
        if owned == Some(partitions) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{partitions} partitions not assigned after {limit:?} (owned: {owned:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the group has committed every source offset.
pub async fn wait_all_committed(kafka: &Kafka, group: &str, limit: Duration) {
    let ends = kafka.end_offsets();
    let started = Instant::now();
    loop {
        let committed = kafka.committed(group);
        if committed == ends {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "not all committed after {limit:?}: committed {committed:?}, ends {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes a file in one go (a token rotation).
pub fn write_file(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).unwrap();
    file.write_all(content.as_bytes()).unwrap();
    drop(file);
    std::fs::rename(tmp, path).unwrap();
}

/// A profile update with these attributes, as of 2026-11-28T10:15:00Z.
pub fn profile_update(
    identity: pos_profile_sync::event::Identity,
    attributes: &[(&str, &str)],
) -> pos_profile_sync::mapping::ProfileUpdate {
    pos_profile_sync::mapping::ProfileUpdate {
        identity,
        attributes: attributes
            .iter()
            .map(|(n, v)| pos_profile_sync::mapping::Attribute {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        occurred_at: pos_profile_sync::event::parse_rfc3339("2026-11-28T10:15:00Z").unwrap(),
    }
}
