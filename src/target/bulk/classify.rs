//! The one place that decides what a bulk call's answer means for the caller: the
//! parsed value, or a [`BulkError`] whose variant says what to do (retry, pause for
//! credentials, or give up on the batch), named as the single update's
//! [`Verdict`] names the same answers (`Retry`, `AuthFailed`, `Rejected`).
//!
//! HTTP statuses are judged by the single-update rules ([`crate::target::classify()`]):
//! 2xx answered, 401/403 auth, 408/429/5xx (Adobe's 503 for more than 50 bulk and
//! admin calls a minute among them), timeouts, connection errors and unexpected
//! statuses retried, any other 4xx permanent. On a 2xx the body decides:
//!
//! - `success=false` is retried. Adobe gives no way to tell a passing failure from a
//!   lasting one: its documented causes are an unencoded `%` ("Unexpected error") or
//!   a bad header, which [`super::BatchEncoder`] cannot produce, so a refusal of one
//!   of our batches is more likely Adobe's trouble than ours. The caller bounds it
//!   (the delivery side's batch sender gives up on a batch after a few refusals
//!   and dead-letters its events with Adobe's message).
//! - An answer that does not parse is retried too: never drop events over an answer
//!   the API does not document.

use std::time::{Duration, SystemTime};

use super::response::{parse_status, parse_submit, BadReply, BatchReport, Reply, Submitted};
use crate::target::classify::{classify, AttemptResult, Verdict};

/// What came back from one bulk call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAnswer<'a> {
    /// An HTTP response and its body.
    Response {
        /// Status code.
        status: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<&'a str>,
        /// The body as text.
        body: &'a str,
    },
    /// No response within `target.timeout_ms`.
    Timeout,
    /// The connection failed or broke.
    Connection,
}

/// Why a bulk call did not give its value, by what the caller does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    /// Try the same call again later, no sooner than `retry_after` when given.
    #[error("retry later: {cause}")]
    Retry {
        /// What went wrong.
        cause: RetryCause,
        /// Pause at least this long (from `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// 401/403: the token is wrong for every call. Pause, re-read it, retry.
    #[error("Target refused the credentials (HTTP {status})")]
    AuthFailed {
        /// 401 or 403.
        status: u16,
    },
    /// Another 4xx: this call will never succeed as it is.
    #[error("Target rejected the call for good (HTTP {status}): {message}")]
    Rejected {
        /// The status.
        status: u16,
        /// Target's message, when the body had one.
        message: String,
    },
    /// The `batchStatus` URL Target gave cannot be polled safely (it would
    /// send the token over plain HTTP); the batch's status is out of reach.
    #[error("cannot poll the batch status: {0}")]
    StatusUrl(String),
}

/// What made a call worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryCause {
    /// 408, 429, 5xx (503 is Adobe's throttling) or an unexpected status.
    #[error("HTTP {0}")]
    Status(u16),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// No connection, or it broke.
    #[error("connection failed")]
    Connection,
    /// HTTP 2xx with `success=false`.
    #[error("Target answered success=false: {0}")]
    Refused(String),
    /// HTTP 2xx with a body that is not the documented XML.
    #[error("{0}")]
    Unreadable(BadReply),
}

/// Decides a submit call.
pub fn decide_submit(answer: BulkAnswer<'_>, now: SystemTime) -> Result<Submitted, BulkError> {
    decide(answer, now, parse_submit)
}

/// Decides a status call.
pub fn decide_status(answer: BulkAnswer<'_>, now: SystemTime) -> Result<BatchReport, BulkError> {
    decide(answer, now, parse_status)
}

