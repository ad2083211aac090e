//! The parser's promises on generated input: it never panics, whatever the
//! bytes; it classes what is not UTF-8 and what is not an object the way the
//! contract says; every event it accepts obeys every rule; and the published
//! schema agrees with it on events that differ from a valid one in one field.
//! The fixtures pin the known cases; these look for the unknown ones.

use pos_profile_sync::event::{parse, ErrorClass, Identity, Purchase};
use pos_profile_sync::mapping::{Decision, Mapping};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// Field names, so that generated objects sometimes look like events.
const NAMES: [&str; 16] = [
    "schema_version",
    "event_id",
    "event_type",
    "occurred_at",
    "store_id",
    "channel",
    "customer",
    "third_party_id",
    "pc_id",
    "loyalty_tier",
    "currency",
    "total",
    "items",
    "sku",
    "category",
    "quantity",
];

/// Every field of an event, as a path into [`valid_event`].
const FIELDS: [&str; 18] = [
    "schema_version",
    "event_id",
    "event_type",
    "occurred_at",
    "store_id",
    "channel",
    "customer",
    "customer.third_party_id",
    "customer.pc_id",
    "customer.loyalty_tier",
    "currency",
    "total",
    "items",
    "items[0]",
    "items[0].sku",
    "items[0].category",
    "items[0].quantity",
    "items[0].unit_price",
];

fn valid_event() -> Value {
    json!({
        "schema_version": 1,
        "event_id": "e-1",
        "event_type": "sale",
        "occurred_at": "2026-11-28T10:15:00Z",
        "store_id": "S1",
        "channel": "online",
        "customer": {"third_party_id": "CRM-1", "pc_id": "pc-1", "loyalty_tier": "gold"},
        "currency": "EUR",
        "total": "12.50",
        "items": [
            {"sku": "A", "category": "shoes", "quantity": 1, "unit_price": 12.5},
            {"sku": "B", "quantity": 2, "unit_price": "0"}
        ]
    })
}

/// The slot at `path` (`items[0].sku`, `customer.pc_id`, `total`).
fn slot<'v>(event: &'v mut Value, path: &str) -> &'v mut Value {
    path.split('.')
        .fold(event, |node, part| match part.strip_suffix("[0]") {
            Some(name) => &mut node[name][0],
            None => &mut node[part],
        })
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/pos.purchase.v1.schema.json"
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
    })
}

/// Characters that make lengths and blankness interesting: one to four bytes,
/// Unicode white space (including U+0085) and look-alikes that are not
/// (U+FEFF, U+200B).
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('a'),
        Just('é'),
        Just('日'),
        Just('😀'),
        Just(' '),
        Just('\t'),
        Just('\n'),
        Just('\u{85}'),
        Just('\u{a0}'),
        Just('\u{2028}'),
        Just('\u{3000}'),
        Just('\u{feff}'),
        Just('\u{200b}'),
        Just('"'),
        Just('\\'),
        any::<char>(),
    ]
}

/// Strings with lengths around the limits (64, 128, 256), blank or not.
fn tricky_string() -> impl Strategy<Value = String> {
    let lengths = prop_oneof![0..4usize, 62..67usize, 126..131usize, 254..259usize];
    (lengths, tricky_char(), tricky_char(), any::<bool>()).prop_map(|(len, fill, odd, blank)| {
        let fill = if blank { ' ' } else { fill };
        let mut text: String = std::iter::repeat_n(fill, len).collect();
        if len > 0 && !blank {
            text.pop();
            text.push(odd);
        }
        text
    })
}

/// JSON numbers as text: integers, fractions and exponents, some with more
/// digits than any amount may have.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,19})(\\.[0-9]{1,22})?([eE][+-]?[0-9]{1,3})?",
        "-?[0-9]{1,3}(\\.[0-9]{1,3})?",
        "(9{14,16}|10{14,15})(\\.9{1,7})?",
        "0\\.0{0,6}[1-9]",
        "-?[0-9]{1,5}(\\.0{1,3})?",
    ]
    .prop_filter("valid JSON number", |text| {
        // The regex allows leading zeros like `00`; JSON does not.
        serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
    })
}

/// RFC 3339 look-alikes: every component drawn around its valid range.
fn date_time_text() -> impl Strategy<Value = String> {
    let fraction = prop_oneof![Just(String::new()), "\\.[0-9]{0,12}"];
    let offset = prop_oneof![
        Just("Z".to_owned()),
        Just("z".to_owned()),
        Just(String::new()),
        (
            prop_oneof![Just('+'), Just('-')],
            0..26u32,
            prop_oneof![0..3u32, 29..31u32, 44..46u32, 58..61u32]
        )
            .prop_map(|(sign, h, m)| format!("{sign}{h:02}:{m:02}")),
    ];
    (
        prop_oneof![Just(0u32), Just(9999u32), 1969..2031u32],
        0..14u32,
        prop_oneof![0..3u32, 27..33u32],
        prop_oneof![Just('T'), Just('t'), Just(' ')],
        prop_oneof![0..2u32, 14..16u32, 22..25u32],
        prop_oneof![0..2u32, 29..31u32, 57..61u32],
        prop_oneof![0..2u32, 58..62u32],
        fraction,
        offset,
    )
        .prop_map(|(y, mo, d, sep, h, mi, s, fraction, offset)| {
            format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{fraction}{offset}")
        })
}

