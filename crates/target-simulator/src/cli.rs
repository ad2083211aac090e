//! The `simulate-target` subcommand: its flags (and how fault flags parse) and the loop
//! that serves until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

use super::faults::{BulkFaults, Failure, Faults, Latency, Overload, RateLimit, RetryAfter};
#[cfg(feature = "tls")]
use super::TlsIdentity;
use super::{Existence, Simulator, SimulatorConfig, SimulatorHandle};

/// Serve the Target simulator (single profile updates, bulk batches and profile read-back),
/// faithful to Adobe by default: single updates to profiles that do not exist change
/// nothing, and no profile exists at start unless --known-share says so.
#[derive(Debug, Clone, Args)]
pub struct SimulateTargetArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The client code served in `/m2/{client_code}/...` and expected as `client=`.
    #[arg(long, value_name = "CODE", default_value = "demo")]
    pub client_code: String,

    /// Require `Authorization: Bearer TOKEN` on updates and read-back.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Latency added to every update, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Uniform random latency added on top, from 0 to this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub jitter_ms: u64,

    /// Answer STATUS with probability PROB, optionally with `Retry-After: SECONDS`
    /// (`503:0.3:5`) or an HTTP date SECONDS ahead (`503:0.3:date+5`). Repeatable.
    #[arg(long = "fail", value_name = "STATUS:PROB[:RETRY_AFTER]")]
    pub failures: Vec<Failure>,

    /// Probability that an update is never answered (held for an hour).
    #[arg(long, value_name = "PROB", default_value_t = 0.0)]
    pub hang_prob: f64,

    /// Probability that an update's connection is reset (TCP RST) instead of answered.
    #[arg(long, value_name = "PROB", default_value_t = 0.0)]
    pub reset_prob: f64,

    /// Enforce a token bucket on updates; over it, 503 with `Retry-After: 1`.
    /// BURST defaults to one second's worth.
    #[arg(long, value_name = "PER_SECOND[:BURST]")]
    pub rate_limit: Option<RateLimit>,

    /// Overload mode: past this many updates in flight, answer 503 (no `Retry-After`)
    /// to a request arriving with N in flight with probability 1 - IN_FLIGHT/N.
    #[arg(long, value_name = "IN_FLIGHT")]
    pub overload: Option<u64>,

    /// Bulk batches stay `incomplete` this long after they are submitted.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub bulk_completion_delay_ms: u64,

    /// Probability that a submitted bulk batch is `stuck` for good.
    #[arg(long, value_name = "PROB", default_value_t = 0.0)]
    pub bulk_stuck_prob: f64,

    /// Bulk rows of this profile id are reported `failed` and not applied. Repeatable.
    #[arg(long = "bulk-fail-id", value_name = "ID")]
    pub bulk_fail_ids: Vec<String>,

    /// Single updates of this profile id are answered 503. Repeatable.
    #[arg(long = "fail-id", value_name = "ID")]
    pub fail_ids: Vec<String>,

    /// Probability that any other bulk row is reported `failed` and not applied.
    #[arg(long, value_name = "PROB", default_value_t = 0.0)]
    pub bulk_row_fail_prob: f64,

    /// Bulk calls (submits and status polls) allowed in any 60 s before 503; 0 for no
    /// limit. Adobe allows 50.
    #[arg(long, value_name = "N", default_value_t = super::ADOBE_CALLS_PER_MINUTE)]
    pub bulk_calls_per_minute: u32,

    /// Answer bulk submits with a status URL `..batchStatus?client=C&batchId=ID` whose
    /// `&` is bare inside the XML, as in Adobe's older sample.
    #[arg(long)]
    pub bulk_status_bare_ampersand: bool,

    /// Answer bulk submits with an `http://` status URL even when serving HTTPS, as
    /// Adobe's edge hosts do.
    #[arg(long)]
    pub bulk_status_plain_http: bool,

    /// Keep only the statuses of the N latest batches (Adobe keeps 10); older ones are
    /// answered as unknown batches but still applied. 0 keeps every status.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub bulk_statuses_kept: u32,

    /// The share of customers (0 to 1) whose profile exists at start, picked by a
    /// stable hash of the id. The rest exist only once a bulk v2 batch creates them.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub known_share: f64,

    /// A profile without an applied write for this long is gone. Adobe's default is
    /// 14 days.
    #[arg(long, value_name = "MS", default_value_t = super::Existence::default().lifetime_ms)]
    pub profile_lifetime_ms: u64,

    /// A profile created by a bulk v2 batch is not readable (fetch 404, single updates
    /// ignored) this long after it is created. Adobe says about an hour.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub readable_after_ms: u64,

    /// The lenient behaviour: a single update creates a missing profile. Adobe's single
    /// update only updates.
    #[arg(long)]
    pub single_update_creates: bool,

    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve HTTPS with a test CA generated at start-up and a certificate it signs
    /// for 127.0.0.1, ::1 and localhost.
    #[arg(long)]
    pub tls_self_signed: bool,

    /// With TLS: write the PEM certificate clients should trust here (the generated
    /// CA, or the last certificate of --tls-cert), e.g. for `target.ca_file`.
    #[arg(long, value_name = "PATH")]
    pub tls_ca_out: Option<PathBuf>,
}

