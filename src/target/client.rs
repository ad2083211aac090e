//! The HTTP client for Target's single profile update API: reqwest with
//! rustls, pooled keep-alive connections, a per-request timeout, and the
//! response turned into a [`Verdict`] by [`classify`].

use super::classify::{classify, refuses, AttemptResult, Verdict};
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

/// The longest single update answer read. Adobe's is a few bytes; a 2xx's
/// is looked at to be sure it is Target's yes ([`refuses`]), any other is
/// read only so that the connection goes back to the pool.
pub(crate) const MAX_UPDATE_BODY: usize = 64 * 1024;

/// What was read of a response body.
#[derive(Debug, Default)]
pub(crate) struct Body {
    /// The bytes read, when they were kept.
    pub bytes: Vec<u8>,
    /// Whether that was all of it: it was not longer than the cap.
    pub whole: bool,
}

/// Reads a response body, at most `cap` bytes of it (kept when `keep`).
/// Past the cap nothing more is read: the response is dropped and its
/// connection closed, not returned to the pool. A proxy or gateway that
/// answers with a long, or endless, body then costs neither memory nor a
/// request timeout.
pub(crate) async fn read_body(
    response: &mut reqwest::Response,
    cap: usize,
    keep: bool,
) -> Result<Body, reqwest::Error> {
    let mut body = Body::default();
    let mut read = 0usize;
    while let Some(chunk) = response.chunk().await? {
        read = read.saturating_add(chunk.len());
        if read > cap {
            return Ok(body);
        }
        if keep {
            body.bytes.extend_from_slice(&chunk);
        }
    }
    body.whole = true;
    Ok(body)
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
        let mut not_taken = false;
        let (result_status, retry_after, timed_out, connection) = match outcome {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after_of(&response);
                // Read the (small) body so the connection goes back to the
                // pool; a 2xx's is kept, to be sure it is Target's yes.
                let success = response.status().is_success();
                match read_body(&mut response, MAX_UPDATE_BODY, success).await {
                    Ok(body) => {
                        not_taken = success && refuses(&body.bytes);
                        (Some(status), retry_after, false, false)
                    }
                    // A 2xx is Target's yes only once its body is read:
                    // unread, it counts as no answer (retried).
                    Err(error) if success => (
                        Some(status),
                        retry_after,
                        error.is_timeout(),
                        !error.is_timeout(),
                    ),
                    // Any other answer counts by its status and
                    // Retry-After, whatever became of its body.
                    Err(_) => (Some(status), retry_after, false, false),
                }
            }
            Err(error) => (None, None, error.is_timeout(), !error.is_timeout()),
        };
        let result = match (result_status, timed_out, connection) {
            (_, true, _) => AttemptResult::Timeout,
            (Some(status), false, false) => AttemptResult::Response {
                status,
                retry_after: retry_after.as_deref(),
            },
            _ => AttemptResult::Connection,
        };
        let mut verdict = classify(result, SystemTime::now());
        if not_taken {
            // Not Target's yes (an HTML page, `success` false): never
            // committed on it; retried, and counted against max_attempts.
            verdict = Verdict::Retry {
                status: result_status,
                retry_after: None,
            };
        }
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

/// A server on 127.0.0.1 that answers every request with `status` and a
/// body that never ends (16 KiB chunks until the client goes), as a broken
/// gateway might.
#[cfg(test)]
pub(crate) async fn endless_body_server(status: u16) -> std::net::SocketAddr {
    let head = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    canned_server(head, Then::Endless).await.0
}

/// A server on 127.0.0.1 that answers every request with `status` and
/// `body`, then closes the connection.
#[cfg(test)]
pub(crate) async fn answering_server(status: u16, body: &str) -> std::net::SocketAddr {
    let answer = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    canned_server(answer, Then::Next).await.0
}

/// What a [`canned_server`] does after its answer.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Reads the next request on the same connection.
    Next,
    /// Sends nothing more and holds the connection (an answer that promises
    /// a body never delivers it).
    Stall,
    /// Sends 16 KiB chunks of a chunked body until the client goes.
    Endless,
}

