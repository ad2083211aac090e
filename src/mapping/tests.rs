//! Rule-by-rule tests of the default mapping and its settings.

use super::*;
use crate::event::parse;
use rust_decimal::Decimal;

fn event(edit: impl FnOnce(&mut serde_json::Value)) -> Purchase {
    let mut value = serde_json::json!({
        "event_id": "e-1", "event_type": "sale", "occurred_at": "2026-11-28T11:15:00.9+01:00",
        "store_id": "S-042", "channel": "online", "currency": "EUR", "total": "123.455",
        "customer": {"third_party_id": "CRM-1", "loyalty_tier": "gold"},
        "items": [
            {"sku": "A", "category": "shoes", "quantity": 2, "unit_price": "10.00"},
            {"sku": "B", "category": "bags", "quantity": 1, "unit_price": "20.00"},
            {"sku": "C", "category": "socks", "quantity": 3, "unit_price": "1.5"},
            {"sku": "D", "quantity": 1, "unit_price": "99"}
        ]
    });
    edit(&mut value);
    parse(&serde_json::to_vec(&value).unwrap()).unwrap()
}

fn attrs(mapping: &Mapping, purchase: &Purchase) -> Vec<(String, String)> {
    mapping
        .derive(purchase)
        .unwrap()
        .attributes
        .into_iter()
        .map(|a| (a.name.to_string(), a.value.into()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn a_sale_maps_to_the_contract_table_in_order() {
    assert_eq!(
        attrs(&Mapping::default(), &event(|_| {})),
        pairs(&[
            ("lastPurchaseAt", "2026-11-28T10:15:00Z"),
            ("lastPurchaseStore", "S-042"),
            ("lastPurchaseChannel", "online"),
            ("lastPurchaseTotal", "123.46"),
            ("lastPurchaseCurrency", "EUR"),
            ("lastPurchaseItemCount", "7"),
            ("lastPurchaseCategories", "bags,shoes,socks"),
            ("lastPurchaseTopCategory", "bags"),
            ("loyaltyTier", "gold"),
        ])
    );
}

#[test]
fn an_update_keeps_no_room_for_attributes_its_event_did_not_have() {
    // A return has 4 of the 12 attributes; the update may be buffered a long time.
    let purchase = event(|v| v["event_type"] = "return".into());
    let update = Mapping::default().derive(&purchase).unwrap();
    assert!(update.attributes.len() < AttributeSource::ALL.len());
    assert_eq!(update.attributes.capacity(), update.attributes.len());
}

#[test]
fn a_return_maps_to_the_return_attributes() {
    let purchase = event(|v| v["event_type"] = "return".into());
    assert_eq!(
        attrs(&Mapping::default(), &purchase),
        pairs(&[
            ("loyaltyTier", "gold"),
            ("lastReturnAt", "2026-11-28T10:15:00Z"),
            ("lastReturnStore", "S-042"),
            ("lastReturnTotal", "123.46"),
        ])
    );
}

#[test]
fn totals_round_half_to_even_with_two_digits() {
    for (input, expected) in [
        ("2.675", "2.68"),
        ("2.665", "2.66"),
        ("0.005", "0.00"),
        ("0.015", "0.02"),
        ("0.015001", "0.02"),
        ("7", "7.00"),
        ("0", "0.00"),
        ("999999999999999.995", "1000000000000000.00"),
    ] {
        let total = crate::event::parse_amount_string(input)
            .unwrap_or_else(|_| crate::event::parse_amount_number(input).unwrap());
        assert_eq!(render_total(total), expected, "{input}");
    }
}

#[test]
fn categories_are_ranked_by_spend_then_by_code_point() {
    let purchase = event(|v| {
        v["items"] = serde_json::json!([
            {"sku": "1", "category": "b", "quantity": 1, "unit_price": "5"},
            {"sku": "2", "category": "a", "quantity": 1, "unit_price": "5"},
            {"sku": "3", "category": "Z", "quantity": 1, "unit_price": "5"},
            {"sku": "4", "category": "é", "quantity": 1, "unit_price": "5"},
            {"sku": "5", "category": "c", "quantity": 2, "unit_price": "1"},
            {"sku": "6", "category": "c", "quantity": 1, "unit_price": "3.000001"},
        ])
    });
    assert_eq!(categories_by_spend(&purchase).unwrap(), "c,Z,a,b,é");
}

#[test]
fn categories_are_cut_at_a_category_boundary_counting_characters() {
    // 5 categories of 60 two-byte characters: 4 fit (4*60 + 3 commas = 243), 5 do not.
    let items: Vec<_> = (0..5)
        .map(|i| {
            serde_json::json!({"sku": format!("s{i}"), "category": format!("{i}{}", "é".repeat(59)),
                "quantity": 1, "unit_price": format!("{}", 10 - i)})
        })
        .collect();
    let purchase = event(|v| v["items"] = items.into());
    let value = categories_by_spend(&purchase).unwrap();
    assert_eq!(value.chars().count(), 243);
    assert_eq!(value.split(',').count(), 4);
    assert!(value.starts_with("0é"));
}

#[test]
fn no_category_means_no_category_attributes_and_empty_baskets_count_zero() {
    let purchase = event(|v| v["items"] = serde_json::json!([]));
    let got = attrs(&Mapping::default(), &purchase);
    assert!(got.contains(&("lastPurchaseItemCount".into(), "0".into())));
    assert!(!got.iter().any(|(n, _)| n.contains("Categor")));
}

#[test]
fn an_update_with_more_attributes_than_fit_on_the_stack_keeps_them_all_and_no_room() {
    // The derived ones and 10 constants: past the 16 gathered on the stack.
    let settings = MappingSettings {
        constants: (0..10)
            .map(|i| (format!("c{i}"), format!("v{i}")))
            .collect(),
        ..Default::default()
    };
    let mapping = Mapping::from_settings(&settings).unwrap();
    let purchase = event(|_| {});
    let derived = Mapping::default().derive(&purchase).unwrap().attributes;
    let update = mapping.derive(&purchase).unwrap();
    assert!(update.attributes.len() > 16);
    assert_eq!(update.attributes.len(), derived.len() + 10);
    assert_eq!(update.attributes.capacity(), update.attributes.len());
    assert_eq!(update.attributes[..derived.len()], derived[..]);
    let last = update.attributes.last().unwrap();
    assert_eq!((&*last.name, &*last.value), ("c9", "v9"));
}

#[test]
fn every_value_is_cut_to_256_characters() {
    let long = "€".repeat(300);
    let settings = MappingSettings {
        constants: [("note".to_string(), "x".repeat(10))].into(),
        ..Default::default()
    };
    let mapping = Mapping::from_settings(&settings).unwrap();
    let purchase = event(|v| v["customer"]["loyalty_tier"] = long[..64 * 3].into());
    let got = attrs(&mapping, &purchase);
    assert!(got.iter().all(|(_, value)| value.chars().count() <= 256));
    assert_eq!(
        truncate_chars(long.as_str().into(), 256).chars().count(),
        256
    );
    assert_eq!(truncate_chars("ab".into(), 256), "ab");
}

#[test]
fn operators_can_rename_drop_and_add_constants() {
    let settings = MappingSettings {
        rename: [("lastPurchaseTotal".to_string(), "lastSpend".to_string())].into(),
        drop: vec![
            "lastPurchaseChannel".into(),
            "lastPurchaseCategories".into(),
        ],
        constants: [("source".to_string(), "pos".to_string())].into(),
    };
    let mapping = Mapping::from_settings(&settings).unwrap();
    let got = attrs(&mapping, &event(|_| {}));
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "lastPurchaseAt",
            "lastPurchaseStore",
            "lastSpend",
            "lastPurchaseCurrency",
            "lastPurchaseItemCount",
            "lastPurchaseTopCategory",
            "loyaltyTier",
            "source"
        ]
    );
    assert!(got.contains(&("source".into(), "pos".into())));
}

#[test]
fn bad_mapping_settings_say_what_to_fix() {
    let settings = MappingSettings {
        rename: [
            ("lastPurchaseTotl".to_string(), "x".to_string()),
            (
                "lastPurchaseStore".to_string(),
                "lastPurchaseAt".to_string(),
            ),
        ]
        .into(),
        drop: vec!["nope".into()],
        constants: [("loyaltyTier".to_string(), "x".to_string())].into(),
    };
    let problems = Mapping::from_settings(&settings).unwrap_err();
    let all = problems.join("\n");
    assert!(
        all.contains("mapping.rename: `lastPurchaseTotl` is not a default attribute"),
        "{all}"
    );
    assert!(all.contains("mapping.drop: `nope`"), "{all}");
    assert!(
        all.contains("already the name of another attribute"),
        "{all}"
    );
    assert!(
        all.contains("mapping.constants.loyaltyTier: clashes"),
        "{all}"
    );
}

#[test]
fn decide_skips_anonymous_events_and_dead_letters_invalid_ones() {
    let mapping = Mapping::default();
    let anonymous = br#"{"event_id":"e","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z",
        "store_id":"S","customer":{},"currency":"EUR","total":1,"items":[]}"#;
    assert_eq!(
        mapping.decide(anonymous),
        Decision::Skip(SkipReason::NoIdentity)
    );
    let invalid_anonymous = br#"{"event_id":"","customer":{}}"#;
    assert!(matches!(
        mapping.decide(invalid_anonymous),
        Decision::DeadLetter(_)
    ));
}

