//! Traces from outside: a local OTLP/HTTP collector stub receives what the
//! service exports. A record produced with a `traceparent` header gets an
//! event span in that trace, under the header's span, with the messaging
//! attributes; each Target attempt is a child of it; no attribute holds a
//! customer id. Without an OTLP endpoint variable nothing is sent at all.

use crate::helpers::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use pos_profile_sync::generator::{customer_id, EventKind, GeneratorConfig};
use prost::Message as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the stub received: export requests, and their spans with the
/// resource's attributes.
#[derive(Default)]
struct Received {
    requests: usize,
    spans: Vec<Span>,
    resource: Vec<KeyValue>,
}

type Shared = Arc<Mutex<Received>>;

async fn export(State(shared): State<Shared>, body: Bytes) -> &'static [u8] {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut received = shared.lock().unwrap();
    received.requests += 1;
    for resource_spans in request.resource_spans {
        if let Some(resource) = resource_spans.resource {
            received.resource.extend(resource.attributes);
        }
        for scope in resource_spans.scope_spans {
            received.spans.extend(scope.spans);
        }
    }
    // An empty ExportTraceServiceResponse.
    &[]
}

/// Starts the collector stub on a free port.
async fn start_collector() -> (SocketAddr, Shared) {
    let shared = Shared::default();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, shared)
}

fn text(value: &KeyValue) -> Option<String> {
    match value.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(text)
}

/// The W3C ids the till put on record `index`.
fn till_ids(index: usize) -> (String, String) {
    (
        format!("{:032x}", 0x7e11_0000_0000_u64 + index as u64),
        format!("{:016x}", 0xa110_0000_u64 + index as u64),
    )
}

