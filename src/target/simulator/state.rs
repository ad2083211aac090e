//! The state one running simulator shares between its HTTP handlers and its handle:
//! settings that change at runtime (faults, token, hold), profiles, bulk batches and
//! statistics.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::http::{header, HeaderMap};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bulk::{BatchRegistry, CallWindow};
use super::faults::{Faults, InvalidFaults};
use super::rate::TokenBucket;
use super::sharded::lock;
use super::stats::Recorder;
use super::store::ProfileStore;

/// Everything behind one simulator.
pub(crate) struct Shared {
    /// The only client code whose paths are served.
    pub(crate) client_code: String,
    /// The exact `Authorization` header value required, when a token is set.
    authorization: RwLock<Option<Arc<str>>>,
    faults: RwLock<Arc<Faults>>,
    /// Present when `faults.rate_limit` is.
    bucket: Mutex<Option<TokenBucket>>,
    /// `true` while update requests are held.
    hold: watch::Sender<bool>,
    pub(crate) store: ProfileStore,
    /// Bulk batches by id.
    pub(crate) batches: BatchRegistry,
    /// Bulk calls admitted in the last minute (apart from the update path's bucket).
    bulk_window: Mutex<CallWindow>,
    /// `http://IP:PORT` as served, set once bound; bulk answers point back at it.
    base_url: OnceLock<String>,
    pub(crate) stats: Recorder,
    /// Cancelled when the simulator stops: waiting requests give up.
    pub(crate) shutdown: CancellationToken,
}

/// Shows neither the token nor the profiles.
impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("client_code", &self.client_code)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A simulator's state; `faults` must be valid.
    pub(crate) fn new(
        client_code: String,
        token: Option<String>,
        faults: Faults,
    ) -> Result<Self, InvalidFaults> {
        let shared = Self {
            client_code,
            authorization: RwLock::new(None),
            faults: RwLock::new(Arc::new(Faults::none())),
            bucket: Mutex::new(None),
            hold: watch::Sender::new(false),
            store: ProfileStore::new(),
            batches: BatchRegistry::default(),
            bulk_window: Mutex::new(CallWindow::default()),
            base_url: OnceLock::new(),
            stats: Recorder::new(),
            shutdown: CancellationToken::new(),
        };
        shared.set_token(token);
        shared.set_faults(faults)?;
        Ok(shared)
    }

    /// The faults in force.
    pub(crate) fn faults(&self) -> Arc<Faults> {
        self.faults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the faults; a changed rate limit starts with a full bucket.
    pub(crate) fn set_faults(&self, faults: Faults) -> Result<(), InvalidFaults> {
        faults.validate()?;
        {
            let mut bucket = lock(&self.bucket);
            let unchanged = bucket.as_ref().map(TokenBucket::limit) == faults.rate_limit;
            if !unchanged {
                *bucket = faults
                    .rate_limit
                    .map(|limit| TokenBucket::new(limit, self.stats.elapsed()));
            }
        }
        *self
            .faults
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(faults);
        Ok(())
    }

    /// Whether the rate limit lets one more request through now.
    pub(crate) fn within_rate(&self) -> bool {
        match lock(&self.bucket).as_mut() {
            Some(bucket) => bucket.try_take(self.stats.elapsed()),
            None => true,
        }
    }

    /// Whether Adobe's calls-a-minute limit lets one more bulk call through now.
    pub(crate) fn within_bulk_rate(&self) -> bool {
        let limit = self.faults().bulk.calls_per_minute;
        lock(&self.bulk_window).try_call(self.stats.elapsed(), limit)
    }

    /// Records the address served (once, when bound).
    pub(crate) fn set_base_url(&self, base_url: String) {
        let _ = self.base_url.set(base_url);
    }

    /// `http://IP:PORT` as served (empty before the simulator is bound).
    pub(crate) fn base_url(&self) -> &str {
        self.base_url.get().map_or("", String::as_str)
    }

    /// Sets, changes or (with `None`) clears the required bearer token.
    pub(crate) fn set_token(&self, token: Option<String>) {
        let authorization = token.map(|token| Arc::from(format!("Bearer {token}")));
        *self
            .authorization
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = authorization;
    }

    /// Whether `headers` carry exactly the required `Authorization`, or none is required.
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let required = self
            .authorization
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match required {
            None => true,
            Some(required) => {
                let mut given = headers.get_all(header::AUTHORIZATION).iter();
                matches!(
                    (given.next(), given.next()),
                    (Some(value), None) if value.as_bytes() == required.as_bytes()
                )
            }
        }
    }

    /// Holds (`true`) or releases (`false`) update requests.
    pub(crate) fn set_hold(&self, held: bool) {
        self.stats.set_holding(held);
        self.hold.send_replace(held);
    }

    /// Waits while the hold is on. `false` if the simulator stopped meanwhile.
    pub(crate) async fn wait_until_released(&self) -> bool {
        if !*self.hold.borrow() {
            return true;
        }
        let _held = self.stats.held();
        let mut receiver = self.hold.subscribe();
        tokio::select! {
            released = receiver.wait_for(|held| !*held) => released.is_ok(),
            () = self.shutdown.cancelled() => false,
        }
    }

    /// Forgets profiles, batches and counts; faults, token, hold and the calls counted
    /// against the bulk limit stay as they are.
    pub(crate) fn reset(&self) {
        self.store.clear();
        self.batches.clear();
        self.stats.reset();
    }
}
