//! From bytes to a [`Purchase`], checking fields in the contract's table order
//! so the reason always names the first offending field.

use super::amount::{AmountError, DecimalText};
use super::wellformed;
use super::{
    parse_amount_number, parse_amount_string, parse_rfc3339, Channel, ErrorClass, EventError,
    EventKind, Identity, Item, Purchase,
};
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// At most this many basket lines.
pub const MAX_ITEMS: usize = 1000;

/// An object's members in the order written. An event's objects have about
/// ten, so a look-up walks them, which costs less than hashing every name of
/// every event; a name written twice counts with its last value, as in
/// serde_json's own maps.
#[derive(Debug)]
struct Object<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'a> Object<'a> {
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key.0 == name)
            .map(|&(_, raw)| raw)
    }
}

impl<'de> serde::Deserialize<'de> for Object<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Object<'de>, A::Error> {
                // serde_json gives no hint: room for an event's ten or so
                // members at once, not grown four times.
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(12).min(32));
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Object(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A member name, borrowed from the record when it has no escapes (nearly
/// always): no allocation per field of every event.
#[derive(Debug)]
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Where a member sits, for reasons; an item's path is only written out
/// when a reason needs it.
#[derive(Debug, Clone, Copy)]
enum Prefix {
    /// The event or `customer.`.
    Fixed(&'static str),
    /// `items[i].`
    Item(usize),
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefix::Fixed(text) => f.write_str(text),
            Prefix::Item(index) => write!(f, "items[{index}]."),
        }
    }
}

/// Parses and validates one Kafka record value.
///
/// Bytes that are not UTF-8 or not JSON are `invalid_json`, and so is JSON
/// nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH) levels or holding an
/// unpaired surrogate escape anywhere, even in an unknown field; JSON that is
/// not an object or breaks a rule is `schema_violation`; a `schema_version`
/// other than 1 is `unsupported_version`. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<Purchase, EventError> {
    let text = std::str::from_utf8(bytes).map_err(|error| EventError {
        class: ErrorClass::InvalidJson,
        reason: format!(
            "not UTF-8: invalid byte at position {}",
            error.valid_up_to()
        ),
    })?;
    let root = root_object(text)?;
    let fields = Fields {
        object: &root,
        prefix: Prefix::Fixed(""),
    };

    match fields.get("schema_version") {
        None => {}
        Some(raw) => match number(raw).filter(DecimalText::is_integer) {
            Some(version) if version.to_integer() == Some(1) => {}
            Some(_) => {
                return Err(EventError {
                    class: ErrorClass::UnsupportedVersion,
                    reason: format!(
                        "schema_version: unsupported version {}, only 1 is supported",
                        raw.get()
                    ),
                })
            }
            None => {
                return Err(EventError::schema(
                    "schema_version",
                    "must be the integer 1",
                ))
            }
        },
    }

    let event_id = fields.required_string("event_id", 128)?.into_owned();
    let kind = match &*fields.required_string("event_type", usize::MAX)? {
        "sale" => EventKind::Sale,
        "return" => EventKind::Return,
        _ => {
            return Err(EventError::schema(
                "event_type",
                "must be \"sale\" or \"return\"",
            ))
        }
    };
    let occurred_at = parse_rfc3339(&fields.required_string("occurred_at", usize::MAX)?)
        .ok_or_else(|| {
            EventError::schema(
                "occurred_at",
                "must be an RFC 3339 date-time with an offset, such as 2026-11-28T10:15:00Z",
            )
        })?;
    let store_id = fields.required_string("store_id", 64)?.into_owned();
    let channel = match fields.optional_raw_string("channel")?.as_deref() {
        None | Some("store") => Channel::Store,
        Some("online") => Channel::Online,
        Some("mobile") => Channel::Mobile,
        Some("kiosk") => Channel::Kiosk,
        Some(_) => {
            return Err(EventError::schema(
                "channel",
                "must be one of \"store\", \"online\", \"mobile\", \"kiosk\"",
            ))
        }
    };

    let customer_raw = fields
        .get("customer")
        .ok_or_else(|| EventError::schema("customer", "is required"))?;
    let customer = object(customer_raw, "customer")?;
    let customer = Fields {
        object: &customer,
        prefix: Prefix::Fixed("customer."),
    };
    let third_party_id = customer.optional_text("third_party_id", 256)?;
    let pc_id = customer.optional_text("pc_id", 128)?;
    let loyalty_tier = customer
        .optional_text("loyalty_tier", 64)?
        .map(Cow::into_owned);

    let currency = fields.required_string("currency", usize::MAX)?.into_owned();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(EventError::schema(
            "currency",
            "must be three upper-case letters A-Z, such as EUR",
        ));
    }
    let total = fields.required_amount("total")?;

    let items_raw = fields
        .get("items")
        .ok_or_else(|| EventError::schema("items", "is required"))?;
    if !items_raw.get().starts_with('[') {
        return Err(EventError::schema("items", "must be an array"));
    }
    let items_raw: Vec<&RawValue> = serde_json::from_str(items_raw.get())
        .map_err(|error| EventError::schema("items", format_args!("must be an array: {error}")))?;
    if items_raw.len() > MAX_ITEMS {
        return Err(EventError::schema(
            "items",
            format_args!(
                "must have at most {MAX_ITEMS} entries, has {}",
                items_raw.len()
            ),
        ));
    }
    let mut items = Vec::with_capacity(items_raw.len());
    for (index, raw) in items_raw.into_iter().enumerate() {
        let item = object(raw, format_args!("items[{index}]"))?;
        let item = Fields {
            object: &item,
            prefix: Prefix::Item(index),
        };
        let sku = item.required_string("sku", 64)?.into_owned();
        let category = item.optional_text("category", 64)?.map(Cow::into_owned);
        let quantity = item.required_integer("quantity", 1, 10_000)? as u32;
        let unit_price = item.required_amount("unit_price")?;
        items.push(Item {
            sku,
            category,
            quantity,
            unit_price,
        });
    }

    let identity = match (third_party_id, pc_id) {
        (Some(id), _) => Some(Identity::ThirdParty(id.into())),
        (None, Some(id)) => Some(Identity::Pc(id.into())),
        (None, None) => None,
    };
    Ok(Purchase {
        event_id,
        kind,
        occurred_at,
        store_id,
        channel,
        identity,
        loyalty_tier,
        currency,
        total,
        items,
    })
}

