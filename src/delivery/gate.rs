//! The send gate: every request to Target (first attempts and retries alike)
//! passes here. It holds the pod's share of the group budget (governor), the
//! pod-wide pause after a `Retry-After`, and the credentials pause after a
//! 401/403, during which only one probe request at a time goes out.

use crate::ops::health::TargetReadiness;
use crate::retry::{RetryPolicy, RetrySchedule};
use governor::clock::{Clock, ReasonablyRealtime};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// governor's clock on tokio's time: the wall clock in service, paused or
/// advanced time in tests (`tokio::time::pause`), so the budget's waits are
/// tested exactly and without waiting.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

impl ReasonablyRealtime for TokioClock {}

/// A budget: a direct rate limiter on [`TokioClock`].
pub type BudgetLimiter =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// Waits for one token of `limiter`, sleeping on tokio's time (governor's
/// own `until_ready` sleeps on a timer thread tokio's clock does not drive).
pub async fn until_ready(limiter: &BudgetLimiter) {
    while let Err(not_until) = limiter.check() {
        tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
    }
}

/// The pod's share of the group budget (contract section 9).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateShare {
    /// Requests per second for this pod.
    pub per_second: f64,
    /// Burst for this pod, at least 1.
    pub burst: u32,
}

impl RateShare {
    /// `per_second × assigned ÷ total`, burst likewise (at least 1).
    pub fn of_group(per_second: f64, burst: u32, assigned: usize, total: usize) -> RateShare {
        // Metadata can lag an assignment: never more than the whole group's.
        let fraction = if total == 0 {
            0.0
        } else {
            (assigned as f64 / total as f64).min(1.0)
        };
        RateShare {
            per_second: per_second * fraction,
            burst: ((f64::from(burst) * fraction).floor() as u32).max(1),
        }
    }

    pub(crate) fn limiter(self) -> BudgetLimiter {
        // A share of zero (no partitions) sends nothing anyway; keep a valid
        // quota of one request per hour so the limiter exists.
        let per_second = if self.per_second > 0.0 {
            self.per_second
        } else {
            1.0 / 3600.0
        };
        let period = Duration::from_secs_f64((1.0 / per_second).max(1e-9));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN));
        RateLimiter::direct_with_clock(quota, TokioClock)
    }
}

/// Leaves `to` (a new, full limiter of burst `to_burst`) with as many tokens
/// as `from` (of burst `from_burst`) has now, at most `to_burst`. The
/// tokens left in `from` are taken to count them (it is being replaced).
pub(crate) fn carry_tokens(
    from: &BudgetLimiter,
    from_burst: u32,
    to: &BudgetLimiter,
    to_burst: u32,
) {
    let mut left = 0u32;
    let mut step = from_burst.max(1).next_power_of_two();
    while step > 0 {
        if let Some(n) = NonZeroU32::new(step) {
            if matches!(from.check_n(n), Ok(Ok(()))) {
                left = left.saturating_add(step);
                continue;
            }
        }
        step /= 2;
    }
    if let Some(spent) = NonZeroU32::new(to_burst.max(1).saturating_sub(left)) {
        let _ = to.check_n(spent);
    }
}

/// The pod's share of the budget and the limiter that spends it.
#[derive(Debug, Clone)]
struct ShareLimiter {
    share: RateShare,
    limiter: Arc<BudgetLimiter>,
    /// Changes with every new share: a token from a replaced limiter does not count.
    generation: u64,
}

/// Shared by every sending task of the pod.
#[derive(Debug)]
pub struct SendGate {
    limiter: RwLock<ShareLimiter>,
    paused_until: Mutex<Option<Instant>>,
    /// Credentials refused and Target reachable, as `/readyz` reads them.
    readiness: Arc<TargetReadiness>,
    /// While credentials are refused, one request at a time probes Target,
    /// on one pod-wide schedule that backs off with every refused probe.
    probe: Arc<Semaphore>,
    probe_schedule: Mutex<ProbeSchedule>,
    /// Wakes senders waiting on a limiter that was just replaced.
    share_changed: tokio::sync::Notify,
    retry_after_pauses: AtomicU64,
    /// Nanoseconds spent waiting on the budget, summed over requests.
    limiter_wait_nanos: AtomicU64,
}

