//! The HTTP client for Target's profile fetch API: whether Target has a
//! profile, and what its attributes are.
//!
//! - `mbox3rdPartyId`: `GET {base_url}/rest/v1/profiles/thirdPartyId/{id}?client={client_code}`
//! - `mboxPC`: `GET {base_url}/rest/v1/profiles/{id}?client={client_code}`
//!
//! The id is one path segment, percent-encoded (a `/` in it is `%2F`). The call
//! sends `Authorization: Bearer <token>` when `target.token_file` is set (with
//! profile authentication on, Adobe requires it on every profile API call),
//! re-reads the token after a 401/403, and honours `target.timeout_ms`. What an
//! answer means is decided by [`answer::judge`].
//!
//! Fetches are neither single updates nor bulk calls: they spend neither the
//! update budget nor the daily quota. Pacing them is the caller's job
//! (the delivery side's fetch budget).

pub mod answer;

pub use answer::{judge, FetchAnswer, FetchOutcome, FetchedAttribute, FetchedAttributes};

use super::client::{http_client, read_body, retry_after_of, ClientError};
use super::request::PARAMETER;
use super::token::TokenSource;
use crate::event::Identity;
use crate::ops::config::TargetSettings;
use percent_encoding::utf8_percent_encode;
use std::time::SystemTime;

/// The longest body read: Adobe keeps at most 64 KB of profile data.
const MAX_BODY: usize = 1024 * 1024;

/// Fetches profiles. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FetchClient {
    http: reqwest::Client,
    /// `{base_url}/rest/v1/profiles/`.
    profiles_url: String,
    /// `?client={client_code}`, encoded.
    query: String,
    token: Option<TokenSource>,
}

impl FetchClient {
    /// A client for these settings; `pool` is the number of idle connections to keep.
    pub fn new(settings: &TargetSettings, pool: usize) -> Result<FetchClient, ClientError> {
        let profiles_url = format!("{}/rest/v1/profiles/", settings.effective_base_url());
        reqwest::Url::parse(&profiles_url)
            .map_err(|error| ClientError::Url(format!("{profiles_url}: {error}")))?;
        Ok(FetchClient {
            http: http_client(settings, pool)?,
            profiles_url,
            query: format!(
                "?client={}",
                utf8_percent_encode(&settings.client_code, PARAMETER)
            ),
            token: settings.token_path().map(TokenSource::new),
        })
    }

    /// The URL a profile is fetched from. For an id that is not
    /// [`Identity::is_fetchable`] it names another resource: callers skip such ids.
    pub fn url_of(&self, identity: &Identity) -> String {
        let id = utf8_percent_encode(identity.id(), PARAMETER);
        match identity {
            Identity::ThirdParty(_) => {
                format!("{}thirdPartyId/{id}{}", self.profiles_url, self.query)
            }
            Identity::Pc(_) => format!("{}{id}{}", self.profiles_url, self.query),
        }
    }

