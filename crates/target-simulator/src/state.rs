//! The state one running simulator shares between its HTTP handlers and its handle:
//! settings that change at runtime (faults, existence rules, token, hold), profiles,
//! bulk batches and statistics.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::http::{header, HeaderMap};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use time::OffsetDateTime;

use super::bulk::{BatchRegistry, CallWindow};
use super::existence::{Existence, InvalidExistence};
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
    /// Which profiles exist (apart from faults: setting faults never changes them).
    existence: RwLock<Arc<Existence>>,
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
        existence: Existence,
    ) -> Result<Self, InvalidSettings> {
        existence.validate()?;
        let stats = Recorder::new();
        let store = ProfileStore::new(stats.elapsed(), OffsetDateTime::now_utc());
        let shared = Self {
            client_code,
            authorization: RwLock::new(None),
            faults: RwLock::new(Arc::new(Faults::none())),
            existence: RwLock::new(Arc::new(existence)),
            bucket: Mutex::new(None),
            hold: watch::Sender::new(false),
            store,
            batches: BatchRegistry::default(),
            bulk_window: Mutex::new(CallWindow::default()),
            base_url: OnceLock::new(),
            stats,
            shutdown: CancellationToken::new(),
        };
        shared.set_token(token);
        shared.set_faults(faults)?;
        Ok(shared)
    }

    /// The existence rules in force.
    pub(crate) fn existence(&self) -> Arc<Existence> {
        self.existence
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the existence rules (profiles already stored stay).
    pub(crate) fn set_existence(&self, existence: Existence) -> Result<(), InvalidExistence> {
        existence.validate()?;
        *self
            .existence
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(existence);
        Ok(())
    }

    /// Applies every bulk batch whose completion time has come, and counts what it did.
    /// Called before anything reads or writes profiles, so a batch lands at its time
    /// whether or not anyone polls its status.
    pub(crate) fn settle_batches(&self) {
        let now = self.stats.elapsed();
        let wall = OffsetDateTime::now_utc();
        let rules = self.existence();
        let settled = self.batches.settle(now, |update, creates| {
            self.store.batch_row(update, creates, now, wall, &rules)
        });
        self.stats.batch_rows_settled(settled);
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

    /// Forgets profiles, batches and counts (the profiles known at start are back);
    /// faults, existence rules, token, hold and the calls counted against the bulk
    /// limit stay as they are.
    pub(crate) fn reset(&self) {
        self.store
            .clear(self.stats.elapsed(), OffsetDateTime::now_utc());
        self.batches.clear();
        self.stats.reset();
    }
}

/// Why a simulator's starting settings cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidSettings {
    /// Invalid faults.
    #[error(transparent)]
    Faults(#[from] InvalidFaults),
    /// Invalid existence rules.
    #[error(transparent)]
    Existence(#[from] InvalidExistence),
}
