//! Running the service: configuration, metrics, health, logs, shutdown.
pub mod config;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod traces;