/// A JSON object's members; `path` names it in errors.
fn object<'a>(raw: &'a RawValue, path: impl std::fmt::Display) -> Result<Object<'a>, EventError> {
    if !raw.get().starts_with('{') {
        return Err(EventError::schema(path, "must be a JSON object"));
    }
    serde_json::from_str(raw.get())
        .map_err(|error| EventError::schema(path, format_args!("must be a JSON object: {error}")))
}

/// The event's object, or why the text is not one.
///
/// Nearly every record is a well-formed object, read here in one pass:
/// reading an object checks the syntax of the whole text (its members are
/// kept raw, but checked). Only when that fails is the syntax checked on its
/// own first, so that a type error never hides a syntax error (`[1,` is
/// invalid JSON, not a non-object): the answers are those of checking the
/// syntax first every time.
fn root_object(text: &str) -> Result<Object<'_>, EventError> {
    let not_wellformed = |reason| EventError {
        class: ErrorClass::InvalidJson,
        reason,
    };
    if let Ok(root) = serde_json::from_str::<Object>(text) {
        // What the syntax check lets through but no other reader would take.
        wellformed::check(text).map_err(not_wellformed)?;
        return Ok(root);
    }
    let document: &RawValue = serde_json::from_str(text).map_err(|error| EventError {
        class: ErrorClass::InvalidJson,
        reason: format!("not JSON: {error}"),
    })?;
    wellformed::check(text).map_err(not_wellformed)?;
    object(document, "event")
}

/// The text of a JSON number, when the value is one.
fn number(raw: &RawValue) -> Option<DecimalText> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => DecimalText::from_json_number(text),
        _ => None,
    }
}

/// The members of one object, with the path prefix used in reasons.
struct Fields<'o, 'a> {
    object: &'o Object<'a>,
    prefix: Prefix,
}

