//! Target's profile fetch API, as a user's own check reads back what arrived:
//! `GET /rest/v1/profiles/thirdPartyId/{id}?client=` and `GET /rest/v1/profiles/{pcId}?client=`.
//! 200 with `{client, visitorId, modifiedAt, profileAttributes{name:{value,modifiedAt}}}`
//! for a profile that exists and is readable (a profile known at start and never
//! written has no attribute), otherwise Adobe's
//! `{"status":404,"message":"No profile found for client C with third party id=ID"}`
//! (`tnt id=` for a pc id): never created, expired, or created by a batch less than
//! `readable_after_ms` ago. It checks the token like the update path but never suffers
//! injected faults; it is counted in [`super::FetchStats`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::reply::json;
use super::state::Shared;
use super::store::{render_time, IdKind, Profile, ProfileKey};

/// The read-back routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/rest/v1/profiles/thirdPartyId/{id}", get(third_party))
        .route("/rest/v1/profiles/{pc_id}", get(pc))
}

async fn third_party(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    read_back(
        &shared,
        ProfileKey::new(IdKind::ThirdParty, id),
        query,
        &headers,
    )
}

async fn pc(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    read_back(&shared, ProfileKey::new(IdKind::Pc, id), query, &headers)
}

/// Target's profile document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProfileDocument<'a> {
    client: &'a str,
    visitor_id: BTreeMap<&'static str, &'a str>,
    modified_at: String,
    profile_attributes: BTreeMap<&'a str, AttributeDocument<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttributeDocument<'a> {
    value: &'a str,
    modified_at: String,
}

/// Target's error document.
#[derive(Serialize)]
struct ErrorDocument {
    status: u16,
    message: String,
}

fn read_back(
    shared: &Shared,
    key: ProfileKey,
    query: Option<String>,
    headers: &HeaderMap,
) -> Response {
    if !shared.authorized(headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Missing or invalid profile authentication token".to_owned(),
        );
    }
    let client = query.as_deref().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "client")
            .map(|(_, value)| value.into_owned())
    });
    let Some(client) = client else {
        return error(
            StatusCode::BAD_REQUEST,
            "The client parameter is required".to_owned(),
        );
    };
    let (id_field, id_words) = match key.kind() {
        IdKind::ThirdParty => ("thirdPartyId", "third party id"),
        IdKind::Pc => ("tntId", "tnt id"),
    };
    shared.settle_batches();
    let profile = (client == shared.client_code)
        .then(|| {
            shared
                .store
                .fetch(&key, shared.stats.elapsed(), &shared.existence())
        })
        .flatten();
    shared.stats.fetched(profile.is_some());
    match profile {
        Some(profile) => json(
            StatusCode::OK,
            &document(&client, id_field, key.id(), &profile),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "No profile found for client {client} with {id_words}={}",
                key.id()
            ),
        ),
    }
}

fn document<'a>(
    client: &'a str,
    id_field: &'static str,
    id: &'a str,
    profile: &'a Profile,
) -> ProfileDocument<'a> {
    ProfileDocument {
        client,
        visitor_id: BTreeMap::from([(id_field, id)]),
        modified_at: render_time(profile.modified_at),
        profile_attributes: profile
            .attributes
            .iter()
            .map(|(name, attribute)| {
                let attribute = AttributeDocument {
                    value: &attribute.value,
                    modified_at: render_time(attribute.modified_at),
                };
                (name.as_str(), attribute)
            })
            .collect(),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    let document = ErrorDocument {
        status: status.as_u16(),
        message,
    };
    json(status, &document)
}
