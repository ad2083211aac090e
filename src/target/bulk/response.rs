//! Target's XML answers on the bulk path, parsed into plain data. Pure: text in, value
//! or [`BadReply`] out; nothing here panics on what a server sends.
//!
//! Submit (`POST .../v2/profile/batchUpdate`), as Adobe documents it:
//!
//! ```text
//! <response><success>true</success>
//! <batchStatus>http://mboxedge45.tt.omtrdc.net/m2/demo/profile/batchStatus?batchId=demo-1701473848678-13029383</batchStatus>
//! <message>Batch submitted for processing</message></response>
//! ```
//!
//! and on error `success` is `false`, with a `message` and no `batchStatus`.
//!
//! Status (`GET` the `batchStatus` URL): `batchId`, `status` (`complete`, `incomplete`
//! or `stuck`) and `batchSize`; with `showDetails=true` also `consumedCount`,
//! `successfulUpdates`, `profilesNotFound`, `failedUpdates` and, for failed rows only,
//! `<profile><id>..</id><status>failed</status></profile>` (found at any depth, so a
//! wrapping element does not matter). A status answer with `success` `false` is a
//! refusal like a submit's.
//!
//! Element text is trimmed (Adobe's samples carry stray spaces), except a failed
//! profile's `<id>`, which is kept exactly as written (an identifier may begin or end
//! with spaces); entity and character references are resolved; a bare `&` (as in
//! Adobe's own sample status URL) is read as itself ([`super::ampersand`]).

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::Reader;

/// An answer that is well-formed but says `success` `false`, or the value it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    /// `success` was not `false`: the value.
    Answered(T),
    /// `success` was `false`.
    Refused {
        /// Target's `message`, empty when absent.
        message: String,
    },
}

/// A batch Target took: where to ask about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The `batchStatus` URL (on an edge host), without `showDetails`.
    pub status_url: String,
    /// Target's `message`, empty when absent.
    pub message: String,
}

/// Where a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Processed; the counts and failures are final.
    Complete,
    /// Still being processed: ask again later.
    Incomplete,
    /// Target gave up on it; it will not complete.
    Stuck,
}

/// A status answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Target's id of the batch.
    pub batch_id: String,
    /// Where it stands.
    pub state: BatchState,
    /// Rows in the batch, when given.
    pub batch_size: Option<u64>,
    /// `consumedCount` (details only).
    pub consumed_count: Option<u64>,
    /// `successfulUpdates` (details only).
    pub successful_updates: Option<u64>,
    /// `profilesNotFound` (details only; v2 creates missing profiles).
    pub profiles_not_found: Option<u64>,
    /// `failedUpdates` (details only).
    pub failed_updates: Option<u64>,
    /// The ids of rows reported `failed`, in document order (details only).
    pub failed_ids: Vec<String>,
}

/// An answer that is not what the API documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReply {
    /// Not well-formed XML.
    #[error("the answer is not well-formed XML: {0}")]
    Xml(String),
    /// The root element is not `<response>`.
    #[error("the answer is not a <response> document")]
    NotAResponse,
    /// A required element is absent or empty.
    #[error("the answer has no <{0}>")]
    Missing(&'static str),
    /// A count that is not a non-negative integer.
    #[error("<{field}> is not a count: {value:?}")]
    NotACount {
        /// The element.
        field: &'static str,
        /// Its text.
        value: String,
    },
    /// The answer is longer than any Target gives (the bytes read at most).
    #[error("the answer is longer than {0} bytes")]
    TooLong(usize),
    /// The `batchStatus` is not an absolute `http(s)` URL.
    #[error("<batchStatus> is not an http(s) URL: {0:?}")]
    NotAUrl(String),
    /// A `status` other than the three documented.
    #[error("unknown batch status {0:?}")]
    UnknownStatus(String),
}

/// Parses a submit answer.
pub fn parse_submit(xml: &str) -> Result<Reply<Submitted>, BadReply> {
    let document = Document::parse(xml)?;
    if let Some(refusal) = document.refusal() {
        return Ok(refusal);
    }
    let status_url = document
        .field("batchStatus")
        .ok_or(BadReply::Missing("batchStatus"))?;
    let is_http = reqwest::Url::parse(status_url)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
    if !is_http {
        return Err(BadReply::NotAUrl(status_url.to_owned()));
    }
    Ok(Reply::Answered(Submitted {
        status_url: status_url.to_owned(),
        message: document.field("message").unwrap_or("").to_owned(),
    }))
}

/// Parses a status answer (with or without details).
pub fn parse_status(xml: &str) -> Result<Reply<BatchReport>, BadReply> {
    let document = Document::parse(xml)?;
    if let Some(refusal) = document.refusal() {
        return Ok(refusal);
    }
    let batch_id = document
        .field("batchId")
        .ok_or(BadReply::Missing("batchId"))?;
    let state = match document
        .field("status")
        .ok_or(BadReply::Missing("status"))?
    {
        "complete" => BatchState::Complete,
        "incomplete" => BatchState::Incomplete,
        "stuck" => BatchState::Stuck,
        other => return Err(BadReply::UnknownStatus(other.to_owned())),
    };
    Ok(Reply::Answered(BatchReport {
        batch_id: batch_id.to_owned(),
        state,
        batch_size: document.count("batchSize")?,
        consumed_count: document.count("consumedCount")?,
        successful_updates: document.count("successfulUpdates")?,
        profiles_not_found: document.count("profilesNotFound")?,
        failed_updates: document.count("failedUpdates")?,
        failed_ids: document.failed_ids,
    }))
}

