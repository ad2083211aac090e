//! Traces: OpenTelemetry spans exported over OTLP (HTTP/protobuf), only when
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variable is set. Otherwise no
//! provider is installed and [`enabled`] is false, so the data path builds
//! no span at all. The span shapes live in `delivery::spans`; this module
//! only starts and stops the export.

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The variables that turn the export on (the OTLP exporter specification's).
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "pos-profile-sync";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported; when not, callers build none.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer every span of the service comes from.
pub fn tracer() -> BoxedTracer {
    global::tracer(SERVICE_NAME)
}

/// Whether the environment asks for an export (a non-empty endpoint variable).
pub fn requested(var: impl Fn(&str) -> Option<String>) -> bool {
    ENDPOINT_VARIABLES
        .iter()
        .any(|name| var(name).is_some_and(|value| !value.trim().is_empty()))
}

/// The running export: a batch span processor on its own thread.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

/// The OTLP exporter could not be built from the `OTEL_EXPORTER_OTLP_*` variables.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter: {0}")]
pub struct TraceSetupError(#[from] opentelemetry_otlp::ExporterBuildError);

/// Starts the export when the environment asks for it. Call outside the
/// async runtime (the blocking HTTP client must not be built inside it).
pub fn init() -> Result<Option<TraceExport>, TraceSetupError> {
    if !requested(|name| std::env::var(name).ok()) {
        return Ok(None);
    }
    // Endpoint, headers, timeout and compression come from the standard
    // OTEL_EXPORTER_OTLP_* variables.
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(TraceExport { provider }))
}

impl TraceExport {
    /// Exports what is still buffered, waiting at most `budget`, then stops.
    pub fn shut_down(self, budget: Duration) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(error) = self.provider.shutdown_with_timeout(budget) {
            tracing::warn!(error = %error, "Could not flush the last spans.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::requested;
    use crate::ops::test_env as with;

    #[test]
    fn only_a_non_empty_endpoint_variable_turns_the_export_on() {
        assert!(!requested(with(&[])));
        assert!(!requested(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(!requested(with(&[("OTEL_SERVICE_NAME", "x")])));
        assert!(requested(with(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318"
        )])));
        assert!(requested(with(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces"
        )])));
    }
}
