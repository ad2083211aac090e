//! `derive`: NDJSON events on stdin, one JSON object per non-blank line on
//! stdout saying what `run` would do with it (`docs/contract.md` section 6). A user's
//! dry run for mappings, and the contract's executable check.

use super::{ConfigArg, EXIT_USAGE};
use crate::mapping::{Decision, Mapping};
use crate::ops::config::Settings;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;

/// Options of `derive`.
#[derive(Debug, clap::Args)]
pub struct DeriveArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub(super) fn main(args: DeriveArgs) -> ExitCode {
    let mapping = match &args.config.config {
        None => Mapping::default(),
        Some(path) => {
            let built = Settings::load(Some(path)).and_then(|settings| {
                Mapping::from_settings(&settings.mapping)
                    .map_err(|problems| crate::ops::config::ConfigError { problems })
            });
            match built {
                Ok(mapping) => mapping,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
    };
    let stdin = std::io::stdin().lock();
    let stdout = BufWriter::new(std::io::stdout().lock());
    match derive_stream(&mapping, stdin, stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("derive: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Derives every line of `input` into `output`.
pub fn derive_stream(
    mapping: &Mapping,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for_each_line(input, |number, bytes| {
        let decision = mapping.decide(bytes);
        serde_json::to_writer(
            &mut output,
            &Output {
                line: number,
                decision: &decision,
            },
        )?;
        output.write_all(b"\n")
    })?;
    output.flush()
}

/// Calls `each` with the number (from 1, blank lines counted) and the bytes,
/// without the line break, of every line of `input` that is not blank.
pub(super) fn for_each_line(
    mut input: impl BufRead,
    mut each: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
        let mut bytes = &line[..];
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest;
        }
        if let Some(rest) = bytes.strip_suffix(b"\r") {
            bytes = rest;
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        each(number, bytes)?;
    }
}

struct Output<'a> {
    line: u64,
    decision: &'a Decision,
}

impl Serialize for Output<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.decision {
            Decision::Update(update) => {
                let mut s = serializer.serialize_struct("Output", 4)?;
                s.serialize_field("line", &self.line)?;
                s.serialize_field("outcome", "update")?;
                s.serialize_field("identity", &IdentityJson(&update.identity))?;
                s.serialize_field("attributes", &AttributesJson(update))?;
                s.end()
            }
            Decision::Skip(reason) => {
                let mut s = serializer.serialize_struct("Output", 3)?;
                s.serialize_field("line", &self.line)?;
                s.serialize_field("outcome", "skip")?;
                s.serialize_field("reason", reason.as_str())?;
                s.end()
            }
            Decision::DeadLetter(error) => {
                let mut s = serializer.serialize_struct("Output", 4)?;
                s.serialize_field("line", &self.line)?;
                s.serialize_field("outcome", "dead_letter")?;
                s.serialize_field("error_class", error.class.as_str())?;
                s.serialize_field("reason", &error.reason)?;
                s.end()
            }
        }
    }
}

struct IdentityJson<'a>(&'a crate::event::Identity);

impl Serialize for IdentityJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0.param(), self.0.id())?;
        map.end()
    }
}

struct AttributesJson<'a>(&'a crate::mapping::ProfileUpdate);

impl Serialize for AttributesJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.attributes.len()))?;
        for attribute in &self.0.attributes {
            map.serialize_entry(&*attribute.name, attribute.value.as_str())?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derive(input: &str) -> String {
        let mut out = Vec::new();
        derive_stream(&Mapping::default(), input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_contract_examples_come_out_exactly() {
        let input = concat!(
            r#"{"event_id":"e1","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z","store_id":"S1","channel":"store","customer":{"third_party_id":"CRM-1"},"currency":"EUR","total":"10","items":[]}"#,
            "\n",
            r#"{"event_id":"e2","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z","store_id":"S1","customer":{},"currency":"EUR","total":1,"items":[]}"#,
            "\r\n",
            r#"{"event_id":"e3","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z","store_id":"S1","customer":{"pc_id":"p"},"currency":"EUR","total":1,"items":[{"sku":"A","quantity":0,"unit_price":1}]}"#,
            "\n",
        );
        let out = derive(input);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"line":1,"outcome":"update","identity":{"mbox3rdPartyId":"CRM-1"},"attributes":{"lastPurchaseAt":"2026-11-28T10:15:00Z","lastPurchaseStore":"S1","lastPurchaseChannel":"store","lastPurchaseTotal":"10.00","lastPurchaseCurrency":"EUR","lastPurchaseItemCount":"0"}}"#
        );
        assert_eq!(
            lines[1],
            r#"{"line":2,"outcome":"skip","reason":"no_identity"}"#
        );
        assert_eq!(
            lines[2],
            r#"{"line":3,"outcome":"dead_letter","error_class":"schema_violation","reason":"items[0].quantity: must be at least 1"}"#
        );
    }

    #[test]
    fn blank_lines_keep_their_number_and_bad_bytes_are_dead_letters() {
        let out = derive("\n  \r\n\u{0}\n{\"x\":\n");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0]
                .starts_with(r#"{"line":3,"outcome":"dead_letter","error_class":"invalid_json""#),
            "{}",
            lines[0]
        );
        assert!(
            lines[1]
                .starts_with(r#"{"line":4,"outcome":"dead_letter","error_class":"invalid_json""#),
            "{}",
            lines[1]
        );
        let mut out = Vec::new();
        derive_stream(&Mapping::default(), &b"\xff\xfe\n"[..], &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\"error_class\":\"invalid_json\""));
    }
}
