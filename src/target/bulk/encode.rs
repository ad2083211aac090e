//! One bulk batch as Adobe's bulk profile update API v2 wants it (`docs/contract.md` section 12):
//! a form body `batch=<CSV>`, the CSV's header the id column (`thirdPartyId` or `pcId`,
//! one kind per batch) then the union of attribute names, one row per profile.
//!
//! Every CSV cell (names, ids and values) is percent-encoded UTF-8 first (everything but
//! RFC 3986's unreserved characters, as for single updates), and only then is the whole
//! CSV form-encoded. So `%`, `&`, `+`, `=`, commas, quotes, CR/LF and non-ASCII survive
//! both Adobe's form decoding and its CSV split: on the wire a comma between cells is
//! `%2C`, a line break `%0A`, and a `%` inside a cell `%25` twice over (`%2525`).
//!
//! Layout, exactly: `batch=` + header, then for every row `%0A` + row; no trailing
//! line break. The CSV is rectangular: a profile without some attribute (or with an
//! empty value, which Adobe ignores rather than clearing) has an empty cell there, and
//! rows written before a new column appeared are padded when the batch is finished.
//!
//! Attribute names are [`crate::mapping::Attribute::name`], which carries no `profile.`
//! prefix, and they are sent as they are: Adobe stores column `x` as `profile.x`, the
//! same attribute a single update's `profile.x` sets.
//!
//! Ids Adobe does not take in a batch file (an `mbox3rdPartyId` with `+` or `/`,
//! or longer than 256 characters) are refused by name ([`check_batch_id`]): encoding
//! them would not make Adobe read them right.
//!
//! The encoder keeps the exact byte length of the body it would produce, so the caller
//! closes a batch before a row would take it past `max_rows` or `max_bytes`
//! ([`BatchEncoder::would_fit`], [`BatchEncoder::push_within`]).

use crate::mapping::AttributeName;
use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use percent_encoding::utf8_percent_encode;

use crate::event::Identity;
use crate::mapping::ProfileUpdate;
use crate::ops::config::BulkSettings;
use crate::target::request::PARAMETER;

/// The form field that carries the CSV.
const FIELD: &str = "batch=";
/// A comma between CSV cells, form-encoded.
const COMMA: &str = "%2C";
/// A line break between CSV lines, form-encoded.
const NEWLINE: &str = "%0A";

/// The id column of a batch: Target's two profile namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchKind {
    /// `thirdPartyId` (the single API's `mbox3rdPartyId`).
    ThirdParty,
    /// `pcId` (the single API's `mboxPC`).
    Pc,
}

impl BatchKind {
    /// The kind of batch an identity belongs in.
    pub fn of(identity: &Identity) -> BatchKind {
        match identity {
            Identity::ThirdParty(_) => BatchKind::ThirdParty,
            Identity::Pc(_) => BatchKind::Pc,
        }
    }

    /// The CSV header of the id column.
    pub fn header(self) -> &'static str {
        match self {
            BatchKind::ThirdParty => "thirdPartyId",
            BatchKind::Pc => "pcId",
        }
    }

    /// The identity of this kind with this id.
    pub fn identity(self, id: impl Into<compact_str::CompactString>) -> Identity {
        match self {
            BatchKind::ThirdParty => Identity::ThirdParty(id.into()),
            BatchKind::Pc => Identity::Pc(id.into()),
        }
    }
}

impl fmt::Display for BatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.header())
    }
}

/// Why a profile update cannot become a row of this batch. Nothing was added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The update's identity is of the other kind: it belongs in another batch.
    #[error("a {row} row cannot go into a {batch} batch")]
    WrongKind {
        /// The batch's kind.
        batch: BatchKind,
        /// The update's kind.
        row: BatchKind,
    },
    /// An empty id names no profile.
    #[error("the profile id is empty")]
    EmptyId,
    /// An empty attribute name would be an empty header cell.
    #[error("an attribute name is empty")]
    EmptyAttributeName,
    /// Adobe does not allow `+` or `/` in an `mbox3rdPartyId` in batch files.
    #[error("the mbox3rdPartyId contains {0:?}, which Adobe does not allow in batch files")]
    ForbiddenCharacter(char),
    /// Adobe allows at most [`MAX_THIRD_PARTY_ID_CHARS`] characters in an `mbox3rdPartyId`.
    #[error(
        "the mbox3rdPartyId has {0} characters; Adobe allows at most {MAX_THIRD_PARTY_ID_CHARS}"
    )]
    IdTooLong(usize),
}

/// Adobe's limit on the length of an `mbox3rdPartyId`.
pub const MAX_THIRD_PARTY_ID_CHARS: usize = 256;

/// Whether Adobe accepts this identity as a batch row's id: not empty, and for
/// an `mbox3rdPartyId` no `+` or `/` (Adobe forbids them in batch files) and at
/// most 256 characters. Such a profile can still take single updates.
pub fn check_batch_id(identity: &Identity) -> Result<(), EncodeError> {
    let id = identity.id();
    if id.is_empty() {
        return Err(EncodeError::EmptyId);
    }
    if let Identity::ThirdParty(_) = identity {
        if let Some(forbidden) = id.chars().find(|c| matches!(c, '+' | '/')) {
            return Err(EncodeError::ForbiddenCharacter(forbidden));
        }
        let chars = id.chars().count();
        if chars > MAX_THIRD_PARTY_ID_CHARS {
            return Err(EncodeError::IdTooLong(chars));
        }
    }
    Ok(())
}

