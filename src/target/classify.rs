//! The one place that decides what a Target response means for the events it
//! carries (`docs/contract.md` section 7): accepted, retried, paused for credentials, or
//! rejected for good.

use std::time::{Duration, SystemTime};

/// The longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What came back from one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult<'a> {
    /// An HTTP response.
    Response {
        /// Status code.
        status: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<&'a str>,
    },
    /// No response within `target.timeout_ms`.
    Timeout,
    /// The connection failed or broke.
    Connection,
}

/// What to do with the events of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the covered events become committable.
    Accepted,
    /// 401/403: wrong credentials for every event. Pause all sending, retry,
    /// report not ready, dead-letter nothing.
    AuthFailed {
        /// 401 or 403.
        status: u16,
    },
    /// 408, 429, 5xx, other unexpected statuses, timeouts, connection errors.
    Retry {
        /// The status, when there was a response.
        status: Option<u16>,
        /// Pause the whole pod's sending at least this long.
        retry_after: Option<Duration>,
    },
    /// Any other 4xx: dead letter `target_rejected`.
    Rejected {
        /// The status.
        status: u16,
    },
}

/// Classifies one attempt; `now` makes HTTP-date `Retry-After` values pure.
pub fn classify(result: AttemptResult<'_>, now: SystemTime) -> Verdict {
    match result {
        AttemptResult::Timeout | AttemptResult::Connection => Verdict::Retry {
            status: None,
            retry_after: None,
        },
        AttemptResult::Response {
            status,
            retry_after,
        } => match status {
            200..=299 => Verdict::Accepted,
            401 | 403 => Verdict::AuthFailed { status },
            408 | 429 | 500..=599 => Verdict::Retry {
                status: Some(status),
                retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
            },
            400..=499 => Verdict::Rejected { status },
            // 1xx and 3xx are not answers Target gives to this API: never
            // drop events over them; retry and let the metrics show it.
            _ => Verdict::Retry {
                status: Some(status),
                retry_after: None,
            },
        },
    }
}

/// Whether the body of a 2xx answer to a single update says it was not
/// taken: an HTML page (a proxy's error or login page, a captive portal, a
/// `base_url` that is not Target) or Adobe's answer with `success` false
/// (`<success>false</success>`, or its flattened text `false...`). Adobe's
/// documented yes is `<success>true</success>` (flattened `trueRequest
/// successfully submitted`); an empty or other body is taken as a yes.
pub fn refuses(body: &[u8]) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let head = &body[start..body.len().min(start + 4096)];
    let starts = |prefix: &[u8]| {
        head.len() >= prefix.len() && head[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    starts(b"<!doctype html")
        || starts(b"<html")
        || starts(b"false")
        || head
            .windows(b"<success>false".len())
            .any(|w| w.eq_ignore_ascii_case(b"<success>false"))
}

/// `Retry-After` as delay-seconds or an HTTP date; a date in the past is zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(
            value
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .min(MAX_RETRY_AFTER.as_secs()),
        )
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<&str>) -> AttemptResult<'_> {
        AttemptResult::Response {
            status,
            retry_after,
        }
    }

    #[test]
    fn a_2xx_body_refuses_only_as_an_html_page_or_success_false() {
        for body in [
            &b"<!DOCTYPE html><title>Proxy error</title>"[..],
            b"  \n<HTML><body>login</body></HTML>",
            b"<?xml version=\"1.0\"?><response><success>FALSE</success></response>",
            b"falseUnexpected error",
        ] {
            assert!(refuses(body), "{}", String::from_utf8_lossy(body));
        }
        for body in [
            &b""[..],
            b"trueRequest successfully submitted",
            b"<response><success>true</success><message>Request successfully submitted</message></response>",
            b"{\"ok\":true}",
            b"\xff\xfe garbage",
            b"<success>fals",
        ] {
            assert!(!refuses(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn every_kind_of_response_is_classified_as_the_contract_says() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let in_30s = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let secs = |s| Some(Duration::from_secs(s));
        let retry = |status, retry_after| Verdict::Retry {
            status,
            retry_after,
        };
        let table: Vec<(AttemptResult, Verdict)> = vec![
            (response(200, None), Verdict::Accepted),
            (response(204, None), Verdict::Accepted),
            (response(299, Some("5")), Verdict::Accepted),
            (response(401, None), Verdict::AuthFailed { status: 401 }),
            (
                response(403, Some("5")),
                Verdict::AuthFailed { status: 403 },
            ),
            (response(408, None), retry(Some(408), None)),
            (response(429, Some("7")), retry(Some(429), secs(7))),
            (response(500, None), retry(Some(500), None)),
            (response(503, Some("120")), retry(Some(503), secs(120))),
            (response(503, Some(&in_30s)), retry(Some(503), secs(30))),
            (
                response(503, Some("Thu, 01 Jan 1970 00:00:00 GMT")),
                retry(Some(503), secs(0)),
            ),
            (response(503, Some("soon")), retry(Some(503), None)),
            (response(503, Some("-1")), retry(Some(503), None)),
            (
                response(503, Some("99999999999999999999")),
                retry(Some(503), Some(MAX_RETRY_AFTER)),
            ),
            (response(599, None), retry(Some(599), None)),
            (response(400, None), Verdict::Rejected { status: 400 }),
            (response(404, None), Verdict::Rejected { status: 404 }),
            (response(413, None), Verdict::Rejected { status: 413 }),
            (response(499, None), Verdict::Rejected { status: 499 }),
            (response(301, None), retry(Some(301), None)),
            (response(100, None), retry(Some(100), None)),
            (response(600, None), retry(Some(600), None)),
            (AttemptResult::Timeout, retry(None, None)),
            (AttemptResult::Connection, retry(None, None)),
        ];
        for (result, expected) in table {
            assert_eq!(classify(result, now), expected, "{result:?}");
        }
    }
}
