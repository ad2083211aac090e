//! The Target simulator: the far end of every test, demo and benchmark, standing in for
//! Adobe Target's single profile update API and its profile fetch API.
//!
//! It serves, for one client code:
//!
//! | route | what |
//! |---|---|
//! | `GET`/`POST /m2/{client_code}/profile/update` | a single profile update; parameters in the query string and/or an `application/x-www-form-urlencoded` body (see below) |
//! | `GET /rest/v1/profiles/thirdPartyId/{id}?client=` | a `mbox3rdPartyId` profile as Target's JSON document, or 404 |
//! | `GET /rest/v1/profiles/{pcId}?client=` | a `mboxPC` profile likewise |
//! | `GET /_sim/stats` | [`SimStats`] as JSON |
//! | `GET /_sim/profiles` | [`ProfileDump`] as JSON |
//! | `POST /_sim/reset` | forgets profiles and statistics (faults, token and hold stay); 204 |
//! | `GET`, `PUT`/`POST /_sim/faults` | the [`Faults`] in force; setting answers them back, or 400 `{"error":..}` |
//! | `PUT`/`POST /_sim/token` | `{"token":"abc"}` sets or changes the token, `{"token":null}` clears it; 204 |
//! | `POST /_sim/hold`, `POST /_sim/release` | holds or releases update requests; 204 |
//!
//! **Updates.** Exactly one of `mbox3rdPartyId` and `mboxPC` names the profile (the two
//! are separate namespaces); every `profile.NAME=value` sets attribute `NAME`. Both
//! query and body are decoded by form rules: `%XX` is a byte, the result must be UTF-8,
//! and `+` is a space (Adobe decodes it so too), so a literal plus is sent as `%2B`.
//! When a parameter repeats, the later one wins (body after query); an empty value is
//! stored as the empty string. Answers: 200 with Target's XML
//! `<response><success>true</success><message>Request successfully submitted</message></response>`;
//! 400 for a missing, repeated or doubled identity or bytes that are not UTF-8; 401
//! when a token is set and `Authorization: Bearer <token>` is not exactly sent; 404 for
//! another client code; 413 for a body over 60 KB, 414 for a path and query over 8 KB
//! and 415 for a body that is not a form (Adobe's limits). Errors use the same XML
//! shape with `success` false. Unlike Target, an update creates a missing profile.
//!
//! **Faults** ([`Faults`]) apply to the update path only, in this order: the hold (the
//! request waits unanswered until released), the rate limit (503 with
//! `Retry-After: 1` when the token bucket is empty), then one draw decides hang (held
//! for an hour, or until the client gives up), an injected status, or none; latency is
//! added before anything is answered. The request's own checks (client code, token,
//! parameters) come after latency and before the injected status. Only a 2xx changes
//! profile state. Read-back checks the token but never suffers faults; `/_sim/` needs no
//! token.
//!
//! **HTTPS.** [`Simulator::start_tls`] serves the same routes over TLS (rustls, HTTP/1.1)
//! with a [`TlsIdentity`]: PEM files, or a test CA generated at start-up whose certificate
//! clients add to their trust roots (`target.ca_file`).

mod admin;
pub mod cli;
mod faults;
mod params;
mod rate;
mod readback;
mod reply;
mod server;
mod sharded;
mod state;
mod stats;
mod store;
mod tls;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use cli::BadFaultArg;
pub use faults::{Failure, Faults, InvalidFaults, Latency, RateLimit, RetryAfter};
pub use stats::{PerSecond, ProfileCounts, ProfileRequests, SimStats};
pub use store::{ProfileDump, StoredProfile};
pub use tls::{TlsIdentity, TlsSetupError, GENERATED_NAMES};

use state::Shared;
use store::{IdKind, ProfileKey};

/// How long [`SimulatorHandle::shutdown`] lets open connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a simulator starts with; all of it but the client code can change at runtime.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The client code served in paths and expected as `client=` on read-back.
    pub client_code: String,
    /// When set, every update and read-back needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Faults injected from the start.
    pub faults: Faults,
}

