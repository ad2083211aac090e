//! Reading profiles back the way a user's own check would: Target's profile fetch API
//! over HTTP (`GET /rest/v1/profiles/thirdPartyId/{id}?client=` for a CRM id,
//! `GET /rest/v1/profiles/{pcId}?client=` for a visitor id), not the simulator's own
//! dump. A few requests at a time; anything but 200 or Adobe's 404 stops the check.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

/// Fetches in flight at once.
const CONCURRENCY: usize = 32;

/// One profile to read back.
pub(crate) struct Wanted {
    /// `true` for a CRM id (`mbox3rdPartyId`), `false` for a visitor id (`mboxPC`).
    pub(crate) crm: bool,
    pub(crate) id: String,
}

/// What the fetch API answered for one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// 200: the attribute values.
    Found(BTreeMap<String, String>),
    /// Adobe's 404: no such profile (never created, expired, or not readable yet).
    NotFound,
}

/// The part of Target's profile document the check reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileDocument {
    #[serde(default)]
    profile_attributes: BTreeMap<String, AttributeDocument>,
}

#[derive(Deserialize)]
struct AttributeDocument {
    value: String,
}

/// Reads every profile in `wanted` from the fetch API at `base_url` for `client`; the
/// answers by id, or why the check could not be made.
pub(crate) async fn fetch_all(
    base_url: &str,
    client: &str,
    wanted: Vec<Wanted>,
) -> Result<BTreeMap<String, Fetched>, String> {
    let http = reqwest::Client::new();
    stream::iter(wanted)
        .map(|profile| {
            let url = profile_url(base_url, client, &profile);
            let http = http.clone();
            async move {
                let fetched = fetch_one(&http, &url).await?;
                Ok::<_, String>((profile.id, fetched))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

/// The fetch API's URL for one profile.
fn profile_url(base_url: &str, client: &str, profile: &Wanted) -> String {
    let id = utf8_percent_encode(&profile.id, NON_ALPHANUMERIC);
    let client = utf8_percent_encode(client, NON_ALPHANUMERIC);
    if profile.crm {
        format!("{base_url}/rest/v1/profiles/thirdPartyId/{id}?client={client}")
    } else {
        format!("{base_url}/rest/v1/profiles/{id}?client={client}")
    }
}

async fn fetch_one(http: &reqwest::Client, url: &str) -> Result<Fetched, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|error| format!("read-back of {url} failed: {error}"))?;
    match response.status() {
        reqwest::StatusCode::NOT_FOUND => Ok(Fetched::NotFound),
        reqwest::StatusCode::OK => {
            let body = response
                .bytes()
                .await
                .map_err(|error| format!("read-back of {url} failed: {error}"))?;
            let document: ProfileDocument = serde_json::from_slice(&body)
                .map_err(|error| format!("read-back of {url}: not a profile: {error}"))?;
            let values = document
                .profile_attributes
                .into_iter()
                .map(|(name, attribute)| (name, attribute.value))
                .collect();
            Ok(Fetched::Found(values))
        }
        status => Err(format!("read-back of {url} answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crm_and_visitor_ids_go_to_their_own_fetch_routes_encoded() {
        let crm = Wanted {
            crm: true,
            id: "CRM 1/+".into(),
        };
        assert_eq!(
            profile_url("http://t", "demo", &crm),
            "http://t/rest/v1/profiles/thirdPartyId/CRM%201%2F%2B?client=demo"
        );
        let visitor = Wanted {
            crm: false,
            id: "123.45_6".into(),
        };
        assert_eq!(
            profile_url("http://t", "demo", &visitor),
            "http://t/rest/v1/profiles/123%2E45%5F6?client=demo"
        );
    }
}
