//! The Target side: requests built as the contract says, the one function that
//! classifies responses, the client that sends them, the bulk profile update
//! API ([`bulk`]), the profile fetch API ([`fetch`]), and the simulator that stands in for Target in tests,
//! benchmarks and the demo.

pub mod bulk;
pub mod classify;
pub mod client;
pub mod fetch;
pub mod request;
pub mod simulator;
pub mod token;

pub use classify::{classify, AttemptResult, Verdict};
pub use client::{Attempt, TargetClient};
