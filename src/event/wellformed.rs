//! What a JSON syntax check leaves open: nesting depth and unpaired surrogate
//! escapes.
//!
//! The parser reads the event through `RawValue`s, which accept any nesting
//! depth and any `\u` escape, and it never looks inside unknown fields. So an
//! event could carry, in a field nobody reads, text that other JSON readers
//! refuse: `"\ud800"` is not Unicode text, and 10 000 nested arrays overflow
//! the stack of recursive readers. Such records would be dead letters for the
//! next tool that opens them (the DLQ replay, a consumer using
//! `serde_json::Value`). RFC 8259 section 9 lets a reader limit nesting, and
//! section 8.2 leaves unpaired surrogates unpredictable; we refuse both as
//! `invalid_json`, wherever they are, with serde_json's own limits.

/// The deepest nesting of arrays and objects accepted (the root object counts
/// as one level); serde_json's `Value` refuses anything deeper.
pub const MAX_DEPTH: usize = 127;

/// Checks text that is already known to be JSON; the error is the reason.
pub(crate) fn check(json: &str) -> Result<(), String> {
    let bytes = json.as_bytes();
    // Nearly every event: no escape at all (so no surrogate escape), and
    // fewer opening brackets, in strings or not, than the depth allowed.
    // Both are looked for with `memchr`'s vectorised search, with no state
    // to track, and the count stops once it is past the limit.
    if memchr::memchr(b'\\', bytes).is_none()
        && memchr::memchr2_iter(b'[', b'{', bytes)
            .take(MAX_DEPTH + 1)
            .count()
            <= MAX_DEPTH
    {
        return Ok(());
    }
    walk(bytes)
}

/// The check byte by byte: strings, their escapes and the nesting depth.
fn walk(bytes: &[u8]) -> Result<(), String> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "not JSON we accept: nested deeper than {MAX_DEPTH} levels at byte {at}"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => at = end_of_string(bytes, at + 1)?,
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// The index of the closing quote of the string whose content starts at
/// `at`, checking that every surrogate escape is part of a pair.
fn end_of_string(bytes: &[u8], mut at: usize) -> Result<usize, String> {
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => return Ok(at),
            b'\\' if bytes.get(at + 1) == Some(&b'u') => {
                let unit = hex_unit(bytes, at + 2);
                if is_high_surrogate(unit) {
                    let next = bytes.get(at + 6..at + 8) == Some(b"\\u");
                    if !(next && is_low_surrogate(hex_unit(bytes, at + 8))) {
                        return Err(unpaired(at));
                    }
                    at += 12;
                } else if is_low_surrogate(unit) {
                    return Err(unpaired(at));
                } else {
                    at += 6;
                }
            }
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
    Ok(at)
}

fn unpaired(at: usize) -> String {
    format!("not valid Unicode: unpaired surrogate escape at byte {at}")
}

/// The four hex digits at `at` as a UTF-16 code unit; 0 if they are not.
fn hex_unit(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| u32::from_str_radix(digits, 16).ok())
        .unwrap_or(0)
}

fn is_high_surrogate(unit: u32) -> bool {
    (0xD800..0xDC00).contains(&unit)
}

fn is_low_surrogate(unit: u32) -> bool {
    (0xDC00..0xE000).contains(&unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads_as_value(json: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(json).is_ok()
    }

    #[test]
    fn paired_surrogates_and_other_escapes_pass() {
        for ok in [
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\uD83D\uDE00 \u00e9 \" \\ \/ \n"}"#,
            r#"{"\ud83d\ude00":["[{\"",{}]}"#,
            r#"{"a":"\\ud800"}"#,
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
            assert!(loads_as_value(ok), "{ok}");
        }
    }

    #[test]
    fn unpaired_surrogates_are_refused_wherever_they_are() {
        for bad in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ude00\ud83d"}"#,
            r#"{"a":"\ud83d\u0041"}"#,
            r#"{"a":"\ud83dx"}"#,
            r#"{"\ud800":1}"#,
            r#"{"a":[{"b":"x\uDBFF"}]}"#,
        ] {
            assert!(check(bad).unwrap_err().contains("surrogate"), "{bad}");
            assert!(!loads_as_value(bad), "{bad}");
        }
    }

    proptest::proptest! {
        /// The shortcut for texts without escapes answers as the walk does.
        #[test]
        fn the_shortcut_answers_as_the_walk(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    3 => "\\[", 3 => "\\{", 1 => "\\]", 1 => "\\}", 1 => "\"[a-z\\[{]*\"", 1 => ",",
                ],
                0..300,
            )
        ) {
            let text = parts.concat();
            proptest::prop_assert_eq!(check(&text), walk(text.as_bytes()));
        }
    }

    #[test]
    fn nesting_is_limited_exactly_where_serde_json_limits_it() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
        assert!(loads_as_value(&nested(MAX_DEPTH)));
        assert!(check(&nested(MAX_DEPTH + 1))
            .unwrap_err()
            .contains("nested deeper"));
        assert!(!loads_as_value(&nested(MAX_DEPTH + 1)));
        let brackets_in_strings = format!("{{\"a\":\"{}\"}}", "[".repeat(1000));
        assert_eq!(check(&brackets_in_strings), Ok(()));
    }
}
