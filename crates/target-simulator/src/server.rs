//! The HTTP face of the simulator: the router, and the single profile update endpoint
//! with its fault pipeline. Read-back, bulk and admin routes live in their own files.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use time::OffsetDateTime;

use super::faults::{Failure, Fate};
use super::params::{parse_update, BadUpdate, ProfileUpdate};
use super::reset::ResetSwitch;
use super::state::Shared;
use super::store::Landing;
use super::{admin, bulk, readback, reply};

/// Adobe's limit for a request target (path and query).
const MAX_REQUEST_TARGET: usize = 8 * 1024;
/// Adobe's limit for a POST body.
const MAX_FORM_BODY: usize = 60 * 1024;
/// Bodies are read up to this size, so that [`MAX_FORM_BODY`] is answered here.
const READ_LIMIT: usize = 1024 * 1024;
/// How long a hanging request is held: far past any client timeout.
const HANG: Duration = Duration::from_secs(3600);

/// Every route of one simulator.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/m2/{client_code}/profile/update", get(update).post(update))
        .merge(readback::routes())
        .merge(bulk::routes())
        .nest("/_sim", admin::routes())
        .layer(DefaultBodyLimit::max(READ_LIMIT))
        .with_state(shared)
}

/// One update request as received.
struct UpdateRequest {
    client_code: String,
    connection: Option<ResetSwitch>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// `GET|POST /m2/{client_code}/profile/update`: counts, then answers.
async fn update(
    State(shared): State<Arc<Shared>>,
    Path(client_code): Path<String>,
    connection: Option<axum::Extension<ConnectInfo<ResetSwitch>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = shared.stats.arrived();
    let request = UpdateRequest {
        client_code,
        connection: connection.map(|info| (info.0).0),
        uri,
        headers,
        body,
    };
    let form_body = if is_form(&request.headers) {
        &request.body[..]
    } else {
        &[][..]
    };
    let query = request.uri.query().unwrap_or("");
    let parsed = parse_update(query.as_bytes(), form_body);
    if let Ok(update) = &parsed {
        shared.stats.profile_requested(&update.key);
    }
    let response = answer(&shared, &request, parsed).await;
    if !request.connection.as_ref().is_some_and(ResetSwitch::thrown) {
        shared.stats.answered(response.status().as_u16());
    }
    response
}

/// The update pipeline: hold, rate limit, drawn fate (overload included) and latency, then the request's
/// own checks (client code, token, sizes, parameters), then the injected failure, and
/// only then the change of state, if the profile exists (the answer is the same when
/// it does not).
async fn answer(
    shared: &Shared,
    request: &UpdateRequest,
    parsed: Result<ProfileUpdate, BadUpdate>,
) -> Response {
    if !shared.wait_until_released().await {
        return stopping();
    }
    if !shared.within_rate() {
        let mut response = reply::failure(StatusCode::SERVICE_UNAVAILABLE, "Too many requests");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let fate = shared
        .faults()
        .draw_under_load(shared.stats.in_flight(), &mut rand::rng());
    let (delay, failure) = match fate {
        Fate::Pass { delay } => (delay, None),
        Fate::Fail { delay, failure } => (delay, Some(failure)),
        Fate::Hang => {
            shared.stats.hung();
            return hang(shared).await;
        }
        Fate::Reset => {
            if let Some(connection) = &request.connection {
                shared.stats.connection_reset();
                connection.throw();
            }
            // Never sent when the switch is thrown.
            return reply::failure(StatusCode::SERVICE_UNAVAILABLE, "Connection reset");
        }
    };
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown.cancelled() => return stopping(),
        }
    }
    if let Err((status, message)) = check(shared, request) {
        return reply::failure(status, message);
    }
    let update = match parsed {
        Ok(update) => update,
        Err(bad) => return reply::failure(StatusCode::BAD_REQUEST, &bad.to_string()),
    };
    if let Some(failure) = failure {
        return injected(&failure);
    }
    if shared
        .faults()
        .failing_ids
        .iter()
        .any(|id| id == update.key.id())
    {
        return reply::failure(StatusCode::SERVICE_UNAVAILABLE, "Profile update failed");
    }
    shared.stats.profile_accepted(&update.key);
    shared.settle_batches();
    let landing = shared.store.update(
        update,
        shared.stats.elapsed(),
        OffsetDateTime::now_utc(),
        &shared.existence(),
    );
    if landing == Landing::NotFound {
        // Adobe answers the same: "If nothing is found, a profile is not created".
        shared.stats.update_to_unknown_profile();
    }
    reply::success()
}

/// What any update request must satisfy apart from its parameters: the refusal's
/// status and message otherwise.
fn check(shared: &Shared, request: &UpdateRequest) -> Result<(), (StatusCode, &'static str)> {
    if request.client_code != shared.client_code {
        return Err((StatusCode::NOT_FOUND, "Unknown client code"));
    }
    if !shared.authorized(&request.headers) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "Missing or invalid profile authentication token",
        ));
    }
    let target = request
        .uri
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_REQUEST_TARGET {
        return Err((StatusCode::URI_TOO_LONG, "Request target over 8 KB"));
    }
    if request.body.len() > MAX_FORM_BODY {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "Body over 60 KB"));
    }
    if !request.body.is_empty() && !is_form(&request.headers) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "A body must be application/x-www-form-urlencoded",
        ));
    }
    Ok(())
}

/// Whether the body is declared `application/x-www-form-urlencoded`.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Holds the request for [`HANG`], or until the simulator stops.
async fn hang(shared: &Shared) -> Response {
    tokio::select! {
        () = tokio::time::sleep(HANG) => reply::failure(StatusCode::GATEWAY_TIMEOUT, "Timed out"),
        () = shared.shutdown.cancelled() => stopping(),
    }
}

/// The answer of an injected failure.
fn injected(injected: &Failure) -> Response {
    let status = StatusCode::from_u16(injected.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = reply::failure(status, "Injected failure");
    if let Some(retry_after) = injected.retry_after {
        let value = retry_after.header_value(SystemTime::now());
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// The answer to requests cut short because the simulator stops.
fn stopping() -> Response {
    let mut response = reply::failure(StatusCode::SERVICE_UNAVAILABLE, "Shutting down");
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        headers
    }

    #[test]
    fn form_bodies_are_recognised_with_or_without_a_charset() {
        assert!(is_form(&headers("application/x-www-form-urlencoded")));
        assert!(is_form(&headers(
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
        )));
        assert!(!is_form(&headers("application/json")));
        assert!(!is_form(&HeaderMap::new()));
    }
}
