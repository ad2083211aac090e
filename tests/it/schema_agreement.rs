//! The published JSON Schema and the parser must give every event the same
//! verdict: producers validate against the schema, the service against the
//! parser, and an event one accepts and the other refuses is a surprise in
//! production. Every fixture under `tests/fixtures/events/<class>/` goes
//! through both; the folder names the parser's class, and `reasons.tsv` the
//! exact reason of each `schema_violation`.

use pos_profile_sync::event::{parse, EventError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CLASSES: [&str; 4] = [
    "valid",
    "invalid_json",
    "schema_violation",
    "unsupported_version",
];

/// Fewer fixtures than this means the folder was not found or was emptied.
const MIN_FIXTURES: usize = 40;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures/events")
}

fn schema() -> Value {
    let path = root().join("schemas/pos.purchase.v1.schema.json");
    let text = std::fs::read_to_string(&path).expect("the schema file is readable");
    serde_json::from_str(&text).expect("the schema file is JSON")
}

/// The schema compiled as a draft 2020-12 validator that asserts formats
/// (`date-time` is an annotation only, unless asked).
fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .expect("the schema compiles")
}

/// The schema's verdict on raw bytes: `Ok(())` or the first errors.
///
/// An instance that cannot even be loaded as a `serde_json::Value` counts as
/// rejected by the schema: bytes that are not UTF-8 or not JSON, a number that
/// overflows an f64 (`1e999`), an unpaired surrogate escape (`"\ud800"`), or
/// nesting past serde_json's recursion limit. No validator can accept what it
/// cannot read.
fn schema_verdict(validator: &jsonschema::Validator, bytes: &[u8]) -> Result<(), String> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| format!("not loadable as a JSON value: {error}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .take(3)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The parser's class name: `valid` or the error class.
fn parser_class(result: &Result<pos_profile_sync::event::Purchase, EventError>) -> &'static str {
    match result {
        Ok(_) => "valid",
        Err(error) => error.class.as_str(),
    }
}

struct Fixture {
    /// Relative to the fixtures folder, as `reasons.tsv` names it.
    name: String,
    class: &'static str,
    bytes: Vec<u8>,
}

fn fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the fixtures folder exists") {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_file() {
            assert_eq!(name, "reasons.tsv", "unexpected file in {}", dir.display());
            continue;
        }
        let class = CLASSES
            .iter()
            .find(|class| **class == name)
            .unwrap_or_else(|| panic!("folder {name:?} is not one of {CLASSES:?}"));
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let path = file.unwrap().path();
            let file_name = path.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(
                file_name.ends_with(".json"),
                "{} is not a .json",
                path.display()
            );
            found.push(Fixture {
                name: format!("{class}/{file_name}"),
                class,
                bytes: std::fs::read(&path).unwrap(),
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn expected_reasons() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(fixtures_dir().join("reasons.tsv"))
        .expect("reasons.tsv is readable");
    let mut reasons = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let (name, reason) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("reasons.tsv line {} has no tab", number + 1));
        let previous = reasons.insert(name.to_owned(), reason.to_owned());
        assert!(previous.is_none(), "reasons.tsv names {name} twice");
    }
    reasons
}

