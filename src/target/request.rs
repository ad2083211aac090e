//! The single profile update request, built exactly as `docs/contract.md` section 7 says:
//! URL-encoded UTF-8 parameters in the query string, `mbox3rdPartyId` or
//! `mboxPC` first, then `profile.NAME=value`; a form body instead when the
//! request target would pass 8 KB.

use crate::mapping::ProfileUpdate;
pub(crate) use crate::mapping::PARAMETER;
use percent_encoding::utf8_percent_encode;
use reqwest::Url;

// `push_encoded` writes what `PARAMETER` says with `is_unreserved`; a
// property test holds the two together.

/// RFC 3986's unreserved characters: the bytes [`PARAMETER`] leaves as they are.
const fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The longest request target (path and query) sent as a query string.
pub const MAX_REQUEST_TARGET: usize = 8 * 1024;

/// Where update requests go, computed once from the settings.
#[derive(Debug, Clone)]
pub struct UpdateEndpoint {
    url: Url,
    path_len: usize,
}

impl UpdateEndpoint {
    /// `{base_url}/m2/{client_code}/profile/update`.
    pub fn new(base_url: &str, client_code: &str) -> Result<UpdateEndpoint, String> {
        let base = base_url.trim_end_matches('/');
        let url = format!(
            "{base}/m2/{}/profile/update",
            utf8_percent_encode(client_code, PARAMETER)
        );
        let url = Url::parse(&url).map_err(|error| format!("{url}: {error}"))?;
        Ok(UpdateEndpoint {
            path_len: url.path().len(),
            url,
        })
    }

    /// The URL without a query.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The request for one update. The URL is the endpoint's, parsed once,
    /// with the query set: the parameters are encoded already, so only they
    /// are looked at again, not the scheme, host and path of every request.
    pub fn request(&self, update: &ProfileUpdate) -> UpdateRequest {
        let parameters = encode_parameters(update);
        if self.path_len + 1 + parameters.len() <= MAX_REQUEST_TARGET {
            let mut url = self.url.clone();
            url.set_query(Some(&parameters));
            UpdateRequest {
                url,
                form_body: None,
            }
        } else {
            UpdateRequest {
                url: self.url.clone(),
                form_body: Some(parameters),
            }
        }
    }
}

/// One POST: parameters either in the URL or in a form body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRequest {
    /// The full URL (with the query when there is no body).
    pub url: Url,
    /// `application/x-www-form-urlencoded` parameters, for long updates.
    pub form_body: Option<String>,
}

/// `mbox3rdPartyId=CRM-1&profile.lastPurchaseAt=2026-11-28T10%3A15%3A00Z&...`
///
/// Each attribute's `&profile.NAME=` was encoded once, when its name was
/// interned; only the id and the values are encoded here, into a buffer
/// sized for the worst case (every byte escaped): one allocation per update.
pub fn encode_parameters(update: &ProfileUpdate) -> String {
    let identity = update.identity.id();
    let most = update.identity.param().len()
        + 1
        + 3 * identity.len()
        + update
            .attributes
            .iter()
            .map(|a| a.name.parameter_prefix().len() + 3 * a.value.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(most);
    out.extend_from_slice(update.identity.param().as_bytes());
    out.push(b'=');
    push_encoded(&mut out, identity);
    for attribute in &update.attributes {
        out.extend_from_slice(attribute.name.parameter_prefix().as_bytes());
        push_encoded(&mut out, &attribute.value);
    }
    // Only ASCII was written: the parameter names and prefixes are ASCII,
    // and every other byte went through `push_encoded`.
    String::from_utf8(out)
        .unwrap_or_else(|error| unreachable!("percent-encoded parameters are ASCII: {error}"))
}

/// Whether each byte is one of RFC 3986's unreserved characters, the bytes
/// [`PARAMETER`] leaves as they are: one look-up per byte.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = is_unreserved(byte as u8);
        byte += 1;
    }
    table
};