fn finite_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..10_003).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (0u64..100_000_000, 0u32..9).prop_map(|(units, places)| {
            let value = units as f64 / 10f64.powi(places as i32);
            Value::Number(serde_json::Number::from_f64(value).unwrap())
        }),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        finite_number(),
        any::<String>().prop_map(Value::String),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(&NAMES[..]).prop_map(str::to_owned),
            any::<String>()
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Values a field could plausibly be given: anything, and the near misses.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => json_value(),
        2 => tricky_string().prop_map(Value::String),
        2 => finite_number(),
        1 => number_text().prop_map(Value::String),
        1 => date_time_text().prop_map(Value::String),
        1 => prop::sample::select(&["sale", "return", "store", "online", "mobile", "kiosk", "EUR", "eur", ""][..])
            .prop_map(Value::from),
    ]
}

/// Every rule of the contract that a parsed event must obey.
fn assert_obeys_the_rules(purchase: &Purchase) {
    fn chars(text: &str) -> usize {
        text.chars().count()
    }
    fn blank(text: &str) -> bool {
        text.chars().all(char::is_whitespace)
    }
    fn amount(value: Decimal) {
        assert!(value >= Decimal::ZERO, "{value}");
        assert!(value.normalize().scale() <= 6, "{value}");
        assert!(value < Decimal::from(1_000_000_000_000_000u64), "{value}");
    }
    assert!((1..=128).contains(&chars(&purchase.event_id)));
    assert!((1..=64).contains(&chars(&purchase.store_id)));
    match &purchase.identity {
        Some(Identity::ThirdParty(id)) => assert!(!blank(id) && chars(id) <= 256),
        Some(Identity::Pc(id)) => assert!(!blank(id) && chars(id) <= 128),
        None => {}
    }
    if let Some(tier) = &purchase.loyalty_tier {
        assert!(!blank(tier) && chars(tier) <= 64);
    }
    assert!(
        purchase.currency.len() == 3 && purchase.currency.bytes().all(|b| b.is_ascii_uppercase())
    );
    amount(purchase.total);
    assert!(purchase.items.len() <= 1000);
    for item in &purchase.items {
        assert!((1..=64).contains(&chars(&item.sku)));
        if let Some(category) = &item.category {
            assert!(!blank(category) && chars(category) <= 64);
        }
        assert!((1..=10_000).contains(&item.quantity));
        amount(item.unit_price);
    }
    let utc = purchase.occurred_at.to_utc_second();
    assert!(utc.ends_with('Z') && utc.len() >= 20, "{utc}");
}

/// The parser's verdict and the schema's agree on valid or not.
/// `decide` says what `parse` says, and every derived update is sendable:
/// an identity, unique names, values of at most 256 characters.
fn assert_mapping_agrees(
    bytes: &[u8],
    parsed: &Result<Purchase, pos_profile_sync::event::EventError>,
) {
    match (Mapping::default().decide(bytes), parsed) {
        (Decision::DeadLetter(error), Err(expected)) => assert_eq!(&error, expected),
        (Decision::Skip(_), Ok(purchase)) => assert!(purchase.identity.is_none()),
        (Decision::Update(update), Ok(purchase)) => {
            assert_eq!(Some(&update.identity), purchase.identity.as_ref());
            assert!(!update.identity.id().is_empty());
            let mut names: Vec<&str> = update.attributes.iter().map(|a| &*a.name).collect();
            names.sort_unstable();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count, "attribute names are unique");
            for attribute in &update.attributes {
                assert!(
                    attribute.value.chars().count() <= 256,
                    "{} is too long",
                    attribute.name
                );
            }
        }
        (decision, parsed) => panic!("decide gave {decision:?} for {parsed:?}"),
    }
}

fn assert_schema_agrees(
    bytes: &[u8],
    parsed: &Result<Purchase, pos_profile_sync::event::EventError>,
) {
    let value: Value = serde_json::from_slice(bytes).unwrap();
    let schema_accepts = validator().is_valid(&value);
    assert_eq!(
        schema_accepts,
        parsed.is_ok(),
        "schema accepts: {schema_accepts}, parser: {parsed:?}, event: {}",
        String::from_utf8_lossy(bytes)
    );
}