/// Where a batch must close: at most this many rows and body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Rows (profiles), the header not counted. Adobe allows 500,000.
    pub max_rows: usize,
    /// Bytes of the whole form body. Adobe allows under 50 MB.
    pub max_bytes: usize,
}

impl BatchLimits {
    /// `bulk.max_rows` and `bulk.max_bytes` (the body's bytes, which are at least the
    /// CSV's, so Adobe's file limit holds too).
    pub fn from_settings(settings: &BulkSettings) -> BatchLimits {
        BatchLimits {
            max_rows: usize::try_from(settings.max_rows).unwrap_or(usize::MAX),
            max_bytes: usize::try_from(settings.max_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// What [`BatchEncoder::push_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The row was added at this index.
    Added {
        /// Its row index (0 is the first row after the header).
        row: usize,
    },
    /// The row would pass a limit; nothing was added. Finish this batch and start
    /// another (a row that alone passes `max_bytes` never fits any batch).
    Full,
}

/// Builds one batch row by row, knowing its exact encoded size at every step.
#[derive(Debug, Clone)]
pub struct BatchEncoder {
    kind: BatchKind,
    /// Attribute columns in order of first appearance.
    columns: Vec<AttributeName>,
    column_of: HashMap<AttributeName, usize>,
    /// The encoded header line, without `batch=`.
    header: String,
    rows: Vec<EncodedRow>,
    identities: Vec<Identity>,
    /// The exact length of the body [`BatchEncoder::finish`] would produce now.
    len: usize,
}

/// One row as written: its cells for the columns known then.
#[derive(Debug, Clone)]
struct EncodedRow {
    text: String,
    /// The number of attribute columns when the row was written.
    width: usize,
}

/// A row ready to be added: the columns it adds and its encoded text.
struct RowPlan {
    new_columns: Vec<AttributeName>,
    row: EncodedRow,
    /// Bytes the body grows by when the row is added.
    growth: usize,
}

impl BatchEncoder {
    /// An empty batch of one kind.
    pub fn new(kind: BatchKind) -> BatchEncoder {
        let header = cell(kind.header());
        BatchEncoder {
            kind,
            columns: Vec::new(),
            column_of: HashMap::new(),
            len: FIELD.len() + header.len(),
            header,
            rows: Vec::new(),
            identities: Vec::new(),
        }
    }

    /// The batch's kind.
    pub fn kind(&self) -> BatchKind {
        self.kind
    }

    /// Rows added so far.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The exact byte length of the body [`BatchEncoder::finish`] would produce now.
    pub fn encoded_len(&self) -> usize {
        self.len
    }

    /// The exact byte length of the body if `update` were added.
    pub fn size_with(&self, update: &ProfileUpdate) -> Result<usize, EncodeError> {
        Ok(self.len + self.plan(update)?.growth)
    }

    /// Whether `update` can be added without passing `limits`.
    pub fn would_fit(
        &self,
        update: &ProfileUpdate,
        limits: BatchLimits,
    ) -> Result<bool, EncodeError> {
        let plan = self.plan(update)?;
        Ok(self.fits(&plan, limits))
    }

    /// Adds `update` as the next row; its row index.
    pub fn push(&mut self, update: &ProfileUpdate) -> Result<usize, EncodeError> {
        let plan = self.plan(update)?;
        Ok(self.add(plan, update))
    }

    /// Adds `update` unless that would pass `limits`; encodes the row once.
    pub fn push_within(
        &mut self,
        update: &ProfileUpdate,
        limits: BatchLimits,
    ) -> Result<Admission, EncodeError> {
        let plan = self.plan(update)?;
        if !self.fits(&plan, limits) {
            return Ok(Admission::Full);
        }
        Ok(Admission::Added {
            row: self.add(plan, update),
        })
    }

    /// The request body and which row carries which profile.
    pub fn finish(self) -> EncodedBatch {
        let width = self.columns.len();
        let mut body = String::with_capacity(self.len);
        body.push_str(FIELD);
        body.push_str(&self.header);
        for row in &self.rows {
            body.push_str(NEWLINE);
            body.push_str(&row.text);
            for _ in row.width..width {
                body.push_str(COMMA);
            }
        }
        debug_assert_eq!(body.len(), self.len, "size accounting is exact");
        EncodedBatch {
            kind: self.kind,
            columns: self.columns,
            body: Bytes::from(body),
            identities: self.identities,
        }
    }

    fn fits(&self, plan: &RowPlan, limits: BatchLimits) -> bool {
        self.rows.len() < limits.max_rows && self.len + plan.growth <= limits.max_bytes
    }

    /// Encodes `update` as a row against the current columns, without adding it.
    fn plan(&self, update: &ProfileUpdate) -> Result<RowPlan, EncodeError> {
        let row_kind = BatchKind::of(&update.identity);
        if row_kind != self.kind {
            return Err(EncodeError::WrongKind {
                batch: self.kind,
                row: row_kind,
            });
        }
        check_batch_id(&update.identity)?;
        let mut new_columns: Vec<AttributeName> = Vec::new();
        let mut values: Vec<(usize, &str)> = Vec::with_capacity(update.attributes.len());
        for attribute in &update.attributes {
            if attribute.name.is_empty() {
                return Err(EncodeError::EmptyAttributeName);
            }
            let column = match self.column_of.get(&attribute.name) {
                Some(&column) => column,
                None => match new_columns.iter().position(|c| *c == attribute.name) {
                    Some(at) => self.columns.len() + at,
                    None => {
                        new_columns.push(attribute.name);
                        self.columns.len() + new_columns.len() - 1
                    }
                },
            };
            values.push((column, &attribute.value));
        }
        let width = self.columns.len() + new_columns.len();
        // A repeated name keeps its last value, as in a single update.
        let mut cells: Vec<&str> = vec![""; width];
        for (column, value) in values {
            cells[column] = value;
        }
        let mut text = cell(update.identity.id());
        for value in cells {
            text.push_str(COMMA);
            text.push_str(&cell(value));
        }
        let header_growth: usize = new_columns
            .iter()
            .map(|name| COMMA.len() + cell(name).len())
            .sum();
        let padding = new_columns.len() * COMMA.len() * self.rows.len();
        let growth = header_growth + padding + NEWLINE.len() + text.len();
        Ok(RowPlan {
            new_columns,
            row: EncodedRow { text, width },
            growth,
        })
    }

    fn add(&mut self, plan: RowPlan, update: &ProfileUpdate) -> usize {
        for name in plan.new_columns {
            self.header.push_str(COMMA);
            self.header.push_str(&cell(&name));
            self.column_of.insert(name, self.columns.len());
            self.columns.push(name);
        }
        self.len += plan.growth;
        self.rows.push(plan.row);
        self.identities.push(update.identity.clone());
        self.rows.len() - 1
    }
}

/// A finished batch: the body to submit and the profile of every row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    kind: BatchKind,
    columns: Vec<AttributeName>,
    body: Bytes,
    identities: Vec<Identity>,
}

impl EncodedBatch {
    /// The batch's kind.
    pub fn kind(&self) -> BatchKind {
        self.kind
    }

    /// The attribute columns, in header order.
    pub fn columns(&self) -> &[AttributeName] {
        &self.columns
    }

    /// The `application/x-www-form-urlencoded` body (cheap to clone for a retry).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.identities.len()
    }

    /// The profile of every row, by row index.
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// The rows whose profile id is `id` (Adobe's per-row failures name ids, not rows).
    pub fn rows_with_id<'a>(&'a self, id: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.identities
            .iter()
            .enumerate()
            .filter(move |(_, identity)| identity.id() == id)
            .map(|(row, _)| row)
    }

