//! Test harness: a Kafka broker (librdkafka's mock cluster inside the test
//! process, or with `PPS_TEST_BROKER=tansu` a separate tansu broker process),
//! the Target simulator over real HTTP, and the built binary as a child
//! process with a generated configuration, killed and restarted as
//! Kubernetes would.

use pos_profile_sync::generator::{
    self, customer_id, EventKind, GeneratedEvent, Generator, GeneratorConfig,
};
use pos_profile_sync::kafka::inspect::{Inspector, StoredRecord};
use pps_target_simulator::{Existence, Simulator, SimulatorConfig, SimulatorHandle};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tansu::{Tansu, TansuOptions};

#[path = "tansu.rs"]
pub mod tansu;

/// The source topic of every test.
pub const TOPIC: &str = "pos.purchases";
/// The dead-letter topic of every test.
pub const DLQ: &str = "pos.purchases.dlq";
/// The client code the simulator and the service share.
pub const CLIENT: &str = "acme";

/// The environment variable choosing the broker of `Kafka::start`: `mock`
/// (the default) or `tansu`.
pub const TEST_BROKER: &str = "PPS_TEST_BROKER";

/// Whether `PPS_TEST_BROKER` asks for the separate tansu broker.
pub fn separate_broker() -> bool {
    match std::env::var(TEST_BROKER).as_deref() {
        Err(_) | Ok("") | Ok("mock") => false,
        Ok("tansu") => true,
        Ok(other) => panic!("{TEST_BROKER}={other}: use mock (the default) or tansu"),
    }
}

/// A Kafka cluster with the source and dead-letter topics: librdkafka's mock
/// cluster, a tansu process, or (for `tests/real_kafka.rs`) a real broker
/// started elsewhere.
pub struct Kafka {
    /// The mock cluster, if this is one; dropping it stops the brokers.
    cluster: Option<MockCluster<'static, DefaultProducerContext>>,
    /// The tansu process, if this is one; dropping it stops the broker.
    broker: Option<Tansu>,
    /// Its bootstrap servers.
    pub bootstrap: String,
    /// Partitions of the source topic.
    pub partitions: i32,
    /// librdkafka properties of the harness's own clients (TLS, SASL).
    pub client_properties: Vec<(String, String)>,
}

impl Kafka {
    /// `partitions` source partitions and one dead-letter partition, on the
    /// broker `PPS_TEST_BROKER` names: three mock brokers, or a tansu process.
    pub fn start(partitions: i32) -> Kafka {
        if separate_broker() {
            return Kafka::on_tansu(Tansu::start(TansuOptions::default()), partitions);
        }
        let cluster = MockCluster::new(3).expect("mock cluster");
        cluster
            .create_topic(TOPIC, partitions, 3)
            .expect("source topic");
        cluster.create_topic(DLQ, 1, 3).expect("dead-letter topic");
        let bootstrap = cluster.bootstrap_servers();
        Kafka {
            cluster: Some(cluster),
            broker: None,
            bootstrap,
            partitions,
            client_properties: Vec::new(),
        }
    }

    /// The test topics on a tansu broker, which this then owns.
    pub fn on_tansu(broker: Tansu, partitions: i32) -> Kafka {
        broker.create_topic(TOPIC, partitions);
        broker.create_topic(DLQ, 1);
        Kafka {
            cluster: None,
            bootstrap: broker.bootstrap.clone(),
            broker: Some(broker),
            partitions,
            client_properties: Vec::new(),
        }
    }

    /// A real cluster at `bootstrap`: creates the source topic with
    /// `partitions` partitions and a one-partition dead-letter topic.
    #[allow(dead_code)] // used by `tests/real_kafka.rs`
    pub async fn external(bootstrap: String, partitions: i32) -> Kafka {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin client");
        let topics = [
            NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(DLQ, 1, TopicReplication::Fixed(1)),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin
            .create_topics(&topics, &options)
            .await
            .expect("create topics")
        {
            result.expect("topic created");
        }
        Kafka {
            cluster: None,
            broker: None,
            bootstrap,
            partitions,
            client_properties: Vec::new(),
        }
    }

    /// The mock cluster, for fault injection.
    pub fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        self.cluster
            .as_ref()
            .expect("fault injection needs librdkafka's mock cluster")
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in &self.client_properties {
            config.set(key, value);
        }
        config
    }

    /// Produces the events (keyed by customer) and waits for every ack.
    pub fn produce(&self, events: &[GeneratedEvent]) {
        self.produce_with_headers(events, |_| Vec::new());
    }

