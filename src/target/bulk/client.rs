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
use crate::target::client::{http_client, ClientError};
use crate::target::request::PARAMETER;
use crate::target::token::TokenSource;

/// Idle connections kept: batches are few and far between.
const POOL: usize = 2;

/// Submits batches and polls their status. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BulkClient {
    http: reqwest::Client,
    submit_url: String,
    token: Option<TokenSource>,
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
        Ok(BulkClient {
            http: http_client(settings, POOL)?,
            submit_url,
            token: settings.token_path().map(TokenSource::new),
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
        let mut url = reqwest::Url::parse(status_url).map_err(|_| BulkError::Retry {
            cause: RetryCause::Unreadable(BadReply::NotAUrl(status_url.to_owned())),
            retry_after: None,
        })?;
        url.query_pairs_mut().append_pair("showDetails", "true");
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
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match response.bytes().await {
                    Ok(body) => Ok((status, retry_after, body)),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        let decided = match &outcome {
            Ok((status, retry_after, body)) => decide(
                BulkAnswer::Response {
                    status: *status,
                    retry_after: retry_after.as_deref(),
                    body: &String::from_utf8_lossy(body),
                },
                SystemTime::now(),
                parse,
            ),
            Err(error) if error.is_timeout() => {
                decide(BulkAnswer::Timeout, SystemTime::now(), parse)
            }
            Err(_) => decide(BulkAnswer::Connection, SystemTime::now(), parse),
        };
        if let (Err(BulkError::Auth { .. }), Some(token)) = (&decided, &self.token) {
            token.invalidate();
        }
        decided
    }
}