#[test]
fn every_fixture_gets_the_same_verdict_from_the_schema_and_the_parser() {
    let validator = validator();
    let fixtures = fixtures();
    let mut reasons = expected_reasons();
    let mut failures = Vec::new();
    let mut per_class: BTreeMap<&str, usize> = CLASSES.iter().map(|class| (*class, 0)).collect();

    for fixture in &fixtures {
        *per_class.get_mut(fixture.class).unwrap() += 1;
        let parsed = parse(&fixture.bytes);
        let parser = parser_class(&parsed);
        let schema = schema_verdict(&validator, &fixture.bytes);
        let name = &fixture.name;

        if parser != fixture.class {
            failures.push(format!("{name}: the parser says {parser} ({parsed:?})"));
        }
        match (&schema, parsed.is_ok()) {
            (Ok(()), false) => failures.push(format!(
                "{name}: the schema accepts what the parser refuses ({})",
                parsed.as_ref().unwrap_err()
            )),
            (Err(why), true) => failures.push(format!(
                "{name}: the schema refuses what the parser accepts: {why}"
            )),
            _ => {}
        }
        let expected = reasons.remove(name);
        match (fixture.class, expected, &parsed) {
            ("schema_violation", None, _) => failures.push(format!("{name}: not in reasons.tsv")),
            ("schema_violation", Some(expected), Err(error)) if error.reason != expected => {
                failures.push(format!(
                    "{name}: reason {:?}, reasons.tsv says {expected:?}",
                    error.reason
                ))
            }
            ("schema_violation", _, _) => {}
            (_, Some(_), _) => failures.push(format!(
                "{name}: in reasons.tsv but not a schema_violation fixture"
            )),
            (_, None, _) => {}
        }
    }
    for name in reasons.keys() {
        failures.push(format!("reasons.tsv names {name}, which is not a fixture"));
    }

    let summary: Vec<String> = per_class
        .iter()
        .map(|(class, count)| format!("{class} {count}"))
        .collect();
    println!(
        "schema agreement: {} fixtures ({})",
        fixtures.len(),
        summary.join(", ")
    );
    assert!(
        fixtures.len() >= MIN_FIXTURES,
        "only {} fixtures, at least {MIN_FIXTURES} expected",
        fixtures.len()
    );
    assert!(
        failures.is_empty(),
        "{} disagreement(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_schema_is_draft_2020_12_and_describes_every_property() {
    let schema = schema();
    jsonschema::draft202012::meta::validate(&schema).expect("a valid draft 2020-12 schema");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["$id"].is_string(), "$id");
    assert_eq!(schema["title"], "pos.purchase.v1");

    fn undescribed(node: &Value, path: &str, missing: &mut Vec<String>) {
        let Some(object) = node.as_object() else {
            return;
        };
        for key in ["properties", "$defs"] {
            for (name, child) in object
                .get(key)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let child_path = format!("{path}/{key}/{name}");
                if !child["description"].is_string() {
                    missing.push(child_path.clone());
                }
                undescribed(child, &child_path, missing);
            }
        }
    }
    let mut missing = Vec::new();
    undescribed(&schema, "#", &mut missing);
    assert!(missing.is_empty(), "no description: {missing:?}");
}

/// A field of a valid event replaced by raw JSON text.
fn event_with(field: &str, raw: &str) -> Vec<u8> {
    let mut event: Value = serde_json::from_str(
        r#"{"event_id":"e-1","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z",
        "store_id":"S1","customer":{"third_party_id":"CRM-1"},"currency":"EUR","total":"1",
        "items":[{"sku":"A","quantity":1,"unit_price":"1"}]}"#,
    )
    .unwrap();
    let slot = if let Some(name) = field.strip_prefix("items[0].") {
        &mut event["items"][0][name]
    } else {
        &mut event[field]
    };
    *slot = Value::String("@@".into());
    serde_json::to_string(&event)
        .unwrap()
        .replace("\"@@\"", raw)
        .into_bytes()
}

#[test]
fn a_float_based_validator_disagrees_only_where_a_double_cannot_hold_the_number() {
    // The parser reads a number's decimal text; serde_json's `Value`, and so
    // the validator, reads an f64. These are the inherent disagreements, also
    // described in the schema: numbers with more significant digits than a
    // double holds, magnitudes below the smallest double, and valid amounts
    // that round up to the 1e15 limit. If one of them starts to agree, the
    // validator has become exact: move the case to the fixtures.
    let cases: [(&str, &str, &str, bool); 8] = [
        // (field, JSON text, the parser's class, the validator accepts)
        (
            "total",
            "0.1000000000000000000001",
            "schema_violation",
            true,
        ),
        ("total", "1e-400", "schema_violation", true),
        ("total", "-1e-400", "schema_violation", true),
        ("total", "999999999999999.99", "valid", false),
        (
            "items[0].unit_price",
            "999999999999999.999999",
            "valid",
            false,
        ),
        (
            "items[0].quantity",
            "2.00000000000000000001",
            "schema_violation",
            true,
        ),
        (
            "schema_version",
            "1.00000000000000000001",
            "schema_violation",
            true,
        ),
        // serde_json's `Value` has no room for a number past f64 even where
        // the schema allows anything: an unknown field.
        ("note", "1e999", "valid", false),
    ];
    let validator = validator();
    for (field, raw, class, validator_accepts) in cases {
        let bytes = event_with(field, raw);
        let parsed = parse(&bytes);
        assert_eq!(parser_class(&parsed), class, "{field} = {raw}: {parsed:?}");
        assert_eq!(
            schema_verdict(&validator, &bytes).is_ok(),
            validator_accepts,
            "{field} = {raw}: the known float disagreement is gone"
        );
    }
}
