//! What a profile fetch answer means, as plain data: the one pure function
//! ([`judge`]) that turns a status, a `Retry-After` and a body into a
//! [`FetchOutcome`]. Nothing here panics on what a server sends.
//!
//! Adobe's profile document (`GET /rest/v1/profiles/...`):
//!
//! ```text
//! {"client":"acme","visitorId":{"thirdPartyId":"CRM-1"},"modifiedAt":"2026-11-28T10:15:00.000Z",
//!  "profileAttributes":{"lastPurchaseAt":{"value":"2026-11-28T10:15:00Z","modifiedAt":"2026-11-28T10:15:00.000Z"}}}
//! ```
//!
//! and for a missing or expired profile, HTTP 404 with
//! `{"status":404,"message":"No profile found for client acme with third party id=CRM-1"}`.
//!
//! Statuses follow the update rules ([`crate::target::classify()`]) with one
//! addition: a 404 means "no such profile" only when its body is that JSON
//! document. Any other 404 (a wrong `target.base_url`, a proxy's page) is
//! [`FetchOutcome::Rejected`]: mistaking a misrouted request for a missing
//! profile would send every customer down the wrong path. A 2xx whose body is
//! not a profile document is retried, as on the bulk path.

use crate::target::classify::{classify, AttemptResult, Verdict};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One attribute of a fetched profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedAttribute {
    /// Its value, as text (a JSON number or boolean is written out).
    pub value: String,
    /// When Target last changed it, when the answer says so in RFC 3339.
    pub modified_at: Option<OffsetDateTime>,
}

/// A profile's attributes by name, without the `profile.` prefix.
pub type FetchedAttributes = BTreeMap<String, FetchedAttribute>;

/// What one fetch found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Target has the profile.
    Found {
        /// Its attributes.
        attributes: FetchedAttributes,
    },
    /// Target's own answer: no such profile (never created, or expired).
    NotFound,
    /// 401/403: the token is refused (it is re-read before the next call).
    AuthFailed {
        /// 401 or 403.
        status: u16,
    },
    /// No usable answer now: 408, 429, 5xx, a timeout, a broken connection, or a
    /// 2xx that is not a profile document. Ask again later.
    Retry {
        /// The status, when there was a response.
        status: Option<u16>,
        /// Wait at least this long (from `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Another 4xx (including a 404 that is not Adobe's "no profile" answer):
    /// asking again will not help.
    Rejected {
        /// The status.
        status: u16,
    },
}

impl FetchOutcome {
    /// The `outcome` label of `pps_target_fetches_total`.
    pub fn label(&self) -> &'static str {
        match self {
            FetchOutcome::Found { .. } => "found",
            FetchOutcome::NotFound => "not_found",
            FetchOutcome::AuthFailed { .. } => "auth_failed",
            FetchOutcome::Retry { .. } => "retryable",
            FetchOutcome::Rejected { .. } => "rejected",
        }
    }
}

/// What came back from one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAnswer<'a> {
    /// An HTTP response and its body.
    Response {
        /// Status code.
        status: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<&'a str>,
        /// The body (possibly cut short; it then does not parse).
        body: &'a [u8],
    },
    /// No response within `target.timeout_ms`.
    Timeout,
    /// The connection failed or broke.
    Connection,
}

/// Decides one fetch; `now` makes HTTP-date `Retry-After` values pure.
pub fn judge(answer: FetchAnswer<'_>, now: SystemTime) -> FetchOutcome {
    let (result, body) = match answer {
        FetchAnswer::Timeout => (AttemptResult::Timeout, &b""[..]),
        FetchAnswer::Connection => (AttemptResult::Connection, &b""[..]),
        FetchAnswer::Response {
            status,
            retry_after,
            body,
        } => (
            AttemptResult::Response {
                status,
                retry_after,
            },
            body,
        ),
    };
    let status = match result {
        AttemptResult::Response { status, .. } => Some(status),
        _ => None,
    };
    match classify(result, now) {
        Verdict::Accepted => match parse_document(body) {
            Some(Document::Profile(attributes)) => FetchOutcome::Found { attributes },
            Some(Document::NoProfile) => FetchOutcome::NotFound,
            None => FetchOutcome::Retry {
                status,
                retry_after: None,
            },
        },
        Verdict::Rejected { status: 404 } => match parse_document(body) {
            Some(Document::NoProfile) => FetchOutcome::NotFound,
            _ => FetchOutcome::Rejected { status: 404 },
        },
        Verdict::Rejected { status } => FetchOutcome::Rejected { status },
        Verdict::AuthFailed { status } => FetchOutcome::AuthFailed { status },
        Verdict::Retry {
            status,
            retry_after,
        } => FetchOutcome::Retry {
            status,
            retry_after,
        },
    }
}

