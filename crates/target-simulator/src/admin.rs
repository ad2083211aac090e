//! The simulator's own JSON endpoints under `/_sim/`, so that other processes can
//! change faults, existence rules, token and hold at runtime and read statistics and
//! profiles. They need
//! no token and never suffer injected faults.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::reply::json;
use super::state::Shared;

/// The admin routes, relative to `/_sim`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/profiles", get(profiles))
        .route("/reset", post(reset))
        .route("/faults", get(faults).put(set_faults).post(set_faults))
        .route(
            "/existence",
            get(existence).put(set_existence).post(set_existence),
        )
        .route("/token", post(set_token).put(set_token))
        .route("/hold", post(hold))
        .route("/release", post(release))
}

/// The body of `PUT /_sim/token`: `{"token":"abc"}` sets or changes it,
/// `{"token":null}` clears it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenChange {
    token: Option<String>,
}

/// The body of every 400 answered here.
#[derive(Debug, Serialize)]
struct AdminError {
    error: String,
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, &shared.stats.snapshot())
}

async fn profiles(State(shared): State<Arc<Shared>>) -> Response {
    shared.settle_batches();
    let dump = shared
        .store
        .dump(shared.stats.elapsed(), &shared.existence());
    json(StatusCode::OK, &dump)
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, &*shared.faults())
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    replace(
        &body,
        |faults| shared.set_faults(faults),
        || shared.faults(),
    )
}

async fn existence(State(shared): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, &*shared.existence())
}

async fn set_existence(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    replace(
        &body,
        |existence| shared.set_existence(existence),
        || shared.existence(),
    )
}

/// Parses `body` as a new setting, hands it to `set`, and answers the setting now in
/// force (from `current`), or 400 naming what is wrong.
fn replace<T, E>(
    body: &[u8],
    set: impl FnOnce(T) -> Result<(), E>,
    current: impl FnOnce() -> Arc<T>,
) -> Response
where
    T: DeserializeOwned + Serialize,
    E: std::fmt::Display,
{
    let setting: T = match serde_json::from_slice(body) {
        Ok(setting) => setting,
        Err(error) => return bad_request(error.to_string()),
    };
    match set(setting) {
        Ok(()) => json(StatusCode::OK, &*current()),
        Err(error) => bad_request(error.to_string()),
    }
}

async fn set_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<TokenChange>(&body) {
        Ok(change) => {
            shared.set_token(change.token);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => bad_request(error.to_string()),
    }
}

async fn hold(State(shared): State<Arc<Shared>>) -> Response {
    shared.set_hold(true);
    StatusCode::NO_CONTENT.into_response()
}

async fn release(State(shared): State<Arc<Shared>>) -> Response {
    shared.set_hold(false);
    StatusCode::NO_CONTENT.into_response()
}

fn bad_request(error: String) -> Response {
    json(StatusCode::BAD_REQUEST, &AdminError { error })
}
