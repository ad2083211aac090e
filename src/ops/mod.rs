//! Running the service: configuration, metrics, health, logs, shutdown,
//! memory.
pub mod config;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod traces;

/// An environment for tests: looks `name` up in `pairs`, as the service's
/// environment readers do in the process's environment.
#[cfg(test)]
pub(crate) fn test_env(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}