/// Appends `text` encoded as [`PARAMETER`] says (what `utf8_percent_encode`
/// writes): runs of unreserved characters copied at once, every other byte
/// as `%XX`. Written out because this runs for every attribute of every
/// update, and the general encoder's iterator costs more than the bytes.
fn push_encoded(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = text.as_bytes();
    let mut run = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if UNRESERVED[usize::from(byte)] {
            continue;
        }
        out.extend_from_slice(&bytes[run..at]);
        out.extend_from_slice(&[
            b'%',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0x0F)],
        ]);
        run = at + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Identity;
    use crate::mapping::Attribute;

    fn update(identity: Identity, attributes: &[(&str, &str)]) -> ProfileUpdate {
        ProfileUpdate {
            identity,
            attributes: attributes
                .iter()
                .map(|(n, v)| Attribute {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            occurred_at: crate::event::parse_rfc3339("2026-11-28T10:15:00Z").unwrap(),
        }
    }

    #[test]
    fn parameters_are_url_encoded_utf8_in_the_query_string() {
        let endpoint = UpdateEndpoint::new("https://acme.tt.omtrdc.net/", "acme").unwrap();
        let request = endpoint.request(&update(
            Identity::ThirdParty("CRM-1".into()),
            &[
                ("lastPurchaseAt", "2026-11-28T10:15:00Z"),
                ("store", "Zürich Süd & Co+=%"),
            ],
        ));
        assert_eq!(
            request.url.as_str(),
            "https://acme.tt.omtrdc.net/m2/acme/profile/update?mbox3rdPartyId=CRM-1\
             &profile.lastPurchaseAt=2026-11-28T10%3A15%3A00Z\
             &profile.store=Z%C3%BCrich%20S%C3%BCd%20%26%20Co%2B%3D%25"
        );
        assert_eq!(request.form_body, None);
    }

    proptest::proptest! {
        /// The hand-written encoder writes what the general one writes.
        #[test]
        fn parameters_are_encoded_as_the_percent_encoding_crate_does(text in "(?s).{0,64}") {
            let mut out = Vec::new();
            push_encoded(&mut out, &text);
            let expected = utf8_percent_encode(&text, PARAMETER).to_string();
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    proptest::proptest! {
        /// With the names' prefixes encoded once, the whole query is still
        /// what encoding every part with the general encoder makes.
        #[test]
        fn a_whole_query_is_what_the_general_encoder_makes(
            id in "(?s).{1,16}",
            attributes in proptest::collection::vec(("(?s).{1,12}", "(?s).{0,24}"), 0..6),
        ) {
            let encode = |text: &str| utf8_percent_encode(text, PARAMETER).to_string();
            let mut expected = format!("mbox3rdPartyId={}", encode(&id));
            for (name, value) in &attributes {
                expected.push_str(&format!("&profile.{}={}", encode(name), encode(value)));
            }
            let refs: Vec<(&str, &str)> =
                attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let update = update(Identity::ThirdParty(id.as_str().into()), &refs);
            proptest::prop_assert_eq!(encode_parameters(&update), expected);
        }
    }

    #[test]
    fn pc_ids_use_mbox_pc() {
        let endpoint = UpdateEndpoint::new("http://127.0.0.1:1", "acme").unwrap();
        let request = endpoint.request(&update(
            Identity::Pc("1368007744041-575948.01_00".into()),
            &[],
        ));
        assert!(request
            .url
            .as_str()
            .ends_with("?mboxPC=1368007744041-575948.01_00"));
    }

    #[test]
    fn requests_over_8_kb_move_their_parameters_to_a_form_body() {
        let endpoint = UpdateEndpoint::new("http://127.0.0.1:1", "acme").unwrap();
        let big = "日".repeat(256); // 9 bytes encoded per character
        let attributes: Vec<(String, String)> =
            (0..4).map(|i| (format!("a{i}"), big.clone())).collect();
        let refs: Vec<(&str, &str)> = attributes
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let request = endpoint.request(&update(Identity::ThirdParty("x".into()), &refs));
        assert_eq!(
            request.url.as_str(),
            "http://127.0.0.1:1/m2/acme/profile/update"
        );
        let body = request.form_body.unwrap();
        assert!(body.len() > MAX_REQUEST_TARGET);
        assert!(body.starts_with("mbox3rdPartyId=x&profile.a0=%E6%97%A5"));
        // Exactly at the limit stays in the query.
        let path_len = "/m2/acme/profile/update?".len();
        let filler = "a".repeat(MAX_REQUEST_TARGET - path_len - "mbox3rdPartyId=".len());
        let request = endpoint.request(&update(Identity::ThirdParty(filler.into()), &[]));
        assert_eq!(request.form_body, None);
        assert_eq!(
            request.url.path().len() + 1 + request.url.query().unwrap().len(),
            MAX_REQUEST_TARGET
        );
    }
}