impl SimulatorConfig {
    /// No token and no faults.
    pub fn new(client_code: impl Into<String>) -> Self {
        Self {
            client_code: client_code.into(),
            token: None,
            faults: Faults::none(),
        }
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and serves in a background task until
    /// the handle is shut down or dropped. Invalid faults are an `InvalidInput` error.
    pub async fn start(listen: SocketAddr, config: SimulatorConfig) -> io::Result<SimulatorHandle> {
        let shared = Self::shared(config)?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|stream| {
            // Small answers must not wait for Nagle; failure only costs latency.
            let _ = stream.set_nodelay(true);
        });
        Ok(Self::serve(listener, addr, "http", shared))
    }

    /// Like [`Simulator::start`], but serves HTTPS with `identity`; clients trust
    /// [`TlsIdentity::trust_pem`]. A certificate rustls refuses is `InvalidInput`.
    pub async fn start_tls(
        listen: SocketAddr,
        config: SimulatorConfig,
        identity: &TlsIdentity,
    ) -> io::Result<SimulatorHandle> {
        let tls = identity
            .server_config()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let shared = Self::shared(config)?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let listener = tls::TlsListener::new(listener, tls)?;
        Ok(Self::serve(listener, addr, "https", shared))
    }

    fn shared(config: SimulatorConfig) -> io::Result<Arc<Shared>> {
        let shared = Shared::new(config.client_code, config.token, config.faults)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        Ok(Arc::new(shared))
    }

    fn serve<L>(
        listener: L,
        addr: SocketAddr,
        scheme: &'static str,
        shared: Arc<Shared>,
    ) -> SimulatorHandle
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let stop = shared.shutdown.clone();
        let serve = axum::serve(listener, server::router(Arc::clone(&shared)))
            .with_graceful_shutdown(async move { stop.cancelled().await });
        let task = tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::error!(%error, "The Target simulator stopped serving.");
            }
        });
        SimulatorHandle {
            addr,
            scheme,
            shared,
            task: Some(task),
        }
    }
}

/// A running simulator. Dropping it stops the server too, without waiting.
#[derive(Debug)]
pub struct SimulatorHandle {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl SimulatorHandle {
    /// The address bound, with the actual port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` (`https://` when serving TLS), with a loopback IP when
    /// bound to all interfaces.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "{}://{}",
            self.scheme,
            SocketAddr::new(ip, self.addr.port())
        )
    }

    /// The client code served.
    pub fn client_code(&self) -> &str {
        &self.shared.client_code
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        (*self.shared.faults()).clone()
    }

    /// Replaces every fault at once; a new rate limit starts with a full bucket.
    pub fn set_faults(&self, faults: Faults) -> Result<(), InvalidFaults> {
        self.shared.set_faults(faults)
    }

    /// Sets, changes or (with `None`) clears the bearer token.
    pub fn set_token(&self, token: Option<String>) {
        self.shared.set_token(token);
    }

    /// Holds update requests unanswered from now until [`SimulatorHandle::release`].
    pub fn hold(&self) {
        self.shared.set_hold(true);
    }

    /// Lets held update requests (and new ones) be processed normally.
    pub fn release(&self) {
        self.shared.set_hold(false);
    }

    /// The attributes of the profile named `mbox3rdPartyId=id`.
    pub fn profile_third_party(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.shared
            .store
            .values(&ProfileKey::new(IdKind::ThirdParty, id))
    }

    /// The attributes of the profile named `mboxPC=id`.
    pub fn profile_pc(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.shared.store.values(&ProfileKey::new(IdKind::Pc, id))
    }

    /// Every profile.
    pub fn profiles(&self) -> ProfileDump {
        self.shared.store.dump()
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// Forgets profiles and statistics; faults, token and hold stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting connections, answers waiting requests (held, hanging, delayed)
    /// with 503 and waits up to 5 s for open connections to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
