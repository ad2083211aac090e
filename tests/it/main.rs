//! Integration tests, one binary: the event contract from outside the crate
//! (`schema_agreement`, `event_props`), the Target simulator over real HTTP
//! (`simulator`, and which profiles exist in it: `existence`), the bulk profile update API through the project's encoder and
//! client (`bulk`), the service end to end against librdkafka's mock cluster
//! and the simulator (`delivery`), the operator tools `produce` and
//! `dlq replay` (`tools`), `demo` as a newcomer runs it (`demo`), the
//! OpenTelemetry trace export to a collector stub (`traces`), fault storms
//! on Kafka and Target mid-stream (`storms`), the series an operator pages on
//! (`ops_metrics`), bulk answers as Target gives them (`bulk_answers`),
//! profile fetches and read-back verification (`readback`), and pods coming
//! and going, static membership, Kafka TLS and SASL on a separate broker
//! (`separate_broker`), with reproducers of that broker's defects
//! (`broker_defects`).
//! Shared set-up lives in `helpers`.

mod batches;
mod broker_defects;
mod bulk;
mod bulk_answers;
mod client;
mod delivery;
mod demo;
mod event_props;
mod existence;
mod existence_policy;
mod helpers;
mod idle;
mod kafka_security;
mod ops_metrics;
mod privacy;
mod readback;
mod schema_agreement;
mod separate_broker;
mod simulator;
mod storms;
mod tls;
mod tools;
mod traces;