/// The parts of a `<response>` the bulk API uses.
#[derive(Debug, Default)]
struct Document {
    /// Leaf children of `<response>`, in order.
    fields: Vec<(String, String)>,
    /// `id` of every `<profile>` whose `status` is `failed`.
    failed_ids: Vec<String>,
}

/// An element being read.
#[derive(Debug, Default)]
struct Frame {
    name: String,
    text: String,
    has_children: bool,
    /// Leaf children seen so far.
    leaves: Vec<(String, String)>,
}

impl Document {
    fn parse(xml: &str) -> Result<Document, BadReply> {
        // Adobe writes `&` in URLs bare: see [`super::ampersand`].
        let xml = super::ampersand::escape_bare_ampersands(xml);
        let mut reader = Reader::from_str(&xml);
        let mut document = Document::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut saw_root = false;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| BadReply::Xml(e.to_string()))?;
            match event {
                Event::Start(start) => {
                    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                    if stack.is_empty() {
                        if saw_root || name != "response" {
                            return Err(BadReply::NotAResponse);
                        }
                        saw_root = true;
                    }
                    if let Some(parent) = stack.last_mut() {
                        parent.has_children = true;
                    }
                    stack.push(Frame {
                        name,
                        ..Frame::default()
                    });
                }
                Event::Empty(empty) => {
                    let name = String::from_utf8_lossy(empty.local_name().as_ref()).into_owned();
                    match stack.last_mut() {
                        Some(parent) => {
                            parent.has_children = true;
                            parent.leaves.push((name, String::new()));
                        }
                        None => return Err(BadReply::NotAResponse),
                    }
                }
                Event::Text(text) => {
                    if let Some(frame) = stack.last_mut() {
                        let text = text.decode().map_err(|e| BadReply::Xml(e.to_string()))?;
                        frame.text.push_str(&text);
                    }
                }
                Event::CData(data) => {
                    if let Some(frame) = stack.last_mut() {
                        let text = data.decode().map_err(|e| BadReply::Xml(e.to_string()))?;
                        frame.text.push_str(&text);
                    }
                }
                Event::GeneralRef(reference) => {
                    if let Some(frame) = stack.last_mut() {
                        frame.text.push_str(&resolve(&reference)?);
                    }
                }
                Event::End(_) => {
                    let Some(frame) = stack.pop() else {
                        return Err(BadReply::Xml("unbalanced end tag".to_owned()));
                    };
                    document.close(frame, stack.last_mut());
                }
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
            }
        }
        if !saw_root {
            return Err(BadReply::NotAResponse);
        }
        if !stack.is_empty() {
            return Err(BadReply::Xml(
                "the document ends inside an element".to_owned(),
            ));
        }
        Ok(document)
    }

    /// Files a finished element under its parent, or as the document's fields.
    fn close(&mut self, frame: Frame, parent: Option<&mut Frame>) {
        let Some(parent) = parent else {
            self.fields = frame.leaves;
            return;
        };
        if frame.name == "profile" {
            let leaf = |name: &str| {
                frame
                    .leaves
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            if let (Some(id), Some(status)) = (leaf("id"), leaf("status")) {
                if status.trim().eq_ignore_ascii_case("failed") {
                    self.failed_ids.push(id.to_owned());
                }
            }
        } else if !frame.has_children {
            // A profile's id is kept exactly as sent: identifiers are taken
            // as written, and a valid one may begin or end with spaces.
            let text = if parent.name == "profile" {
                frame.text
            } else {
                frame.text.trim().to_owned()
            };
            parent.leaves.push((frame.name, text));
        }
    }

    /// The first non-empty text of a leaf child of `<response>`.
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn count(&self, field: &'static str) -> Result<Option<u64>, BadReply> {
        self.field(field)
            .map(|value| {
                value.parse().map_err(|_| BadReply::NotACount {
                    field,
                    value: value.to_owned(),
                })
            })
            .transpose()
    }

    fn refusal<T>(&self) -> Option<Reply<T>> {
        let refused = self
            .field("success")
            .is_some_and(|s| s.eq_ignore_ascii_case("false"));
        refused.then(|| Reply::Refused {
            message: self.field("message").unwrap_or("").to_owned(),
        })
    }
}

/// `&amp;`, `&#233;` and the other predefined references.
fn resolve(reference: &quick_xml::events::BytesRef<'_>) -> Result<Cow<'static, str>, BadReply> {
    if let Some(c) = reference
        .resolve_char_ref()
        .map_err(|e| BadReply::Xml(e.to_string()))?
    {
        return Ok(Cow::Owned(c.to_string()));
    }
    let name = reference
        .decode()
        .map_err(|e| BadReply::Xml(e.to_string()))?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(Cow::Borrowed)
        .ok_or_else(|| BadReply::Xml(format!("unknown entity &{name};")))
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
