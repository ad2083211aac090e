//! Integration tests, one binary: the event contract from outside the crate
//! (`schema_agreement`, `event_props`), the Target simulator over real HTTP
//! (`simulator`), the bulk profile update API through the project's encoder and
//! client (`bulk`), the service end to end against librdkafka's mock cluster
//! and the simulator (`delivery`), the operator tools `produce` and
//! `dlq replay` (`tools`), `demo` as a newcomer runs it (`demo`), the
//! OpenTelemetry trace export to a collector stub (`traces`), and fault storms
//! on Kafka and Target mid-stream (`storms`).
//! Shared set-up lives in `helpers`.

mod batches;
mod bulk;
mod client;
mod delivery;
mod demo;
mod event_props;
mod helpers;
mod kafka_security;
mod privacy;
mod schema_agreement;
mod simulator;
mod storms;
mod tls;
mod tools;
mod traces;
