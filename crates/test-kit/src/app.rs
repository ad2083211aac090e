//! The service as a child process: its configuration (the tests' settings as
//! TOML, or any TOML), SIGKILL and SIGTERM as Kubernetes sends them, its log,
//! probes and metrics.

use crate::broker::Kafka;
use crate::{free_port, CLIENT, DLQ, TOPIC};
use pos_profile_sync::ops::config::{DeliverySettings, ExistencePolicy, PropertyValue, Settings};
use pps_target_simulator::SimulatorHandle;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The settings of a service process the tests start: typed, written as its
/// configuration file when it is spawned.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The service's settings (`server.listen` is chosen at spawn).
    pub settings: Settings,
    /// `RUST_LOG` of the service (`PPS_TEST_LOG` overrides it).
    pub log_level: String,
    /// Extra environment variables of the service process. The OTLP
    /// endpoint variables are never inherited from the test's environment,
    /// only set from here.
    pub env: Vec<(String, String)>,
}

impl AppConfig {
    /// The tests' settings for this broker and simulator.
    pub fn new(kafka: &Kafka, sim: &SimulatorHandle) -> AppConfig {
        AppConfig::with_bootstrap(&kafka.bootstrap, sim)
    }

    /// The same for brokers the kit cannot reach itself: the source topic,
    /// group `pos-profile-sync`, a group that notices a killed pod within
    /// seconds, a budget that does not hold the tests back, short commit and
    /// retry intervals, and `existence.policy = "trust"` (the test simulator
    /// starts with every customer known, the tenant that policy is for;
    /// tests of the existence policy set their own).
    pub fn with_bootstrap(bootstrap: &str, sim: &SimulatorHandle) -> AppConfig {
        let mut settings = service_settings(
            bootstrap,
            &sim.base_url(),
            TOPIC,
            "pos-profile-sync",
            CLIENT,
        );
        for (key, value) in [
            ("session.timeout.ms", 6000),
            ("heartbeat.interval.ms", 500),
            ("max.poll.interval.ms", 10_000),
            ("topic.metadata.refresh.interval.ms", 1000),
        ] {
            settings
                .kafka
                .properties
                .insert(key.to_owned(), PropertyValue::Int(value));
        }
        settings.target.timeout_ms = 2000;
        settings.rate_limit.per_second = 1_000_000.0;
        settings.rate_limit.burst = 1000;
        settings.delivery = DeliverySettings {
            max_in_flight: 64,
            max_attempts: 0,
            drain_timeout_ms: 3000,
            commit_interval_ms: 200,
            retry_initial_ms: 20,
            retry_max_ms: 1000,
            ..DeliverySettings::default()
        };
        AppConfig {
            settings,
            log_level: "info".into(),
            env: Vec::new(),
        }
    }

    /// The same with `change` made to the `[delivery]` settings.
    pub fn with_delivery(mut self, change: impl FnOnce(&mut DeliverySettings)) -> AppConfig {
        change(&mut self.settings.delivery);
        self
    }

    /// The configuration file with the service listening on `listen`.
    pub fn toml(&self, listen: SocketAddr) -> String {
        let mut settings = self.settings.clone();
        settings.server.listen = listen.to_string();
        toml::to_string(&settings).expect("the settings as TOML")
    }
}

/// The service's settings for one topic and group on this broker and
/// Target, otherwise its defaults: what tests and benches start from. The
/// existence policy is `trust`: their simulators know every customer.
pub fn service_settings(
    bootstrap: &str,
    base_url: &str,
    topic: &str,
    group: &str,
    client_code: &str,
) -> Settings {
    let mut settings = Settings::default();
    settings.kafka.brokers = bootstrap.into();
    settings.kafka.topics = vec![topic.into()];
    settings.kafka.group_id = group.into();
    settings.kafka.dlq_topic = DLQ.into();
    settings.target.client_code = client_code.into();
    settings.target.base_url = base_url.into();
    settings.server.listen = "127.0.0.1:0".into();
    settings.existence.policy = ExistencePolicy::Trust;
    settings
}

/// How to start a service process.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `pos-profile-sync` binary (`CARGO_BIN_EXE_pos-profile-sync`).
    pub binary: String,
    /// The configuration file's text.
    pub config: String,
    /// Where the configuration has the service listen (`server.listen`).
    pub http: SocketAddr,
    /// `RUST_LOG` of the service (`PPS_TEST_LOG` overrides it).
    pub log_level: String,
    /// Extra environment variables. The OTLP endpoint variables are never
    /// inherited, only set from here.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// `binary` with this configuration, logging at `info`.
    pub fn new(binary: &str, config: String, http: SocketAddr) -> Launch {
        Launch {
            binary: binary.to_owned(),
            config,
            http,
            log_level: "info".into(),
            env: Vec::new(),
        }
    }
}

/// The service as a child process, its log kept in a file.
pub struct App {
    child: Option<Child>,
    /// Where its probes and metrics answer.
    pub http: SocketAddr,
    /// Its log (stderr).
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    /// Starts `binary run` with this configuration, listening on a free port.
    pub fn spawn(binary: &str, config: &AppConfig) -> App {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let launch = Launch {
            log_level: config.log_level.clone(),
            env: config.env.clone(),
            ..Launch::new(binary, config.toml(http), http)
        };
        App::start(launch).expect("start the service")
    }

    /// Starts a service process as `launch` says.
    pub fn start(launch: Launch) -> std::io::Result<App> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &launch.config)?;
        let log = dir.path().join("service.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(launch.binary)
            .args(["run", "--config"])
            .arg(&path)
            .env(
                "RUST_LOG",
                std::env::var("PPS_TEST_LOG").unwrap_or(launch.log_level),
            )
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(launch.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        Ok(App {
            child: Some(child),
            http: launch.http,
            log,
            _dir: dir,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A `kB` field of the process's `/proc/<pid>/status` (`VmHWM`, `VmRSS`).
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        crate::status_kb(&format!("/proc/{}/status", self.pid()?), field)
    }

    /// Sends `signal` (a number, as `kill -N`) to the process, if it runs.
    pub fn signal(&self, signal: i32) {
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

    /// Waits for the process to exit by itself; its status, or `None` if it
    /// still runs after `limit` (it is left running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        let child = self.child.as_mut()?;
        while started.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
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