impl<'a> Fields<'_, 'a> {
    /// A member, `null` counting as absent.
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.object.get(name).filter(|raw| raw.get() != "null")
    }

    fn error(&self, name: &str, message: impl std::fmt::Display) -> EventError {
        EventError::schema(format_args!("{}{name}", self.prefix), message)
    }

    /// A string member as written, if present.
    fn optional_raw_string(&self, name: &str) -> Result<Option<Cow<'a, str>>, EventError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        if !raw.get().starts_with('"') {
            return Err(self.error(name, "must be a string"));
        }
        self.string_value(name, raw).map(Some)
    }

    /// The value of a JSON string member. A string without escapes is its
    /// own value between the quotes: serde_json checked it as it read the
    /// object (a control character in it is not JSON), so only a string
    /// with escapes is decoded again.
    fn string_value(&self, name: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, EventError> {
        let text = raw.get();
        if let [b'"', inner @ .., b'"'] = text.as_bytes() {
            if !inner.contains(&b'\\') {
                return Ok(Cow::Borrowed(&text[1..text.len() - 1]));
            }
        }
        serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(|_| EventError {
                class: ErrorClass::InvalidJson,
                reason: format!("{}{name}: string is not valid Unicode", self.prefix),
            })
    }

    /// A required string of 1 to `max` characters, taken as written.
    fn required_string(&self, name: &str, max: usize) -> Result<Cow<'a, str>, EventError> {
        let value = self
            .optional_raw_string(name)?
            .ok_or_else(|| self.error(name, "is required"))?;
        if value.is_empty() {
            return Err(self.error(name, "must not be empty"));
        }
        check_length(&value, max).map_err(|message| self.error(name, message))?;
        Ok(value)
    }

    /// An optional string where empty or white space means absent.
    fn optional_text(&self, name: &str, max: usize) -> Result<Option<Cow<'a, str>>, EventError> {
        let Some(value) = self.optional_raw_string(name)? else {
            return Ok(None);
        };
        if value.chars().all(char::is_whitespace) {
            return Ok(None);
        }
        check_length(&value, max).map_err(|message| self.error(name, message))?;
        Ok(Some(value))
    }

    fn required_integer(&self, name: &str, min: i64, max: i64) -> Result<i64, EventError> {
        let raw = self
            .get(name)
            .ok_or_else(|| self.error(name, "is required"))?;
        let parts = number(raw)
            .filter(DecimalText::is_integer)
            .ok_or_else(|| self.error(name, "must be an integer"))?;
        let too_big = || self.error(name, format_args!("must be at most {max}"));
        match parts.to_integer() {
            Some(value) if value < min => {
                Err(self.error(name, format_args!("must be at least {min}")))
            }
            Some(value) if value > max => Err(too_big()),
            Some(value) => Ok(value),
            None if parts.negative => Err(self.error(name, format_args!("must be at least {min}"))),
            None => Err(too_big()),
        }
    }

    /// A JSON number or a decimal string, exact.
    fn required_amount(&self, name: &str) -> Result<Decimal, EventError> {
        let raw = self
            .get(name)
            .ok_or_else(|| self.error(name, "is required"))?;
        let text = raw.get();
        let result = if text.starts_with('"') {
            parse_amount_string(&self.string_value(name, raw)?)
        } else if number(raw).is_some() {
            parse_amount_number(text)
        } else {
            return Err(self.error(name, "must be a number or a decimal string"));
        };
        result.map_err(|error: AmountError| self.error(name, error))
    }
}