/// A server on 127.0.0.1 that answers every request with the bytes of
/// `answer` as they are, noting when each request arrived, and then does
/// what `then` says.
#[cfg(test)]
pub(crate) async fn canned_server(
    answer: impl Into<String>,
    then: Then,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let answer: std::sync::Arc<str> = answer.into().into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let noted = noted.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    // The request head: the tests send no body.
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    head.clear();
                    noted.lock().expect("arrivals").push(Instant::now());
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    match then {
                        Then::Next => {}
                        Then::Stall => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                        Then::Endless => {
                            let mut chunk = b"4000\r\n".to_vec();
                            chunk.extend(std::iter::repeat_n(b'x', 0x4000));
                            chunk.extend_from_slice(b"\r\n");
                            while stream.write_all(&chunk).await.is_ok() {}
                            return;
                        }
                    }
                }
            });
        }
    });
    (address, arrivals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Identity;
    use crate::mapping::Attribute;

    /// A client of the server at `address`, with a 3 s timeout.
    fn client_of(address: std::net::SocketAddr) -> TargetClient {
        let settings = TargetSettings {
            client_code: "acme".into(),
            base_url: format!("http://{address}"),
            timeout_ms: 3_000,
            ..TargetSettings::default()
        };
        TargetClient::new(&settings, 1).expect("client")
    }

    /// One customer's tier set to gold.
    fn gold_tier() -> ProfileUpdate {
        ProfileUpdate {
            identity: Identity::ThirdParty("CRM-1".into()),
            attributes: vec![Attribute {
                name: "tier".into(),
                value: "gold".into(),
            }],
            occurred_at: crate::event::parse_rfc3339("2026-11-28T10:15:00Z").expect("time"),
        }
    }

    #[tokio::test]
    async fn a_2xx_that_is_not_targets_yes_is_retried_not_taken() {
        let update = gold_tier();
        let cases = [
            ("<!DOCTYPE html><html><body>Sign in to continue</body></html>", false),
            ("<response><success>false</success><message>Unexpected error</message></response>", false),
            ("<response><success>true</success><message>Request successfully submitted</message></response>", true),
            ("trueRequest successfully submitted", true),
            ("", true),
        ];
        for (body, taken) in cases {
            let client = client_of(answering_server(200, body).await);
            let attempt = client.send(&update).await;
            let expected = if taken {
                Verdict::Accepted
            } else {
                Verdict::Retry {
                    status: Some(200),
                    retry_after: None,
                }
            };
            assert_eq!(attempt.verdict, expected, "{body:?}");
            assert_eq!(attempt.status, Some(200));
        }
    }

    /// A server that sends `head` (a status line and headers promising a
    /// body) and then nothing, holding the connection open.
    async fn stalling_server(head: &'static str) -> std::net::SocketAddr {
        canned_server(head, Then::Stall).await.0
    }

    #[tokio::test]
    async fn an_answer_whose_body_stalls_counts_by_its_status_and_retry_after() {
        let client = |address| {
            TargetClient::new(
                &TargetSettings {
                    client_code: "acme".into(),
                    base_url: format!("http://{address}"),
                    timeout_ms: 500,
                    ..TargetSettings::default()
                },
                1,
            )
            .expect("client")
        };
        let update = gold_tier();
        // Target's throttle: its Retry-After holds whatever the body does.
        let throttled = client(
            stalling_server(
                "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 100\r\n\r\n",
            )
            .await,
        );
        let attempt = throttled.send(&update).await;
        assert_eq!(
            attempt.verdict,
            Verdict::Retry {
                status: Some(503),
                retry_after: Some(Duration::from_secs(7))
            },
            "{attempt:?}"
        );
        assert!(!attempt.timed_out, "{attempt:?}");
        // A refusal stays a refusal.
        let refused = client(
            stalling_server("HTTP/1.1 400 Bad Request\r\ncontent-length: 100\r\n\r\n").await,
        );
        assert_eq!(
            refused.send(&update).await.verdict,
            Verdict::Rejected { status: 400 }
        );
        // A 2xx whose body never comes is not Target's yes: retried.
        let unread =
            client(stalling_server("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n").await);
        let attempt = unread.send(&update).await;
        assert!(
            matches!(attempt.verdict, Verdict::Retry { .. }) && attempt.timed_out,
            "{attempt:?}"
        );
    }

    #[tokio::test]
    async fn an_endless_answer_is_read_no_further_than_the_cap() {
        let client = client_of(endless_body_server(200).await);
        let update = gold_tier();
        let attempt = client.send(&update).await;
        // Read whole, the body would run into the request timeout.
        assert!(!attempt.timed_out, "{attempt:?}");
        assert_eq!(attempt.verdict, Verdict::Accepted, "{attempt:?}");
        assert_eq!(attempt.status, Some(200));
    }
}