/// The decision for any bulk call whose 2xx body `parse` reads; `now` makes HTTP-date
/// `Retry-After` values pure.
pub fn decide<T>(
    answer: BulkAnswer<'_>,
    now: SystemTime,
    parse: impl FnOnce(&str) -> Result<Reply<T>, BadReply>,
) -> Result<T, BulkError> {
    let (result, body) = match answer {
        BulkAnswer::Timeout => (AttemptResult::Timeout, ""),
        BulkAnswer::Connection => (AttemptResult::Connection, ""),
        BulkAnswer::Response {
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
    match classify(result, now) {
        Verdict::Accepted => match parse(body) {
            Ok(Reply::Answered(value)) => Ok(value),
            Ok(Reply::Refused { message }) => Err(BulkError::Retry {
                cause: RetryCause::Refused(message),
                retry_after: None,
            }),
            Err(bad) => Err(BulkError::Retry {
                cause: RetryCause::Unreadable(bad),
                retry_after: None,
            }),
        },
        Verdict::AuthFailed { status } => Err(BulkError::AuthFailed { status }),
        Verdict::Rejected { status } => Err(BulkError::Rejected {
            status,
            message: match parse_submit(body) {
                Ok(Reply::Refused { message }) => message,
                _ => String::new(),
            },
        }),
        Verdict::Retry {
            status,
            retry_after,
        } => Err(BulkError::Retry {
            cause: match (status, result) {
                (Some(status), _) => RetryCause::Status(status),
                (None, AttemptResult::Timeout) => RetryCause::Timeout,
                (None, _) => RetryCause::Connection,
            },
            retry_after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBMITTED: &str = "<response><success>true</success>\
        <batchStatus>http://edge/m2/acme/v2/profile/batchStatus?batchId=acme-1-1</batchStatus>\
        <message>Batch submitted for processing</message></response>";
    const REFUSED: &str =
        "<response><success>false</success><message>Unexpected error</message></response>";
    const STATUS: &str = "<response><batchId>acme-1-1</batchId><status>stuck</status>\
        <batchSize>2</batchSize></response>";

    fn response<'a>(status: u16, retry_after: Option<&'a str>, body: &'a str) -> BulkAnswer<'a> {
        BulkAnswer::Response {
            status,
            retry_after,
            body,
        }
    }

    fn retry(cause: RetryCause, seconds: Option<u64>) -> BulkError {
        BulkError::Retry {
            cause,
            retry_after: seconds.map(Duration::from_secs),
        }
    }

    #[test]
    fn every_kind_of_submit_answer_is_decided_as_documented() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ok = Ok(Submitted {
            status_url: "http://edge/m2/acme/v2/profile/batchStatus?batchId=acme-1-1".into(),
            message: "Batch submitted for processing".into(),
        });
        let permanent = |status, message: &str| {
            Err(BulkError::Rejected {
                status,
                message: message.into(),
            })
        };
        let table: Vec<(BulkAnswer, Result<Submitted, BulkError>)> = vec![
            (response(200, None, SUBMITTED), ok.clone()),
            (response(202, Some("9"), SUBMITTED), ok),
            (
                response(200, None, REFUSED),
                Err(retry(RetryCause::Refused("Unexpected error".into()), None)),
            ),
            (
                response(200, None, "<html>maintenance</html>"),
                Err(retry(RetryCause::Unreadable(BadReply::NotAResponse), None)),
            ),
            (
                response(200, None, "<response><success>true</success></response>"),
                Err(retry(
                    RetryCause::Unreadable(BadReply::Missing("batchStatus")),
                    None,
                )),
            ),
            (
                response(503, Some("30"), REFUSED),
                Err(retry(RetryCause::Status(503), Some(30))),
            ),
            (
                response(503, None, ""),
                Err(retry(RetryCause::Status(503), None)),
            ),
            (
                response(429, Some("2"), ""),
                Err(retry(RetryCause::Status(429), Some(2))),
            ),
            (
                response(408, None, ""),
                Err(retry(RetryCause::Status(408), None)),
            ),
            (
                response(500, None, "oops"),
                Err(retry(RetryCause::Status(500), None)),
            ),
            (
                response(302, None, ""),
                Err(retry(RetryCause::Status(302), None)),
            ),
            (BulkAnswer::Timeout, Err(retry(RetryCause::Timeout, None))),
            (
                BulkAnswer::Connection,
                Err(retry(RetryCause::Connection, None)),
            ),
            (
                response(401, None, REFUSED),
                Err(BulkError::AuthFailed { status: 401 }),
            ),
            (
                response(403, Some("5"), ""),
                Err(BulkError::AuthFailed { status: 403 }),
            ),
            (
                response(400, None, REFUSED),
                permanent(400, "Unexpected error"),
            ),
            (response(404, None, "not xml"), permanent(404, "")),
            (response(413, None, ""), permanent(413, "")),
        ];
        for (answer, expected) in table {
            assert_eq!(decide_submit(answer, now), expected, "{answer:?}");
        }
    }

    #[test]
    fn status_answers_follow_the_same_rules() {
        let now = SystemTime::UNIX_EPOCH;
        let report = decide_status(response(200, None, STATUS), now).expect("a report");
        assert_eq!(report.batch_size, Some(2));
        assert_eq!(
            decide_status(response(200, None, REFUSED), now),
            Err(retry(RetryCause::Refused("Unexpected error".into()), None))
        );
        assert_eq!(
            decide_status(response(503, Some("1"), ""), now),
            Err(retry(RetryCause::Status(503), Some(1)))
        );
        assert!(matches!(
            decide_status(response(404, None, REFUSED), now),
            Err(BulkError::Rejected { status: 404, .. })
        ));
        // A submit answer is not a status answer.
        assert!(matches!(
            decide_status(response(200, None, SUBMITTED), now),
            Err(BulkError::Retry {
                cause: RetryCause::Unreadable(BadReply::Missing("batchId")),
                ..
            })
        ));
    }
}
