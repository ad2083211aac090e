//! W3C trace context carried in Kafka record headers (`traceparent`,
//! optionally `tracestate`): read on the consumer thread so an event's span
//! continues the trace the till started.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::Headers;

/// The two headers the W3C propagator reads, as text.
#[derive(Debug, Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The remote parent named by a record's headers, if they hold a valid one.
/// Header names match case-insensitively; a malformed value is ignored.
pub fn extract<H: Headers>(headers: Option<&H>) -> Option<SpanContext> {
    let headers = headers?;
    let mut carrier = Carrier::default();
    for header in headers.iter() {
        let slot = if header.key.eq_ignore_ascii_case("traceparent") {
            &mut carrier.traceparent
        } else if header.key.eq_ignore_ascii_case("tracestate") {
            &mut carrier.tracestate
        } else {
            continue;
        };
        *slot = header
            .value
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
    }
    carrier.traceparent.as_ref()?;
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

#[cfg(test)]
mod tests {
    use super::extract;
    use rdkafka::message::{Header, OwnedHeaders};

    fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(*value),
            })
        })
    }

    #[test]
    fn a_traceparent_header_becomes_a_remote_parent() {
        let h = headers(&[
            ("pps-other", "x"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "till=7"),
        ]);
        let parent = extract(Some(&h)).expect("a parent");
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_remote());
        assert!(parent.is_sampled());
        assert_eq!(parent.trace_state().get("till"), Some("7"));
    }

    #[test]
    fn missing_or_malformed_headers_give_no_parent() {
        assert!(extract::<OwnedHeaders>(None).is_none());
        assert!(extract(Some(&headers(&[("tracestate", "a=b")]))).is_none());
        assert!(extract(Some(&headers(&[("traceparent", "not a traceparent")]))).is_none());
        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert!(extract(Some(&headers(&[("traceparent", zero)]))).is_none());
    }
}
