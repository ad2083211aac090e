//! The simulator's own JSON endpoints under `/_sim/`, so that other processes can
//! change faults, token and hold at runtime and read statistics and profiles. They need
//! no token and never suffer injected faults.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::faults::Faults;
use super::reply::json;
use super::state::Shared;

/// The admin routes, relative to `/_sim`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/profiles", get(profiles))
        .route("/reset", post(reset))
        .route("/faults", get(faults).put(set_faults).post(set_faults))
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
    json(StatusCode::OK, &shared.store.dump())
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, &*shared.faults())
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(faults) => faults,
        Err(error) => return bad_request(error.to_string()),
    };
    match shared.set_faults(faults) {
        Ok(()) => json(StatusCode::OK, &*shared.faults()),
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
