//! Decoding the parameters of a single profile update (query string and form body)
//! into the profile it names and the attributes it sets. Pure: bytes in, decision out.
//!
//! Both sources follow `application/x-www-form-urlencoded` rules, as Adobe's servers do:
//! `&` separates parameters, the first `=` separates name and value, `+` decodes to a
//! space (send `%2B` for a literal plus) and `%XX` to the byte `XX`; the bytes must then
//! be UTF-8. A `%` not followed by two hex digits is kept literally. The query string
//! comes first, the body second; when an attribute is set twice the later value wins.

use std::borrow::Cow;

use percent_encoding::percent_decode;

use super::store::{IdKind, ProfileKey};

/// The parameter naming a profile by the customer's own id.
pub(crate) const THIRD_PARTY_PARAM: &str = "mbox3rdPartyId";
/// The parameter naming a profile by Target's visitor (pc) id.
pub(crate) const PC_PARAM: &str = "mboxPC";
/// The prefix of every attribute parameter.
const ATTRIBUTE_PREFIX: &str = "profile.";

/// A well-formed update: one profile, the attributes to set in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProfileUpdate {
    pub(crate) key: ProfileKey,
    pub(crate) attributes: Vec<(String, String)>,
}

/// Why an update request is malformed (answered 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum BadUpdate {
    #[error("one of mbox3rdPartyId or mboxPC is required")]
    NoIdentity,
    #[error("give mbox3rdPartyId or mboxPC, not both")]
    BothIdentities,
    #[error("{0} is given more than once")]
    RepeatedIdentity(&'static str),
    #[error("{0} is empty")]
    EmptyIdentity(&'static str),
    #[error("a profile parameter has no attribute name")]
    EmptyAttributeName,
    #[error("a parameter is not URL-encoded UTF-8")]
    NotUtf8,
}

/// Decodes the update in `query` (without the `?`) followed by `body`.
pub(crate) fn parse_update(query: &[u8], body: &[u8]) -> Result<ProfileUpdate, BadUpdate> {
    let mut third_party: Option<String> = None;
    let mut pc: Option<String> = None;
    let mut attributes = Vec::new();
    for (name, value) in pairs(query).chain(pairs(body)) {
        let name = decode(name)?;
        let slot = match name.as_ref() {
            THIRD_PARTY_PARAM => Some((&mut third_party, THIRD_PARTY_PARAM)),
            PC_PARAM => Some((&mut pc, PC_PARAM)),
            _ => None,
        };
        if let Some((slot, param)) = slot {
            if slot.is_some() {
                return Err(BadUpdate::RepeatedIdentity(param));
            }
            let id = decode(value)?;
            if id.is_empty() {
                return Err(BadUpdate::EmptyIdentity(param));
            }
            *slot = Some(id.into_owned());
        } else if let Some(attribute) = name.strip_prefix(ATTRIBUTE_PREFIX) {
            if attribute.is_empty() {
                return Err(BadUpdate::EmptyAttributeName);
            }
            attributes.push((attribute.to_owned(), decode(value)?.into_owned()));
        }
        // Anything else (mbox, session ids, ...) is not ours to check.
    }
    let key = match (third_party, pc) {
        (Some(id), None) => ProfileKey::new(IdKind::ThirdParty, id),
        (None, Some(id)) => ProfileKey::new(IdKind::Pc, id),
        (None, None) => return Err(BadUpdate::NoIdentity),
        (Some(_), Some(_)) => return Err(BadUpdate::BothIdentities),
    };
    Ok(ProfileUpdate { key, attributes })
}

/// The raw `(name, value)` pairs; a pair without `=` has an empty value.
fn pairs(input: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        })
}

