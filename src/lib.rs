//! pos-profile-sync: point-of-sale purchases from Kafka to Adobe Target
//! profiles, at least once.
//!
//! # One event's journey
//!
//! A till publishes a `pos.purchase.v1` JSON event to Kafka. The
//! [`kafka::consumer`] thread, a member of the consumer group, polls it and
//! hands its bytes to [`mapping::Mapping::decide`]: [`event::parse`] checks
//! every rule of the contract once and yields a validated
//! [`event::Purchase`] (or an [`event::EventError`] naming the first
//! offending field), and [`mapping`] derives the profile attributes
//! (`lastPurchaseAt`, `lastPurchaseTotal`, ...). The decision travels to the
//! [`delivery::coordinator`], which tracks the offset in its partition's
//! [`delivery::watermark::CommitWatermark`] and queues the update behind
//! earlier updates of the same profile ([`delivery::queues`]). When the
//! profile's turn comes, an attempt ([`delivery::attempt`]) waits at the
//! [`delivery::gate`] (the pod's share of the group budget, `Retry-After` and
//! credentials pauses), sends the request built by [`target::request`]
//! through the [`target::client`], and [`target::classify`] decides:
//! accepted, retried with backoff, paused, or rejected. Accepted events
//! finish; rejected ones go to the dead-letter topic
//! ([`kafka::dead_letter`]) and finish once Kafka acknowledged them. The
//! coordinator commits each partition's first unfinished offset on a short
//! interval, on revoke and on shutdown, so nothing is committed before
//! Target accepted it or it was dead-lettered. With read-back verification
//! on, a sample of accepted updates is handed to [`delivery::verify`], which
//! fetches those profiles later through [`target::fetch`] within the fetch
//! budget ([`delivery::fetch_budget`]) and reports whether Target applied them.
//!
//! # Layout
//!
//! - [`event`]: the wire event and its validation (pure).
//! - [`mapping`]: derived attributes, configurable as data (pure).
//! - [`target`]: request building, response classification, the update, bulk and
//!   profile fetch clients, the simulator.
//! - [`delivery`]: ordering, rate budget, retries, offsets, the coordinator, the
//!   fetch budget and read-back verification.
//! - [`kafka`]: consumer thread, rebalances, dead-letter producer.
//! - [`ops`]: configuration, metrics, probes, logs, shutdown.
//! - [`retry`]: the retry delays, shared by delivery and the dead-letter producer.
//! - [`service`]: the `run` job wired together.
//! - [`cli`]: the subcommands.

pub mod cli;
pub mod delivery;
pub mod event;
pub mod generator;
pub mod kafka;
pub mod mapping;
pub mod ops;
pub mod retry;
pub mod service;
pub mod target;