impl SimulateTargetArgs {
    /// Whether any of the HTTPS flags is given.
    pub fn wants_tls(&self) -> bool {
        self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_self_signed
            || self.tls_ca_out.is_some()
    }

    /// The TLS identity these flags ask for, `None` for plain HTTP.
    #[cfg(feature = "tls")]
    pub fn tls_identity(&self) -> anyhow::Result<Option<TlsIdentity>> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => TlsIdentity::from_pem_files(cert, key)?,
            _ if self.tls_self_signed => TlsIdentity::generate()?,
            _ => {
                anyhow::ensure!(
                    self.tls_ca_out.is_none(),
                    "--tls-ca-out needs --tls-self-signed or --tls-cert and --tls-key"
                );
                return Ok(None);
            }
        };
        if let Some(path) = &self.tls_ca_out {
            std::fs::write(path, identity.trust_pem()).map_err(|error| {
                anyhow::anyhow!("--tls-ca-out: cannot write {}: {error}", path.display())
            })?;
        }
        Ok(Some(identity))
    }

    /// The simulator configuration these flags describe.
    pub fn config(&self) -> SimulatorConfig {
        SimulatorConfig {
            client_code: self.client_code.clone(),
            token: self.token.clone(),
            faults: Faults {
                failures: self.failures.clone(),
                latency: Latency {
                    fixed_ms: self.latency_ms,
                    jitter_ms: self.jitter_ms,
                },
                hang_probability: self.hang_prob,
                reset_probability: self.reset_prob,
                rate_limit: self.rate_limit,
                overload: self.overload.map(|in_flight| Overload { in_flight }),
                bulk: BulkFaults {
                    completion_delay_ms: self.bulk_completion_delay_ms,
                    stuck_probability: self.bulk_stuck_prob,
                    row_failure_ids: self.bulk_fail_ids.clone(),
                    row_failure_probability: self.bulk_row_fail_prob,
                    calls_per_minute: self.bulk_calls_per_minute,
                    status_url_bare_ampersand: self.bulk_status_bare_ampersand,
                    status_url_plain_http: self.bulk_status_plain_http,
                    statuses_kept: self.bulk_statuses_kept,
                },
                failing_ids: self.fail_ids.clone(),
            },
            existence: Existence {
                known_share: self.known_share,
                lifetime_ms: self.profile_lifetime_ms,
                readable_after_ms: self.readable_after_ms,
                single_update_creates: self.single_update_creates,
            },
        }
    }
}

/// Serves the simulator until `shutdown` completes, then stops it.
pub async fn run(
    args: SimulateTargetArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let simulator = start(&args).await?;
    tracing::info!(
        listen = %simulator.addr(),
        base_url = %simulator.base_url(),
        client_code = %simulator.client_code(),
        token_required = args.token.is_some(),
        known_share = args.known_share,
        single_update_creates = args.single_update_creates,
        "The Target simulator is listening."
    );
    shutdown.await;
    tracing::info!("The Target simulator is stopping.");
    simulator.shutdown().await;
    Ok(())
}

