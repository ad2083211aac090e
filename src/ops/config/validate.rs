//! Validation: every value checked at start-up, one line per problem naming
//! the key and what to do, all at once; and the warnings that do not stop
//! the service.

use super::*;

impl Settings {
    /// Every value checked, for the `run` job: client code, addresses,
    /// budgets, deadlines, mapping; one line per problem, all at once.
    /// librdkafka's own verdict on the Kafka properties needs clients built:
    /// the Kafka side adds it (`kafka::validate` checks both).
    pub fn value_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        let k = &self.kafka;
        need(
            !k.brokers.trim().is_empty(),
            "kafka.brokers: empty; give the bootstrap servers, e.g. \"kafka-0:9092,kafka-1:9092\"",
        );
        need(
            !k.topics.is_empty() && k.topics.iter().all(|t| !t.trim().is_empty()),
            "kafka.topics: give at least one non-empty topic name",
        );
        need(
            !k.group_id.trim().is_empty(),
            "kafka.group_id: empty; every replica must share one consumer group id",
        );
        need(
            !k.dlq_topic.trim().is_empty(),
            "kafka.dlq_topic: empty; dead letters need a topic",
        );
        need(!k.topics.contains(&k.dlq_topic), "kafka.dlq_topic: must not be one of kafka.topics (dead letters would be consumed again)");
        need(!k.properties.contains_key("auto.offset.reset"), "kafka.properties.auto.offset.reset: set kafka.start_from (\"earliest\" or \"latest\") instead");
        for reserved in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "group.id",
            "bootstrap.servers",
        ] {
            need(!k.properties.contains_key(reserved), &format!("kafka.properties.{reserved}: set by the service itself (offsets are committed only after Target accepted); remove it"));
        }
        problems.extend(kafka_security_problems(&k.properties));
        let mut need = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        let t = &self.target;
        need(!t.client_code.trim().is_empty(), "target.client_code: required; set your Adobe Target client code (PPS_TARGET__CLIENT_CODE)");
        need(
            t.client_code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "target.client_code: only letters, digits, '-' and '_'",
        );
        if !t.base_url.is_empty() {
            need(reqwest::Url::parse(&t.base_url).map(|u| matches!(u.scheme(), "http" | "https")).unwrap_or(false), "target.base_url: must be an http:// or https:// URL, or empty for https://{client_code}.tt.omtrdc.net");
        }
        if let Some(path) = t.token_path() {
            need(std::fs::read_to_string(&path).is_ok(), &format!("target.token_file: cannot read {}; mount the token Secret there or leave the key empty", path.display()));
        }
        if let Err(problem) = t.ca_certificates() {
            problems.push(problem);
        }
        let mut need = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        need(t.timeout_ms > 0, "target.timeout_ms: must be above 0");
        let r = &self.rate_limit;
        need(
            r.per_second.is_finite() && r.per_second > 0.0,
            "rate_limit.per_second: must be a number above 0 (the whole group's budget per second)",
        );
        need(r.burst >= 1, "rate_limit.burst: must be at least 1");
        need(
            r.daily_quota >= 1,
            "rate_limit.daily_quota: must be at least 1",
        );
        let d = &self.delivery;
        need(
            (1..=65_536).contains(&d.max_in_flight),
            "delivery.max_in_flight: must be 1 to 65536",
        );
        need(
            d.drain_timeout_ms > 0,
            "delivery.drain_timeout_ms: must be above 0",
        );
        let session = self.session_timeout_ms();
        need(d.drain_timeout_ms < session, &format!("delivery.drain_timeout_ms: {} must be below the session timeout ({session} ms, kafka.properties.\"session.timeout.ms\"), or the group evicts the pod while it drains", d.drain_timeout_ms));
        need(
            d.commit_interval_ms > 0,
            "delivery.commit_interval_ms: must be above 0",
        );
        need(
            d.retry_initial_ms > 0 && d.retry_initial_ms <= d.retry_max_ms,
            "delivery.retry_initial_ms: must be above 0 and at most delivery.retry_max_ms",
        );
        need(
            d.max_buffered_per_partition >= 1,
            "delivery.max_buffered_per_partition: must be at least 1",
        );
        need(
            d.max_buffered >= 1,
            "delivery.max_buffered: must be at least 1",
        );
        let b = &self.bulk;
        need(
            (1..=500_000).contains(&b.max_rows),
            "bulk.max_rows: must be 1 to 500000 (Adobe's limit per batch)",
        );
        need(
            (1..=50_000_000).contains(&b.max_bytes),
            "bulk.max_bytes: must be 1 to 50000000 (Adobe's limit per batch)",
        );
        need(b.max_age_ms > 0, "bulk.max_age_ms: must be above 0");
        need(
            b.calls_per_minute >= 1,
            "bulk.calls_per_minute: must be at least 1",
        );
        need(
            b.overflow_after_seconds >= 1,
            "bulk.overflow_after_seconds: must be at least 1",
        );
        problems.extend(self.existence.problems());
        problems.extend(self.verify.problems());
        let mut need = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        need(
            self.server.listen.parse::<std::net::SocketAddr>().is_ok(),
            "server.listen: must be an address such as 0.0.0.0:9464",
        );
        if let Err(mapping) = Mapping::from_settings(&self.mapping) {
            problems.extend(mapping);
        }
        problems
    }

    /// The session timeout the consumer will use.
    pub fn session_timeout_ms(&self) -> u64 {
        self.kafka
            .properties
            .get("session.timeout.ms")
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or(DEFAULT_SESSION_TIMEOUT_MS)
    }

    /// Warnings that do not stop the service.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let daily_rate = ADOBE_DAILY_CAP as f64 / 86_400.0;
        if self.rate_limit.per_second > daily_rate {
            warnings.push(format!(
                "rate_limit.per_second = {} is above {daily_rate:.2}/s: sustained, it would pass Adobe's documented cap of one million single updates per rolling 24 hours",
                self.rate_limit.per_second
            ));
        }
        if self.bulk.mode != BulkMode::Off && self.bulk.commit_on == CommitOn::Submitted {
            warnings.push("bulk.commit_on = \"submitted\" commits a batch's events before Adobe reports its rows: rows Adobe fails later are dead-lettered only if this pod is still running then (a crash in between loses those dead letters); \"complete\" keeps at-least-once".to_owned());
        }
        warnings
    }
}

