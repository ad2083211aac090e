//! The budget of profile fetches, apart from the update budget and the daily
//! quota: `existence.fetch_per_second` and `existence.fetch_burst` are for the
//! whole group, and each pod takes its partition share of them, as it does of
//! `rate_limit`. A fetch is not a single update (it spends no daily quota) but
//! it is a call to Target all the same, so it is paced.
//!
//! [`ProfileFetcher`] is what callers use: wait for the budget, fetch, count
//! the outcome in `pps_target_fetches_total{outcome}`.

use super::gate::{until_ready, BudgetLimiter, RateShare, SendGate};
use crate::event::Identity;
use crate::ops::metrics::Metrics;
use crate::target::fetch::{FetchClient, FetchOutcome};
use std::sync::{Arc, Mutex};

/// Where a pod's fraction of the group comes from: asked before every fetch,
/// so the share follows rebalances without anyone pushing it.
pub type FractionSource = Box<dyn Fn() -> f64 + Send + Sync>;

/// The pod's share of the group's fetch budget.
pub struct FetchBudget {
    per_second: f64,
    burst: u32,
    fraction: FractionSource,
    /// The share in force.
    in_force: Mutex<InForce>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for FetchBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchBudget")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .field("share", &self.share())
            .finish()
    }
}

/// The fraction of the group's budget a [`FetchBudget`] takes now.
#[derive(Debug)]
struct InForce {
    /// Of the group's partitions, as last read.
    fraction: f64,
    /// The budget times `fraction`.
    share: RateShare,
    /// The limiter for `share`.
    limiter: Arc<BudgetLimiter>,
}

impl FetchBudget {
    /// The group's `per_second` and `burst`, of which this pod takes `fraction()`.
    pub fn new(
        per_second: f64,
        burst: u32,
        fraction: FractionSource,
        metrics: Arc<Metrics>,
    ) -> FetchBudget {
        let share = share_of(per_second, burst, 0.0);
        let budget = FetchBudget {
            per_second,
            burst,
            fraction,
            in_force: Mutex::new(InForce {
                fraction: 0.0,
                share,
                limiter: Arc::new(share.limiter()),
            }),
            metrics,
        };
        budget.refresh();
        budget
    }

    /// The whole group's budget, for a one-off tool that owns no partitions.
    pub fn whole(per_second: f64, burst: u32, metrics: Arc<Metrics>) -> FetchBudget {
        FetchBudget::new(per_second, burst, Box::new(|| 1.0), metrics)
    }

    /// This pod's share now.
    pub fn share(&self) -> RateShare {
        self.lock().share
    }

