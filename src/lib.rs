//! pos-profile-sync: point-of-sale purchases from Kafka to Adobe Target profiles.
pub mod event;
pub mod mapping;
pub mod ops;
pub mod target;
