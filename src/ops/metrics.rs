//! Prometheus metrics (`/metrics`), names prefixed `pps_`, labels of bounded
//! cardinality (never a customer id). Hot-path counters are resolved once at
//! start-up, so counting an event is one atomic add.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

mod labels;
pub use labels::*;

/// Upper bounds of the event-age histogram, in seconds: sub-second delivery
/// up to a day-old backlog (a replay, a long outage, bulk batches that Adobe
/// applies within 24 hours).
pub const EVENT_AGE_BUCKETS: [f64; 20] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
];

/// Advances a counter to a running total kept elsewhere (the send gate keeps
/// its own atomics); a total that went down is ignored.
pub fn advance_to<N, A>(counter: &Counter<N, A>, total: N)
where
    A: prometheus_client::metrics::counter::Atomic<N>,
    N: PartialOrd + std::ops::Sub<Output = N> + Copy,
{
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Every metric of the service.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Events read from Kafka by outcome.
    pub consumed: Family<ConsumedLabels, Counter>,
    /// Events covered by updates Target accepted.
    pub events_accepted: Counter,
    /// Events whose every attribute a newer event had already delivered: not sent.
    pub events_superseded: Counter,
    /// Acknowledged dead-letter writes by class.
    pub dead_letters: Family<ClassLabels, Counter>,
    /// Failed dead-letter write attempts (retried).
    pub dead_letter_write_errors: Counter,
    /// Target requests by outcome.
    pub target_requests: Family<RequestLabels, Counter>,
    /// Target request durations.
    pub target_request_duration: Histogram,
    /// Retries of Target requests.
    pub target_retries: Counter,
    /// Target requests in flight now.
    pub target_in_flight: Gauge,
    /// The adaptive limit on updates under way.
    pub concurrency_limit: Gauge,
    /// Profile fetches by outcome (their own budget, not updates).
    pub target_fetches: Family<FetchLabels, Counter>,
    /// This pod's share of `existence.fetch_per_second`.
    pub fetch_share: Gauge<f64, AtomicU64>,
    /// Read-back verifications by result.
    pub verify_results: Family<VerifyLabels, Counter>,
    /// Profiles waiting for their read-back.
    pub verify_pending: Gauge,
    /// Accepted updates of sampled profiles not verified because
    /// `verify.max_pending` profiles were already waiting.
    pub verify_dropped: Counter,
    /// This pod's budget share.
    pub rate_share: Gauge<f64, AtomicU64>,
    /// Time spent waiting for budget (a counter, advanced from the gate's total).
    pub limiter_wait_seconds: Counter<f64, AtomicU64>,
    /// `Retry-After` pauses (a counter, advanced from the gate's total).
    pub retry_after_pauses: Counter,
    /// 1 while paused on refused credentials.
    pub auth_paused: Gauge,
    /// Committed offset per partition.
    pub committed_offset: Family<PartitionLabels, Gauge>,
    /// Last known high watermark per partition.
    pub high_watermark: Family<PartitionLabels, Gauge>,
    /// High watermark minus committed offset.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// Seconds since the partition's first unfinished event was consumed.
    pub oldest_unfinished_age: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    /// Rebalances by kind.
    pub rebalances: Family<RebalanceLabels, Counter>,
    /// Partitions paused for back-pressure.
    pub paused_partitions: Gauge,
    /// Partitions assigned to this pod.
    pub assigned_partitions: Gauge,
    /// Event age at acceptance.
    pub event_age: Family<AgeLabels, Histogram>,
    /// Updates accepted in the last 24 hours by this pod.
    pub daily_updates: Gauge,
    /// This pod's share of `rate_limit.daily_quota`.
    pub daily_quota_share: Gauge<f64, AtomicU64>,
    /// Bulk API calls by outcome.
    pub bulk_calls: Family<BulkCallLabels, Counter>,
    /// Bulk batches by status.
    pub bulk_batches: Family<BatchLabels, Counter>,
    /// Rows of completed batches: `applied` or `failed`.
    pub bulk_rows: Family<RowLabels, Counter>,
    /// 1 for the route updates take now, 0 for the other.
    pub route: Family<RouteLabels, Gauge>,
    /// The backlog the overflow routing last looked at.
    pub route_backlog: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            consumed: Family::default(),
            events_accepted: Counter::default(),
            events_superseded: Counter::default(),
            dead_letters: Family::default(),
            dead_letter_write_errors: Counter::default(),
            target_requests: Family::default(),
            target_request_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            target_retries: Counter::default(),
            target_in_flight: Gauge::default(),
            concurrency_limit: Gauge::default(),
            target_fetches: Family::default(),
            fetch_share: Gauge::default(),
            verify_results: Family::default(),
            verify_pending: Gauge::default(),
            verify_dropped: Counter::default(),
            rate_share: Gauge::default(),
            limiter_wait_seconds: Counter::default(),
            retry_after_pauses: Counter::default(),
            auth_paused: Gauge::default(),
            committed_offset: Family::default(),
            high_watermark: Family::default(),
            consumer_lag: Family::default(),
            oldest_unfinished_age: Family::default(),
            rebalances: Family::default(),
            paused_partitions: Gauge::default(),
            assigned_partitions: Gauge::default(),
            event_age: Family::new_with_constructor(|| {
                Histogram::new(EVENT_AGE_BUCKETS.iter().copied())
            }),
            daily_updates: Gauge::default(),
            daily_quota_share: Gauge::default(),
            bulk_calls: Family::default(),
            bulk_batches: Family::default(),
            bulk_rows: Family::default(),
            route: Family::default(),
            route_backlog: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "pps_events_consumed",
            "Events read from Kafka, by outcome",
            metrics.consumed.clone(),
        );
        r.register(
            "pps_events_accepted",
            "Events covered by updates Target accepted",
            metrics.events_accepted.clone(),
        );
        r.register(
            "pps_events_superseded",
            "Events not sent because newer events of their profile had delivered every attribute they carry",
            metrics.events_superseded.clone(),
        );
        r.register(
            "pps_dead_letters",
            "Dead letters written and acknowledged, by class",
            metrics.dead_letters.clone(),
        );
        r.register(
            "pps_dead_letter_write_errors",
            "Failed dead-letter write attempts (retried)",
            metrics.dead_letter_write_errors.clone(),
        );
        r.register(
            "pps_target_requests",
            "Target requests by outcome and status class",
            metrics.target_requests.clone(),
        );
        r.register(
            "pps_target_request_duration_seconds",
            "Target request duration",
            metrics.target_request_duration.clone(),
        );
        r.register(
            "pps_target_retries",
            "Target requests that were retries",
            metrics.target_retries.clone(),
        );
        r.register(
            "pps_target_in_flight",
            "Target requests in flight",
            metrics.target_in_flight.clone(),
        );
        r.register(
            "pps_concurrency_limit",
            "The adaptive limit on updates under way (1 to delivery.max_in_flight)",
            metrics.concurrency_limit.clone(),
        );
        r.register(
            "pps_target_fetches",
            "Profile fetches by outcome; they spend existence.fetch_per_second, not the update budget or the daily quota",
            metrics.target_fetches.clone(),
        );
        r.register(
            "pps_fetch_share_per_second",
            "This pod's share of the group's profile fetch budget",
            metrics.fetch_share.clone(),
        );
        r.register(
            "pps_verify",
            "Profiles read back after an accepted update, by result",
            metrics.verify_results.clone(),
        );
        r.register(
            "pps_verify_pending",
            "Profiles waiting for their read-back",
            metrics.verify_pending.clone(),
        );
        r.register(
            "pps_verify_dropped",
            "Accepted updates of sampled profiles not verified because verify.max_pending were waiting",
            metrics.verify_dropped.clone(),
        );
        r.register(
            "pps_rate_share_per_second",
            "This pod's share of the group budget",
            metrics.rate_share.clone(),
        );
        r.register(
            "pps_rate_limiter_wait_seconds",
            "Time requests spent waiting for budget",
            metrics.limiter_wait_seconds.clone(),
        );
        r.register(
            "pps_retry_after_pauses",
            "Pod-wide pauses after a Retry-After",
            metrics.retry_after_pauses.clone(),
        );
        r.register(
            "pps_auth_paused",
            "1 while Target refuses the credentials",
            metrics.auth_paused.clone(),
        );
        r.register(
            "pps_committed_offset",
            "Committed offset per partition",
            metrics.committed_offset.clone(),
        );
        r.register(
            "pps_high_watermark",
            "High watermark per partition",
            metrics.high_watermark.clone(),
        );
        r.register(
            "pps_consumer_lag",
            "High watermark minus committed offset",
            metrics.consumer_lag.clone(),
        );
        r.register(
            "pps_oldest_unfinished_age_seconds",
            "Seconds since this pod consumed the partition's first unfinished event (0 when none is unfinished)",
            metrics.oldest_unfinished_age.clone(),
        );
        r.register(
            "pps_rebalances",
            "Rebalances by kind",
            metrics.rebalances.clone(),
        );
        r.register(
            "pps_paused_partitions",
            "Partitions paused for back-pressure",
            metrics.paused_partitions.clone(),
        );
        r.register(
            "pps_assigned_partitions",
            "Partitions assigned to this pod",
            metrics.assigned_partitions.clone(),
        );
        r.register(
            "pps_daily_updates",
            "Updates Target accepted from this pod in the last 24 hours (since start if younger)",
            metrics.daily_updates.clone(),
        );
        r.register(
            "pps_daily_quota_share",
            "This pod's share of rate_limit.daily_quota, by its partitions",
            metrics.daily_quota_share.clone(),
        );
        r.register(
            "pps_bulk_calls",
            "Bulk API calls (submit, status) by outcome",
            metrics.bulk_calls.clone(),
        );
        r.register(
            "pps_bulk_batches",
            "Bulk batches by status: submitted, complete, stuck (lost by Target, sent again), rejected, lost (given up)",
            metrics.bulk_batches.clone(),
        );
        r.register(
            "pps_bulk_rows",
            "Rows of completed bulk batches, applied or failed",
            metrics.bulk_rows.clone(),
        );
        r.register(
            "pps_route",
            "1 for the route updates take now (single or batch)",
            metrics.route.clone(),
        );
        r.register(
            "pps_route_backlog",
            "Events owned and not finished, as the overflow routing last saw them",
            metrics.route_backlog.clone(),
        );
        r.register(
            "pps_event_age_seconds",
            "Event age when Target accepted it",
            metrics.event_age.clone(),
        );
        *metrics.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        metrics
    }

    /// Drops the per-partition series of a partition this pod no longer
    /// owns, so that only its owner exports its lag, offsets and age.
    pub fn forget_partition(&self, labels: &PartitionLabels) {
        self.committed_offset.remove(labels);
        self.high_watermark.remove(labels);
        self.consumer_lag.remove(labels);
        self.oldest_unfinished_age.remove(labels);
    }

    /// The counter for consumed events of an outcome.
    pub fn consumed_counter(&self, outcome: ConsumedOutcome, error_class: &'static str) -> Counter {
        self.consumed
            .get_or_create(&ConsumedLabels {
                outcome,
                error_class,
            })
            .clone()
    }

    /// The event-age histogram for a source.
    pub fn age_histogram(&self, source: AgeSource) -> Histogram {
        self.event_age.get_or_create(&AgeLabels { source }).clone()
    }

    /// The counter for dead letters of a class.
    pub fn dead_letter_counter(&self, error_class: &'static str) -> Counter {
        self.dead_letters
            .get_or_create(&ClassLabels { error_class })
            .clone()
    }

    /// Counts one Target request.
    pub fn count_request(&self, outcome: RequestOutcome, status: Option<u16>, timed_out: bool) {
        self.target_requests
            .get_or_create(&RequestLabels {
                outcome,
                status_class: StatusClass::of(status, timed_out),
            })
            .inc();
    }

    /// Counts one profile fetch.
    pub fn count_fetch(&self, outcome: &'static str) {
        self.target_fetches
            .get_or_create(&FetchLabels { outcome })
            .inc();
    }

    /// Counts one read-back verification.
    pub fn count_verify(&self, result: &'static str) {
        self.verify_results
            .get_or_create(&VerifyLabels { result })
            .inc();
    }

    /// Counts one bulk API call.
    pub fn count_bulk_call(&self, call: BulkCall, outcome: CallOutcome) {
        self.bulk_calls
            .get_or_create(&BulkCallLabels { call, outcome })
            .inc();
    }

    /// Counts a batch reaching `status`.
    pub fn count_batch(&self, status: BatchStatus) {
        self.bulk_batches
            .get_or_create(&BatchLabels { status })
            .inc();
    }

    /// Counts `n` rows of completed batches as applied or failed.
    pub fn count_bulk_rows(&self, outcome: RowOutcome, n: u64) {
        self.bulk_rows
            .get_or_create(&RowLabels { outcome })
            .inc_by(n);
    }

    /// Publishes the route in force.
    pub fn set_route(&self, route: &'static str) {
        for other in ["single", "batch"] {
            self.route
                .get_or_create(&RouteLabels { route: other })
                .set(i64::from(other == route));
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %error, "Could not encode metrics.");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(partition: i32) -> PartitionLabels {
        PartitionLabels {
            topic: "pos.purchases".into(),
            partition,
        }
    }

    #[test]
    fn a_forgotten_partition_exports_no_series_and_the_others_stay() {
        let metrics = Metrics::new();
        for partition in [0, 1] {
            metrics
                .committed_offset
                .get_or_create(&labels(partition))
                .set(10);
            metrics
                .high_watermark
                .get_or_create(&labels(partition))
                .set(15);
            metrics
                .consumer_lag
                .get_or_create(&labels(partition))
                .set(5);
            metrics
                .oldest_unfinished_age
                .get_or_create(&labels(partition))
                .set(2.0);
        }
        metrics.forget_partition(&labels(1));
        let text = metrics.encode();
        for name in [
            "pps_committed_offset",
            "pps_high_watermark",
            "pps_consumer_lag",
            "pps_oldest_unfinished_age_seconds",
        ] {
            assert!(
                text.contains(&format!(
                    "{name}{{topic=\"pos.purchases\",partition=\"0\"}}"
                )),
                "{name} of partition 0 is gone:\n{text}"
            );
            assert!(
                !text.contains(&format!(
                    "{name}{{topic=\"pos.purchases\",partition=\"1\"}}"
                )),
                "{name} of partition 1 is still exported:\n{text}"
            );
        }
    }

    #[test]
    fn totals_are_counters_that_follow_the_gates_running_totals() {
        let metrics = Metrics::new();
        advance_to(&metrics.retry_after_pauses, 3);
        advance_to(&metrics.retry_after_pauses, 2);
        advance_to(&metrics.limiter_wait_seconds, 1.5);
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE pps_retry_after_pauses counter"),
            "{text}"
        );
        assert!(text.contains("pps_retry_after_pauses_total 3"), "{text}");
        assert!(
            text.contains("# TYPE pps_rate_limiter_wait_seconds counter"),
            "{text}"
        );
        assert!(
            text.contains("pps_rate_limiter_wait_seconds_total 1.5"),
            "{text}"
        );
    }

    #[test]
    fn event_ages_are_bucketed_up_to_a_day() {
        let metrics = Metrics::new();
        metrics
            .age_histogram(AgeSource::OccurredAt)
            .observe(20.0 * 3600.0);
        let text = metrics.encode();
        assert!(
            text.contains("pps_event_age_seconds_bucket{le=\"86400.0\",source=\"occurred_at\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pps_event_age_seconds_bucket{le=\"43200.0\",source=\"occurred_at\"} 0"),
            "{text}"
        );
    }
}
