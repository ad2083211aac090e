//! The Target simulator: the far end of every test, demo and benchmark, standing in for
//! Adobe Target's single profile update API, its bulk profile update APIs (v2 and v1)
//! and its profile fetch API, faithful by default to what Adobe documents about which
//! profiles exist (see **Existence** below).
//!
//! It serves, for one client code:
//!
//! | route | what |
//! |---|---|
//! | `GET`/`POST /m2/{client_code}/profile/update` | a single profile update; parameters in the query string and/or an `application/x-www-form-urlencoded` body (see below) |
//! | `POST /m2/{client_code}/v2/profile/batchUpdate` | a bulk v2 batch: form body `batch=<CSV>` (see **Bulk** below); creates missing profiles |
//! | `POST /m2/{client_code}/profile/batchUpdate` | a bulk v1 batch, the same form; updates existing profiles only |
//! | `GET /m2/{client_code}[/v2]/profile/batchStatus?batchId=[&showDetails=true]` | a batch's status (either path, any batch) |
//! | `GET /rest/v1/profiles/thirdPartyId/{id}?client=` | a `mbox3rdPartyId` profile as Target's JSON document, or Adobe's 404 document |
//! | `GET /rest/v1/profiles/{pcId}?client=` | a `mboxPC` profile likewise |
//! | `GET /_sim/stats` | [`SimStats`] as JSON |
//! | `GET /_sim/profiles` | [`ProfileDump`] as JSON: the stored profiles that have not expired |
//! | `POST /_sim/reset` | forgets profiles, batches and statistics; the profiles known at start exist again (faults, existence rules, token, hold and the bulk calls counted this minute stay); 204 |
//! | `GET`, `PUT`/`POST /_sim/faults` | the [`Faults`] in force; setting answers them back, or 400 `{"error":..}` |
//! | `GET`, `PUT`/`POST /_sim/existence` | the [`Existence`] rules in force, likewise (setting faults never changes them) |
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
//! shape with `success` false. Like Target, an update to a profile that does not exist
//! answers the same 200 and changes nothing (see **Existence**).
//!
//! **Existence** ([`Existence`], `GET`/`PUT /_sim/existence`, flags `--known-share`,
//! `--profile-lifetime-ms`, `--readable-after-ms`, `--single-update-creates`):
//!
//! | field | default | effect |
//! |---|---|---|
//! | `known_share` | 0 | this share of ids has a (blank) profile at start and after a reset; which ids: [`known_at_start`], a stable hash |
//! | `lifetime_ms` | 14 days | a profile without an applied write for this long is gone (Adobe's default inactivity lifetime) |
//! | `readable_after_ms` | 0 | a profile created by a v2 batch answers 404 to fetches and ignores single updates and v1 rows this long (Adobe: about an hour) |
//! | `single_update_creates` | false | the lenient switch: a single update creates a missing profile, readable at once (not what Adobe does) |
//!
//! A single update (and a v1 row) lands only on a profile that exists and is readable;
//! otherwise it is answered as usual and counted in
//! [`SimStats::updates_to_unknown_profiles`] (v1 rows in `bulk.rows_not_found` and
//! `profilesNotFound`). A v2 row creates a missing or expired profile
//! (`bulk.profiles_created`). Every applied write (single or bulk) restarts the
//! profile's lifetime; fetches do not. The default is Adobe's behaviour with no
//! customer known at start, the case the service must handle (in-store buyers who
//! never logged in on the web); the tests of the delivery path start with
//! `known_share` 1, the demo with 0.3. The handle's [`SimulatorHandle::profiles`] and
//! `profile_*` show stored profiles only: a profile known at start appears once written.
//!
//! **Faults** ([`Faults`]) apply to the update path only, in this order: the hold (the
//! request waits unanswered until released), the rate limit (503 with
//! `Retry-After: 1` when the token bucket is empty), then one draw decides hang (held
//! for an hour, or until the client gives up), a reset (the connection is closed with a
//! TCP RST, no answer), an injected status, or none; a request that passes may then be
//! shed by the overload mode ([`Overload`]: past a capacity of requests in flight, 503
//! without `Retry-After`, the more often the further past it); latency is
//! added before anything is answered. The request's own checks (client code, token,
//! parameters) come after latency and before the injected status. Only a 2xx changes
//! profile state. Read-back checks the token but never suffers faults; `/_sim/` needs no
//! token.
//!
//! **Bulk.** The submit's form field `batch` is a CSV: lines split at `\n`, cells at
//! `,`, every cell percent-decoded as UTF-8; the first header cell is `thirdPartyId` or
//! `pcId`, the others are bare attribute names (see `bulk/decode.rs` for the exact
//! rules, Adobe's pitfalls included). Answers: 200 with
//! `<response><success>true</success><batchStatus>http://{this simulator}/m2/{client_code}/v2/profile/batchStatus?batchId=..</batchStatus><message>Batch submitted for processing</message></response>`
//! (`/m2/{client_code}/profile/batchStatus` for v1);
//! 200 with `success` false and no batch id for an undecodable cell (Adobe's
//! "Unexpected error"), a wrong id column, no rows or more than 500,000 rows; 401 and 404
//! as for updates; 413 for a body over 50 MB (50,000,000 bytes; bodies up to 64 MiB are
//! read on these routes only). The status is `incomplete` until the completion delay has
//! passed since submission; the first request of any kind after that applies the batch
//! to the profiles, exactly once and in the order submitted, and every later poll says
//! `complete`. Like Adobe's v2, a row creates a missing profile (v1 rows of missing
//! profiles are not applied), and an empty value never clears an attribute (a row of
//! only empty values changes nothing). With `showDetails=true` the answer adds
//! `consumedCount`, `successfulUpdates`, `profilesNotFound` (v1 rows whose profile did
//! not exist), `failedUpdates` and one
//! `<profile><id>..</id><status>failed</status></profile>` per failed row. An unknown
//! (or forgotten) batch id is 404 with `success` false. [`SimStats::bulk`] counts the
//! bulk path apart.
//!
//! **Bulk faults** ([`BulkFaults`], `"bulk"` in the faults JSON, `--bulk-*` flags),
//! drawn when a batch is submitted:
//!
//! | field | effect |
//! |---|---|
//! | `completion_delay_ms` (0) | a batch stays `incomplete` this long |
//! | `stuck_probability` (0) | the batch is `stuck` for good and never applied |
//! | `row_failure_ids` (none) | rows of these ids are reported `failed` and not applied |
//! | `row_failure_probability` (0) | any other row fails likewise with this probability |
//! | `calls_per_minute` (50) | submits and status polls together above this many in any 60 s answer 503 (no `Retry-After`); 0 for no limit. Kept apart from the update path's `rate_limit` |
//! | `status_url_bare_ampersand` (false) | the status URL reads `..batchStatus?client=C&batchId=ID` with the `&` bare in the XML (Adobe's older sample) |
//! | `status_url_plain_http` (false) | the status URL says `http://` even over HTTPS (Adobe's edge hosts do) |
//! | `statuses_kept` (0: all) | only the statuses of this many latest batches are kept; an older one is answered as unknown but still applied (Adobe keeps 10, [`ADOBE_STATUSES_KEPT`]) |
//!
//! Bulk calls never suffer the update path's hold, latency, hang or injected failures.
//!
//! **HTTPS.** `Simulator::start_tls` (with the `tls` feature) serves the same routes over TLS (rustls, HTTP/1.1)
//! with a `TlsIdentity`: PEM files, or a test CA generated at start-up whose certificate
//! clients add to their trust roots (`target.ca_file`).
//! The connection-reset fault needs the plain listener: over TLS a drawn reset is a 503.

