//! The simulator's profile existence, over real HTTP as a client of Adobe Target sees
//! it: single updates to profiles that do not exist answer 200 and change nothing,
//! profiles expire, the fetch API answers Adobe's documents, v2 batches create profiles
//! and v1 batches do not, created profiles become readable after a delay, a share of
//! customers is known at start, and the bulk status answers have Adobe's quirks.

use std::time::Duration;

use pps_target_simulator::{
    known_at_start, BulkFaults, Existence, Faults, Simulator, SimulatorConfig, SimulatorHandle,
    TlsIdentity,
};
use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};

const CLIENT: &str = "acme";
const SUCCESS: &str =
    "<response><success>true</success><message>Request successfully submitted</message></response>";

async fn start(existence: Existence) -> SimulatorHandle {
    start_with(SimulatorConfig {
        existence,
        ..SimulatorConfig::new(CLIENT)
    })
    .await
}

async fn start_with(config: SimulatorConfig) -> SimulatorHandle {
    Simulator::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("the simulator starts on a free port")
}

/// A single update of `id` setting `profile.a=value`: status and body.
async fn update(sim: &SimulatorHandle, id: &str, value: &str) -> (StatusCode, String) {
    let url = format!(
        "{}/m2/{CLIENT}/profile/update?mbox3rdPartyId={id}&profile.a={value}",
        sim.base_url()
    );
    let response = Client::new().post(url).send().await.expect("answers");
    (response.status(), response.text().await.expect("a body"))
}

/// `GET /rest/v1/profiles/{path}?client=acme`: status and body.
async fn fetch(sim: &SimulatorHandle, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let url = format!("{}/rest/v1/profiles/{path}?client={CLIENT}", sim.base_url());
    let mut request = Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("answers");
    (response.status(), response.text().await.expect("a body"))
}