/// When the next credentials probe may go.
#[derive(Debug)]
struct ProbeSchedule {
    policy: RetryPolicy,
    bounds: Option<RetrySchedule>,
    next_at: Option<Instant>,
}

impl ProbeSchedule {
    /// The next probe waits one more backoff step from now.
    fn push_back(&mut self) {
        let policy = self.policy;
        let delay = self
            .bounds
            .get_or_insert_with(|| policy.schedule())
            .next_delay();
        self.next_at = Some(Instant::now() + delay);
    }
}

/// Permission to send one request; while credentials are paused it holds the
/// single probe slot.
#[derive(Debug)]
pub struct SendPermit {
    probe: Option<OwnedSemaphorePermit>,
}

impl SendPermit {
    /// Whether this request probes refused credentials.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

impl SendGate {
    /// A gate with this share; refused credentials are probed on `probe_backoff`.
    pub fn new(share: RateShare, probe_backoff: RetryPolicy) -> SendGate {
        SendGate {
            limiter: RwLock::new(ShareLimiter {
                share,
                limiter: Arc::new(share.limiter()),
                generation: 0,
            }),
            paused_until: Mutex::new(None),
            readiness: Arc::new(TargetReadiness::default()),
            probe: Arc::new(Semaphore::new(1)),
            share_changed: tokio::sync::Notify::new(),
            probe_schedule: Mutex::new(ProbeSchedule {
                policy: probe_backoff,
                bounds: None,
                next_at: None,
            }),
            retry_after_pauses: AtomicU64::new(0),
            limiter_wait_nanos: AtomicU64::new(0),
        }
    }

    fn current_limiter(&self) -> ShareLimiter {
        self.limiter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the share (at every rebalance). The new limiter starts with
    /// the tokens the old one had left (at most its own burst), not full: a
    /// rebalance must not hand every pod a fresh burst, or the group would
    /// exceed `burst + per_second × t` across frequent rebalances.
    pub fn set_share(&self, share: RateShare) {
        let mut guard = self.limiter.write().unwrap_or_else(|p| p.into_inner());
        if guard.share != share {
            let limiter = share.limiter();
            carry_tokens(&guard.limiter, guard.share.burst, &limiter, share.burst);
            *guard = ShareLimiter {
                share,
                limiter: Arc::new(limiter),
                generation: guard.generation + 1,
            };
            drop(guard);
            self.share_changed.notify_waiters();
        }
    }

    /// The share in force.
    pub fn share(&self) -> RateShare {
        self.limiter.read().unwrap_or_else(|p| p.into_inner()).share
    }

    /// Waits until a request may start: no `Retry-After` pause, a budget
    /// token, and (while credentials are refused) the probe slot.
    pub async fn acquire(&self) -> SendPermit {
        loop {
            self.wait_out_pause().await;
            let probe = if self.readiness.is_auth_refused() {
                let permit = self.probe.clone().acquire_owned().await.ok();
                let next_at = self.lock_probe().next_at;
                if let Some(at) = next_at {
                    tokio::time::sleep_until(at).await;
                }
                if self.readiness.is_auth_refused() {
                    permit
                } else {
                    None
                }
            } else {
                None
            };
            // Listen for a share change before looking at the limiter, so a
            // change in between is not missed.
            let share_changed = self.share_changed.notified();
            tokio::pin!(share_changed);
            share_changed.as_mut().enable();
            let ShareLimiter {
                limiter,
                generation,
                ..
            } = self.current_limiter();
            let started = Instant::now();
            let waited = tokio::select! {
                _ = until_ready(&limiter) => true,
                // The share changed (a first assignment after a zero share,
                // say): wait on the new limiter, not out the old one's period.
                _ = &mut share_changed => false,
            };
            self.limiter_wait_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if !waited {
                continue;
            }
            // A token from a limiter replaced meanwhile (the share changed)
            // does not count: two limiters must never issue side by side.
            if self.current_limiter().generation != generation {
                continue;
            }
            // A pause that began while we waited for the budget wins: no new
            // request starts during it (the token is spent; that errs low).
            if self.pause_remaining().is_some() {
                continue;
            }
            return SendPermit { probe };
        }
    }

    /// A permit at once, when nothing holds sending back: no `Retry-After`
    /// pause, credentials not refused, and a budget token in the limiter
    /// now. `None` means "wait in [`SendGate::acquire`]", not "refused"; no
    /// token is taken then. The share's lock is held while the token is
    /// taken, so it never comes from a limiter that a share change is
    /// replacing. This spares a request that need not wait the waiting's
    /// bookkeeping (the share-change listener, the clock, the `select!`).
    pub fn try_acquire(&self) -> Option<SendPermit> {
        if self.readiness.is_auth_refused() || self.pause_remaining().is_some() {
            return None;
        }
        let current = self.limiter.read().unwrap_or_else(|p| p.into_inner());
        current.limiter.check().ok()?;
        Some(SendPermit { probe: None })
    }

    /// Waits until no `Retry-After` pause is in force.
    pub async fn wait_out_pause(&self) {
        while let Some(remaining) = self.pause_remaining() {
            tokio::time::sleep(remaining).await;
        }
    }

    fn pause_remaining(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().unwrap_or_else(|p| p.into_inner()))?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Pauses all sending of the pod for at least `delay` (a `Retry-After`).
    pub fn pause_for(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let until = Instant::now() + delay;
        let mut guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
            self.retry_after_pauses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                pause_ms = delay.as_millis() as u64,
                "Target asked to retry later; all sending paused."
            );
        }
    }

