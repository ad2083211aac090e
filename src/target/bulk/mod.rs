//! Adobe's bulk profile update API v2 (`docs/contract.md` section 12): many profiles in one
//! request, processed by Target in the background and polled until done.
//!
//! Three rooms, each usable on its own:
//!
//! - [`encode`]: [`BatchEncoder`] turns [`crate::mapping::ProfileUpdate`]s of one
//!   identity kind into the `batch=<CSV>` form body, knowing its exact size at every
//!   row so that the caller closes a batch before `bulk.max_rows` / `bulk.max_bytes`;
//!   [`EncodedBatch`] keeps which row carries which profile.
//! - [`response`]: the submit and status XML answers as plain data.
//! - [`classify`] and [`client`]: [`BulkClient`] submits and polls over HTTP, and one
//!   pure function ([`decide`]) turns every answer into a value or a [`BulkError`]
//!   saying what to do: retry, pause for credentials, or give up.
//!
//! How a caller (the delivery coordinator) uses them, one batch at a time:
//!
//! 1. `BatchEncoder::new(kind)`; for every update of that kind
//!    `push_within(&update, limits)`; on `Admission::Full` (or `max_age_ms`) `finish()`
//!    and start another encoder. Remember which events each row index carries.
//! 2. `client.submit(batch.body().clone())`: `Ok(Submitted { status_url, .. })`, or a
//!    `BulkError` (`Retry` includes `success=false` and Adobe's 503 throttling).
//! 3. `client.status(&status_url)` with backoff until `BatchState::Complete`;
//!    `Incomplete` means ask again; `Stuck` means submit the batch again.
//! 4. On `Complete`, every id in `BatchReport::failed_ids` maps back to rows through
//!    `EncodedBatch::rows_with_id`; their events are rejected (`target_rejected`), the
//!    others are done. Both calls count towards Adobe's 50 calls a minute.
//!
//! Nothing here sleeps, counts calls or retries: pacing and retry policy belong to the
//! caller.

mod ampersand;
pub mod classify;
pub mod client;
pub mod encode;
pub mod response;

pub use classify::{decide, decide_status, decide_submit, BulkAnswer, BulkError, RetryCause};
pub use client::BulkClient;
pub use encode::{
    check_batch_id, Admission, BatchEncoder, BatchKind, BatchLimits, EncodeError, EncodedBatch,
    UnmatchedFailures, MAX_THIRD_PARTY_ID_CHARS,
};
pub use response::{BadReply, BatchReport, BatchState, Reply, Submitted};