    /// The rows Target reported failed: each failed id is matched exactly;
    /// an id that matches no row exactly matches, to be safe, every row whose
    /// id is the same but for white space around it (an answer that trimmed
    /// it). When a failure names no row at all, or `failedUpdates` counts more
    /// failures than the answer names, which rows were applied cannot be
    /// told: [`UnmatchedFailures`].
    pub fn failed_rows(
        &self,
        failed_ids: &[String],
        failed_updates: Option<u64>,
    ) -> Result<std::collections::BTreeSet<usize>, UnmatchedFailures> {
        let mut rows = std::collections::BTreeSet::new();
        let mut unmatched = Vec::new();
        for id in failed_ids {
            let before = rows.len();
            rows.extend(self.rows_with_id(id));
            if rows.len() == before && !self.rows_with_id(id).any(|_| true) {
                let loose: Vec<usize> = self
                    .identities
                    .iter()
                    .enumerate()
                    .filter(|(_, identity)| identity.id().trim() == id.trim())
                    .map(|(row, _)| row)
                    .collect();
                if loose.is_empty() {
                    unmatched.push(id.clone());
                }
                rows.extend(loose);
            }
        }
        let named = failed_ids.len() as u64;
        match failed_updates {
            _ if !unmatched.is_empty() => Err(UnmatchedFailures {
                reported: failed_updates.unwrap_or(named),
                unmatched,
            }),
            Some(reported) if reported > named => Err(UnmatchedFailures {
                reported,
                unmatched,
            }),
            _ => Ok(rows),
        }
    }
}

/// Target reported failures that cannot all be tied to rows of the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Target reported {reported} failed rows, named ids matching no row: {unmatched:?}; which rows were applied cannot be told")]
pub struct UnmatchedFailures {
    /// `failedUpdates`, or the number of failed ids named.
    pub reported: u64,
    /// Failed ids that match no row.
    pub unmatched: Vec<String>,
}

/// One CSV cell as it goes on the wire: percent-encoded UTF-8, then form-encoded.
fn cell(text: &str) -> String {
    let once = utf8_percent_encode(text, PARAMETER).to_string();
    form_urlencoded::byte_serialize(once.as_bytes()).collect()
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
