//! The bulk path's HTTP face: `POST /m2/{client_code}/v2/profile/batchUpdate` (v2,
//! creates missing profiles), `POST /m2/{client_code}/profile/batchUpdate` (v1, does
//! not), and `GET /m2/{client_code}[/v2]/profile/batchStatus?batchId=..[&showDetails=true]`
//! (either path answers for any batch; a `client` parameter is allowed).
//!
//! Both first pass Adobe's calls-a-minute limit (503 beyond it, counted together), then
//! the client code (404) and the token (401). A submit's body may be up to 50 MB (413
//! beyond); a batch that does not decode is answered HTTP 200 with `success=false`
//! and no batch id, as Adobe does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt::Write;

use super::decode::decode_batch;
use super::faults::BulkFaults;
use super::registry::{BatchView, BulkVersion, ViewState};
use crate::reply::{self, escape_xml};
use crate::state::Shared;

/// What a status URL's parameters escape: everything but RFC 3986's
/// unreserved characters.
const PARAMETER: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Adobe: "The batch file must be under 50 MB".
pub(crate) const MAX_BATCH_BYTES: usize = 50_000_000;
/// Adobe: at most 500,000 rows per upload.
pub(crate) const MAX_BATCH_ROWS: usize = 500_000;
/// Bodies are read up to this size, so that [`MAX_BATCH_BYTES`] is answered here.
const READ_LIMIT: usize = 64 * 1024 * 1024;

/// The bulk routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/m2/{client_code}/v2/profile/batchUpdate",
            submit_route(BulkVersion::V2),
        )
        .route(
            "/m2/{client_code}/profile/batchUpdate",
            submit_route(BulkVersion::V1),
        )
        .route("/m2/{client_code}/v2/profile/batchStatus", get(status))
        .route("/m2/{client_code}/profile/batchStatus", get(status))
}

/// What every bulk call must pass before its own work: the refusal's status and
/// message otherwise.
fn admit(
    shared: &Shared,
    client_code: &str,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    if !shared.within_bulk_rate() {
        shared.stats.bulk_throttled();
        return Err((StatusCode::SERVICE_UNAVAILABLE, "Too many requests"));
    }
    if client_code != shared.client_code {
        return Err((StatusCode::NOT_FOUND, "Unknown client code"));
    }
    if !shared.authorized(headers) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "Missing or invalid profile authentication token",
        ));
    }
    Ok(())
}

/// `POST` of a batch through `version`, with bodies read up to [`READ_LIMIT`].
fn submit_route(version: BulkVersion) -> MethodRouter<Arc<Shared>> {
    let handler = move |State(shared): State<Arc<Shared>>,
                        Path(client_code): Path<String>,
                        headers: HeaderMap,
                        body: Bytes| async move {
        submit(&shared, version, &client_code, &headers, &body)
    };
    post(handler).layer(DefaultBodyLimit::max(READ_LIMIT))
}

fn submit(
    shared: &Shared,
    version: BulkVersion,
    client_code: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    shared.settle_batches();
    if let Err((status, message)) = admit(shared, client_code, headers) {
        return reply::failure(status, message);
    }
    if body.len() > MAX_BATCH_BYTES {
        return reply::failure(StatusCode::PAYLOAD_TOO_LARGE, "Batch file over 50 MB");
    }
    let batch = match decode_batch(body, MAX_BATCH_ROWS) {
        Ok(batch) => batch,
        Err(bad) => {
            shared.stats.batch_refused();
            return reply::failure(StatusCode::OK, &bad.to_string());
        }
    };
    let rows = batch.rows.len() as u64;
    let faults = shared.faults();
    let batch_id = shared.batches.submit(
        &shared.client_code,
        version,
        batch,
        &faults.bulk,
        shared.stats.elapsed(),
        &mut rand::rng(),
    );
    shared.stats.batch_submitted(rows);
    let status_url = status_url(
        shared.base_url(),
        &shared.client_code,
        version,
        &batch_id,
        &faults.bulk,
    );
    reply::xml(
        StatusCode::OK,
        format!(
            "<response><success>true</success><batchStatus>{status_url}</batchStatus>\
             <message>Batch submitted for processing</message></response>"
        ),
    )
}