/// Starts the simulator the flags describe, over HTTPS when they ask for it.
#[cfg(feature = "tls")]
async fn start(args: &SimulateTargetArgs) -> anyhow::Result<SimulatorHandle> {
    let config = args.config();
    Ok(match args.tls_identity()? {
        Some(identity) => Simulator::start_tls(args.listen, config, &identity).await?,
        None => Simulator::start(args.listen, config).await?,
    })
}

/// Starts the simulator the flags describe; this build has no HTTPS.
#[cfg(not(feature = "tls"))]
async fn start(args: &SimulateTargetArgs) -> anyhow::Result<SimulatorHandle> {
    anyhow::ensure!(
        !args.wants_tls(),
        "this build serves plain HTTP only: --tls-cert, --tls-key, --tls-self-signed and \
         --tls-ca-out need the simulator's `tls` feature (pos-profile-sync: \
         `cargo build --release --features simulator-tls`)"
    );
    Ok(Simulator::start(args.listen, args.config()).await?)
}

/// A command-line value that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadFaultArg(String);

impl FromStr for Failure {
    type Err = BadFaultArg;

    /// `STATUS:PROB`, `STATUS:PROB:SECONDS` or `STATUS:PROB:date+SECONDS`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadFaultArg(format!("{text:?} is not STATUS:PROB[:RETRY_AFTER]"));
        let mut parts = text.split(':');
        let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let probability = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let retry_after = match parts.next() {
            None => None,
            Some(after) => Some(match after.strip_prefix("date+") {
                Some(seconds) => RetryAfter::HttpDate(seconds.parse().map_err(|_| bad())?),
                None => RetryAfter::Seconds(after.parse().map_err(|_| bad())?),
            }),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            status,
            probability,
            retry_after,
        })
    }
}

impl FromStr for RateLimit {
    type Err = BadFaultArg;

