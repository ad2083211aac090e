//! Reading a submitted batch the way Adobe does: the form body first (`&` separates
//! fields, `+` is a space, `%XX` a byte; a `%` without two hex digits stays as it is),
//! its `batch` field is the CSV; lines split at `\n` (a trailing `\r` is dropped, empty
//! lines are skipped), cells at `,`, and every cell is then percent-decoded strictly:
//! a `%` not followed by two hex digits, or bytes that are not UTF-8, make the whole
//! batch undecodable (Adobe's "Unexpected error"). Pure: bytes in, batch or refusal out.
//!
//! So the documented pitfalls behave as on Adobe's side: an unencoded `%` rejects the
//! batch, an unencoded `&` cuts it short, and an unencoded `+` becomes a space.

use percent_encoding::percent_decode;

use crate::store::IdKind;

/// A batch as read: the id kind, attribute names and rows in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    /// Which namespace the id column names (its header cell).
    pub kind: IdKind,
    /// Attribute names, bare (as in the header, after its id column).
    pub columns: Vec<String>,
    /// The rows, in the order written.
    pub rows: Vec<DecodedRow>,
}

/// One profile's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRow {
    /// The profile id, decoded.
    pub id: String,
    /// Values by column; a short row has fewer (the rest are empty).
    pub values: Vec<String>,
}

/// Why a batch is refused (`success=false`, HTTP 200, no batch id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadBatch {
    /// No `batch=` field in the form body.
    #[error("Batch is empty")]
    NoBatchField,
    /// A header and no row.
    #[error("Batch is empty")]
    NoRows,
    /// A `%` that is not `%XX`, or bytes that are not UTF-8.
    #[error("Unexpected error")]
    Undecodable,
    /// The first header cell is neither `thirdPartyId` nor `pcId`.
    #[error("The first column must be thirdPartyId or pcId, not {0:?}")]
    BadIdColumn(String),
    /// An attribute column without a name.
    #[error("Header column {0} has no name")]
    EmptyAttributeName(usize),
    /// A row without an id.
    #[error("Line {0} has no profile id")]
    EmptyId(usize),
    /// A row with more cells than the header.
    #[error("Line {0} has more cells than the header")]
    TooManyCells(usize),
    /// More rows than Adobe takes in one upload.
    #[error("Batch has more than {0} rows")]
    TooManyRows(usize),
}

/// Reads a form body `batch=<CSV>` of at most `max_rows` rows.
pub fn decode_batch(body: &[u8], max_rows: usize) -> Result<DecodedBatch, BadBatch> {
    let csv = form_field(body, b"batch").ok_or(BadBatch::NoBatchField)?;
    let csv = String::from_utf8(csv).map_err(|_| BadBatch::Undecodable)?;
    let mut lines = csv
        .split('\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.is_empty());
    let (_, header) = lines.next().ok_or(BadBatch::NoBatchField)?;
    let mut header = cells(header)?.into_iter();
    let kind = match header.next().as_deref() {
        Some("thirdPartyId") => IdKind::ThirdParty,
        Some("pcId") => IdKind::Pc,
        other => return Err(BadBatch::BadIdColumn(other.unwrap_or("").to_owned())),
    };
    let columns: Vec<String> = header.collect();
    if let Some(at) = columns.iter().position(String::is_empty) {
        return Err(BadBatch::EmptyAttributeName(at + 2));
    }
    let mut rows = Vec::new();
    for (number, line) in lines {
        if rows.len() == max_rows {
            return Err(BadBatch::TooManyRows(max_rows));
        }
        let mut cells = cells(line)?.into_iter();
        let id = cells.next().unwrap_or_default();
        if id.is_empty() {
            return Err(BadBatch::EmptyId(number));
        }
        let values: Vec<String> = cells.collect();
        if values.len() > columns.len() {
            return Err(BadBatch::TooManyCells(number));
        }
        rows.push(DecodedRow { id, values });
    }
    if rows.is_empty() {
        return Err(BadBatch::NoRows);
    }
    Ok(DecodedBatch {
        kind,
        columns,
        rows,
    })
}

/// The bytes of the first form field named `name`, form-decoded leniently.
fn form_field(body: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let (field, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        (form_decode(field) == name).then(|| form_decode(value))
    })
}

