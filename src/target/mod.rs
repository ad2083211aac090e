//! The Target side: the HTTP client, response classification and the simulator.
pub mod simulator;
