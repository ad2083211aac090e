//! The HTTP client for Target's bulk profile update API v2: the thin shell around
//! [`super::classify`]. It submits a batch body and polls a batch's status; what to do
//! about a failure is the [`BulkError`] variant, decided by [`decide`].
//!
//! - `submit`: `POST {base_url}/m2/{client_code}/v2/profile/batchUpdate` with
//!   `Content-Type: application/x-www-form-urlencoded` and the body as encoded by
//!   [`super::BatchEncoder`].
//! - `status`: `GET` the `batchStatus` URL Target answered, with `showDetails=true`
//!   appended so that failed rows are listed.
//!
//! The token never travels over plain HTTP to a status URL: Adobe answers
//! `batchStatus` URLs on `http://` edge hosts, and when `target.base_url` is
//! `https://` such a URL is polled as `https://` (same host and path). An `http://`
//! URL with a port of its own cannot be moved to https safely and is refused by
//! name ([`BulkError::StatusUrl`]). With an `http://` base URL (a test
//! simulator) status URLs are polled as given.
//!
//! Both send `Authorization: Bearer <token>` when `target.token_file` is set (Adobe's
//! profile API token covers the bulk API) and honour `target.timeout_ms`. A 401/403
//! makes the token file be re-read on the next call. Both calls count towards Adobe's
//! 50 calls a minute; keeping under it is the caller's job.

use std::time::SystemTime;

use bytes::Bytes;
use percent_encoding::utf8_percent_encode;

use super::classify::{decide, BulkAnswer, BulkError, RetryCause};
use super::response::{parse_status, parse_submit, BadReply, BatchReport, Submitted};
use crate::ops::config::TargetSettings;
use crate::target::client::{http_client, read_body, retry_after_of, ClientError};
use crate::target::request::PARAMETER;
use crate::target::token::TokenSource;

/// Idle connections kept: batches are few and far between.
const POOL: usize = 2;

/// The longest answer read: a status with details for a batch of Adobe's
/// 500,000 rows, every one failed with a 256-character id (about 300 bytes
/// a row), and room for the rest. A longer answer is unreadable: it is not
/// kept in memory, and the call is retried.
pub(crate) const MAX_BODY: usize = 500_000 * 320 + 64 * 1024;

/// Submits batches and polls their status. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BulkClient {
    http: reqwest::Client,
    submit_url: String,
    /// `target.base_url` is https: so must every status poll be.
    https_only: bool,
    token: Option<TokenSource>,
    /// The longest answer read ([`MAX_BODY`]).
    max_body: usize,
}

impl BulkClient {
    /// A client for these settings (base URL, client code, token file, timeout).
    pub fn new(settings: &TargetSettings) -> Result<BulkClient, ClientError> {
        let submit_url = format!(
            "{}/m2/{}/v2/profile/batchUpdate",
            settings.effective_base_url(),
            utf8_percent_encode(&settings.client_code, PARAMETER)
        );
        reqwest::Url::parse(&submit_url)
            .map_err(|error| ClientError::Url(format!("{submit_url}: {error}")))?;
        // By the parsed scheme, so that `HTTPS://` counts as https too.
        let https_only = reqwest::Url::parse(&submit_url).is_ok_and(|url| url.scheme() == "https");
        Ok(BulkClient {
            http: http_client(settings, POOL)?,
            https_only,
            submit_url,
            token: settings.token_path().map(TokenSource::new),
            max_body: MAX_BODY,
        })
    }

    /// The submit URL, for logs.
    pub fn submit_url(&self) -> &str {
        &self.submit_url
    }

    /// Submits one batch body (`batch=...`); where to poll its status.
    pub async fn submit(&self, body: impl Into<Bytes>) -> Result<Submitted, BulkError> {
        let request = self
            .http
            .post(&self.submit_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.into());
        self.call(request, parse_submit).await
    }

    /// Polls a batch's status (with details) at the `batchStatus` URL Target gave.
    pub async fn status(&self, status_url: &str) -> Result<BatchReport, BulkError> {
        let url = poll_url(status_url, self.https_only)?;
        self.call(self.http.get(url), parse_status).await
    }

