//! What the `backfill` and `limits` benches share: options from the environment,
//! a Kafka broker with a verified backlog (librdkafka's mock cluster, or with
//! `PPS_TEST_BROKER=tansu` the separate tansu broker of the test suite), the Target simulator on its own
//! runtime, the service's settings, the service run in-process or as a child process,
//! and reading back what the simulator ended up with.
//!
//! Each bench uses a part of it, hence `dead_code` is allowed here.
#![allow(dead_code)]

use anyhow::{bail, ensure};
use pos_profile_sync::generator::{customer_id, GeneratedEvent};
use pos_profile_sync::ops::config::{ExistencePolicy, Settings};
use pos_profile_sync::service::{self, ServiceHandle};
use pps_target_simulator::{Existence, Faults, Simulator, SimulatorConfig, SimulatorHandle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

#[path = "../../tests/it/tansu.rs"]
mod tansu;

pub const DLQ: &str = "pos.purchases.dlq";
pub const CLIENT_CODE: &str = "bench";
const BROKERS: i32 = 3;

/// A value from the environment, or the default when unset.
pub fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|error| anyhow::anyhow!("{name}={text}: {error}")),
        Err(_) => Ok(default),
    }
}

/// The phases named in `variable` (comma-separated), or all of `all`.
pub fn phases(variable: &str, all: &[&str]) -> anyhow::Result<Vec<String>> {
    Ok(env_or::<String>(variable, all.join(","))?
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect())
}

/// The simulator's runtime (threads named `sim-rt`, so its CPU can be told
/// apart) with `simulator_threads` workers, and the bench's own (`bench-rt`).
pub fn runtimes(
    simulator_threads: usize,
) -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
    let simulator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(simulator_threads)
        .thread_name("sim-rt")
        .enable_all()
        .build()?;
    let bench = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-rt")
        .enable_all()
        .build()?;
    Ok((simulator, bench))
}

/// Logs of the service to stderr, `warn` unless `RUST_LOG` says otherwise.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The broker: the mock cluster (3 brokers) or a tansu process.
enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu(tansu::Tansu),
}

/// A broker with the dead-letter topic; source topics are added.
pub struct Kafka {
    broker: Broker,
    pub bootstrap: String,
}

impl Kafka {
    /// The broker `PPS_TEST_BROKER` names: `mock` (the default) or `tansu`
    /// (its binary in `PPS_TANSU_BIN`).
    pub fn start() -> anyhow::Result<Kafka> {
        let broker = match std::env::var("PPS_TEST_BROKER").as_deref() {
            Err(_) | Ok("") | Ok("mock") => Broker::Mock(MockCluster::new(BROKERS)?),
            Ok("tansu") => Broker::Tansu(tansu::Tansu::start(tansu::TansuOptions::default())),
            Ok(other) => bail!("PPS_TEST_BROKER={other}: use mock (the default) or tansu"),
        };
        let bootstrap = match &broker {
            Broker::Mock(cluster) => cluster.bootstrap_servers(),
            Broker::Tansu(tansu) => tansu.bootstrap.clone(),
        };
        let kafka = Kafka { broker, bootstrap };
        kafka.create_topic(DLQ, 1)?;
        Ok(kafka)
    }

    /// Which broker this is, for reports.
    pub fn describe(&self) -> String {
        match &self.broker {
            Broker::Mock(_) => format!("librdkafka mock cluster ({BROKERS} brokers)"),
            Broker::Tansu(_) => "tansu 0.6 (separate process, memory storage)".into(),
        }
    }

    /// Whether this is librdkafka's mock cluster.
    pub fn is_mock(&self) -> bool {
        matches!(self.broker, Broker::Mock(_))
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        match &self.broker {
            Broker::Mock(cluster) => cluster.create_topic(topic, partitions, BROKERS)?,
            Broker::Tansu(tansu) => tansu.create_topic(topic, partitions),
        }
        Ok(())
    }

    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    /// A producer as the benches use it: lz4, idempotent, 5 ms linger.
    pub fn producer(&self) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
        Ok(self
            .config()
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("enable.idempotence", "true")
            .create()?)
    }

    /// Creates `topic`, produces the events into it (keyed as generated), waits for
    /// every ack and checks the end offsets; returns them.
    pub fn backlog(
        &self,
        topic: &str,
        partitions: i32,
        events: impl Iterator<Item = GeneratedEvent>,
    ) -> anyhow::Result<Vec<i64>> {
        self.create_topic(topic, partitions)?;
        let producer = self.producer()?;
        let mut produced = 0usize;
        for event in events {
            send(&producer, topic, &event.key, &event.payload);
            produced += 1;
        }
        producer.flush(Duration::from_secs(120))?;
        self.verified_end_offsets(topic, partitions, produced)
    }

    /// End offsets, after checking that the broker dropped nothing.
    pub fn verified_end_offsets(
        &self,
        topic: &str,
        partitions: i32,
        produced: usize,
    ) -> anyhow::Result<Vec<i64>> {
        if let Broker::Tansu(_) = self.broker {
            // tansu's ListOffsets is wrong: the ends come from the records.
            let ends = tansu::ends_by_reading(self.config(), topic, partitions);
            let total: i64 = ends.iter().sum();
            ensure!(
                total == produced as i64,
                "{topic}: {total} records read back, but {produced} events were produced"
            );
            return Ok(ends);
        }
        let consumer: BaseConsumer = self.config().create()?;
        let mut ends = Vec::new();
        for partition in 0..partitions {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            ensure!(low == 0, "{topic}/{partition} starts at {low}: the mock cluster dropped batches; use more partitions");
            ends.push(high);
        }
        let total: i64 = ends.iter().sum();
        ensure!(
            total == produced as i64,
            "{topic}: end offsets add up to {total}, but {produced} events were produced"
        );
        Ok(ends)
    }

    /// The committed offset of every partition of `topic` for `group` (-1 when none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create()?;
        committed_offsets(&consumer, topic, partitions)
    }
}

