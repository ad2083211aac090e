//! The properties the fuzz targets assert, shared with the replay of the
//! committed regression inputs (`tests/it/fuzz_regressions.rs`), so that a
//! finding stays fixed under plain `cargo test`.
//!
//! Each function takes the raw bytes of one input and panics when a property
//! breaks; errors the service reports as values are fine.

#![allow(dead_code)]

use pos_profile_sync::mapping::{Decision, Mapping, MAX_VALUE_CHARS};
use pos_profile_sync::ops::config::Settings;
use pos_profile_sync::target::classify::{classify, parse_retry_after, MAX_RETRY_AFTER};
use pos_profile_sync::target::request::UpdateEndpoint;
use pos_profile_sync::target::{AttemptResult, Verdict};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// The contract's limit for `pps-error-reason`.
const MAX_REASON_BYTES: usize = 1024;

/// Raw Kafka record bytes through `Mapping::decide` and, for an update, the
/// request built from it.
pub fn decide(bytes: &[u8]) {
    let mapping = Mapping::default();
    let decision = mapping.decide(bytes);
    assert_eq!(
        decision,
        mapping.decide(bytes),
        "decide is not deterministic"
    );
    match decision {
        Decision::DeadLetter(error) => {
            let reason = &error.reason;
            assert!(!reason.is_empty(), "empty dead-letter reason");
            assert!(
                !reason.contains(['\n', '\r']),
                "dead-letter reason is not one line: {reason:?}"
            );
            assert!(
                reason.len() <= MAX_REASON_BYTES,
                "dead-letter reason of {} bytes",
                reason.len()
            );
            if std::str::from_utf8(bytes).is_err() {
                assert_eq!(error.class.as_str(), "invalid_json", "{reason}");
            }
        }
        Decision::Update(update) => {
            // JSON grammar only: numbers beyond f64 (`1e708`) are valid JSON,
            // which `serde_json::Value` would refuse but `IgnoredAny` skips.
            assert!(
                std::str::from_utf8(bytes).is_ok()
                    && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok(),
                "an update from bytes that are not JSON"
            );
            assert!(
                !update.identity.id().trim().is_empty(),
                "an update without an identity: {:?}",
                update.identity
            );
            let mut names = HashSet::new();
            for attribute in &update.attributes {
                assert!(!attribute.name.is_empty(), "an attribute without a name");
                assert!(
                    names.insert(attribute.name),
                    "attribute {} twice",
                    attribute.name
                );
                assert!(
                    attribute.value.chars().count() <= MAX_VALUE_CHARS,
                    "attribute {} longer than {MAX_VALUE_CHARS} characters",
                    attribute.name
                );
            }
            let endpoint = UpdateEndpoint::new("https://demo.tt.omtrdc.net", "demo")
                .expect("a fixed endpoint");
            let request = endpoint.request(&update);
            // What goes on the wire is the URL's text: it must parse back to
            // the same URL.
            let url = reqwest::Url::parse(request.url.as_str()).expect("the update URL parses");
            assert_eq!(url, request.url, "the update URL does not round-trip");
            let identities = url
                .query_pairs()
                .chain(
                    request
                        .form_body
                        .iter()
                        .flat_map(|body| form_urlencoded::parse(body.as_bytes())),
                )
                .filter(|(name, _)| name == update.identity.param())
                .map(|(_, value)| value.into_owned())
                .collect::<Vec<_>>();
            assert_eq!(
                identities,
                vec![update.identity.id().to_owned()],
                "the request does not carry the identity exactly once"
            );
        }
        Decision::Skip(_) => {}
    }
}

/// Arbitrary status, `Retry-After` bytes, timeout and connection flags and
/// clock through the classifier, the way the client hands them over.
pub fn classify_bytes(bytes: &[u8]) {
    if bytes.len() < 7 {
        return;
    }
    let status = u16::from_le_bytes([bytes[0], bytes[1]]);
    let flags = bytes[2];
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::from(u32::from_le_bytes([
            bytes[3], bytes[4], bytes[5], bytes[6],
        ])));
    let header = &bytes[7..];
    // The client keeps a header only when it is a valid, visible-ASCII value.
    let retry_after = reqwest::header::HeaderValue::from_bytes(header)
        .ok()
        .and_then(|value| value.to_str().ok().map(str::to_owned));
    let result = match flags % 4 {
        0 => AttemptResult::Timeout,
        1 => AttemptResult::Connection,
        _ => AttemptResult::Response {
            status,
            retry_after: retry_after.as_deref(),
        },
    };
    let verdict = classify(result, now);
    match (result, verdict) {
        (AttemptResult::Timeout | AttemptResult::Connection, verdict) => assert_eq!(
            verdict,
            Verdict::Retry {
                status: None,
                retry_after: None
            }
        ),
        (AttemptResult::Response { status, .. }, Verdict::Accepted) => {
            assert!((200..300).contains(&status), "{status} accepted")
        }
        (AttemptResult::Response { status, .. }, Verdict::AuthFailed { status: s }) => {
            assert_eq!(status, s);
            assert!(
                status == 401 || status == 403,
                "{status} is not an auth failure"
            );
        }
        (AttemptResult::Response { status, .. }, Verdict::Rejected { status: s }) => {
            assert_eq!(status, s);
            assert!(
                (400..500).contains(&status) && ![401, 403, 408, 429].contains(&status),
                "{status} rejected for good"
            );
        }
        (
            AttemptResult::Response { status, .. },
            Verdict::Retry {
                status: s,
                retry_after,
            },
        ) => {
            assert_eq!(Some(status), s);
            assert!(!(200..300).contains(&status), "{status} retried");
            if let Some(delay) = retry_after {
                assert!(delay <= MAX_RETRY_AFTER, "{delay:?} above the cap");
            }
        }
    }
    if let Some(value) = retry_after.as_deref() {
        if let Some(delay) = parse_retry_after(value, now) {
            assert!(
                delay <= MAX_RETRY_AFTER,
                "{value:?}: {delay:?} above the cap"
            );
            let trimmed = value.trim();
            if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                let seconds = trimmed.parse::<u64>().unwrap_or(u64::MAX);
                assert_eq!(
                    delay,
                    Duration::from_secs(seconds.min(MAX_RETRY_AFTER.as_secs()))
                );
            }
        }
    }
}

/// Arbitrary TOML text, plus environment pairs written as `#env NAME=value`
/// lines (TOML comments), through the loader `check-config` uses. Every
/// problem must come back as a value naming what to fix.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let pairs: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("#env "))
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| {
            let name: String = name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (format!("PPS_{name}"), value.replace('\0', ""))
        })
        .take(4)
        .collect();
    for (name, value) in &pairs {
        std::env::set_var(name, value);
    }
    let loaded = Settings::load_text(text);
    for (name, _) in &pairs {
        std::env::remove_var(name);
    }
    match loaded {
        Err(error) => {
            assert!(!error.problems.is_empty(), "an error without a problem");
            for problem in &error.problems {
                assert!(!problem.trim().is_empty(), "an empty problem");
            }
        }
        Ok(settings) => {
            // No file reads outside the input's control: paths into /dev,
            // /proc or /sys could block, which is not what is tested here.
            if !["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
                for problem in settings.value_problems() {
                    assert!(!problem.trim().is_empty(), "an empty problem");
                }
                let _ = settings.kafka.client_properties();
            }
            let _ = settings.warnings();
            let _ = settings.session_timeout_ms();
            let _ = settings.target.effective_base_url();
            let masked = settings.to_masked_toml();
            assert!(
                !masked.starts_with("# cannot render"),
                "settings that load but do not render: {masked}"
            );
        }
    }
}