/// One name or value: `+` to space, `%XX` to a byte, then strict UTF-8.
pub(crate) fn decode(raw: &[u8]) -> Result<Cow<'_, str>, BadUpdate> {
    if !raw.iter().any(|&b| b == b'+' || b == b'%') {
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| BadUpdate::NotUtf8);
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_decode(&spaced).collect();
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| BadUpdate::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, body: &str) -> Result<ProfileUpdate, BadUpdate> {
        parse_update(query.as_bytes(), body.as_bytes())
    }

    fn attrs(update: &ProfileUpdate) -> Vec<(&str, &str)> {
        update
            .attributes
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn a_query_update_names_the_profile_and_its_attributes() {
        let update = parse(
            "mbox3rdPartyId=CRM-1&profile.lastPurchaseAt=2026-11-28T10%3A15%3A00Z&profile.tier=gold",
            "",
        )
        .expect("well-formed");
        assert_eq!(update.key, ProfileKey::new(IdKind::ThirdParty, "CRM-1"));
        assert_eq!(
            attrs(&update),
            [("lastPurchaseAt", "2026-11-28T10:15:00Z"), ("tier", "gold")]
        );
    }

    #[test]
    fn pc_ids_are_their_own_kind() {
        let update = parse("mboxPC=1368007744041-575948.01_00&profile.a=1", "").expect("ok");
        assert_eq!(
            update.key,
            ProfileKey::new(IdKind::Pc, "1368007744041-575948.01_00")
        );
    }

    #[test]
    fn query_and_body_merge_and_the_later_value_wins() {
        let update = parse("profile.a=1&profile.b=2", "mboxPC=p&profile.a=3").expect("ok");
        assert_eq!(attrs(&update), [("a", "1"), ("b", "2"), ("a", "3")]);
    }

    #[test]
    fn reserved_characters_and_utf8_decode() {
        let update = parse(
            "mbox3rdPartyId=a%2Fb&profile.x=50%25%20off%20%26%20more%3D%2B&profile.y=caf%C3%A9%20%E2%82%AC&profile.z=a+b",
            "",
        )
        .expect("ok");
        assert_eq!(update.key.id(), "a/b");
        assert_eq!(
            attrs(&update),
            [("x", "50% off & more=+"), ("y", "café €"), ("z", "a b")]
        );
    }

    #[test]
    fn a_lone_percent_is_kept_and_a_missing_equals_means_empty() {
        let update = parse("mboxPC=p&profile.x=100%&profile.y", "").expect("ok");
        assert_eq!(attrs(&update), [("x", "100%"), ("y", "")]);
    }

    #[test]
    fn values_may_contain_an_unencoded_equals_sign() {
        let update = parse("mboxPC=p&profile.eq=a=b", "").expect("ok");
        assert_eq!(attrs(&update), [("eq", "a=b")]);
    }

    #[test]
    fn other_parameters_are_ignored() {
        let update = parse("mbox=target-global-mbox&mboxPC=p&&profile.a=1&", "").expect("ok");
        assert_eq!(attrs(&update), [("a", "1")]);
    }

    #[test]
    fn identity_must_be_exactly_one_non_empty_id() {
        assert_eq!(parse("profile.a=1", ""), Err(BadUpdate::NoIdentity));
        assert_eq!(
            parse("mboxPC=p", "mbox3rdPartyId=t"),
            Err(BadUpdate::BothIdentities)
        );
        assert_eq!(
            parse("mboxPC=p&mboxPC=q", ""),
            Err(BadUpdate::RepeatedIdentity(PC_PARAM))
        );
        assert_eq!(
            parse("mbox3rdPartyId=", ""),
            Err(BadUpdate::EmptyIdentity(THIRD_PARTY_PARAM))
        );
    }

    #[test]
    fn malformed_names_and_bytes_are_rejected_not_panicked_on() {
        assert_eq!(
            parse("mboxPC=p&profile.=1", ""),
            Err(BadUpdate::EmptyAttributeName)
        );
        assert_eq!(parse("mboxPC=p&profile.a=%FF", ""), Err(BadUpdate::NotUtf8));
        assert_eq!(parse_update(b"mboxPC=\xff", b""), Err(BadUpdate::NotUtf8));
    }
}
