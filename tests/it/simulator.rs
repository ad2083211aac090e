//! The Target simulator over real HTTP: what a client of Adobe Target would see, and
//! what tests of the service will rely on (read-back, faults, statistics).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use pps_target_simulator::{
    Existence, Failure, Faults, Latency, ProfileCounts, RateLimit, RetryAfter, SimStats, Simulator,
    SimulatorConfig, SimulatorHandle,
};
use reqwest::{header, Client, Response, StatusCode};
use serde_json::{json, Value};

const CLIENT: &str = "acme";
const SUCCESS: &str =
    "<response><success>true</success><message>Request successfully submitted</message></response>";

/// Starts a simulator with the lenient existence rule (a single update creates its
/// profile), which the tests of the update path's mechanics rely on.
async fn start(config: SimulatorConfig) -> SimulatorHandle {
    start_with(SimulatorConfig {
        existence: Existence::lenient(),
        ..config
    })
    .await
}

/// Starts a simulator exactly as configured.
async fn start_with(config: SimulatorConfig) -> SimulatorHandle {
    Simulator::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("the simulator starts on a free port")
}

async fn start_plain() -> SimulatorHandle {
    start(SimulatorConfig::new(CLIENT)).await
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// `mbox3rdPartyId=ID&profile.NAME=VALUE...`, every part percent-encoded.
fn third_party_query(id: &str, attributes: &[(&str, &str)]) -> String {
    let mut query = format!("mbox3rdPartyId={}", encode(id));
    for (name, value) in attributes {
        query.push_str(&format!("&profile.{}={}", encode(name), encode(value)));
    }
    query
}

fn update_url(sim: &SimulatorHandle, query: &str) -> String {
    format!("{}/m2/{CLIENT}/profile/update?{query}", sim.base_url())
}

async fn post(sim: &SimulatorHandle, query: &str) -> Response {
    Client::new()
        .post(update_url(sim, query))
        .send()
        .await
        .expect("the simulator answers")
}

async fn read_back(sim: &SimulatorHandle, id: &str) -> (StatusCode, Value) {
    let url = format!(
        "{}/rest/v1/profiles/thirdPartyId/{}?client={CLIENT}",
        sim.base_url(),
        encode(id)
    );
    let response = Client::new().get(url).send().await.expect("answers");
    let status = response.status();
    (status, parse_json(response).await)
}

fn attributes(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    )
}

