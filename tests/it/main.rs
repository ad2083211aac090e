//! The event contract, tested from outside the crate: the published JSON Schema
//! against the parser on the fixtures (`schema_agreement`), and the parser's
//! promises on generated input (`event_props`). One binary, so the crate and
//! its dev-dependencies are linked once.

mod event_props;
mod schema_agreement;