    /// Produces the events with the headers `headers(index)` gives each, in
    /// order on their partitions, and waits for every ack.
    pub fn produce_with_headers(
        &self,
        events: &[GeneratedEvent],
        headers: impl Fn(usize) -> Vec<(&'static str, String)>,
    ) {
        let producer: ThreadedProducer<_> = self
            .client_config()
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        for (index, event) in events.iter().enumerate() {
            let pairs = headers(index);
            let mut record = BaseRecord::to(TOPIC)
                .key(&event.key[..])
                .payload(&event.payload[..]);
            if !pairs.is_empty() {
                let owned = pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(value.as_str()),
                    })
                });
                record = record.headers(owned);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, returned)) => {
                        record = returned;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    fn inspector(&self) -> Inspector {
        Inspector::new(&self.bootstrap, &self.client_properties).expect("inspector")
    }

    /// The committed offset of every source partition for a group (-1 when none).
    pub fn committed(&self, group: &str) -> Vec<i64> {
        self.inspector()
            .committed(group, TOPIC, self.partitions as usize)
            .expect("committed offsets")
    }

    /// The end offset of every source partition.
    pub fn end_offsets(&self) -> Vec<i64> {
        if self.broker.is_some() {
            return tansu::ends_by_reading(self.client_config(), TOPIC, self.partitions);
        }
        self.inspector().end_offsets(TOPIC).expect("end offsets")
    }

    /// Every record of a topic.
    pub fn read_all(&self, topic: &str) -> Vec<Consumed> {
        if self.broker.is_some() {
            let partitions = self.inspector().partitions(topic).expect("partitions") as i32;
            return tansu::read_to_idle(self.client_config(), topic, partitions);
        }
        self.inspector().read_all(topic).expect("read the topic")
    }
}

/// A record read back from Kafka.
pub type Consumed = StoredRecord;

/// A workload and what Target must end up with.
pub struct Workload {
    pub events: Vec<GeneratedEvent>,
}

impl Workload {
    pub fn new(config: GeneratorConfig) -> Workload {
        Workload {
            events: Generator::new(config).collect(),
        }
    }

    /// Events that make a Target call (one each without coalescing).
    pub fn customer_events(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Customer(_)))
            .count()
    }

    /// Malformed events by the class they must be dead-lettered with.
    pub fn malformed(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for event in &self.events {
            if let EventKind::Malformed(class) = event.kind {
                *out.entry(class).or_default() += 1;
            }
        }
        out
    }

    /// Every profile's expected attributes: the updates folded in order.
    pub fn expected_profiles(&self) -> BTreeMap<u64, BTreeMap<String, String>> {
        generator::expected_profiles(&self.events)
    }

    /// Profiles whose state at the simulator differs from the expected one.
    pub fn lost_profiles(&self, sim: &SimulatorHandle) -> Vec<String> {
        let mut lost = Vec::new();
        for (n, expected) in self.expected_profiles() {
            let (crm, id) = customer_id(n);
            let actual = if crm {
                sim.profile_third_party(&id)
            } else {
                sim.profile_pc(&id)
            };
            if actual.as_ref() != Some(&expected) {
                lost.push(format!("{id}: expected {expected:?}, got {actual:?}"));
            }
        }
        lost
    }
}

/// Starts the simulator on a free port, with every customer's profile existing at
/// start (Adobe's rules otherwise): single updates land, as the delivery tests expect.
pub async fn start_simulator(token: Option<&str>) -> SimulatorHandle {
    let mut config = SimulatorConfig::new(CLIENT);
    config.token = token.map(str::to_owned);
    config.existence = Existence::all_known();
    Simulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("simulator")
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Settings of a service process, as TOML fragments.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub bootstrap: String,
    pub base_url: String,
    pub group: String,
    pub per_second: f64,
    pub burst: u32,
    pub max_in_flight: u32,
    pub max_attempts: u32,
    pub drain_timeout_ms: u64,
    /// `target.timeout_ms`.
    pub timeout_ms: u64,
    pub token_file: Option<PathBuf>,
    pub extra: String,
    /// `RUST_LOG` of the service (`PPS_TEST_LOG` overrides it).
    pub log_level: String,
    /// Extra lines of the `[delivery]` section.
    pub delivery_extra: String,
    /// The `[existence]` section. By default `policy = "trust"`: the test
    /// simulator starts with every customer known, the tenant that policy is
    /// for; tests of the existence policy set their own.
    pub existence: String,
    /// Extra environment variables of the service process. The OTLP
    /// endpoint variables are never inherited from the test's environment,
    /// only set from here.
    pub env: Vec<(String, String)>,
}

impl AppConfig {
    pub fn new(kafka: &Kafka, sim: &SimulatorHandle) -> AppConfig {
        AppConfig::with_bootstrap(&kafka.bootstrap, sim)
    }