/// The fetched profile's attribute `a`, `None` on a 404.
async fn fetched_a(sim: &SimulatorHandle, id: &str) -> Option<String> {
    let (status, body) = fetch(sim, &format!("thirdPartyId/{id}"), None).await;
    if status == StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(status, StatusCode::OK, "{body}");
    let document: Value = serde_json::from_str(&body).expect("JSON");
    Some(
        document["profileAttributes"]["a"]["value"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

/// Submits `batch=thirdPartyId,a\n{id},{value}...` to `path` (`v2/profile` or
/// `profile`); the raw XML answer.
async fn submit(sim: &SimulatorHandle, path: &str, rows: &[(&str, &str)]) -> String {
    let mut csv = "thirdPartyId,a".to_owned();
    for (id, value) in rows {
        csv.push_str(&format!("\n{id},{value}"));
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("batch", &csv)
        .finish();
    let url = format!("{}/m2/{CLIENT}/{path}/batchUpdate", sim.base_url());
    let response = Client::new()
        .post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("a body")
}

/// The text of `<name>..</name>` in `xml`.
fn element<'a>(xml: &'a str, name: &str) -> &'a str {
    let open = format!("<{name}>");
    let start = xml.find(&open).map(|at| at + open.len());
    let end = xml.find(&format!("</{name}>"));
    match (start, end) {
        (Some(start), Some(end)) => &xml[start..end],
        _ => panic!("no <{name}> in {xml}"),
    }
}

/// GETs a status URL with details: status and body.
async fn poll(url: &str) -> (StatusCode, String) {
    let response = Client::new()
        .get(format!("{url}&showDetails=true"))
        .send()
        .await
        .expect("answers");
    (response.status(), response.text().await.expect("a body"))
}

async fn put_existence(sim: &SimulatorHandle, rules: Value) -> StatusCode {
    Client::new()
        .put(format!("{}/_sim/existence", sim.base_url()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(rules.to_string())
        .send()
        .await
        .expect("answers")
        .status()
}

#[tokio::test]
async fn a_single_update_to_an_unknown_profile_answers_200_changes_nothing_and_is_counted() {
    let sim = start(Existence::faithful()).await;
    assert_eq!(
        update(&sim, "CRM-1", "1").await,
        (StatusCode::OK, SUCCESS.to_owned())
    );
    assert_eq!(fetched_a(&sim, "CRM-1").await, None);
    assert_eq!(sim.profile_third_party("CRM-1"), None);
    assert!(sim.profiles().third_party.is_empty());
    let stats = sim.stats();
    assert_eq!((stats.total, stats.accepted), (1, 1));
    assert_eq!(stats.updates_to_unknown_profiles, 1);
}

#[tokio::test]
async fn profiles_expire_after_their_lifetime_without_writes() {
    let sim = start(Existence {
        lifetime_ms: 1_000,
        ..Existence::all_known()
    })
    .await;
    assert_eq!(update(&sim, "CRM-1", "1").await.0, StatusCode::OK);
    assert_eq!(fetched_a(&sim, "CRM-1").await.as_deref(), Some("1"));
    assert_eq!(fetched_a(&sim, "CRM-2").await.as_deref(), Some(""));
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(fetched_a(&sim, "CRM-1").await, None, "expired");
    assert_eq!(
        fetched_a(&sim, "CRM-2").await,
        None,
        "known at start, expired"
    );
    assert_eq!(update(&sim, "CRM-1", "2").await.0, StatusCode::OK);
    assert_eq!(sim.profile_third_party("CRM-1"), None);
    assert_eq!(sim.stats().updates_to_unknown_profiles, 1);
    // A v2 batch creates it again, without the expired attributes.
    submit(&sim, "v2/profile", &[("CRM-1", "3")]).await;
    assert_eq!(fetched_a(&sim, "CRM-1").await.as_deref(), Some("3"));
}

#[tokio::test]
async fn the_fetch_api_answers_adobes_documents_and_checks_the_token() {
    let sim = start_with(SimulatorConfig {
        token: Some("t0k".into()),
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let (status, _) = fetch(&sim, "thirdPartyId/CRM-1", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = fetch(&sim, "thirdPartyId/CRM-1", Some("t0k")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        body,
        json!({"status": 404, "message": "No profile found for client acme with third party id=CRM-1"})
    );
    let (status, body) = fetch(&sim, "pc-1", Some("t0k")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("No profile found for client acme with tnt id=pc-1"),
        "{body}"
    );

    assert_eq!(
        put_existence(&sim, json!({"known_share": 1.0})).await,
        StatusCode::OK
    );
    assert_eq!(sim.existence().known_share, 1.0);
    let (status, body) = fetch(&sim, "thirdPartyId/CRM-1", Some("t0k")).await;
    assert_eq!(status, StatusCode::OK, "known at start now");
    let blank: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(blank["client"], CLIENT);
    assert_eq!(blank["visitorId"]["thirdPartyId"], "CRM-1");
    assert_eq!(blank["profileAttributes"], json!({}));

    let url = format!(
        "{}/m2/{CLIENT}/profile/update?mbox3rdPartyId=CRM-1&profile.tier=gold",
        sim.base_url()
    );
    let response = Client::new().post(url).bearer_auth("t0k").send().await;
    assert_eq!(response.expect("answers").status(), StatusCode::OK);
    let (_, body) = fetch(&sim, "thirdPartyId/CRM-1", Some("t0k")).await;
    let profile: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(profile["profileAttributes"]["tier"]["value"], "gold");
    let modified = profile["profileAttributes"]["tier"]["modifiedAt"].as_str();
    assert!(modified.is_some_and(|t| t.ends_with('Z')), "{profile}");
    assert_eq!(profile["modifiedAt"].as_str(), modified);

    let counted = sim.stats().fetch;
    assert_eq!(
        (counted.requests, counted.found, counted.not_found),
        (4, 2, 2)
    );
    assert_eq!(sim.stats().total, 1, "fetches are not update requests");
    let invalid = put_existence(&sim, json!({"known_share": 2.0})).await;
    assert_eq!(invalid, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn v2_batches_create_missing_profiles_and_v1_batches_do_not() {
    let sim = start(Existence::faithful()).await;
    let v1 = submit(&sim, "profile", &[("CRM-1", "1"), ("CRM-2", "1")]).await;
    let v1_status = element(&v1, "batchStatus");
    assert!(
        v1_status.starts_with(&format!(
            "{}/m2/{CLIENT}/profile/batchStatus?batchId=",
            sim.base_url()
        )),
        "{v1_status}"
    );
    let (status, details) = poll(v1_status).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(element(&details, "status"), "complete");
    assert_eq!(element(&details, "profilesNotFound"), "2");
    assert_eq!(element(&details, "successfulUpdates"), "0");
    assert_eq!(fetched_a(&sim, "CRM-1").await, None);

    let v2 = submit(&sim, "v2/profile", &[("CRM-1", "2"), ("CRM-2", "2")]).await;
    let (_, details) = poll(element(&v2, "batchStatus")).await;
    assert_eq!(element(&details, "status"), "complete");
    assert_eq!(element(&details, "profilesNotFound"), "0");
    assert_eq!(element(&details, "successfulUpdates"), "2");
    assert_eq!(fetched_a(&sim, "CRM-1").await.as_deref(), Some("2"));

    // Once created, single updates and v1 rows land.
    assert_eq!(update(&sim, "CRM-1", "3").await.0, StatusCode::OK);
    submit(&sim, "profile", &[("CRM-2", "4")]).await;
    assert_eq!(fetched_a(&sim, "CRM-1").await.as_deref(), Some("3"));
    assert_eq!(fetched_a(&sim, "CRM-2").await.as_deref(), Some("4"));
    let stats = sim.stats();
    assert_eq!(stats.bulk.profiles_created, 2);
    assert_eq!(stats.bulk.rows_not_found, 2);
    assert_eq!(stats.bulk.rows_applied, 3);
    assert_eq!(stats.updates_to_unknown_profiles, 0);
}

#[tokio::test]
async fn a_profile_created_by_a_batch_is_readable_only_after_the_delay() {
    let sim = start(Existence {
        readable_after_ms: 1_000,
        ..Existence::faithful()
    })
    .await;
    let answer = submit(&sim, "v2/profile", &[("CRM-1", "batch")]).await;
    let (_, details) = poll(element(&answer, "batchStatus")).await;
    assert_eq!(element(&details, "status"), "complete");
    assert_eq!(fetched_a(&sim, "CRM-1").await, None, "not readable yet");
    assert_eq!(update(&sim, "CRM-1", "single").await.0, StatusCode::OK);
    assert_eq!(sim.stats().updates_to_unknown_profiles, 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(fetched_a(&sim, "CRM-1").await.as_deref(), Some("batch"));
    assert_eq!(update(&sim, "CRM-1", "single").await.0, StatusCode::OK);
    assert_eq!(fetched_a(&sim, "CRM-1").await.as_deref(), Some("single"));
}

#[tokio::test]
async fn the_known_share_decides_by_the_published_hash_which_customers_exist_at_start() {
    let sim = start(Existence {
        known_share: 0.3,
        ..Existence::faithful()
    })
    .await;
    let ids: Vec<String> = (0..100).map(|n| format!("CRM-{n}")).collect();
    let known: Vec<&String> = ids.iter().filter(|id| known_at_start(id, 0.3)).collect();
    assert!((15..=45).contains(&known.len()), "{} known", known.len());
    for id in &ids {
        let expected = known_at_start(id, 0.3);
        let (status, _) = fetch(&sim, &format!("thirdPartyId/{id}"), None).await;
        assert_eq!(status == StatusCode::OK, expected, "{id}");
        assert_eq!(update(&sim, id, "1").await.0, StatusCode::OK);
        assert_eq!(sim.profile_third_party(id).is_some(), expected, "{id}");
    }
    let unknown = (ids.len() - known.len()) as u64;
    assert_eq!(sim.stats().updates_to_unknown_profiles, unknown);
}

#[tokio::test]
async fn the_lenient_switch_lets_a_single_update_create_its_profile() {
    let sim = start(Existence::faithful()).await;
    update(&sim, "CRM-L", "1").await;
    assert_eq!(fetched_a(&sim, "CRM-L").await, None);
    let status = put_existence(&sim, json!({"single_update_creates": true})).await;
    assert_eq!(status, StatusCode::OK);
    update(&sim, "CRM-L", "2").await;
    assert_eq!(fetched_a(&sim, "CRM-L").await.as_deref(), Some("2"));
    assert_eq!(sim.stats().updates_to_unknown_profiles, 1);
}

fn bulk_faults(bulk: BulkFaults) -> Faults {
    Faults {
        bulk: BulkFaults {
            calls_per_minute: 0,
            ..bulk
        },
        ..Faults::none()
    }
}

#[tokio::test]
async fn a_bare_ampersand_status_url_comes_raw_inside_the_xml_and_still_answers() {
    let sim = start_with(SimulatorConfig {
        faults: bulk_faults(BulkFaults {
            status_url_bare_ampersand: true,
            ..BulkFaults::default()
        }),
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let answer = submit(&sim, "v2/profile", &[("CRM-1", "1")]).await;
    let url = element(&answer, "batchStatus");
    let expected = format!(
        "{}/m2/{CLIENT}/v2/profile/batchStatus?client={CLIENT}&batchId=",
        sim.base_url()
    );
    assert!(url.starts_with(&expected), "{answer}");
    assert!(!answer.contains("&amp;"), "{answer}");
    let (status, details) = poll(url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(element(&details, "status"), "complete");
}

#[tokio::test]
async fn a_status_url_on_plain_http_comes_back_while_serving_https() {
    let identity = TlsIdentity::generate().expect("a test CA");
    let config = SimulatorConfig {
        faults: bulk_faults(BulkFaults {
            status_url_plain_http: true,
            ..BulkFaults::default()
        }),
        ..SimulatorConfig::new(CLIENT)
    };
    let sim = Simulator::start_tls(([127, 0, 0, 1], 0).into(), config, &identity)
        .await
        .expect("an HTTPS simulator");
    let trusted = reqwest::Certificate::from_pem(identity.trust_pem().as_bytes()).expect("PEM");
    let client = Client::builder()
        .add_root_certificate(trusted)
        .build()
        .expect("a client");
    let answer = client
        .post(format!(
            "{}/m2/{CLIENT}/v2/profile/batchUpdate",
            sim.base_url()
        ))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("batch=thirdPartyId%2Ca%0ACRM-1%2C1")
        .send()
        .await
        .expect("answers over HTTPS")
        .text()
        .await
        .expect("a body");
    let url = element(&answer, "batchStatus").to_owned();
    let https = sim.base_url();
    let plain = https.replace("https://", "http://");
    assert!(https.starts_with("https://"));
    assert!(
        url.starts_with(&format!(
            "{plain}/m2/{CLIENT}/v2/profile/batchStatus?batchId="
        )),
        "{url}"
    );
    assert!(
        client.get(&url).send().await.is_err(),
        "no HTTP answer on the TLS port"
    );
    let over_https = url.replacen("http://", "https://", 1);
    let status = client.get(over_https).send().await.expect("answers");
    assert_eq!(status.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_status_is_forgotten_after_ten_newer_batches_and_the_batch_still_lands() {
    let sim = start_with(SimulatorConfig {
        faults: bulk_faults(BulkFaults {
            statuses_kept: 10,
            ..BulkFaults::default()
        }),
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let mut status_urls = Vec::new();
    for n in 0..11 {
        let answer = submit(&sim, "v2/profile", &[(&format!("CRM-{n}"), "1")]).await;
        status_urls.push(element(&answer, "batchStatus").to_owned());
    }
    let (status, body) = poll(&status_urls[0]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(element(&body, "success"), "false");
    let (status, body) = poll(&status_urls[1]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(element(&body, "status"), "complete");
    assert_eq!(fetched_a(&sim, "CRM-0").await.as_deref(), Some("1"));
    assert_eq!(sim.stats().bulk.profiles_created, 11);
}