    /// Fetches one profile and decides what the answer means.
    pub async fn fetch(&self, identity: &Identity) -> FetchOutcome {
        let mut request = self.http.get(self.url_of(identity));
        if let Some(token) = self.token.as_ref().and_then(TokenSource::current) {
            request = request.bearer_auth(token);
        }
        let outcome = match request.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after_of(&response);
                // Only a 2xx (a profile) and a 404 (Adobe's "no profile")
                // are decided by their body; any other answer counts by its
                // status and Retry-After, whatever becomes of its body.
                let needs_body = response.status().is_success() || status == 404;
                // Too long to be a profile: what was read does not parse.
                let body = match read_body(&mut response, MAX_BODY, true).await {
                    Ok(body) => Ok(body.bytes),
                    Err(_) if !needs_body => Ok(Vec::new()),
                    Err(error) if error.is_timeout() => Err(FetchAnswer::Timeout),
                    Err(_) => Err(FetchAnswer::Connection),
                };
                match body {
                    Ok(body) => judge(
                        FetchAnswer::Response {
                            status,
                            retry_after: retry_after.as_deref(),
                            body: &body,
                        },
                        SystemTime::now(),
                    ),
                    Err(unanswered) => judge(unanswered, SystemTime::now()),
                }
            }
            Err(error) if error.is_timeout() => judge(FetchAnswer::Timeout, SystemTime::now()),
            Err(_) => judge(FetchAnswer::Connection, SystemTime::now()),
        };
        if let (FetchOutcome::AuthFailed { .. }, Some(token)) = (&outcome, &self.token) {
            token.invalidate();
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch client for client code `acme` at a local test server.
    fn client_of(address: std::net::SocketAddr, timeout_ms: u64) -> FetchClient {
        let settings = TargetSettings {
            client_code: "acme".into(),
            base_url: format!("http://{address}"),
            timeout_ms,
            ..TargetSettings::default()
        };
        FetchClient::new(&settings, 1).unwrap()
    }

    #[tokio::test]
    async fn an_endless_answer_is_read_no_further_than_the_cap() {
        let address = crate::target::client::endless_body_server(200).await;
        let client = client_of(address, 3_000);
        // Read whole, the body would run into the request timeout (a retry
        // with no status); cut at the cap, it is a 200 that is no profile.
        assert_eq!(
            client.fetch(&Identity::ThirdParty("CRM-1".into())).await,
            FetchOutcome::Retry {
                status: Some(200),
                retry_after: None
            }
        );
    }

    #[tokio::test]
    async fn an_answer_whose_body_stalls_counts_by_its_status_unless_the_body_decides() {
        let fetch = |head: &'static str| async move {
            let (address, _) =
                crate::target::client::canned_server(head, crate::target::client::Then::Stall)
                    .await;
            client_of(address, 500)
                .fetch(&Identity::ThirdParty("CRM-1".into()))
                .await
        };
        // Target's throttle: its Retry-After holds whatever the body does.
        assert_eq!(
            fetch(
                "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 100\r\n\r\n"
            )
            .await,
            FetchOutcome::Retry {
                status: Some(503),
                retry_after: Some(std::time::Duration::from_secs(7))
            }
        );
        assert_eq!(
            fetch("HTTP/1.1 400 Bad Request\r\ncontent-length: 100\r\n\r\n").await,
            FetchOutcome::Rejected { status: 400 }
        );
        // A profile, or Adobe's "no profile", is in the body: unread, no answer.
        for head in [
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 100\r\n\r\n",
        ] {
            assert_eq!(
                fetch(head).await,
                FetchOutcome::Retry {
                    status: None,
                    retry_after: None
                },
                "{head}"
            );
        }
    }

    #[test]
    fn ids_are_one_encoded_path_segment_under_their_namespace() {
        let settings = TargetSettings {
            client_code: "acme".into(),
            base_url: "https://acme.tt.omtrdc.net/".into(),
            ..TargetSettings::default()
        };
        let client = FetchClient::new(&settings, 1).unwrap();
        assert_eq!(
            client.url_of(&Identity::ThirdParty("CRM 1/a+b?c#d".into())),
            "https://acme.tt.omtrdc.net/rest/v1/profiles/thirdPartyId/CRM%201%2Fa%2Bb%3Fc%23d?client=acme"
        );
        assert_eq!(
            client.url_of(&Identity::Pc("1368007744041-575948.01_00".into())),
            "https://acme.tt.omtrdc.net/rest/v1/profiles/1368007744041-575948.01_00?client=acme"
        );
        let default = FetchClient::new(
            &TargetSettings {
                client_code: "acme".into(),
                ..TargetSettings::default()
            },
            1,
        )
        .unwrap();
        assert!(default
            .url_of(&Identity::Pc("p".into()))
            .starts_with("https://acme.tt.omtrdc.net/rest/v1/profiles/p?"));
    }
}