    /// The same for brokers the harness cannot reach itself.
    pub fn with_bootstrap(bootstrap: &str, sim: &SimulatorHandle) -> AppConfig {
        AppConfig {
            bootstrap: bootstrap.to_owned(),
            base_url: sim.base_url(),
            group: "pos-profile-sync".into(),
            per_second: 1_000_000.0,
            burst: 1000,
            max_in_flight: 64,
            max_attempts: 0,
            drain_timeout_ms: 3000,
            timeout_ms: 2000,
            token_file: None,
            extra: String::new(),
            log_level: "info".into(),
            delivery_extra: String::new(),
            existence: "policy = \"trust\"".into(),
            env: Vec::new(),
        }
    }

    /// The same with extra `[delivery]` lines.
    pub fn with_delivery(mut self, lines: &str) -> AppConfig {
        self.delivery_extra.push_str(lines);
        self.delivery_extra.push('\n');
        self
    }

    fn toml(&self, listen: SocketAddr) -> String {
        let token = self
            .token_file
            .as_ref()
            .map(|p| format!("token_file = {:?}\n", p.display().to_string()))
            .unwrap_or_default();
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
topics = ["{TOPIC}"]
group_id = "{group}"
dlq_topic = "{DLQ}"

[kafka.properties]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500
"max.poll.interval.ms" = 10000
"topic.metadata.refresh.interval.ms" = 1000

[target]
client_code = "{CLIENT}"
base_url = "{base_url}"
timeout_ms = {timeout_ms}
{token}
[rate_limit]
per_second = {per_second:?}
burst = {burst}

[delivery]
max_in_flight = {max_in_flight}
max_attempts = {max_attempts}
drain_timeout_ms = {drain}
commit_interval_ms = 200
retry_initial_ms = 20
retry_max_ms = 1000
{delivery_extra}

[existence]
{existence}

[server]
listen = "{listen}"
{extra}
"#,
            bootstrap = self.bootstrap,
            group = self.group,
            base_url = self.base_url,
            per_second = self.per_second,
            burst = self.burst,
            max_in_flight = self.max_in_flight,
            max_attempts = self.max_attempts,
            drain = self.drain_timeout_ms,
            timeout_ms = self.timeout_ms,
            extra = self.extra,
            delivery_extra = self.delivery_extra,
            existence = self.existence,
        )
    }
}

/// The service as a child process.
pub struct App {
    child: Option<Child>,
    pub http: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `pos-profile-sync run` with this configuration.
pub fn spawn_app(config: &AppConfig) -> App {
    let dir = tempfile::tempdir().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.toml(http)).unwrap();
    let log = dir.path().join("service.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
        .args(["run", "--config"])
        .arg(&path)
        .env(
            "RUST_LOG",
            std::env::var("PPS_TEST_LOG").unwrap_or_else(|_| config.log_level.clone()),
        )
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start the service");
    App {
        child: Some(child),
        http,
        log,
        _dir: dir,
    }
}

impl App {
    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY-free: kill(2) on our own child's pid.
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// SIGKILL: no drain, no commit, no goodbye.
    pub fn kill(&mut self) {
        self.signal(9);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns the status and how long it took.
    pub fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal(15);
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                panic!(
                    "the service did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running (it never exited nor was restarted).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Waits until `/readyz` answers 200; false if `limit` passes first.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some((200, _)) = self.get("/readyz").await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The service's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a path of the metrics/probes server: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// The value of one metric line (name with labels, exactly), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines().find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let keep = std::env::temp_dir().join(format!("pps-failed-{}.log", self.http.port()));
            if std::fs::write(&keep, &log).is_ok() {
                eprintln!("full service log kept at {}", keep.display());
            }
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- service log tail ({}) ---", self.http);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The most update requests the simulator received in one whole second.
pub fn busiest_second(sim: &SimulatorHandle) -> u64 {
    sim.stats()
        .requests_per_second
        .busiest()
        .map_or(0, |(_, n)| n)
}

/// Polls `done` every 100 ms until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the group has committed every source offset.
pub async fn wait_all_committed(kafka: &Kafka, group: &str, limit: Duration) {
    let ends = kafka.end_offsets();
    let started = Instant::now();
    loop {
        let committed = kafka.committed(group);
        if committed == ends {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "not all committed after {limit:?}: committed {committed:?}, ends {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes a file in one go (a token rotation).
pub fn write_file(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).unwrap();
    file.write_all(content.as_bytes()).unwrap();
    drop(file);
    std::fs::rename(tmp, path).unwrap();
}

/// A profile update with these attributes, as of 2026-11-28T10:15:00Z.
pub fn profile_update(
    identity: pos_profile_sync::event::Identity,
    attributes: &[(&str, &str)],
) -> pos_profile_sync::mapping::ProfileUpdate {
    pos_profile_sync::mapping::ProfileUpdate {
        identity,
        attributes: attributes
            .iter()
            .map(|(n, v)| pos_profile_sync::mapping::Attribute {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        occurred_at: pos_profile_sync::event::parse_rfc3339("2026-11-28T10:15:00Z").unwrap(),
    }
}
