//! The test kit of pos-profile-sync: one copy of what its integration tests
//! (`tests/`), benches (`benches/`) and their scenarios share.
//!
//! - [`broker::Kafka`]: a Kafka broker with the source and dead-letter
//!   topics. librdkafka's mock cluster inside the process by default; with
//!   `PPS_TEST_BROKER=tansu` a separate [`tansu`] broker process; or a real
//!   cluster started elsewhere.
//! - [`app::App`]: the service's binary as a child process with a generated
//!   configuration ([`app::AppConfig`] or any TOML), killed and restarted as
//!   Kubernetes would, its log kept for the failure message.
//! - [`workload::Workload`]: generated events and the profiles Target must
//!   end up with; [`workload::lost_profiles`] compares them with the simulator.
//!
//! The binary's path is the caller's: only the service's own tests and
//! benches know `CARGO_BIN_EXE_pos-profile-sync`.

pub mod app;
pub mod broker;
pub mod tansu;
pub mod workload;

/// The source topic of the tests.
pub const TOPIC: &str = "pos.purchases";
/// The dead-letter topic of the tests and benches.
pub const DLQ: &str = "pos.purchases.dlq";
/// The client code the simulator and the service share in the tests.
pub const CLIENT: &str = "acme";

/// The simulator as the tests and benches start it for `client_code`:
/// every customer's profile exists at start (Adobe's rules otherwise), so
/// single updates land.
pub fn simulator_config(client_code: &str) -> pps_target_simulator::SimulatorConfig {
    pps_target_simulator::SimulatorConfig {
        existence: pps_target_simulator::Existence::all_known(),
        ..pps_target_simulator::SimulatorConfig::new(client_code)
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    tansu::free_address().port()
}

/// A `kB` field of a `/proc/*/status` file (`VmHWM`, `VmRSS`).
pub fn status_kb(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}