    fn lock_probe(&self) -> std::sync::MutexGuard<'_, ProbeSchedule> {
        self.probe_schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Target refused the credentials: pause everything but one probe at a
    /// time. A refused probe pushes the next one back (exponential, full
    /// jitter); requests that were already in flight do not.
    pub fn auth_failed(&self, status: u16, was_probe: bool) {
        {
            let mut schedule = self.lock_probe();
            if was_probe || schedule.next_at.is_none() {
                schedule.push_back();
            }
        }
        if !self.readiness.set_auth_refused(true) {
            tracing::error!(
                status,
                "Target refused the credentials; sending paused until it accepts again (check target.token_file)."
            );
        }
    }

    /// A credentials probe got no word on the credentials (a 5xx, a 429, a
    /// timeout, no connection): the next probe is pushed back as after a
    /// refusal, so that an outage during a credentials pause is probed on
    /// the backoff schedule, not at the budget's rate.
    pub fn probe_inconclusive(&self) {
        if self.readiness.is_auth_refused() {
            self.lock_probe().push_back();
        }
    }

    /// Target accepted a request: credentials are fine again.
    pub fn auth_ok(&self) {
        if self.readiness.set_auth_refused(false) {
            let mut schedule = self.lock_probe();
            schedule.bounds = None;
            schedule.next_at = None;
            drop(schedule);
            tracing::info!("Target accepts the credentials again; sending resumed.");
        }
    }

    /// What `/readyz` reads of this gate: credentials and reachability.
    pub fn readiness(&self) -> Arc<TargetReadiness> {
        Arc::clone(&self.readiness)
    }

    /// Whether sending is paused for credentials (`/readyz` is false then).
    pub fn is_auth_paused(&self) -> bool {
        self.readiness.is_auth_refused()
    }

    /// Whether a `Retry-After` pause is in force now.
    pub fn is_retry_paused(&self) -> bool {
        self.pause_remaining().is_some()
    }

    /// Records whether Target answered the last attempt at all.
    pub fn set_reachable(&self, reachable: bool) {
        if self.readiness.set_reachable(reachable) != reachable {
            if reachable {
                tracing::info!("Target is reachable again.");
            } else {
                tracing::warn!("Target did not answer (timeout or connection error); retrying.");
            }
        }
    }

    /// Whether the last attempt got an HTTP answer.
    pub fn is_reachable(&self) -> bool {
        self.readiness.is_reachable()
    }

