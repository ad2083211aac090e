//! Building responses: Target's XML answers on the update and bulk paths, JSON elsewhere.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

const XML: &str = "text/xml;charset=UTF-8";

/// Target's answer to an accepted update.
pub(crate) fn success() -> Response {
    const BODY: &str = "<response><success>true</success>\
        <message>Request successfully submitted</message></response>";
    ([(header::CONTENT_TYPE, XML)], BODY).into_response()
}

/// A refused update, in the same XML shape as the success answer.
pub(crate) fn failure(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<response><success>false</success><message>{}</message></response>",
        escape_xml(message)
    );
    (status, [(header::CONTENT_TYPE, XML)], body).into_response()
}

/// An XML document as a response.
pub(crate) fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, XML)], body).into_response()
}

/// `value` as a JSON response.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// `text` safe inside an XML element.
pub(crate) fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_escaped_inside_the_xml() {
        assert_eq!(escape_xml("a<b & c>"), "a&lt;b &amp; c&gt;");
    }
}
