//! Read-back verification in production: a sample of the profiles whose
//! updates Target accepted are fetched again after `verify.delay_ms` and
//! compared with what the updates set ([`compare`]), so "accepted" can be
//! checked against "applied" the way a retailer's data team would by hand.
//!
//! - Sampling is by profile (a stable hash of the identity against
//!   `verify.sample_ratio`), so every accepted update of a sampled profile is
//!   followed, and a profile's later updates fold into what it should hold
//!   (per attribute, the value of the latest `occurred_at` wins, as when
//!   updates coalesce).
//! - [`Verifier::offer`] is what delivery calls when Target accepts an update.
//!   It never blocks on I/O or waits for room: a profile not sampled costs one
//!   hash, and when `verify.max_pending` profiles are already waiting a new
//!   one is not taken (`pps_verify_dropped_total`).
//! - A profile is read back `delay` after its latest accepted update, through
//!   the fetch budget ([`crate::delivery::fetch_budget`]); the result goes to
//!   `pps_verify_total{result}` and the shares to one log line per
//!   `verify.interval_ms` ([`task::run`]). Read-backs still waiting at shutdown
//!   are dropped: verification is a measurement, never part of delivery.

pub mod compare;
mod pending;
pub mod task;

pub use compare::{compare, Mismatch, ReadBack, Tally};
pub use pending::{Expected, Offered, PendingSet};

use crate::event::Identity;
use crate::mapping::ProfileUpdate;
use crate::ops::config::VerifySettings;
use crate::ops::metrics::Metrics;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Whether a profile is in the sample: a hash of its identity that is stable
/// across pods, versions and restarts (SHA-256), against the ratio. A
/// profile the fetch API cannot address ([`Identity::is_fetchable`]) never is.
pub fn sampled(identity: &Identity, ratio: f64) -> bool {
    if !identity.is_fetchable() {
        // Read back, it would be another resource's answer.
        return false;
    }
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let digest = Sha256::new()
        .chain_update(identity.param())
        .chain_update([0])
        .chain_update(identity.id())
        .finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) as f64 / u64::MAX as f64) < ratio
}

/// The handle delivery offers accepted updates to; shared with [`task::run`].
#[derive(Debug)]
pub struct Verifier {
    ratio: f64,
    interval: Duration,
    pending: Mutex<PendingSet>,
    /// Wakes the task when a profile starts waiting.
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl Verifier {
    /// A verifier for these settings, `None` when `sample_ratio` is 0.
    pub fn new(settings: &VerifySettings, metrics: Arc<Metrics>) -> Option<Arc<Verifier>> {
        settings.enabled().then(|| {
            Arc::new(Verifier {
                ratio: settings.sample_ratio,
                interval: settings.interval(),
                pending: Mutex::new(PendingSet::new(
                    usize::try_from(settings.max_pending).unwrap_or(usize::MAX),
                    settings.delay(),
                )),
                wake: Notify::new(),
                metrics,
            })
        })
    }

    /// Target accepted `update`: remember it for a read-back if its profile is
    /// sampled and there is room. Never waits.
    pub fn offer(&self, update: &ProfileUpdate) {
        if !sampled(&update.identity, self.ratio) {
            return;
        }
        let (offered, waiting) = {
            let mut pending = self.lock();
            let offered = pending.offer(update, SystemTime::now(), Instant::now());
            (offered, pending.len())
        };
        self.metrics.verify_pending.set(waiting as i64);
        match offered {
            Offered::Added => self.wake.notify_one(),
            Offered::Merged => {}
            Offered::Dropped => {
                self.metrics.verify_dropped.inc();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingSet> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_the_ratio_of_profiles_is_sampled_and_always_the_same_ones() {
        let ids: Vec<Identity> = (0..20_000)
            .map(|n| Identity::ThirdParty(format!("CRM-{n}").into()))
            .collect();
        let taken = ids.iter().filter(|id| sampled(id, 0.1)).count();
        assert!((1_700..2_300).contains(&taken), "{taken} of 20000 at 0.1");
        let again = ids.iter().filter(|id| sampled(id, 0.1)).count();
        assert_eq!(taken, again);
        assert!(ids.iter().all(|id| sampled(id, 1.0)));
        assert!(!ids.iter().any(|id| sampled(id, 0.0)));
        // A larger ratio keeps every profile a smaller one took.
        assert!(ids
            .iter()
            .filter(|id| sampled(id, 0.1))
            .all(|id| sampled(id, 0.5)));
    }

    #[test]
    fn a_verifier_exists_only_when_sampling_is_on() {
        let metrics = Arc::new(Metrics::new());
        assert!(Verifier::new(&VerifySettings::default(), metrics.clone()).is_none());
        let settings = VerifySettings {
            sample_ratio: 1.0,
            max_pending: 1,
            ..VerifySettings::default()
        };
        let verifier = Verifier::new(&settings, metrics.clone()).expect("on");
        let update = |id: &str| ProfileUpdate {
            identity: Identity::ThirdParty(id.into()),
            attributes: Vec::new(),
            occurred_at: crate::event::parse_rfc3339("2026-11-28T10:15:00Z").unwrap(),
        };
        verifier.offer(&update("a"));
        verifier.offer(&update("a"));
        verifier.offer(&update("b"));
        assert_eq!(metrics.verify_pending.get(), 1);
        assert_eq!(metrics.verify_dropped.get(), 1, "b found no room");
    }
}