/// The committed offset of every partition of `topic` for `consumer`'s group
/// (-1 when none).
pub fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect())
}

/// Sends one record, waiting while the producer's queue is full.
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
) {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    while let Err((_, returned)) = producer.send(record) {
        record = returned;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts the simulator with these faults on the simulators' runtime.
pub async fn start_simulator(
    simulators: &Handle,
    faults: Faults,
) -> anyhow::Result<SimulatorHandle> {
    // Every customer's profile exists, so single updates land.
    let config = SimulatorConfig {
        faults,
        existence: Existence::all_known(),
        ..SimulatorConfig::new(CLIENT_CODE)
    };
    Ok(simulators
        .spawn(Simulator::start(([127, 0, 0, 1], 0).into(), config))
        .await??)
}

/// The service's settings for one topic and group, otherwise its defaults.
pub fn settings(kafka: &Kafka, base_url: &str, topic: &str, group: &str) -> Settings {
    let mut settings = Settings::default();
    settings.kafka.brokers = kafka.bootstrap.clone();
    settings.kafka.topics = vec![topic.into()];
    settings.kafka.group_id = group.into();
    settings.kafka.dlq_topic = DLQ.into();
    settings.target.client_code = CLIENT_CODE.into();
    settings.target.base_url = base_url.into();
    settings.server.listen = "127.0.0.1:0".into();
    // The simulator knows every customer: the tenant `trust` is for. Benches
    // of the existence policy set their own.
    settings.existence.policy = ExistencePolicy::Trust;
    settings
}

/// The real service running in this process.
pub struct InProcess {
    pub handle: ServiceHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub async fn start(settings: Settings) -> anyhow::Result<InProcess> {
        pos_profile_sync::kafka::validate(&settings)?;
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<ServiceHandle>();
        let mut task = tokio::spawn(service::run(settings, shutdown.clone(), move |handle| {
            let _ = tx.send(handle);
        }));
        let Ok(handle) = rx.await else {
            bail!("the service did not start: {:?}", (&mut task).await?);
        };
        Ok(InProcess {
            handle,
            shutdown,
            task,
        })
    }

    pub fn has_stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// Sums the exposition's samples whose line starts with `prefix`.
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        self.handle
            .metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The exposition's lines that start with `prefix`.
    pub fn metric_lines(&self, prefix: &str) -> Vec<String> {
        self.handle
            .metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// SIGTERM's equivalent: drain, commit, stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
}

/// The release binary run as a child process with these settings (a TOML file).
pub struct ChildService {
    child: Child,
    config: PathBuf,
}

impl ChildService {
    pub fn start(settings: &Settings, name: &str) -> anyhow::Result<ChildService> {
        pos_profile_sync::kafka::validate(settings)?;
        let config =
            std::env::temp_dir().join(format!("pps-bench-{name}-{}.toml", std::process::id()));
        std::fs::write(&config, toml::to_string(settings)?)?;
        let child = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
            .args(["run", "--config"])
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(ChildService { child, config })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `kB` field of the child's `/proc/<pid>/status` (`VmHWM`, `VmRSS`).
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        status_kb(&format!("/proc/{}/status", self.child.id()), field)
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .arg("-15")
            .arg(self.child.id().to_string())
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A `kB` field of a `/proc/*/status` file.
pub fn status_kb(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// The customers whose profile at the simulator differs from the expected one.
pub fn lost_profiles(
    expected: &BTreeMap<u64, BTreeMap<String, String>>,
    simulator: &SimulatorHandle,
) -> Vec<u64> {
    expected
        .iter()
        .filter(|(n, attributes)| {
            let (crm, id) = customer_id(**n);
            let actual = if crm {
                simulator.profile_third_party(&id)
            } else {
                simulator.profile_pc(&id)
            };
            actual.as_ref() != Some(*attributes)
        })
        .map(|(n, _)| *n)
        .collect()
}

/// Whether every partition is committed at its end offset.
pub fn all_committed(kafka: &Kafka, group: &str, topic: &str, ends: &[i64]) -> bool {
    kafka
        .committed(group, topic, ends.len() as i32)
        .is_ok_and(|committed| committed == ends)
}