    async fn call<T>(
        &self,
        mut request: reqwest::RequestBuilder,
        parse: impl FnOnce(&str) -> Result<super::response::Reply<T>, BadReply>,
    ) -> Result<T, BulkError> {
        if let Some(token) = self.token.as_ref().and_then(TokenSource::current) {
            request = request.bearer_auth(token);
        }
        let outcome = match request.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after_of(&response);
                match read_body(&mut response, self.max_body, true).await {
                    Ok(body) => Ok((status, retry_after, body)),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        let max_body = self.max_body;
        let decided = match &outcome {
            Ok((status, retry_after, body)) => decide(
                BulkAnswer::Response {
                    status: *status,
                    retry_after: retry_after.as_deref(),
                    body: &String::from_utf8_lossy(&body.bytes),
                },
                SystemTime::now(),
                |xml: &str| {
                    if body.whole {
                        parse(xml)
                    } else {
                        Err(BadReply::TooLong(max_body))
                    }
                },
            ),
            Err(error) if error.is_timeout() => {
                decide(BulkAnswer::Timeout, SystemTime::now(), parse)
            }
            Err(_) => decide(BulkAnswer::Connection, SystemTime::now(), parse),
        };
        if let (Err(BulkError::AuthFailed { .. }), Some(token)) = (&decided, &self.token) {
            token.invalidate();
        }
        decided
    }
}

/// The URL a batch's status is polled at: Target's `batchStatus` URL with
/// `showDetails=true`, moved from `http` to `https` when `https_only`.
pub fn poll_url(status_url: &str, https_only: bool) -> Result<reqwest::Url, BulkError> {
    let mut url = reqwest::Url::parse(status_url).map_err(|_| BulkError::Retry {
        cause: RetryCause::Unreadable(BadReply::NotAUrl(status_url.to_owned())),
        retry_after: None,
    })?;
    if https_only && url.scheme() != "https" {
        if url.scheme() != "http" || url.port().is_some() {
            return Err(BulkError::StatusUrl(format!(
                "{status_url} is not https and cannot be moved to https (target.base_url is https, so the token is never sent in clear)"
            )));
        }
        url.set_scheme("https")
            .map_err(|()| BulkError::StatusUrl(format!("{status_url} cannot be moved to https")))?;
    }
    url.query_pairs_mut().append_pair("showDetails", "true");
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_written_in_capitals_is_https_all_the_same() {
        let client = BulkClient::new(&TargetSettings {
            client_code: "acme".into(),
            base_url: "HTTPS://acme.tt.omtrdc.net".into(),
            ..TargetSettings::default()
        })
        .unwrap();
        assert!(client.https_only, "status URLs must not be polled in clear");
        let client = BulkClient::new(&TargetSettings {
            client_code: "acme".into(),
            base_url: "http://127.0.0.1:8080".into(),
            ..TargetSettings::default()
        })
        .unwrap();
        assert!(!client.https_only);
    }

    #[tokio::test]
    async fn an_answer_longer_than_any_target_gives_is_unreadable_and_not_kept() {
        let address = crate::target::client::endless_body_server(200).await;
        let mut client = BulkClient::new(&TargetSettings {
            client_code: "acme".into(),
            base_url: format!("http://{address}"),
            timeout_ms: 5_000,
            ..TargetSettings::default()
        })
        .unwrap();
        // As MAX_BODY, smaller, so that the test does not read 160 MB.
        client.max_body = 1024 * 1024;
        let status_url = format!("http://{address}/m2/acme/v2/profile/batchStatus?batchId=1");
        match client.status(&status_url).await {
            Err(BulkError::Retry {
                cause: RetryCause::Unreadable(BadReply::TooLong(cap)),
                retry_after: None,
            }) => assert_eq!(cap, 1024 * 1024),
            other => panic!("expected an unreadable answer, got {other:?}"),
        }
    }

    #[test]
    fn an_http_status_url_is_polled_over_https_when_the_base_url_is_https() {
        let adobe =
            "http://mboxedge45.tt.omtrdc.net/m2/demo/profile/batchStatus?batchId=demo-1&mboxPC=1";
        assert_eq!(
            poll_url(adobe, true).unwrap().as_str(),
            "https://mboxedge45.tt.omtrdc.net/m2/demo/profile/batchStatus?batchId=demo-1&mboxPC=1&showDetails=true"
        );
        assert_eq!(
            poll_url("http://edge:80/s?batchId=1", true)
                .unwrap()
                .as_str(),
            "https://edge/s?batchId=1&showDetails=true",
            "the default port is no port of its own"
        );
        // A test simulator on plain http keeps it.
        assert_eq!(
            poll_url("http://127.0.0.1:8080/s?batchId=1", false)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/s?batchId=1&showDetails=true"
        );
        assert_eq!(
            poll_url("https://edge/s?batchId=1", true).unwrap().as_str(),
            "https://edge/s?batchId=1&showDetails=true"
        );
    }

    #[test]
    fn an_http_status_url_that_cannot_move_to_https_is_refused_by_name() {
        match poll_url("http://edge:8080/s?batchId=1", true) {
            Err(BulkError::StatusUrl(why)) => {
                assert!(
                    why.contains("http://edge:8080/s?batchId=1 is not https"),
                    "{why}"
                );
                assert!(BulkError::StatusUrl(why)
                    .to_string()
                    .starts_with("cannot poll the batch status: "));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(
            poll_url("not a url", true),
            Err(BulkError::Retry {
                cause: RetryCause::Unreadable(BadReply::NotAUrl(_)),
                ..
            })
        ));
    }
}