/// What `ranked_categories` computed before it sorted instead of hashing:
/// the model its answers are held to.
fn ranked_by_map(purchase: &crate::event::Purchase) -> Vec<&str> {
    let mut spend: std::collections::HashMap<&str, Decimal> = std::collections::HashMap::new();
    for item in &purchase.items {
        if let Some(category) = &item.category {
            let line = item
                .unit_price
                .checked_mul(Decimal::from(item.quantity))
                .unwrap_or(Decimal::MAX);
            let sum = spend.entry(category).or_insert(Decimal::ZERO);
            *sum = sum.checked_add(line).unwrap_or(Decimal::MAX);
        }
    }
    let mut ranked: Vec<(&str, Decimal)> = spend.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    ranked.into_iter().map(|(category, _)| category).collect()
}

proptest::proptest! {
    #[test]
    fn categories_rank_as_a_sum_per_category_in_a_map_does(
        lines in proptest::collection::vec(
            (proptest::option::of("[abcé]{1,2}"), 1u32..10_000, 0u64..2_000, 0u32..7),
            0..40,
        ),
    ) {
        let mut purchase = event(|_| {});
        purchase.items = lines
            .into_iter()
            .enumerate()
            .map(|(i, (category, quantity, units, scale))| crate::event::Item {
                sku: format!("s{i}"),
                category,
                quantity,
                unit_price: Decimal::new(units as i64, scale),
            })
            .collect();
        let model = ranked_by_map(&purchase);
        proptest::prop_assert_eq!(super::attribute::ranked_categories(&purchase), model.clone());
        // `derive` ranks once for both attributes; each still says what the
        // model's ranking says.
        let derived = attrs(&Mapping::default(), &purchase);
        let of = |name: &str| derived.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        proptest::prop_assert_eq!(of("lastPurchaseTopCategory"), model.first().map(|c| c.to_string()));
        // At most 20 distinct categories of up to 2 characters: never cut.
        proptest::prop_assert_eq!(
            of("lastPurchaseCategories"),
            (!model.is_empty()).then(|| model.join(","))
        );
    }
}