/// librdkafka properties naming a file it reads when the clients are built.
const FILE_PROPERTIES: [&str; 6] = [
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
    "sasl.kerberos.keytab",
];
/// The SASL mechanisms librdkafka knows (GSSAPI needs a Kerberos build,
/// which librdkafka itself reports).
const SASL_MECHANISMS: [&str; 5] = [
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "OAUTHBEARER",
    "GSSAPI",
];

/// What librdkafka reports late or without a name: a certificate or key file
/// that cannot be read (its own message does not say which), and a SASL
/// mechanism it only refuses when connecting.
fn kafka_security_problems(properties: &BTreeMap<String, PropertyValue>) -> Vec<String> {
    let mut problems = Vec::new();
    for key in FILE_PROPERTIES {
        let Some(value) = properties.get(key) else {
            continue;
        };
        let path = value.to_string();
        // `ssl.ca.location` may be a directory of certificates, or `probe`.
        if key == "ssl.ca.location" && (path == "probe" || Path::new(&path).is_dir()) {
            continue;
        }
        if let Err(error) = std::fs::File::open(&path) {
            problems.push(format!(
                "kafka.properties.{key}: cannot read {path} ({error}); mount the file there"
            ));
        }
    }
    for key in ["sasl.mechanism", "sasl.mechanisms"] {
        if let Some(value) = properties.get(key) {
            let mechanism = value.to_string();
            if !SASL_MECHANISMS.contains(&mechanism.as_str()) {
                problems.push(format!(
                    "kafka.properties.{key}: unknown SASL mechanism {mechanism:?}; use one of {}",
                    SASL_MECHANISMS.join(", ")
                ));
            }
        }
    }
    problems
}
