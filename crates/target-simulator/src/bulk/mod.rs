//! The simulator's bulk profile update APIs, v2 (creates missing profiles) and v1 (does
//! not): submit a `batch=<CSV>` form, poll its status until `complete`, with the faults
//! of [`BulkFaults`]. See the table in the
//! simulator's module docs for the routes; the rooms are:
//!
//! - [`decode`]: the form and CSV as Adobe reads them (pure);
//! - [`registry`]: batches and their lifecycle, applied exactly once (time passed in);
//! - [`window`]: Adobe's calls a minute, a sliding window apart from the update path's
//!   token bucket (time passed in);
//! - [`faults`]: what can go wrong, as data;
//! - [`routes`]: the HTTP handlers.

pub(crate) mod decode;
mod faults;
mod registry;
mod routes;
mod window;

pub use faults::{BulkFaults, ADOBE_CALLS_PER_MINUTE, ADOBE_STATUSES_KEPT};
pub(crate) use registry::{BatchRegistry, Settled};
pub(crate) use routes::routes;
pub(crate) use window::CallWindow;