    /// Re-reads the fraction; a new one gets a new limiter (and the gauge).
    fn refresh(&self) -> Arc<BudgetLimiter> {
        let fraction = (self.fraction)();
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut guard = self.lock();
        if guard.fraction != fraction {
            let share = share_of(self.per_second, self.burst, fraction);
            *guard = InForce {
                fraction,
                share,
                limiter: Arc::new(share.limiter()),
            };
            self.metrics.fetch_share.set(share.per_second);
        }
        guard.limiter.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InForce> {
        self.in_force.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for one fetch.
    pub async fn acquire(&self) {
        until_ready(&self.refresh()).await;
    }
}

/// `per_second × fraction`, burst likewise (at least 1).
fn share_of(per_second: f64, burst: u32, fraction: f64) -> RateShare {
    RateShare {
        per_second: per_second * fraction,
        burst: ((f64::from(burst) * fraction).floor() as u32).max(1),
    }
}

/// Fetches a profile within the budget and counts the outcome.
#[derive(Debug, Clone)]
pub struct ProfileFetcher {
    /// The HTTP client.
    pub client: Arc<FetchClient>,
    /// The pod's share of fetches.
    pub budget: Arc<FetchBudget>,
    /// `pps_target_fetches_total`.
    pub metrics: Arc<Metrics>,
    /// The pod's send gate, where updates are sent too: a `Retry-After`
    /// from either API holds back both (Target throttles the client, not
    /// one API). The `verify` command has a gate of its own for the pauses;
    /// with `None`, a `Retry-After` holds back only its own profile.
    pub gate: Option<Arc<SendGate>>,
}

impl ProfileFetcher {
    /// One fetch, once no `Retry-After` pause is in force and the budget
    /// allows it. A `Retry-After` in its answer pauses the gate.
    pub async fn fetch(&self, identity: &Identity) -> FetchOutcome {
        if let Some(gate) = &self.gate {
            gate.wait_out_pause().await;
        }
        self.budget.acquire().await;
        let outcome = self.client.fetch(identity).await;
        self.metrics.count_fetch(outcome.label());
        if let (
            Some(gate),
            FetchOutcome::Retry {
                retry_after: Some(pause),
                ..
            },
        ) = (&self.gate, &outcome)
        {
            gate.pause_for(*pause);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn the_share_follows_the_fraction_and_shows_in_its_gauge() {
        let metrics = Arc::new(Metrics::new());
        let fraction = Arc::new(AtomicU64::new(0.5f64.to_bits()));
        let source = fraction.clone();
        let budget = FetchBudget::new(
            8.0,
            4,
            Box::new(move || f64::from_bits(source.load(Ordering::Relaxed))),
            metrics.clone(),
        );
        assert_eq!(
            budget.share(),
            RateShare {
                per_second: 4.0,
                burst: 2
            }
        );
        assert_eq!(metrics.fetch_share.get(), 4.0);
        fraction.store(0.25f64.to_bits(), Ordering::Relaxed);
        budget.refresh();
        assert_eq!(budget.share().per_second, 2.0);
        assert_eq!(budget.share().burst, 1, "never below one");
        assert!(metrics.encode().contains("pps_fetch_share_per_second 2.0"));
    }

    #[tokio::test(start_paused = true)]
    async fn fetches_wait_for_the_budget_after_the_burst() {
        // 20 a second, burst 2: two at once, then one every 50 ms. On paused
        // time (tokio's clock drives the budget) the wait is exact.
        let budget = FetchBudget::whole(20.0, 2, Arc::new(Metrics::new()));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            budget.acquire().await;
        }
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(160),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_fetchs_retry_after_pauses_the_pod_and_the_next_fetch_waits_it_out() {
        let (address, arrivals) = crate::target::client::canned_server(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n",
            crate::target::client::Then::Next,
        )
        .await;
        let settings = crate::ops::config::TargetSettings {
            client_code: "acme".into(),
            base_url: format!("http://{address}"),
            timeout_ms: 3_000,
            ..crate::ops::config::TargetSettings::default()
        };
        let metrics = Arc::new(Metrics::new());
        let gate = Arc::new(SendGate::new(
            RateShare {
                per_second: 1000.0,
                burst: 10,
            },
            crate::retry::RetryPolicy {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(10),
            },
        ));
        let fetcher = ProfileFetcher {
            client: Arc::new(FetchClient::new(&settings, 1).expect("client")),
            budget: Arc::new(FetchBudget::whole(1000.0, 10, metrics.clone())),
            metrics,
            gate: Some(gate.clone()),
        };
        assert_eq!(
            fetcher.fetch(&Identity::ThirdParty("CRM-1".into())).await,
            FetchOutcome::Retry {
                status: Some(503),
                retry_after: Some(Duration::from_secs(1))
            }
        );
        assert!(gate.is_retry_paused(), "updates are held back too");
        // Another profile's fetch, within the budget, waits for the pause.
        fetcher.fetch(&Identity::ThirdParty("CRM-2".into())).await;
        let arrivals = arrivals.lock().expect("arrivals").clone();
        assert_eq!(arrivals.len(), 2);
        let apart = arrivals[1] - arrivals[0];
        assert!(
            apart >= Duration::from_millis(900),
            "the second fetch came {apart:?} after Target asked for 1 s"
        );
    }
}
