//! The HTTP client for Target's single profile update API: reqwest with
//! rustls, pooled keep-alive connections, a per-request timeout, and the
//! response turned into a [`Verdict`] by [`classify`].

use super::classify::{classify, AttemptResult, Verdict};
use super::request::{UpdateEndpoint, UpdateRequest};
use super::token::TokenSource;
use crate::mapping::ProfileUpdate;
use crate::ops::config::TargetSettings;
use std::time::{Duration, Instant, SystemTime};

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// What to do about it.
    pub verdict: Verdict,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// Whether the request failed for lack of a response in time.
    pub timed_out: bool,
    /// Time from sending to the end of the response.
    pub elapsed: Duration,
}

/// Building the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL or client code do not make a URL.
    #[error("target.base_url: {0}")]
    Url(String),
    /// `target.ca_file` cannot be used.
    #[error("{0}")]
    CaFile(String),
    /// The TLS stack could not be set up.
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// The HTTP client every Target call uses: rustls, `target.timeout_ms` per request,
/// `pool` idle keep-alive connections, no redirects.
pub(crate) fn http_client(
    settings: &TargetSettings,
    pool: usize,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder();
    for certificate in settings.ca_certificates().map_err(ClientError::CaFile)? {
        builder = builder.add_root_certificate(certificate);
    }
    Ok(builder
        .timeout(settings.timeout())
        .connect_timeout(settings.timeout().min(Duration::from_secs(5)))
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pos-profile-sync/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// The `Retry-After` header of a response, when it is text.
pub(crate) fn retry_after_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Sends profile updates to Target. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TargetClient {
    http: reqwest::Client,
    endpoint: UpdateEndpoint,
    token: Option<TokenSource>,
}

impl TargetClient {
    /// A client for these settings; `pool` is the number of idle connections to keep.
    pub fn new(settings: &TargetSettings, pool: usize) -> Result<TargetClient, ClientError> {
        let endpoint = UpdateEndpoint::new(&settings.effective_base_url(), &settings.client_code)
            .map_err(ClientError::Url)?;
        let http = http_client(settings, pool)?;
        Ok(TargetClient {
            http,
            endpoint,
            token: settings.token_path().map(TokenSource::new),
        })
    }

    /// The update URL (without parameters), for logs.
    pub fn endpoint_url(&self) -> &str {
        self.endpoint.url()
    }

    /// Sends one update and classifies what came back.
    pub async fn send(&self, update: &ProfileUpdate) -> Attempt {
        self.send_request(self.request(update)).await
    }

    /// The request that sends `update`.
    pub fn request(&self, update: &ProfileUpdate) -> UpdateRequest {
        self.endpoint.request(update)
    }

    /// Sends a request made by [`TargetClient::request`] and classifies
    /// what came back.
    pub async fn send_request(&self, request: UpdateRequest) -> Attempt {
        let mut builder = self.http.post(request.url);
        if let Some(body) = request.form_body {
            builder = builder
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        if let Some(token) = self.token.as_ref().and_then(TokenSource::current) {
            builder = builder.bearer_auth(token);
        }
        let started = Instant::now();
        let outcome = builder.send().await;
        let (result_status, retry_after, timed_out, connection) = match outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after_of(&response);
                // Read the (small) body so the connection goes back to the pool.
                match response.bytes().await {
                    Ok(_) => (Some(status), retry_after, false, false),
                    Err(error) => (Some(status), retry_after, error.is_timeout(), false),
                }
            }
            Err(error) => (None, None, error.is_timeout(), !error.is_timeout()),
        };
        let result = match (result_status, timed_out, connection) {
            (Some(status), false, _) => AttemptResult::Response {
                status,
                retry_after: retry_after.as_deref(),
            },
            (_, true, _) => AttemptResult::Timeout,
            _ => AttemptResult::Connection,
        };
        let verdict = classify(result, SystemTime::now());
        if let (Verdict::AuthFailed { .. }, Some(token)) = (verdict, &self.token) {
            token.invalidate();
        }
        Attempt {
            verdict,
            status: result_status,
            timed_out,
            elapsed: started.elapsed(),
        }
    }
}
