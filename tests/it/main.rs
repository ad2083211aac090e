//! Integration tests, one binary: the event contract from outside the crate
//! (`schema_agreement`, `event_props`), the Target simulator over real HTTP
//! (`simulator`), the service end to end against librdkafka's mock cluster
//! and the simulator (`delivery`), the operator tools `produce` and
//! `dlq replay` (`tools`), `demo` as a newcomer runs it (`demo`), and the
//! OpenTelemetry trace export to a collector stub (`traces`).
//! Shared set-up lives in `helpers`.

mod client;
mod delivery;
mod demo;
mod event_props;
mod helpers;
mod kafka_security;
mod privacy;
mod schema_agreement;
mod simulator;
mod tls;
mod tools;
mod traces;