/// A body Target documents.
#[derive(Debug, PartialEq, Eq)]
enum Document {
    Profile(FetchedAttributes),
    NoProfile,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDocument {
    profile_attributes: Option<BTreeMap<String, WireAttribute>>,
    status: Option<serde_json::Value>,
    message: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAttribute {
    value: Option<serde_json::Value>,
    modified_at: Option<serde_json::Value>,
}

/// The prefix Target may put before attribute names.
const PROFILE_PREFIX: &str = "profile.";

fn parse_document(body: &[u8]) -> Option<Document> {
    let wire: WireDocument = serde_json::from_slice(body).ok()?;
    if let Some(attributes) = wire.profile_attributes {
        let attributes = attributes
            .into_iter()
            .map(|(name, attribute)| {
                let name = match name.strip_prefix(PROFILE_PREFIX) {
                    Some(bare) if !bare.is_empty() => bare.to_owned(),
                    _ => name,
                };
                let value = match attribute.value {
                    Some(serde_json::Value::String(text)) => text,
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                let modified_at = match attribute.modified_at {
                    Some(serde_json::Value::String(text)) => {
                        OffsetDateTime::parse(&text, &Rfc3339).ok()
                    }
                    _ => None,
                };
                (name, FetchedAttribute { value, modified_at })
            })
            .collect();
        return Some(Document::Profile(attributes));
    }
    // Adobe's words, not any JSON 404: a gateway's or a framework's own
    // `{"status":404,"error":"Not Found"}` is a misrouted request.
    let status_fits = wire
        .status
        .as_ref()
        .is_none_or(|status| status.as_u64() == Some(404) || status.as_str() == Some("404"));
    let says_no_profile = wire
        .message
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .is_some_and(|message| message.to_ascii_lowercase().contains("no profile found"));
    (status_fits && says_no_profile).then_some(Document::NoProfile)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"{"client":"acme","visitorId":{"thirdPartyId":"CRM-1"},
        "modifiedAt":"2026-11-28T10:15:00.000Z",
        "profileAttributes":{
            "lastPurchaseAt":{"value":"2026-11-28T10:15:00Z","modifiedAt":"2026-11-28T10:15:00.123Z"},
            "profile.loyaltyTier":{"value":"gold"},
            "visits":{"value":3,"modifiedAt":"yesterday"}}}"#;
    const NO_PROFILE: &str = r#"{"status" : 404, "message" : "No profile found for client acme with third party id=CRM-1"}"#;

    fn response<'a>(status: u16, retry_after: Option<&'a str>, body: &'a str) -> FetchAnswer<'a> {
        FetchAnswer::Response {
            status,
            retry_after,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn adobes_profile_document_gives_every_attribute_with_its_time() {
        let FetchOutcome::Found { attributes } =
            judge(response(200, None, PROFILE), SystemTime::UNIX_EPOCH)
        else {
            panic!("a profile");
        };
        assert_eq!(attributes.len(), 3);
        let at = &attributes["lastPurchaseAt"];
        assert_eq!(at.value, "2026-11-28T10:15:00Z");
        assert_eq!(
            at.modified_at.map(|t| t.unix_timestamp_nanos() / 1_000_000),
            Some(1_795_860_900_123)
        );
        assert_eq!(attributes["loyaltyTier"].value, "gold");
        assert_eq!(attributes["loyaltyTier"].modified_at, None);
        assert_eq!(attributes["visits"].value, "3");
        assert_eq!(attributes["visits"].modified_at, None);
    }

    #[test]
    fn every_kind_of_fetch_answer_is_decided() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let retry = |status, seconds: Option<u64>| FetchOutcome::Retry {
            status,
            retry_after: seconds.map(Duration::from_secs),
        };
        let table: Vec<(FetchAnswer, FetchOutcome)> = vec![
            (response(404, None, NO_PROFILE), FetchOutcome::NotFound),
            (
                response(404, None, r#"{"message":"No profile found for client x"}"#),
                FetchOutcome::NotFound,
            ),
            (response(200, None, NO_PROFILE), FetchOutcome::NotFound),
            (
                response(404, None, "<html>Not Found</html>"),
                FetchOutcome::Rejected { status: 404 },
            ),
            (
                response(404, None, r#"{"status":404,"message":"no route"}"#),
                FetchOutcome::Rejected { status: 404 },
            ),
            (
                response(
                    404,
                    None,
                    r#"{"timestamp":"2026-12-05T07:00:00Z","status":404,"error":"Not Found","path":"/rest/v1/profiles/thirdPartyId/CRM-1"}"#,
                ),
                FetchOutcome::Rejected { status: 404 },
            ),
            (
                response(
                    404,
                    None,
                    r#"{"status":500,"message":"No profile found? internal error"}"#,
                ),
                FetchOutcome::Rejected { status: 404 },
            ),
            (
                response(404, None, ""),
                FetchOutcome::Rejected { status: 404 },
            ),
            (
                response(200, None, r#"{"profileAttributes":{}}"#),
                FetchOutcome::Found {
                    attributes: BTreeMap::new(),
                },
            ),
            (
                response(200, None, "<html>maintenance</html>"),
                retry(Some(200), None),
            ),
            (
                response(200, None, r#"{"status":200}"#),
                retry(Some(200), None),
            ),
            (response(200, None, "[1,2]"), retry(Some(200), None)),
            (
                response(401, None, ""),
                FetchOutcome::AuthFailed { status: 401 },
            ),
            (
                response(403, None, NO_PROFILE),
                FetchOutcome::AuthFailed { status: 403 },
            ),
            (
                response(400, None, NO_PROFILE),
                FetchOutcome::Rejected { status: 400 },
            ),
            (response(429, Some("3"), ""), retry(Some(429), Some(3))),
            (response(503, None, NO_PROFILE), retry(Some(503), None)),
            (response(408, None, ""), retry(Some(408), None)),
            (response(302, None, ""), retry(Some(302), None)),
            (FetchAnswer::Timeout, retry(None, None)),
            (FetchAnswer::Connection, retry(None, None)),
        ];
        for (answer, expected) in table {
            assert_eq!(judge(answer, now), expected, "{answer:?}");
        }
    }

    #[test]
    fn outcome_labels_are_the_metric_labels() {
        let labels: Vec<&str> = [
            FetchOutcome::Found {
                attributes: BTreeMap::new(),
            },
            FetchOutcome::NotFound,
            FetchOutcome::AuthFailed { status: 401 },
            FetchOutcome::Retry {
                status: None,
                retry_after: None,
            },
            FetchOutcome::Rejected { status: 400 },
        ]
        .iter()
        .map(FetchOutcome::label)
        .collect();
        assert_eq!(
            labels,
            ["found", "not_found", "auth_failed", "retryable", "rejected"]
        );
    }

    proptest::proptest! {
        #[test]
        fn any_body_with_any_status_is_decided_without_a_panic(
            status in 100u16..700,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            text in ".{0,200}",
        ) {
            let now = SystemTime::UNIX_EPOCH;
            let _ = judge(FetchAnswer::Response { status, retry_after: None, body: &body }, now);
            let _ = judge(FetchAnswer::Response { status, retry_after: Some(&text), body: text.as_bytes() }, now);
        }
    }
}