/// `+` to space, `%XX` to a byte, anything else as it is.
fn form_decode(raw: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced).collect()
}

/// One CSV line's cells, each strictly percent-decoded.
fn cells(line: &str) -> Result<Vec<String>, BadBatch> {
    line.split(',').map(strict_decode).collect()
}

/// `%XX` to a byte (anything else after `%` is an error), then UTF-8.
fn strict_decode(cell: &str) -> Result<String, BadBatch> {
    let bytes = cell.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3).ok_or(BadBatch::Undecodable)?;
            let hex = std::str::from_utf8(hex).map_err(|_| BadBatch::Undecodable)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BadBatch::Undecodable);
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| BadBatch::Undecodable)?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BadBatch::Undecodable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Result<DecodedBatch, BadBatch> {
        decode_batch(body.as_bytes(), 500_000)
    }

    #[test]
    fn adobes_documented_example_reads_with_short_rows() {
        let batch =
            decode("batch=pcId,param1,param2,param3,param4\n123,value1\n124,value1,,,value4\n")
                .expect("valid");
        assert_eq!(batch.kind, IdKind::Pc);
        assert_eq!(batch.columns, ["param1", "param2", "param3", "param4"]);
        assert_eq!(batch.rows[0].id, "123");
        assert_eq!(batch.rows[0].values, ["value1"]);
        assert_eq!(batch.rows[1].values, ["value1", "", "", "value4"]);
    }

    #[test]
    fn cells_are_percent_decoded_after_the_form() {
        // "a,b" = "x&y+z%" as sent by the project's encoder.
        let batch =
            decode("batch=thirdPartyId%2Cx%0Aa%252Cb%2Cx%2526y%252Bz%2525%0D%0A").expect("valid");
        assert_eq!(batch.kind, IdKind::ThirdParty);
        assert_eq!(batch.rows[0].id, "a,b");
        assert_eq!(batch.rows[0].values, ["x&y+z%"]);
    }

    #[test]
    fn an_unencoded_percent_rejects_the_whole_batch() {
        assert_eq!(
            decode("batch=thirdPartyId,x\nc1,100%\n"),
            Err(BadBatch::Undecodable)
        );
        assert_eq!(
            decode("batch=thirdPartyId,x\nc1,%C3\n"),
            Err(BadBatch::Undecodable)
        );
        assert_eq!(BadBatch::Undecodable.to_string(), "Unexpected error");
    }

    #[test]
    fn an_unencoded_ampersand_cuts_the_batch_and_a_plus_is_a_space() {
        let batch = decode("batch=thirdPartyId,x\nc1,a+b\nc2,y&c3,z").expect("valid");
        assert_eq!(batch.rows.len(), 2);
        assert_eq!(batch.rows[0].values, ["a b"]);
        assert_eq!(batch.rows[1].values, ["y"]);
    }

    #[test]
    fn malformed_batches_are_refused_with_a_reason() {
        assert_eq!(decode("rows=1"), Err(BadBatch::NoBatchField));
        assert_eq!(decode("batch="), Err(BadBatch::NoBatchField));
        assert_eq!(decode("batch=thirdPartyId,x\n"), Err(BadBatch::NoRows));
        assert_eq!(
            decode("batch=mbox3rdPartyId,x\nc1,1"),
            Err(BadBatch::BadIdColumn("mbox3rdPartyId".into()))
        );
        assert_eq!(
            decode("batch=pcId,x,,y\np,1"),
            Err(BadBatch::EmptyAttributeName(3))
        );
        assert_eq!(decode("batch=pcId,x\n,1"), Err(BadBatch::EmptyId(2)));
        assert_eq!(
            decode("batch=pcId,x\np,1,2"),
            Err(BadBatch::TooManyCells(2))
        );
        assert_eq!(
            decode_batch(b"batch=pcId,x\np,1\nq,2\nr,3", 2),
            Err(BadBatch::TooManyRows(2))
        );
        assert_eq!(
            decode_batch(b"batch=pcId\n\xff", 9),
            Err(BadBatch::Undecodable)
        );
    }
}