fn check_length(value: &str, max: usize) -> Result<(), String> {
    // Characters are Unicode scalar values; bytes are at least as many, so
    // most strings need no count at all.
    if value.len() > max && value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"event_id":"e-1","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z",
        "store_id":"S1","customer":{"third_party_id":"CRM-1"},"currency":"EUR","total":"12.50",
        "items":[{"sku":"A","category":"shoes","quantity":1,"unit_price":12.5}]}"#;

    fn with(pointer_edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_str(VALID).unwrap();
        pointer_edit(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    fn reason(bytes: &[u8]) -> (ErrorClass, String) {
        let error = parse(bytes).unwrap_err();
        (error.class, error.reason)
    }

    #[test]
    fn a_valid_event_becomes_a_purchase() {
        let purchase = parse(VALID.as_bytes()).unwrap();
        assert_eq!(
            purchase.identity,
            Some(Identity::ThirdParty("CRM-1".into()))
        );
        assert_eq!(purchase.channel, Channel::Store);
        assert_eq!(purchase.total, Decimal::new(1250, 2));
        assert_eq!(purchase.items[0].quantity, 1);
    }

    #[test]
    fn bytes_that_are_not_json_are_invalid_json() {
        for bad in [&b"\xff\xfe"[..], b"", b"{", b"[1,", b"{\"a\":1} x", b"nul"] {
            assert_eq!(
                parse(bad).unwrap_err().class,
                ErrorClass::InvalidJson,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn json_that_is_not_an_object_is_a_schema_violation() {
        for bad in ["[]", "1", "\"x\"", "null", "true"] {
            assert_eq!(
                reason(bad.as_bytes()),
                (
                    ErrorClass::SchemaViolation,
                    "event: must be a JSON object".into()
                )
            );
        }
    }

    #[test]
    fn member_names_written_with_escapes_are_read_as_their_text() {
        let escaped = VALID
            .replace(r#""event_id""#, r#""event\u005fid""#)
            .replace(r#""third_party_id""#, r#""third_party\u005Fid""#)
            .replace(r#""unit_price""#, r#""unit\u005fprice""#);
        assert_ne!(escaped, VALID);
        assert_eq!(
            parse(escaped.as_bytes()).unwrap(),
            parse(VALID.as_bytes()).unwrap()
        );
    }

    #[test]
    fn a_member_written_twice_counts_with_its_last_value() {
        let twice = VALID
            .replace(r#""store_id":"S1""#, r#""store_id":"S0","store_id":"S1""#)
            .replace(
                r#"{"third_party_id":"CRM-1"}"#,
                r#"{"third_party_id":7,"third_party_id":"CRM-1"}"#,
            );
        assert_ne!(twice, VALID);
        assert_eq!(
            parse(twice.as_bytes()).unwrap(),
            parse(VALID.as_bytes()).unwrap()
        );
        let bad_last = VALID.replace(r#""store_id":"S1""#, r#""store_id":"S1","store_id":5"#);
        assert_eq!(reason(bad_last.as_bytes()).1, "store_id: must be a string");
    }

    #[test]
    fn schema_version_is_checked_first() {
        let bytes = with(|v| {
            v["schema_version"] = 2.into();
            v["event_id"] = "".into();
        });
        assert_eq!(reason(&bytes).0, ErrorClass::UnsupportedVersion);
        for ok in [
            serde_json::json!(1),
            serde_json::json!(1.0),
            serde_json::Value::Null,
        ] {
            assert!(parse(&with(|v| v["schema_version"] = ok.clone())).is_ok());
        }
        for bad in [
            serde_json::json!("1"),
            serde_json::json!(true),
            serde_json::json!(1.5),
        ] {
            assert_eq!(
                reason(&with(|v| v["schema_version"] = bad.clone())).0,
                ErrorClass::SchemaViolation
            );
        }
    }

    #[test]
    fn the_reason_names_the_first_offending_field() {
        let bytes = with(|v| {
            v["items"][0]["quantity"] = 0.into();
            v["items"][0]["unit_price"] = (-1).into();
        });
        assert_eq!(reason(&bytes).1, "items[0].quantity: must be at least 1");
        let bytes = with(|v| {
            v["store_id"] = "".into();
            v["currency"] = "eur".into();
        });
        assert_eq!(reason(&bytes).1, "store_id: must not be empty");
    }

    #[test]
    fn blank_optional_texts_count_as_absent_and_anonymous_is_valid() {
        let purchase = parse(&with(|v| {
            v["customer"] = serde_json::json!({"third_party_id": " \t", "pc_id": "", "loyalty_tier": "\u{3000}"});
        }))
        .unwrap();
        assert_eq!(purchase.identity, None);
        assert_eq!(purchase.loyalty_tier, None);
        let purchase = parse(&with(|v| {
            v["customer"] = serde_json::json!({"third_party_id": null, "pc_id": "pc-9"})
        }))
        .unwrap();
        assert_eq!(purchase.identity, Some(Identity::Pc("pc-9".into())));
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let ok = "é".repeat(64);
        assert!(parse(&with(|v| v["store_id"] = ok.clone().into())).is_ok());
        let too_long = "é".repeat(65);
        assert_eq!(
            reason(&with(|v| v["store_id"] = too_long.clone().into())).1,
            "store_id: must be at most 64 characters"
        );
    }

    #[test]
    fn quantities_must_be_integers_in_range() {
        let q =
            |value: serde_json::Value| parse(&with(|v| v["items"][0]["quantity"] = value.clone()));
        assert_eq!(q(serde_json::json!(2.0)).unwrap().items[0].quantity, 2);
        assert_eq!(
            q(serde_json::json!(10000)).unwrap().items[0].quantity,
            10000
        );
        assert_eq!(
            q(serde_json::json!(10001)).unwrap_err().reason,
            "items[0].quantity: must be at most 10000"
        );
        assert_eq!(
            q(serde_json::json!("3")).unwrap_err().reason,
            "items[0].quantity: must be an integer"
        );
        assert_eq!(
            q(serde_json::json!(1.5)).unwrap_err().reason,
            "items[0].quantity: must be an integer"
        );
    }

    #[test]
    fn unreadable_text_is_invalid_json_even_in_unknown_fields() {
        let surrogate = VALID.replacen('{', r#"{"note":"\ud800","#, 1);
        assert_eq!(reason(surrogate.as_bytes()).0, ErrorClass::InvalidJson);
        let key = VALID.replacen('{', r#"{"\udc00":1,"#, 1);
        assert_eq!(reason(key.as_bytes()).0, ErrorClass::InvalidJson);
        // The root object is the first level.
        let note = |levels: usize| {
            let deep = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
            VALID.replacen('{', &format!(r#"{{"note":{deep},"#), 1)
        };
        assert!(parse(note(crate::event::MAX_DEPTH - 1).as_bytes()).is_ok());
        assert_eq!(
            reason(note(crate::event::MAX_DEPTH).as_bytes()).0,
            ErrorClass::InvalidJson
        );
    }

    #[test]
    fn numbers_beyond_f64_in_unknown_fields_are_ignored_like_any_unknown_field() {
        // Found by fuzzing: valid JSON grammar that serde_json's `Value` refuses
        // ("number out of range"); the contract ignores unknown fields whatever they hold.
        let text = VALID.replace("\"total\":\"12.50\"", "\"total\":\"12.50\",\"note\":1e708");
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
        assert_eq!(parse(text.as_bytes()), parse(VALID.as_bytes()));
    }

    #[test]
    fn huge_exponents_are_schema_violations_not_panics() {
        let text = VALID.replace("\"total\":\"12.50\"", "\"total\":1e999");
        assert_eq!(reason(text.as_bytes()).0, ErrorClass::SchemaViolation);
        let text = VALID.replace("\"quantity\":1", "\"quantity\":1e999999999999999999");
        assert_eq!(
            reason(text.as_bytes()).1,
            "items[0].quantity: must be at most 10000"
        );
    }

    /// What `root_object` answered before it read the object first: the
    /// syntax checked on its own every time.
    fn syntax_first(text: &str) -> Result<Vec<(String, String)>, EventError> {
        let document: &RawValue = serde_json::from_str(text).map_err(|error| EventError {
            class: ErrorClass::InvalidJson,
            reason: format!("not JSON: {error}"),
        })?;
        wellformed::check(text).map_err(|reason| EventError {
            class: ErrorClass::InvalidJson,
            reason,
        })?;
        object(document, "event").map(|root| members(&root))
    }

    fn members(root: &Object<'_>) -> Vec<(String, String)> {
        root.0
            .iter()
            .map(|(key, raw)| (key.0.to_string(), raw.get().to_owned()))
            .collect()
    }

    proptest::proptest! {
        /// Reading the object first answers as checking the syntax first
        /// did, for texts near a valid event: the same members, or the same
        /// class and reason.
        #[test]
        fn reading_the_object_first_answers_as_checking_the_syntax_first(
            edits in proptest::collection::vec(
                (0usize..400, proptest::sample::select(
                    vec!["", "{", "}", "[", "]", "\"", ",", ":", "\\", "\\u", "\\ud800",
                         "d83d", "1", "-", "e9", " ", "\n", "x", "null", "é"],
                ), proptest::bool::ANY),
                0..4,
            ),
            wrap in proptest::sample::select(vec!["", " ", "[", "\n\t"]),
        ) {
            let mut text = format!("{wrap}{VALID}");
            for (at, piece, replace) in edits {
                let mut at = at.min(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let end = if replace {
                    text[at..].chars().next().map_or(at, |c| at + c.len_utf8())
                } else {
                    at
                };
                text.replace_range(at..end, piece);
            }
            let now = root_object(&text).map(|root| members(&root));
            let before = syntax_first(&text);
            proptest::prop_assert_eq!(now, before, "{}", text);
        }
    }
}