/// The status URL of a new batch as it goes in the XML answer (escaped, unless the
/// bare-ampersand quirk is on).
fn status_url(
    base_url: &str,
    client_code: &str,
    version: BulkVersion,
    batch_id: &str,
    faults: &BulkFaults,
) -> String {
    let base = match base_url.strip_prefix("https://") {
        Some(rest) if faults.status_url_plain_http => format!("http://{rest}"),
        _ => base_url.to_owned(),
    };
    let client = utf8_percent_encode(client_code, PARAMETER);
    let path = match version {
        BulkVersion::V2 => "v2/profile/batchStatus",
        BulkVersion::V1 => "profile/batchStatus",
    };
    let batch_id = utf8_percent_encode(batch_id, PARAMETER);
    if faults.status_url_bare_ampersand {
        format!("{base}/m2/{client}/{path}?client={client}&batchId={batch_id}")
    } else {
        escape_xml(&format!("{base}/m2/{client}/{path}?batchId={batch_id}"))
    }
}

async fn status(
    State(shared): State<Arc<Shared>>,
    Path(client_code): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    shared.stats.status_polled();
    shared.settle_batches();
    if let Err((status, message)) = admit(&shared, &client_code, &headers) {
        return reply::failure(status, message);
    }
    let mut batch_id = None;
    let mut details = false;
    for (name, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "batchId" => batch_id = Some(value.into_owned()),
            "showDetails" => details = value.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    let Some(batch_id) = batch_id else {
        return reply::failure(StatusCode::BAD_REQUEST, "batchId is required");
    };
    let Some(view) = shared.batches.poll(&batch_id, shared.stats.elapsed()) else {
        return reply::failure(StatusCode::NOT_FOUND, "Batch not found");
    };
    reply::xml(StatusCode::OK, render_status(&view, details))
}

/// Adobe's status document, with the counts and failed rows when `details`.
fn render_status(view: &BatchView, details: bool) -> String {
    let state = match view.state {
        ViewState::Complete => "complete",
        ViewState::Incomplete => "incomplete",
        ViewState::Stuck => "stuck",
    };
    let mut xml = format!(
        "<response><batchId>{}</batchId><status>{state}</status><batchSize>{}</batchSize>",
        escape_xml(&view.batch_id),
        view.size
    );
    if details {
        let complete = view.state == ViewState::Complete;
        let failed = view.failed_ids.len() as u64;
        let consumed = if complete { view.size } else { 0 };
        let not_found = view.not_found;
        let successful = consumed.saturating_sub(failed).saturating_sub(not_found);
        // Writing to a String cannot fail.
        let _ = write!(
            xml,
            "<consumedCount>{consumed}</consumedCount>\
             <successfulUpdates>{successful}</successfulUpdates>\
             <profilesNotFound>{not_found}</profilesNotFound>\
             <failedUpdates>{failed}</failedUpdates>"
        );
        for id in &view.failed_ids {
            let _ = write!(
                xml,
                "<profile><id>{}</id><status>failed</status></profile>",
                escape_xml(id)
            );
        }
    }
    xml.push_str("</response>");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_add_counts_and_failed_rows_only_when_asked() {
        let view = BatchView {
            batch_id: "acme-1-1".into(),
            state: ViewState::Complete,
            size: 3,
            failed_ids: vec!["a<b".into()],
            not_found: 0,
        };
        assert_eq!(
            render_status(&view, false),
            "<response><batchId>acme-1-1</batchId><status>complete</status>\
             <batchSize>3</batchSize></response>"
        );
        assert_eq!(
            render_status(&view, true),
            "<response><batchId>acme-1-1</batchId><status>complete</status>\
             <batchSize>3</batchSize><consumedCount>3</consumedCount>\
             <successfulUpdates>2</successfulUpdates><profilesNotFound>0</profilesNotFound>\
             <failedUpdates>1</failedUpdates>\
             <profile><id>a&lt;b</id><status>failed</status></profile></response>"
        );
    }

    #[test]
    fn status_urls_are_escaped_unless_the_quirks_ask_for_adobes_older_answers() {
        let plain = BulkFaults::default();
        assert_eq!(
            status_url(
                "https://127.0.0.1:1",
                "acme",
                BulkVersion::V2,
                "acme-1-1",
                &plain
            ),
            "https://127.0.0.1:1/m2/acme/v2/profile/batchStatus?batchId=acme-1-1"
        );
        assert_eq!(
            status_url(
                "http://127.0.0.1:1",
                "acme",
                BulkVersion::V1,
                "acme-1-1",
                &plain
            ),
            "http://127.0.0.1:1/m2/acme/profile/batchStatus?batchId=acme-1-1"
        );
        let quirky = BulkFaults {
            status_url_bare_ampersand: true,
            status_url_plain_http: true,
            ..BulkFaults::default()
        };
        assert_eq!(
            status_url(
                "https://127.0.0.1:1",
                "acme",
                BulkVersion::V2,
                "acme-1-1",
                &quirky
            ),
            "http://127.0.0.1:1/m2/acme/v2/profile/batchStatus?client=acme&batchId=acme-1-1"
        );
    }
}