    /// `PER_SECOND` or `PER_SECOND:BURST`; the burst defaults to one second's worth.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadFaultArg(format!("{text:?} is not PER_SECOND[:BURST]"));
        let (rate, burst) = match text.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        let per_second: f64 = rate.parse().map_err(|_| bad())?;
        let burst = match burst {
            Some(burst) => burst.parse().map_err(|_| bad())?,
            None => per_second.ceil().clamp(1.0, u32::MAX as f64) as u32,
        };
        Ok(Self { per_second, burst })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateTargetArgs,
    }

    #[test]
    fn flags_become_the_simulator_configuration() {
        let cli = Cli::try_parse_from([
            "simulate-target",
            "--listen",
            "127.0.0.1:0",
            "--client-code",
            "acme",
            "--latency-ms",
            "20",
            "--jitter-ms",
            "5",
            "--fail",
            "503:0.3:5",
            "--fail",
            "500:0.1",
            "--hang-prob",
            "0.01",
            "--reset-prob",
            "0.02",
            "--rate-limit",
            "100:20",
            "--overload",
            "20",
            "--bulk-completion-delay-ms",
            "250",
            "--bulk-stuck-prob",
            "0.1",
            "--bulk-fail-id",
            "CRM-9",
            "--bulk-fail-id",
            "CRM-10",
            "--bulk-row-fail-prob",
            "0.01",
            "--bulk-calls-per-minute",
            "0",
            "--bulk-status-bare-ampersand",
            "--bulk-status-plain-http",
            "--bulk-statuses-kept",
            "10",
            "--known-share",
            "0.3",
            "--profile-lifetime-ms",
            "60000",
            "--readable-after-ms",
            "500",
            "--single-update-creates",
        ])
        .expect("valid flags");
        let config = cli.args.config();
        assert_eq!(config.client_code, "acme");
        assert_eq!(
            config.faults.latency,
            Latency {
                fixed_ms: 20,
                jitter_ms: 5
            }
        );
        assert_eq!(config.faults.failures.len(), 2);
        assert_eq!(config.faults.hang_probability, 0.01);
        assert_eq!(config.faults.reset_probability, 0.02);
        assert_eq!(
            config.faults.rate_limit,
            Some(RateLimit {
                per_second: 100.0,
                burst: 20
            })
        );
        assert_eq!(config.faults.overload, Some(Overload { in_flight: 20 }));
        assert_eq!(
            config.faults.bulk,
            BulkFaults {
                completion_delay_ms: 250,
                stuck_probability: 0.1,
                row_failure_ids: vec!["CRM-9".into(), "CRM-10".into()],
                row_failure_probability: 0.01,
                calls_per_minute: 0,
                status_url_bare_ampersand: true,
                status_url_plain_http: true,
                statuses_kept: 10,
            }
        );
        assert_eq!(config.faults.validate(), Ok(()));
        assert_eq!(
            config.existence,
            Existence {
                known_share: 0.3,
                lifetime_ms: 60_000,
                readable_after_ms: 500,
                single_update_creates: true,
            }
        );
    }

    #[test]
    fn defaults_are_a_faultless_faithful_demo_simulator_on_port_8080() {
        let cli = Cli::try_parse_from(["simulate-target"]).expect("no flag is required");
        assert_eq!(cli.args.listen.to_string(), "127.0.0.1:8080");
        let config = cli.args.config();
        assert_eq!(config.client_code, "demo");
        assert_eq!(config.faults, Faults::none());
        assert_eq!(config.existence, Existence::faithful());
    }

    #[tokio::test]
    async fn run_serves_until_shutdown_then_returns() {
        let cli = Cli::try_parse_from(["simulate-target", "--listen", "127.0.0.1:0"])
            .expect("valid flags");
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            run(cli.args, std::future::ready(())),
        )
        .await;
        assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    }

    #[test]
    fn a_malformed_failure_is_a_usage_error() {
        assert!(Cli::try_parse_from(["simulate-target", "--fail", "503"]).is_err());
    }

    #[test]
    fn failure_arguments_parse_with_either_retry_after_form() {
        assert_eq!("503:0.3".parse(), Ok(Failure::new(503, 0.3)));
        assert_eq!(
            "503:0.3:5".parse(),
            Ok(Failure::new(503, 0.3).with_retry_after(RetryAfter::Seconds(5)))
        );
        assert_eq!(
            "429:1:date+7".parse(),
            Ok(Failure::new(429, 1.0).with_retry_after(RetryAfter::HttpDate(7)))
        );
        for bad in ["", "503", "x:0.1", "503:p", "503:0.1:soon", "503:0.1:1:2"] {
            assert!(bad.parse::<Failure>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limit_arguments_parse_with_a_default_burst() {
        let parsed: RateLimit = "10".parse().expect("valid");
        assert_eq!((parsed.per_second, parsed.burst), (10.0, 10));
        let parsed: RateLimit = "0.5".parse().expect("valid");
        assert_eq!(parsed.burst, 1);
        let parsed: RateLimit = "100:5".parse().expect("valid");
        assert_eq!((parsed.per_second, parsed.burst), (100.0, 5));
        assert!("ten".parse::<RateLimit>().is_err());
    }
}

#[cfg(all(test, not(feature = "tls")))]
mod plain_build_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: SimulateTargetArgs,
    }

    fn args(flags: &[&str]) -> SimulateTargetArgs {
        let line = ["simulate-target", "--listen", "127.0.0.1:0"];
        Command::try_parse_from(line.iter().chain(flags))
            .unwrap()
            .args
    }

    #[tokio::test]
    async fn a_build_without_tls_refuses_the_https_flags_by_name_and_serves_plain_http() {
        for flags in [
            &["--tls-self-signed"][..],
            &["--tls-cert", "c.pem", "--tls-key", "k.pem"],
        ] {
            let error = run(args(flags), async {}).await.unwrap_err().to_string();
            assert!(
                error.contains("plain HTTP only") && error.contains("--features simulator-tls"),
                "{flags:?}: {error}"
            );
        }
        run(args(&[]), async {}).await.unwrap();
    }
}
