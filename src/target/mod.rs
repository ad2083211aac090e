//! The Target side: requests built as the contract says, the one function that
//! classifies responses, the client that sends them, the bulk profile update
//! API ([`bulk`]) and the profile fetch API ([`fetch`]). The simulator that stands
//! in for Target in tests, benchmarks and the demo is its own crate,
//! `pps-target-simulator` (`crates/target-simulator`).

pub mod bulk;
pub mod classify;
pub mod client;
pub mod fetch;
pub mod request;
pub mod token;

pub use classify::{classify, AttemptResult, Verdict};
pub use client::{Attempt, TargetClient};
