//! Delivery: per-profile ordering, the group rate budget, retries, the commit
//! watermark, the coordinator that ties them to Kafka and Target, the budget
//! of profile fetches, and the read-back verification of accepted updates.
pub mod attempt;
pub mod batch_sender;
pub mod concurrency;
pub mod coordinator;
pub mod existence;
pub mod failure_shares;
pub mod fetch_budget;
pub mod freshness;
pub mod gate;
pub mod queues;
pub mod quota;
pub mod resubmissions;
pub mod routing;
pub mod spans;
pub mod verify;
pub mod watermark;
