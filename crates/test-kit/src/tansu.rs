//! A separate Kafka broker for the end-to-end tests: tansu (a Kafka-compatible
//! broker written in Rust) as its own process on 127.0.0.1, with in-memory
//! storage, real topics and real consumer groups. It outlives every service
//! process a test starts, kills and restarts, and stops when the test ends.
//! `scripts/tansu.sh` installs it; `PPS_TANSU_BIN` says where it is.
//!
//! tansu's own TLS listener does not work in this build, so TLS is terminated
//! by stunnel in front of it, with tansu advertising the terminator's address.
//! Its defects, and how this harness works around them, are in
//! `tests/BROKER.md`.

use pos_profile_sync::kafka::inspect::StoredRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable naming the tansu binary.
pub const TANSU_BIN: &str = "PPS_TANSU_BIN";

/// A tansu broker process.
pub struct Tansu {
    child: Child,
    binary: PathBuf,
    /// Where tansu listens, as its CLI wants it (`tcp://127.0.0.1:PORT`).
    url: String,
    /// What clients bootstrap from: the broker itself, or the TLS terminator.
    pub bootstrap: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a broker is started.
#[derive(Debug, Clone, Copy, Default)]
pub struct TansuOptions {
    /// `--authentication`: clients must authenticate with SASL/SCRAM.
    pub authentication: bool,
    /// The address advertised in metadata when it is not tansu's own (a TLS
    /// terminator in front of it).
    pub advertised: Option<SocketAddr>,
}

impl Tansu {
    /// The binary named by `PPS_TANSU_BIN`; panics saying how to install it.
    pub fn binary() -> PathBuf {
        let path = std::env::var_os(TANSU_BIN)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("{TANSU_BIN} must name the tansu binary: {TANSU_BIN}=$(scripts/tansu.sh)")
            });
        assert!(
            path.is_file(),
            "{TANSU_BIN}={} is not a file; install it with scripts/tansu.sh",
            path.display()
        );
        path
    }

    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start(options: TansuOptions) -> Tansu {
        let binary = Tansu::binary();
        let listen = free_address();
        let advertised = options.advertised.unwrap_or(listen);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let mut command = Command::new(&binary);
        command
            .arg("broker")
            .args(["--storage-engine", "memory://tansu/"])
            .arg("--listener-url")
            .arg(format!("tcp://{listen}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"));
        if options.authentication {
            command.arg("--authentication");
        }
        let child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("tansu.err")).unwrap())
            .spawn()
            .expect("start tansu");
        let broker = Tansu {
            child,
            binary,
            url: format!("tcp://{listen}"),
            bootstrap: advertised.to_string(),
            log,
            _dir: dir,
        };
        wait_for_port(listen, "tansu");
        broker
    }

    /// Where the broker itself listens (`127.0.0.1:PORT`).
    pub fn listen_address(&self) -> &str {
        self.url.trim_start_matches("tcp://")
    }

    /// Creates a topic with `partitions` partitions through tansu's own CLI.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let output = Command::new(&self.binary)
            .args(["topic", "create", "--broker", &self.url, "--partitions"])
            .arg(partitions.to_string())
            .arg(topic)
            .output()
            .expect("run tansu topic create");
        assert!(
            output.status.success(),
            "tansu topic create {topic}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// What the broker logged so far.
    pub fn log_text(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        format!("{out}{err}")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- tansu log tail ({}) ---", self.url);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// stunnel terminating TLS on one address and forwarding in clear to another.
pub struct TlsTerminator {
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsTerminator {
    /// Serves `certificate` and `key` (PEM files) on `listen`, forwarding to `upstream`.
    pub fn start(listen: SocketAddr, upstream: &str, certificate: &Path, key: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\ndebug = warning\n\n[kafka]\naccept = {listen}\nconnect = {upstream}\ncert = {}\nkey = {}\n",
                certificate.display(),
                key.display()
            ),
        )
        .unwrap();
        let child = Command::new("stunnel")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stunnel.log")).unwrap())
            .spawn()
            .expect("start stunnel (scripts/tansu.sh installs Debian's stunnel4)");
        wait_for_port(listen, "stunnel");
        TlsTerminator { child, _dir: dir }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts connections on `address`.
fn wait_for_port(address: SocketAddr, what: &str) {
    let started = Instant::now();
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} does not listen on {address} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free address on 127.0.0.1.
pub fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// How long a reader waits for more records before it calls a partition read.
const IDLE: Duration = Duration::from_millis(1500);

/// Every record of a topic's `partitions`, read from the start until the broker
/// has had nothing more for a while. tansu answers ListOffsets with the last
/// batch's base offset + 1 instead of the end offset, so neither the end
/// offsets nor a read up to them can come from ListOffsets.
pub fn read_to_idle(config: ClientConfig, topic: &str, partitions: i32) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    each_record(config, topic, partitions, |message| {
        out.push(StoredRecord::of(message));
    });
    out
}

/// The end offset of every partition, read as `read_to_idle` does but
/// without keeping the records.
pub fn ends_by_reading(config: ClientConfig, topic: &str, partitions: i32) -> Vec<i64> {
    let mut ends = vec![0; partitions as usize];
    each_record(config, topic, partitions, |message| {
        let end = &mut ends[message.partition() as usize];
        *end = (*end).max(message.offset() + 1);
    });
    ends
}

/// Calls `record` with every record of the partitions, from the start until
/// the broker has had nothing more for `IDLE`.
fn each_record(
    mut config: ClientConfig,
    topic: &str,
    partitions: i32,
    mut record: impl FnMut(&BorrowedMessage<'_>),
) {
    config
        .set("group.id", "pos-profile-sync-harness-reader")
        .set("enable.auto.commit", "false");
    let reader: BaseConsumer = config.create().expect("a reader");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .expect("a partition to read");
    }
    reader.assign(&list).expect("assign the partitions");
    let mut last_record = Instant::now();
    while last_record.elapsed() < IDLE {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_record = Instant::now();
                record(&message);
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
}
