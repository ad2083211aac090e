//! Running the service: configuration, telemetry, health, shutdown.
pub mod config;
