//! Adobe's bulk answers as they are written, not as XML wants them: its own
//! older sample puts a `batchStatus` URL with a bare `&` inside the XML
//! (`...batchStatus?batchId=t-1&mboxPC=0.19_05`), which no XML parser accepts.
//! Before parsing, every `&` that does not begin one of XML's predefined
//! references (`&amp;` `&lt;` `&gt;` `&quot;` `&apos;`) or a character
//! reference (`&#233;`, `&#xE9;`) is taken as the character it is and written
//! `&amp;`. Inside CDATA sections and comments nothing changes.
//!
//! So `&amp;` still means `&`, and `&bogus;` (not something Adobe's writer
//! produces as a reference) reads as the literal text `&bogus;`.

use std::borrow::Cow;

/// `xml` with every bare `&` escaped; borrowed when there is none.
pub(super) fn escape_bare_ampersands(xml: &str) -> Cow<'_, str> {
    if !xml.contains('&') {
        return Cow::Borrowed(xml);
    }
    let mut out = String::with_capacity(xml.len() + 16);
    let mut rest = xml;
    while let Some(at) = rest.find(['&', '<']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('<') {
            // Copy a CDATA section or comment whole; any other markup char by char.
            let verbatim = [("<![CDATA[", "]]>"), ("<!--", "-->")]
                .iter()
                .find(|(open, _)| rest.starts_with(open))
                .map(|(open, close)| {
                    rest[open.len()..]
                        .find(close)
                        .map_or(rest.len(), |end| open.len() + end + close.len())
                });
            let take = verbatim.unwrap_or(1);
            out.push_str(&rest[..take]);
            rest = &rest[take..];
        } else {
            if is_reference(rest) {
                out.push('&');
            } else {
                out.push_str("&amp;");
            }
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether `text` (starting with `&`) starts with a reference XML resolves.
fn is_reference(text: &str) -> bool {
    let Some(end) = text.find(';') else {
        return false;
    };
    let name = &text[1..end];
    match name.strip_prefix('#') {
        Some(hex) if hex.starts_with(['x', 'X']) => {
            hex.len() > 1 && hex[1..].bytes().all(|b| b.is_ascii_hexdigit())
        }
        Some(decimal) => !decimal.is_empty() && decimal.bytes().all(|b| b.is_ascii_digit()),
        None => matches!(name, "amp" | "lt" | "gt" | "quot" | "apos"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::response::{parse_status, parse_submit, BadReply, Reply};
    use super::*;

    #[test]
    fn bare_ampersands_are_escaped_and_references_kept() {
        let cases = [
            ("no ampersand", "no ampersand"),
            ("a&b", "a&amp;b"),
            (
                "a&amp;b &lt; &gt; &quot; &apos;",
                "a&amp;b &lt; &gt; &quot; &apos;",
            ),
            (
                "caf&#233; caf&#xE9; &#; &#x; &#12a;",
                "caf&#233; caf&#xE9; &amp;#; &amp;#x; &amp;#12a;",
            ),
            ("&bogus; & &&", "&amp;bogus; &amp; &amp;&amp;"),
            ("end&", "end&amp;"),
            (
                "<![CDATA[a&b]]>&<!-- x&y -->&",
                "<![CDATA[a&b]]>&amp;<!-- x&y -->&amp;",
            ),
            ("<![CDATA[never closed &", "<![CDATA[never closed &"),
            ("日本&語", "日本&amp;語"),
        ];
        for (input, expected) in cases {
            assert_eq!(escape_bare_ampersands(input), expected, "{input:?}");
        }
        assert!(matches!(escape_bare_ampersands("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn adobes_older_sample_with_a_bare_ampersand_in_the_status_url_parses() {
        // As in Adobe's older batch update guide: the URL is not escaped.
        let xml = "<response>\n<success>true</success>\n\
            <batchStatus>http://mboxedge17.tt.omtrdc.net/m2/testclient/profile/batchStatus?batchId=testclient-1470380971&mboxPC=1470380971</batchStatus>\n\
            <message>Batch submitted for processing</message>\n</response>";
        match parse_submit(xml) {
            Ok(Reply::Answered(submitted)) => assert_eq!(
                submitted.status_url,
                "http://mboxedge17.tt.omtrdc.net/m2/testclient/profile/batchStatus?batchId=testclient-1470380971&mboxPC=1470380971"
            ),
            other => panic!("expected the status URL, got {other:?}"),
        }
        // Escaped and bare in one answer, and in a status answer's ids.
        let xml = "<response><success>true</success>\
            <batchStatus>https://e/s?batchId=a&amp;x=1&y=2</batchStatus></response>";
        assert!(matches!(
            parse_submit(xml),
            Ok(Reply::Answered(s)) if s.status_url == "https://e/s?batchId=a&x=1&y=2"
        ));
        let xml = "<response><batchId>b&1</batchId><status>complete</status>\
            <profile><id>Smith&Sons</id><status>failed</status></profile></response>";
        match parse_status(xml) {
            Ok(Reply::Answered(report)) => {
                assert_eq!(report.batch_id, "b&1");
                assert_eq!(report.failed_ids, ["Smith&Sons"]);
            }
            other => panic!("expected a report, got {other:?}"),
        }
        // Still not a document: a bare ampersand does not make garbage parse.
        assert!(matches!(
            parse_submit("<html>&nbsp;</html>"),
            Err(BadReply::NotAResponse)
        ));
    }
}