/// Bytes that cannot be UTF-8: a byte no encoding uses, or a continuation
/// byte right after complete text.
fn non_utf8_bytes() -> impl Strategy<Value = Vec<u8>> {
    let never_valid = prop_oneof![Just(0xC0u8), Just(0xC1u8), 0xF5u8..=0xFF];
    prop_oneof![
        (any::<Vec<u8>>(), never_valid, any::<Vec<u8>>())
            .prop_map(|(before, bad, after)| { [before, vec![bad], after].concat() }),
        (".{0,40}", 0x80u8..0xC0, any::<Vec<u8>>())
            .prop_map(|(text, bad, after)| { [text.into_bytes(), vec![bad], after].concat() }),
        // A valid event with one byte of one string broken.
        (0x80u8..0xC0, 0..3usize).prop_map(|(bad, at)| {
            let mut bytes = serde_json::to_vec(&valid_event()).unwrap();
            let quote = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'"')
                .nth(at * 2)
                .unwrap()
                .0;
            bytes.insert(quote + 1, bad);
            bytes
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_make_parse_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_always_invalid_json(bytes in non_utf8_bytes()) {
        prop_assume!(std::str::from_utf8(&bytes).is_err());
        let error = parse(&bytes).unwrap_err();
        prop_assert_eq!(error.class, ErrorClass::InvalidJson);
    }

    #[test]
    fn arbitrary_json_never_panics_and_non_objects_are_schema_violations(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let parsed = parse(&bytes);
        if !value.is_object() {
            let error = parsed.unwrap_err();
            prop_assert_eq!(error.class, ErrorClass::SchemaViolation);
            prop_assert_eq!(error.reason, "event: must be a JSON object");
        } else if let Ok(purchase) = &parsed {
            assert_obeys_the_rules(purchase);
        }
    }

    #[test]
    fn an_event_with_one_field_replaced_obeys_the_rules_when_it_parses_and_the_schema_agrees(
        field in prop::sample::select(&FIELDS[..]),
        value in field_value(),
    ) {
        let mut event = valid_event();
        *slot(&mut event, field) = value;
        let bytes = serde_json::to_vec(&event).unwrap();
        let parsed = parse(&bytes);
        if let Ok(purchase) = &parsed {
            assert_obeys_the_rules(purchase);
        }
        assert_mapping_agrees(&bytes, &parsed);
        assert_schema_agrees(&bytes, &parsed);
    }

    #[test]
    fn arbitrary_bytes_and_json_never_make_the_mapping_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        value in json_value(),
    ) {
        assert_mapping_agrees(&bytes, &parse(&bytes));
        let text = serde_json::to_vec(&value).unwrap();
        assert_mapping_agrees(&text, &parse(&text));
    }

    #[test]
    fn an_event_with_one_field_removed_is_valid_only_if_the_field_is_optional(
        field in prop::sample::select(&FIELDS[..]),
    ) {
        let mut event = valid_event();
        let (parent, name) = match field.rsplit_once('.') {
            Some((parent, name)) => (slot(&mut event, parent), name),
            None => (&mut event, field),
        };
        let name = name.strip_suffix("[0]").map_or(name.to_owned(), str::to_owned);
        if field.ends_with("[0]") {
            parent[&name].as_array_mut().unwrap().remove(0);
        } else {
            parent.as_object_mut().unwrap().remove(&name);
        }
        let bytes = serde_json::to_vec(&event).unwrap();
        let parsed = parse(&bytes);
        let optional = matches!(
            field,
            "schema_version" | "channel" | "customer.third_party_id" | "customer.pc_id"
                | "customer.loyalty_tier" | "items[0]" | "items[0].category"
        );
        prop_assert_eq!(parsed.is_ok(), optional, "{}: {:?}", field, parsed);
        assert_schema_agrees(&bytes, &parsed);
    }

    #[test]
    fn a_number_written_with_at_most_15_significant_digits_gets_the_same_verdict_from_the_schema(
        field in prop::sample::select(&["total", "items[0].unit_price", "items[0].quantity", "schema_version"][..]),
        text in number_text(),
    ) {
        let mut event = valid_event();
        *slot(&mut event, field) = Value::String("@@".into());
        let bytes = serde_json::to_string(&event).unwrap().replace("\"@@\"", &text).into_bytes();
        let parsed = parse(&bytes);
        if let Ok(purchase) = &parsed {
            assert_obeys_the_rules(purchase);
        }
        // Where a double holds the decimal exactly enough, the schema's float
        // encoding must agree (the schema's description promises it); beyond,
        // see the float test in `schema_agreement`.
        let mantissa = text.trim_start_matches('-').split(['e', 'E']).next().unwrap().replace('.', "");
        let significant = mantissa.trim_start_matches('0').trim_end_matches('0').len();
        let as_f64: f64 = text.parse().unwrap();
        let underflows = as_f64 == 0.0 && significant > 0;
        if significant <= 15 && !underflows && as_f64.is_finite() {
            assert_schema_agrees(&bytes, &parsed);
        }
    }

    #[test]
    fn a_date_time_gets_the_same_verdict_from_the_schema_and_the_parser(text in date_time_text()) {
        let mut event = valid_event();
        event["occurred_at"] = Value::String(text);
        let bytes = serde_json::to_vec(&event).unwrap();
        let parsed = parse(&bytes);
        if let Ok(purchase) = &parsed {
            assert_obeys_the_rules(purchase);
        }
        assert_schema_agrees(&bytes, &parsed);
    }
}