async fn parse_json<T: serde::de::DeserializeOwned>(response: Response) -> T {
    let text = response.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

fn to_json(value: &Value) -> String {
    value.to_string()
}

/// Polls the statistics until `done` holds, for at most 5 s.
async fn wait_for_stats(sim: &SimulatorHandle, done: impl Fn(&SimStats) -> bool) -> SimStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = sim.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_query_string_update_is_acknowledged_and_read_back() {
    let sim = start_plain().await;
    let query = third_party_query(
        "CRM-1",
        &[
            ("lastPurchaseAt", "2026-11-28T10:15:00Z"),
            ("lastPurchaseTotal", "123.45"),
        ],
    );
    let response = post(&sim, &query).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .is_ok_and(|t| t.starts_with("text/xml")));
    assert_eq!(response.text().await.expect("a body"), SUCCESS);

    let (status, profile) = read_back(&sim, "CRM-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(profile["client"], CLIENT);
    assert_eq!(profile["visitorId"]["thirdPartyId"], "CRM-1");
    assert!(profile["modifiedAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let attrs = &profile["profileAttributes"];
    assert_eq!(attrs["lastPurchaseAt"]["value"], "2026-11-28T10:15:00Z");
    assert_eq!(attrs["lastPurchaseTotal"]["value"], "123.45");
    assert_eq!(
        attrs["lastPurchaseTotal"]["modifiedAt"],
        profile["modifiedAt"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn get_updates_are_accepted_like_posts() {
    let sim = start_plain().await;
    let url = update_url(&sim, &third_party_query("g", &[("a", "1")]));
    let response = Client::new().get(url).send().await.expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sim.profile_third_party("g"), attributes(&[("a", "1")]));
}

#[tokio::test]
async fn a_form_body_update_merges_with_the_query_and_the_body_wins() {
    let sim = start_plain().await;
    let response = Client::new()
        .post(update_url(&sim, "profile.a=from-query&profile.b=query"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("mbox3rdPartyId=F-1&profile.a=from%20body")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        sim.profile_third_party("F-1"),
        attributes(&[("a", "from body"), ("b", "query")])
    );
}

#[tokio::test]
async fn reserved_characters_and_utf8_round_trip_in_query_and_body() {
    let sim = start_plain().await;
    let tricky = "50% off & more = a+b, café 🛒 / 中文 ?#";
    let query = third_party_query("UTF-1", &[("q", tricky), ("name with space", "x")]);
    assert_eq!(post(&sim, &query).await.status(), StatusCode::OK);
    let body = format!("mboxPC=pc-1&profile.b={}", encode(tricky));
    let response = Client::new()
        .post(format!("{}/m2/{CLIENT}/profile/update", sim.base_url()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);

    assert_eq!(
        sim.profile_third_party("UTF-1"),
        attributes(&[("name with space", "x"), ("q", tricky)])
    );
    assert_eq!(sim.profile_pc("pc-1"), attributes(&[("b", tricky)]));
    let (_, profile) = read_back(&sim, "UTF-1").await;
    assert_eq!(profile["profileAttributes"]["q"]["value"], tricky);
}

#[tokio::test]
async fn an_unencoded_plus_is_a_space_and_an_encoded_plus_is_a_plus() {
    let sim = start_plain().await;
    let response = post(
        &sim,
        "mbox3rdPartyId=P&profile.raw=a+b&profile.encoded=a%2Bb",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        sim.profile_third_party("P"),
        attributes(&[("encoded", "a+b"), ("raw", "a b")])
    );
}

#[tokio::test]
async fn pc_id_profiles_are_separate_from_third_party_profiles() {
    let sim = start_plain().await;
    post(&sim, "mbox3rdPartyId=same&profile.kind=third").await;
    post(&sim, "mboxPC=same&profile.kind=pc").await;
    assert_eq!(
        sim.profile_third_party("same"),
        attributes(&[("kind", "third")])
    );
    assert_eq!(sim.profile_pc("same"), attributes(&[("kind", "pc")]));
    let url = format!("{}/rest/v1/profiles/same?client={CLIENT}", sim.base_url());
    let profile = Client::new().get(url).send().await.expect("answers");
    let profile: Value = parse_json(profile).await;
    assert_eq!(profile["visitorId"]["tntId"], "same");
    assert_eq!(profile["profileAttributes"]["kind"]["value"], "pc");
}

#[tokio::test]
async fn unknown_profiles_read_back_as_adobes_404_document() {
    let sim = start_plain().await;
    let (status, body) = read_back(&sim, "nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"status": 404, "message": "No profile found for client acme with third party id=nobody"})
    );
}

#[tokio::test]
async fn a_missing_or_doubled_identity_is_a_400_that_changes_nothing() {
    let sim = start_plain().await;
    for query in [
        "profile.a=1",
        "mbox3rdPartyId=t&mboxPC=p&profile.a=1",
        "mbox3rdPartyId=t&mbox3rdPartyId=u",
        "mbox3rdPartyId=&profile.a=1",
        "mbox3rdPartyId=t&profile.a=%FF",
    ] {
        let response = post(&sim, query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = response.text().await.expect("a body");
        assert!(body.contains("<success>false</success>"), "{body}");
    }
    assert_eq!(sim.profiles(), Default::default());
}

#[tokio::test]
async fn a_wrong_client_code_is_404() {
    let sim = start_plain().await;
    let url = format!(
        "{}/m2/other/profile/update?mbox3rdPartyId=t&profile.a=1",
        sim.base_url()
    );
    let response = Client::new().post(url).send().await.expect("answers");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(sim.profile_third_party("t"), None);
    let url = format!(
        "{}/rest/v1/profiles/thirdPartyId/t?client=other",
        sim.base_url()
    );
    let response = Client::new().get(url).send().await.expect("answers");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_token_is_required_exactly_and_can_change_at_runtime() {
    let sim = start(SimulatorConfig {
        token: Some("s3cret".into()),
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let client = Client::new();
    let url = update_url(&sim, "mbox3rdPartyId=T&profile.a=1");
    let send = |auth: Option<&str>| {
        let mut request = client.post(&url);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        async move { request.send().await.expect("answers").status() }
    };
    assert_eq!(send(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Some("Bearer wrong")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Some("bearer s3cret")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Some("Bearer  s3cret")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Some("s3cret")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(sim.profile_third_party("T"), None);
    assert_eq!(send(Some("Bearer s3cret")).await, StatusCode::OK);

    let (status, _) = read_back(&sim, "T").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "read-back needs the token too"
    );

    sim.set_token(Some("rotated".into()));
    assert_eq!(send(Some("Bearer s3cret")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Some("Bearer rotated")).await, StatusCode::OK);
    sim.set_token(None);
    assert_eq!(send(None).await, StatusCode::OK);
    assert_eq!(sim.stats().by_status.get(&401), Some(&6));
}

#[tokio::test]
async fn injected_503_carries_retry_after_and_changes_nothing() {
    let seconds = Failure::new(503, 1.0).with_retry_after(RetryAfter::Seconds(7));
    let sim = start(SimulatorConfig {
        faults: Faults {
            failures: vec![seconds],
            ..Faults::none()
        },
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let response = post(&sim, "mbox3rdPartyId=R&profile.a=1").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    assert_eq!(sim.profile_third_party("R"), None);

    let date = Failure::new(503, 1.0).with_retry_after(RetryAfter::HttpDate(30));
    sim.set_faults(Faults {
        failures: vec![date],
        ..Faults::none()
    })
    .expect("valid faults");
    let response = post(&sim, "mbox3rdPartyId=R&profile.a=1").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let header = response.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("ASCII");
    let at = httpdate::parse_http_date(header).expect("an HTTP date");
    let ahead = at
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(ahead > Duration::from_secs(25), "{ahead:?}");

    sim.set_faults(Faults::none()).expect("valid faults");
    assert_eq!(
        post(&sim, "mbox3rdPartyId=R&profile.a=1").await.status(),
        StatusCode::OK
    );
    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.rejected), (1, 2));
}

#[tokio::test]
async fn a_partial_failure_rate_rejects_about_that_share() {
    let sim = start(SimulatorConfig {
        faults: Faults {
            failures: vec![Failure::new(500, 0.5)],
            ..Faults::none()
        },
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    for i in 0..200 {
        post(&sim, &format!("mbox3rdPartyId=c{i}&profile.a=1")).await;
    }
    let stats = sim.stats();
    let failed = stats.by_status.get(&500).copied().unwrap_or(0);
    assert!((60..=140).contains(&failed), "{failed} of 200 failed");
    assert_eq!(sim.profiles().third_party.len() as u64, stats.accepted);
}

#[tokio::test]
async fn the_rate_limit_answers_503_with_retry_after_1_beyond_the_burst() {
    let sim = start(SimulatorConfig {
        faults: Faults {
            rate_limit: Some(RateLimit {
                per_second: 2.0,
                burst: 3,
            }),
            ..Faults::none()
        },
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let response = post(&sim, &format!("mbox3rdPartyId=r{i}&profile.a=1")).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
        statuses.push(response.status().as_u16());
    }
    let accepted = statuses.iter().filter(|&&s| s == 200).count();
    assert!((3..=4).contains(&accepted), "{statuses:?}");
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(sim.profiles().third_party.len(), accepted);
}

#[tokio::test]
async fn sustained_load_is_held_to_the_enforced_rate() {
    let sim = start(SimulatorConfig {
        faults: Faults {
            rate_limit: Some(RateLimit {
                per_second: 40.0,
                burst: 5,
            }),
            ..Faults::none()
        },
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let url = update_url(&sim, &format!("mbox3rdPartyId=w{w}&profile.a=1"));
            tokio::spawn(async move {
                let client = Client::new();
                while started.elapsed() < Duration::from_millis(1500) {
                    let _ = client.post(&url).send().await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("the worker finishes");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = sim.stats();
    let ceiling = 5.0 + 40.0 * elapsed + 1.0;
    assert!(
        stats.accepted as f64 <= ceiling,
        "{} > {ceiling}",
        stats.accepted
    );
    assert!(
        stats.accepted as f64 >= 40.0 * elapsed * 0.7,
        "{}",
        stats.accepted
    );
    assert!(stats.by_status.get(&503).copied().unwrap_or(0) > 0);
    let (_, busiest) = stats.accepted_per_second.busiest().expect("some accepted");
    assert!(busiest <= 5 + 40 + 1, "busiest second {busiest}");
}

#[tokio::test]
async fn held_requests_wait_unanswered_until_released_then_succeed() {
    let sim = start_plain().await;
    sim.hold();
    let requests: Vec<_> = (0..3)
        .map(|i| {
            let url = update_url(&sim, &format!("mbox3rdPartyId=h{i}&profile.a=1"));
            tokio::spawn(async move { Client::new().post(url).send().await.map(|r| r.status()) })
        })
        .collect();
    let stats = wait_for_stats(&sim, |s| s.held == 3).await;
    assert_eq!((stats.held, stats.in_flight, stats.total), (3, 3, 3));
    assert!(stats.holding);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        requests.iter().all(|r| !r.is_finished()),
        "nothing is answered"
    );
    assert!(sim.profiles().third_party.is_empty());

    sim.release();
    for request in requests {
        let status = request.await.expect("joins").expect("answered");
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(sim.profiles().third_party.len(), 3);
    let stats = sim.stats();
    assert_eq!((stats.held, stats.accepted), (0, 3));
    assert!(!stats.holding);
}

#[tokio::test]
async fn a_hanging_request_times_the_client_out_without_blocking_others() {
    let sim = start(SimulatorConfig {
        faults: Faults {
            hang_probability: 1.0,
            ..Faults::none()
        },
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let impatient = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("a client");
    let error = impatient
        .post(update_url(&sim, "mbox3rdPartyId=H&profile.a=1"))
        .send()
        .await
        .expect_err("never answered");
    assert!(error.is_timeout(), "{error}");
    assert_eq!(sim.stats().hung, 1);
    assert_eq!(sim.profile_third_party("H"), None);

    // Another one hangs in the background while the faults change.
    let background = tokio::spawn({
        let url = update_url(&sim, "mbox3rdPartyId=H2&profile.a=1");
        async move { Client::new().post(url).send().await.map(|r| r.status()) }
    });
    wait_for_stats(&sim, |s| s.hung == 2).await;
    sim.set_faults(Faults::none()).expect("valid faults");
    let response = post(&sim, "mbox3rdPartyId=ok&profile.a=1").await;
    assert_eq!(response.status(), StatusCode::OK);

    let stopping = Instant::now();
    sim.shutdown().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "hung requests end at shutdown"
    );
    let status = background.await.expect("joins");
    assert!(status.map_or(true, |s| s == StatusCode::SERVICE_UNAVAILABLE));
}

#[tokio::test]
async fn a_reset_fault_closes_the_connection_without_a_byte_of_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start(SimulatorConfig {
        faults: Faults {
            reset_probability: 1.0,
            ..Faults::none()
        },
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connects");
    let request = format!(
        "POST /m2/{CLIENT}/profile/update?mbox3rdPartyId=R&profile.a=1 HTTP/1.1\r\n\
         Host: {}\r\nContent-Length: 0\r\n\r\n",
        sim.addr()
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the connection ends at once");
    match read {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(_) => panic!("closed without a reset after {} bytes", answer.len()),
    }
    assert!(
        answer.is_empty(),
        "no answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let stats = sim.stats();
    assert_eq!((stats.total, stats.resets), (1, 1));
    assert!(stats.by_status.is_empty(), "{:?}", stats.by_status);
    assert_eq!(sim.profile_third_party("R"), None);

    sim.set_faults(Faults::none()).expect("valid faults");
    let response = post(&sim, "mbox3rdPartyId=R&profile.a=1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sim.stats().resets, 1);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let sim = start(SimulatorConfig {
        faults: Faults {
            latency: Latency {
                fixed_ms: 150,
                jitter_ms: 20,
            },
            ..Faults::none()
        },
        ..SimulatorConfig::new(CLIENT)
    })
    .await;
    let started = Instant::now();
    let response = post(&sim, "mbox3rdPartyId=L&profile.a=1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn an_oversized_query_is_414_and_the_same_update_fits_in_a_form_body() {
    let sim = start_plain().await;
    let big = "x".repeat(9000);
    let query = third_party_query("B", &[("big", &big)]);
    assert_eq!(post(&sim, &query).await.status(), StatusCode::URI_TOO_LONG);
    let response = Client::new()
        .post(format!("{}/m2/{CLIENT}/profile/update", sim.base_url()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(query)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sim.profile_third_party("B"), attributes(&[("big", &big)]));
}

#[tokio::test]
async fn stats_count_requests_by_outcome_per_second_and_per_profile() {
    let sim = start_plain().await;
    for value in ["1", "2", "3"] {
        post(&sim, &format!("mbox3rdPartyId=S-1&profile.n={value}")).await;
    }
    post(&sim, "mboxPC=S-pc&profile.n=1").await;
    post(&sim, "profile.n=no-identity").await;
    let wrong_client = format!(
        "{}/m2/other/profile/update?mbox3rdPartyId=S-1",
        sim.base_url()
    );
    Client::new()
        .post(wrong_client)
        .send()
        .await
        .expect("answers");

    let stats = sim.stats();
    assert_eq!((stats.total, stats.accepted, stats.rejected), (6, 4, 2));
    assert_eq!(
        stats.by_status,
        [(200, 4), (400, 1), (404, 1)].into_iter().collect()
    );
    assert_eq!(stats.requests_per_second.total(), 6);
    assert_eq!(stats.accepted_per_second.total(), 4);
    assert!(stats.accepted_per_second.busiest().is_some());
    assert!(stats.max_in_flight >= 1);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(
        stats.profiles.third_party["S-1"],
        ProfileCounts {
            requests: 4,
            accepted: 3
        }
    );
    assert_eq!(stats.profiles.pc["S-pc"].accepted, 1);
    assert_eq!(sim.profile_third_party("S-1"), attributes(&[("n", "3")]));

    let over_http = Client::new()
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .expect("answers");
    let over_http: SimStats = parse_json(over_http).await;
    assert_eq!(over_http.total, 6, "admin calls are not update requests");
    assert_eq!(over_http.by_status, stats.by_status);
    assert_eq!(over_http.profiles, stats.profiles);

    sim.reset();
    let stats = sim.stats();
    assert_eq!((stats.total, stats.accepted), (0, 0));
    assert!(sim.profiles().third_party.is_empty());
}

#[tokio::test]
async fn admin_endpoints_drive_faults_token_hold_and_reset_from_outside() {
    let sim = start_plain().await;
    let admin = |path: &str| format!("{}/_sim/{path}", sim.base_url());
    let client = Client::new();

    let faults =
        json!({"failures": [{"status": 503, "probability": 1.0, "retry_after": {"seconds": 4}}]});
    let response = client
        .put(admin("faults"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(to_json(&faults))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    let failing = post(&sim, "mbox3rdPartyId=A&profile.a=1").await;
    assert_eq!(failing.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing.headers()[header::RETRY_AFTER], "4");
    let current = client.get(admin("faults")).send().await.expect("answers");
    let current: Value = parse_json(current).await;
    assert_eq!(current["failures"][0]["status"], 503);

    let invalid = client
        .put(admin("faults"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(to_json(&json!({"hang_probability": 2.0})))
        .send()
        .await
        .expect("answers");
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    let unknown_field = client
        .put(admin("faults"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(to_json(&json!({"latency_ms": 2})))
        .send()
        .await
        .expect("answers");
    assert_eq!(unknown_field.status(), StatusCode::BAD_REQUEST);
    client
        .put(admin("faults"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(to_json(&json!({})))
        .send()
        .await
        .expect("answers");
    assert_eq!(sim.faults(), Faults::none());

    client
        .put(admin("token"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(to_json(&json!({"token": "t0k"})))
        .send()
        .await
        .expect("answers");
    let refused = post(&sim, "mbox3rdPartyId=A&profile.a=1").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    client
        .put(admin("token"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(to_json(&json!({"token": null})))
        .send()
        .await
        .expect("answers");

    client.post(admin("hold")).send().await.expect("answers");
    let held = tokio::spawn({
        let url = update_url(&sim, "mbox3rdPartyId=A&profile.a=held");
        async move { Client::new().post(url).send().await.map(|r| r.status()) }
    });
    wait_for_stats(&sim, |s| s.held == 1).await;
    assert!(!held.is_finished());
    client.post(admin("release")).send().await.expect("answers");
    assert_eq!(held.await.expect("joins").ok(), Some(StatusCode::OK));

    let dump = client.get(admin("profiles")).send().await.expect("answers");
    let dump: Value = parse_json(dump).await;
    assert_eq!(dump["thirdPartyId"]["A"]["attributes"]["a"], "held");
    assert!(dump["thirdPartyId"]["A"]["modifiedAt"].is_string());

    let reset = client.post(admin("reset")).send().await.expect("answers");
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.profile_third_party("A"), None);
    assert_eq!(sim.stats().total, 0);
}

#[tokio::test]
async fn invalid_starting_faults_are_refused() {
    let error = Simulator::start(
        ([127, 0, 0, 1], 0).into(),
        SimulatorConfig {
            faults: Faults {
                failures: vec![Failure::new(503, 0.8), Failure::new(500, 0.8)],
                ..Faults::none()
            },
            ..SimulatorConfig::new(CLIENT)
        },
    )
    .await
    .expect_err("probabilities add up to more than 1");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
