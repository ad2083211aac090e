//! Delivery: per-profile ordering, the group rate budget, retries, the commit
//! watermark, and the coordinator that ties them to Kafka and Target.
pub mod batch_sender;
pub mod concurrency;
pub mod coordinator;
pub mod gate;
pub mod queues;
pub mod quota;
pub mod retry;
pub mod routing;
pub mod sender;
pub mod spans;
pub mod watermark;