fn workload() -> Workload {
    Workload::new(GeneratorConfig {
        events: 40,
        customers: 8,
        bad_ratio: 0.1,
        anonymous_ratio: 0.1,
        seed: 7,
        ..GeneratorConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_spans_continue_the_records_trace_and_carry_no_customer_id() {
    let (collector, received) = start_collector().await;
    let kafka = Kafka::start(1);
    let work = workload();
    let kinds: Vec<&EventKind> = work.events.iter().map(|e| &e.kind).collect();
    assert!(kinds.iter().any(|k| matches!(k, EventKind::Malformed(_))));
    assert!(kinds.iter().any(|k| matches!(k, EventKind::Anonymous)));
    kafka.produce_with_headers(&work.events, |index| {
        let (trace, span) = till_ids(index);
        vec![
            ("traceparent", format!("00-{trace}-{span}-01")),
            ("tracestate", "till=3".to_owned()),
        ]
    });
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim);
    config.env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://{collector}"),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ];
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    let (status, took) = app.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}");
    assert!(took < Duration::from_millis(3000 + 5000));

    let received = received.lock().unwrap();
    let spans = &received.spans;
    let service = received.resource.iter().find(|kv| kv.key == "service.name");
    assert_eq!(service.and_then(text).as_deref(), Some("pos-profile-sync"));

    for (index, event) in work.events.iter().enumerate() {
        let (trace, parent) = till_ids(index);
        let span = spans
            .iter()
            .find(|s| s.name == "pps.event" && hex(&s.trace_id) == trace)
            .unwrap_or_else(|| panic!("no event span in the trace of record {index}"));
        assert_eq!(hex(&span.parent_span_id), parent, "record {index}");
        assert_eq!(
            attribute(span, "messaging.system").as_deref(),
            Some("kafka")
        );
        assert_eq!(
            attribute(span, "messaging.destination.name").as_deref(),
            Some(TOPIC)
        );
        assert_eq!(
            attribute(span, "messaging.destination.partition.id").as_deref(),
            Some("0")
        );
        assert_eq!(
            attribute(span, "messaging.kafka.offset"),
            Some(index.to_string())
        );
        assert_eq!(
            attribute(span, "messaging.consumer.group.name").as_deref(),
            Some("pos-profile-sync")
        );
        let requests: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == "pps.target.request" && s.parent_span_id == span.span_id)
            .collect();
        let writes = spans
            .iter()
            .filter(|s| s.name == "pps.dead_letter.write" && s.parent_span_id == span.span_id)
            .count();
        let outcome = attribute(span, "pps.outcome");
        match event.kind {
            EventKind::Customer(_) => {
                assert_eq!(outcome.as_deref(), Some("accepted"), "record {index}");
                assert!(!requests.is_empty(), "record {index} has no request span");
                for request in &requests {
                    assert_eq!(request.trace_id, span.trace_id);
                }
                assert!(requests.iter().any(|r| {
                    attribute(r, "http.response.status_code").as_deref() == Some("200")
                        && attribute(r, "pps.target.attempt").is_some()
                }));
            }
            EventKind::Malformed(class) => {
                assert_eq!(outcome.as_deref(), Some("dead_lettered"), "record {index}");
                assert!(requests.is_empty());
                assert_eq!(writes, 1, "record {index} has no dead-letter write span");
                let write = spans
                    .iter()
                    .find(|s| s.name == "pps.dead_letter.write" && s.parent_span_id == span.span_id)
                    .unwrap();
                assert_eq!(attribute(write, "pps.error.class").as_deref(), Some(class));
            }
            EventKind::Anonymous => {
                assert_eq!(outcome.as_deref(), Some("skipped"), "record {index}");
            }
        }
    }

    let ids: Vec<String> = work
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Customer(n) => Some(customer_id(n).1),
            _ => None,
        })
        .collect();
    let values: Vec<String> = spans
        .iter()
        .flat_map(|s| s.attributes.iter().filter_map(text))
        .chain(received.resource.iter().filter_map(text))
        .collect();
    for id in &ids {
        assert!(
            !values.iter().any(|v| v.contains(id.as_str())),
            "customer id {id} appears in a span attribute"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_without_an_otlp_endpoint() {
    let (_collector, received) = start_collector().await;
    let kafka = Kafka::start(1);
    let work = workload();
    kafka.produce_with_headers(&work.events, |index| {
        let (trace, span) = till_ids(index);
        vec![("traceparent", format!("00-{trace}-{span}-01"))]
    });
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim);
    // Everything but the endpoint: still no export.
    config.env = vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into())];
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received.lock().unwrap().requests, 0);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_request_hangs_under_its_first_event_and_links_the_others() {
    let (collector, received) = start_collector().await;
    let kafka = Kafka::start(1);
    let work = Workload::new(GeneratorConfig {
        events: 30,
        customers: 2,
        bad_ratio: 0.0,
        anonymous_ratio: 0.0,
        seed: 11,
        ..GeneratorConfig::default()
    });
    kafka.produce_with_headers(&work.events, |index| {
        let (trace, span) = till_ids(index);
        vec![("traceparent", format!("00-{trace}-{span}-01"))]
    });
    let sim = start_simulator(None).await;
    let mut config = AppConfig::new(&kafka, &sim).with_delivery(|d| d.coalesce_window_ms = 500);
    config.env = vec![(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
        format!("http://{collector}/v1/traces"),
    )];
    let mut app = spawn_app(&config);
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    let (status, _) = app.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}");

    let received = received.lock().unwrap();
    let spans = &received.spans;
    let events: Vec<&Span> = spans.iter().filter(|s| s.name == "pps.event").collect();
    assert_eq!(events.len(), work.events.len());
    let coalesced: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "pps.target.request" && !s.links.is_empty())
        .collect();
    assert!(!coalesced.is_empty(), "no request covered several events");
    for request in coalesced {
        let parent = events
            .iter()
            .find(|e| e.span_id == request.parent_span_id && e.trace_id == request.trace_id)
            .expect("a coalesced request's parent is an event span");
        let first_offset = attribute(parent, "messaging.kafka.offset");
        for link in &request.links {
            let linked = events
                .iter()
                .find(|e| e.span_id == link.span_id && e.trace_id == link.trace_id)
                .expect("every link names an event span");
            assert_eq!(
                attribute(linked, "pps.outcome").as_deref(),
                Some("accepted")
            );
            let offset = |s: &Option<String>| s.as_deref().and_then(|o| o.parse::<i64>().ok());
            assert!(offset(&attribute(linked, "messaging.kafka.offset")) > offset(&first_offset));
        }
        assert_eq!(
            attribute(request, "pps.coalesced_events"),
            Some((request.links.len() + 1).to_string())
        );
    }
}