    /// `Retry-After` pauses so far.
    pub fn retry_after_pauses(&self) -> u64 {
        self.retry_after_pauses.load(Ordering::Relaxed)
    }

    /// Seconds spent waiting for budget tokens, summed over requests.
    pub fn limiter_wait_seconds(&self) -> f64 {
        self.limiter_wait_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_backoff() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
        }
    }

    #[test]
    fn the_share_follows_the_assignment_and_burst_is_at_least_one() {
        assert_eq!(
            RateShare::of_group(10.0, 10, 3, 12),
            RateShare {
                per_second: 2.5,
                burst: 2
            }
        );
        assert_eq!(RateShare::of_group(10.0, 1, 1, 12).burst, 1);
        assert_eq!(RateShare::of_group(10.0, 10, 0, 12).per_second, 0.0);
        assert_eq!(
            RateShare::of_group(10.0, 10, 12, 12),
            RateShare {
                per_second: 10.0,
                burst: 10
            }
        );
    }

    #[test]
    fn a_share_change_carries_the_tokens_left_and_never_refills_the_burst() {
        let share = |per_second, burst| RateShare { per_second, burst };
        // A slow refill, so nothing comes back during the test.
        let gate = SendGate::new(share(0.01, 8), probe_backoff());
        let take = |gate: &SendGate| gate.current_limiter().limiter.check().is_ok();
        for _ in 0..6 {
            assert!(take(&gate));
        }
        // Two tokens left; the new share's burst is 10: still two.
        gate.set_share(share(0.02, 10));
        assert!(take(&gate) && take(&gate));
        assert!(!take(&gate), "a share change must not refill the bucket");
        // Nothing left: a smaller share starts empty too.
        gate.set_share(share(0.01, 4));
        assert!(!take(&gate));
        // More left than the new burst: cut to it.
        let gate = SendGate::new(share(0.01, 8), probe_backoff());
        gate.set_share(share(0.01, 3));
        assert!(take(&gate) && take(&gate) && take(&gate));
        assert!(!take(&gate));
    }

    #[test]
    fn a_share_is_never_more_than_the_whole_group_budget() {
        // Partition counts from metadata can lag an assignment.
        let share = RateShare::of_group(10.0, 10, 6, 4);
        assert_eq!((share.per_second, share.burst), (10.0, 10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_requests_beyond_the_burst_to_the_rate() {
        let gate = SendGate::new(
            RateShare {
                per_second: 20.0,
                burst: 5,
            },
            probe_backoff(),
        );
        let started = Instant::now();
        for _ in 0..5 {
            gate.acquire().await;
        }
        assert!(started.elapsed() < Duration::from_millis(1), "the burst");
        for _ in 0..4 {
            gate.acquire().await;
        }
        // Four more at 20/s: one every 50 ms, exactly on paused time.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(210),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waiting_on_a_zero_share_goes_as_soon_as_the_share_is_raised() {
        // Before the first assignment the share is zero (one request an hour).
        let gate = Arc::new(SendGate::new(
            RateShare::of_group(10.0, 10, 0, 1),
            probe_backoff(),
        ));
        gate.acquire().await; // the burst of one
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no budget yet");
        gate.set_share(RateShare::of_group(10.0, 10, 4, 4));
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("the waiter must see the new share, not wait out the old hour")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_smaller_share_takes_effect_at_once_for_waiting_senders() {
        let gate = Arc::new(SendGate::new(
            RateShare {
                per_second: 75.0,
                burst: 3,
            },
            probe_backoff(),
        ));
        let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut senders = Vec::new();
        for _ in 0..64 {
            let (gate, granted) = (gate.clone(), granted.clone());
            senders.push(tokio::spawn(async move {
                // Bounded, so a budget that never waits fails the test
                // instead of spinning on a clock that never advances.
                for _ in 0..1000 {
                    if started.elapsed() >= Duration::from_secs(3) {
                        break;
                    }
                    gate.acquire().await;
                    granted.lock().unwrap().push(started.elapsed());
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        gate.set_share(RateShare {
            per_second: 25.0,
            burst: 1,
        });
        for sender in senders {
            sender.await.unwrap();
        }
        let granted = granted.lock().unwrap();
        let in_window = |from: f64, to: f64| {
            granted
                .iter()
                .filter(|t| t.as_secs_f64() >= from && t.as_secs_f64() < to)
                .count()
        };
        // Any one-second window: at most the larger rate plus its burst.
        for tenth in 0..20 {
            let from = f64::from(tenth) / 10.0;
            assert!(
                in_window(from, from + 1.0) <= 75 + 3 + 1,
                "window at {from}s: {}",
                in_window(from, from + 1.0)
            );
        }
        // Well after the change, the smaller share holds.
        assert!(
            in_window(2.0, 3.0) <= 25 + 1 + 1,
            "after the change: {}",
            in_window(2.0, 3.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_at_once_only_when_nothing_holds_sending_back() {
        let gate = SendGate::new(
            RateShare {
                per_second: 10.0,
                burst: 3,
            },
            probe_backoff(),
        );
        // The burst, at once; then nothing until the rate gives a token,
        // and an empty answer takes none.
        for _ in 0..3 {
            assert!(gate.try_acquire().is_some_and(|p| !p.is_probe()));
        }
        assert!(gate.try_acquire().is_none());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(gate.try_acquire().is_some(), "the token refilled meanwhile");
        assert!(gate.try_acquire().is_none());
        // A Retry-After pause holds it back even with a token ready, and
        // the waiting path then goes once the pause is over.
        tokio::time::advance(Duration::from_millis(100)).await;
        gate.pause_for(Duration::from_secs(1));
        assert!(gate.try_acquire().is_none(), "paused");
        let paused_at = Instant::now();
        gate.acquire().await;
        assert!(paused_at.elapsed() >= Duration::from_secs(1));
        // Refused credentials: only the waiting path, which hands out the probe.
        tokio::time::advance(Duration::from_secs(1)).await;
        gate.auth_failed(401, false);
        assert!(gate.try_acquire().is_none(), "refused credentials");
        assert!(gate.acquire().await.is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_starts_during_a_retry_after_pause() {
        let gate = Arc::new(SendGate::new(
            RateShare {
                per_second: 1e6,
                burst: 100,
            },
            probe_backoff(),
        ));
        gate.pause_for(Duration::from_secs(30));
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.acquire().await;
                Instant::now()
            }
        });
        let paused_at = Instant::now();
        let started = waiter.await.unwrap();
        assert!(started - paused_at >= Duration::from_secs(30));
        assert_eq!(gate.retry_after_pauses(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_gets_no_word_on_the_credentials_backs_off_like_a_refused_one() {
        let gate = SendGate::new(
            RateShare {
                per_second: 1e6,
                burst: 100,
            },
            RetryPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(4),
            },
        );
        gate.auth_failed(401, false);
        // Every probe meets an outage (a 503, a timeout): without a backoff
        // they would go at the budget's rate, a million a second.
        let started = Instant::now();
        let mut probes = 0;
        while started.elapsed() < Duration::from_secs(30) && probes < 1000 {
            let permit = gate.acquire().await;
            assert!(permit.is_probe());
            probes += 1;
            gate.probe_inconclusive();
        }
        // Delays uniform up to 1, 2, 4, 4, ... s: about 16 probes in 30 s.
        assert!(
            (2..100).contains(&probes),
            "{probes} probes in {:?}",
            started.elapsed()
        );
        assert!(gate.is_auth_paused(), "no probe said the credentials work");
    }

    #[tokio::test]
    async fn while_credentials_are_refused_one_probe_goes_at_a_time() {
        let gate = Arc::new(SendGate::new(
            RateShare {
                per_second: 1e6,
                burst: 100,
            },
            probe_backoff(),
        ));
        gate.auth_failed(401, false);
        assert!(gate.is_auth_paused());
        let probe = gate.acquire().await;
        assert!(probe.is_probe());
        let second = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.acquire().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "a second request must wait for the probe"
        );
        gate.auth_ok();
        drop(probe);
        tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .unwrap()
            .unwrap();
        assert!(!gate.is_auth_paused());
    }
}
