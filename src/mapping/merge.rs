//! Coalescing (`docs/contract.md` section 5): several pending updates of one profile
//! sent as one. Per attribute, the value of the event with the latest
//! `(occurred_at, partition offset)` wins, so the result equals sending each
//! event's update in order.

use super::ProfileUpdate;

/// Merges updates of one profile; each comes with its partition offset.
/// There is always a first one, so the merge cannot fail.
pub fn merge_updates<'a>(
    first: (&'a ProfileUpdate, i64),
    rest: impl IntoIterator<Item = (&'a ProfileUpdate, i64)>,
) -> ProfileUpdate {
    let mut ordered: Vec<(&ProfileUpdate, i64)> = std::iter::once(first).chain(rest).collect();
    ordered.sort_by_key(|a| (a.0.occurred_at, a.1));
    let base = ordered[0].0;
    let mut merged = ProfileUpdate {
        identity: base.identity.clone(),
        attributes: Vec::new(),
        occurred_at: base.occurred_at,
    };
    for (update, _) in ordered {
        for attribute in &update.attributes {
            match merged
                .attributes
                .iter_mut()
                .find(|a| a.name == attribute.name)
            {
                Some(existing) => existing.value.clone_from(&attribute.value),
                None => merged.attributes.push(attribute.clone()),
            }
        }
        merged.occurred_at = update.occurred_at;
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_rfc3339, Identity};
    use crate::mapping::Attribute;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn update(second: u32, attributes: &[(&str, &str)]) -> ProfileUpdate {
        ProfileUpdate {
            identity: Identity::ThirdParty("CRM-1".into()),
            attributes: attributes
                .iter()
                .map(|(n, v)| Attribute {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            occurred_at: parse_rfc3339(&format!("2026-11-28T10:00:{second:02}Z")).unwrap(),
        }
    }

    #[test]
    fn the_latest_event_wins_per_attribute_and_others_are_kept() {
        let sale = update(1, &[("lastPurchaseAt", "t1"), ("loyaltyTier", "silver")]);
        let ret = update(2, &[("lastReturnAt", "t2"), ("loyaltyTier", "gold")]);
        let merged = merge_updates((&ret, 8), [(&sale, 7)]);
        let got: Vec<(&str, &str)> = merged
            .attributes
            .iter()
            .map(|a| (&*a.name, a.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("lastPurchaseAt", "t1"),
                ("loyaltyTier", "gold"),
                ("lastReturnAt", "t2")
            ]
        );
        assert_eq!(merged.occurred_at, ret.occurred_at);
    }

    #[test]
    fn equal_times_are_ordered_by_offset() {
        let a = update(5, &[("x", "from offset 3")]);
        let b = update(5, &[("x", "from offset 9")]);
        assert_eq!(
            merge_updates((&b, 9), [(&a, 3)]).attributes[0].value,
            "from offset 9"
        );
    }

    proptest! {
        /// Target keeps the last value of every attribute: sending events one
        /// by one, in order, or coalesced in any grouping gives the same state.
        #[test]
        fn coalesced_or_not_target_ends_in_the_same_state(
            events in prop::collection::vec(prop::collection::vec((0usize..4, 0u8..5), 0..4), 1..12),
            cuts in prop::collection::vec(any::<bool>(), 12),
        ) {
            let names = ["a", "b", "c", "d"];
            let updates: Vec<ProfileUpdate> = events
                .iter()
                .enumerate()
                .map(|(i, attrs)| {
                    let mut seen = Vec::new();
                    let pairs: Vec<(String, String)> = attrs
                        .iter()
                        .filter(|(n, _)| { let new = !seen.contains(n); seen.push(*n); new })
                        .map(|(n, v)| (names[*n].to_owned(), format!("e{i}v{v}")))
                        .collect();
                    let refs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                    update(i as u32, &refs)
                })
                .collect();
            let apply = |state: &mut BTreeMap<String, String>, u: &ProfileUpdate| {
                for a in &u.attributes {
                    state.insert(a.name.to_string(), a.value.to_string());
                }
            };
            let mut one_by_one = BTreeMap::new();
            for u in &updates {
                apply(&mut one_by_one, u);
            }
            let mut coalesced = BTreeMap::new();
            let mut group: Vec<(&ProfileUpdate, i64)> = Vec::new();
            for (i, u) in updates.iter().enumerate() {
                group.push((u, i as i64));
                if cuts[i] || i == updates.len() - 1 {
                    let mut drained = group.drain(..);
                    let first = drained.next().unwrap();
                    apply(&mut coalesced, &merge_updates(first, drained));
                }
            }
            prop_assert_eq!(one_by_one, coalesced);
        }
    }
}