mod admin;
mod bulk;
pub mod cli;
mod existence;
mod faults;
mod params;
mod rate;
mod readback;
mod reply;
mod reset;
mod server;
mod sharded;
mod state;
mod stats;
mod store;
#[cfg(feature = "tls")]
mod tls;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use bulk::decode::{decode_batch, BadBatch, DecodedBatch, DecodedRow};
pub use bulk::{BulkFaults, ADOBE_CALLS_PER_MINUTE, ADOBE_STATUSES_KEPT};
pub use cli::BadFaultArg;
pub use existence::{known_at_start, Existence, InvalidExistence, ADOBE_PROFILE_LIFETIME};
pub use faults::{Failure, Faults, InvalidFaults, Latency, Overload, RateLimit, RetryAfter};
pub use state::InvalidSettings;
pub use stats::{BulkStats, FetchStats, PerSecond, ProfileCounts, ProfileRequests, SimStats};
pub use store::{IdKind, ProfileDump, StoredProfile};
#[cfg(feature = "tls")]
pub use tls::{TlsIdentity, TlsSetupError, GENERATED_NAMES};

use state::Shared;
use store::ProfileKey;

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
    /// Which profiles exist: Adobe's rules by default, with no profile at start.
    pub existence: Existence,
}

impl SimulatorConfig {
    /// No token, no faults, Adobe's existence rules with no profile at start.
    pub fn new(client_code: impl Into<String>) -> Self {
        Self {
            client_code: client_code.into(),
            token: None,
            faults: Faults::none(),
            existence: Existence::faithful(),
        }
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and serves in a background task until
    /// the handle is shut down or dropped. Invalid faults or existence rules are an
    /// `InvalidInput` error.
    pub async fn start(listen: SocketAddr, config: SimulatorConfig) -> io::Result<SimulatorHandle> {
        let shared = Self::shared(config)?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let listener = reset::ResettableListener(listener);
        Ok(Self::serve(listener, addr, "http", shared))
    }

    /// Like [`Simulator::start`], but serves HTTPS with `identity`; clients trust
    /// [`TlsIdentity::trust_pem`]. A certificate rustls refuses is `InvalidInput`.
    #[cfg(feature = "tls")]
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
        let shared = Shared::new(
            config.client_code,
            config.token,
            config.faults,
            config.existence,
        )
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
        for<'a> reset::ResetSwitch:
            axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
    {
        shared.set_base_url(base_url(scheme, addr));
        let stop = shared.shutdown.clone();
        let app = server::router(Arc::clone(&shared))
            .into_make_service_with_connect_info::<reset::ResetSwitch>();
        let serve = axum::serve(listener, app)
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
        base_url(self.scheme, self.addr)
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

    /// The existence rules in force.
    pub fn existence(&self) -> Existence {
        (*self.shared.existence()).clone()
    }

    /// Replaces the existence rules; profiles already stored stay, and the profiles
    /// known at start are those of the new `known_share`.
    pub fn set_existence(&self, existence: Existence) -> Result<(), InvalidExistence> {
        self.shared.set_existence(existence)
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

    /// The attributes of the stored profile named `mbox3rdPartyId=id`, unless it expired.
    pub fn profile_third_party(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.values(&ProfileKey::new(IdKind::ThirdParty, id))
    }

    /// The attributes of the stored profile named `mboxPC=id`, unless it expired.
    pub fn profile_pc(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.values(&ProfileKey::new(IdKind::Pc, id))
    }

    fn values(&self, key: &ProfileKey) -> Option<BTreeMap<String, String>> {
        self.shared.settle_batches();
        let now = self.shared.stats.elapsed();
        self.shared.store.values(key, now, &self.shared.existence())
    }

    /// Every stored profile that has not expired (a profile known at start appears once
    /// written).
    pub fn profiles(&self) -> ProfileDump {
        self.shared.settle_batches();
        let now = self.shared.stats.elapsed();
        self.shared.store.dump(now, &self.shared.existence())
    }

    /// A snapshot of the statistics (batches due are applied first).
    pub fn stats(&self) -> SimStats {
        self.shared.settle_batches();
        self.shared.stats.snapshot()
    }

    /// Forgets profiles, batches and statistics; the profiles known at start exist
    /// again; faults, existence rules, token and hold stay.
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

/// `http://IP:PORT` for a bound address, with a loopback IP for all interfaces.
fn base_url(scheme: &str, addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
