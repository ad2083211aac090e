//! Prometheus metrics (`/metrics`), names prefixed `pps_`, labels of bounded
//! cardinality (never a customer id). Hot-path counters are resolved once at
//! start-up, so counting an event is one atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// `{outcome, error_class}` of a consumed event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumedLabels {
    /// `update`, `skip` or `dead_letter`.
    pub outcome: String,
    /// The parse error class for `dead_letter`, else empty.
    pub error_class: String,
}

/// `{error_class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// A contract error class.
    pub error_class: String,
}

/// `{outcome, status_class}` of a Target request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `accepted`, `rejected`, `auth_failed`, `retryable`.
    pub outcome: String,
    /// `2xx`..`5xx`, `timeout`, `connection`.
    pub status_class: String,
}

/// `{topic, partition}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic name (operator-chosen, bounded).
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// `{kind}` of a rebalance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RebalanceLabels {
    /// `assign`, `revoke`, `lost`.
    pub kind: String,
}

/// `{source}` of an event age.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgeLabels {
    /// `occurred_at` or `kafka_timestamp`.
    pub source: String,
}

/// `{call, outcome}` of a bulk API call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BulkCallLabels {
    /// `submit` or `status`.
    pub call: String,
    /// `ok`, `retryable`, `auth_failed`, `rejected`.
    pub outcome: String,
}

/// `{status}` of a bulk batch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    /// `submitted`, `complete`, `stuck` (sent again), `rejected`.
    pub status: String,
}

/// `{outcome}` of bulk rows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RowLabels {
    /// `applied` or `failed`.
    pub outcome: String,
}

/// `{route}` of updates.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `single` or `batch`.
    pub route: String,
}

/// Every metric of the service.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Events read from Kafka by outcome.
    pub consumed: Family<ConsumedLabels, Counter>,
    /// Events covered by updates Target accepted.
    pub events_accepted: Counter,
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
    /// This pod's budget share.
    pub rate_share: Gauge<f64, AtomicU64>,
    /// Time spent waiting for budget.
    pub limiter_wait_seconds: Gauge<f64, AtomicU64>,
    /// `Retry-After` pauses.
    pub retry_after_pauses: Gauge,
    /// 1 while paused on refused credentials.
    pub auth_paused: Gauge,
    /// Committed offset per partition.
    pub committed_offset: Family<PartitionLabels, Gauge>,
    /// Last known high watermark per partition.
    pub high_watermark: Family<PartitionLabels, Gauge>,
    /// High watermark minus committed offset.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
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
            dead_letters: Family::default(),
            dead_letter_write_errors: Counter::default(),
            target_requests: Family::default(),
            target_request_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            target_retries: Counter::default(),
            target_in_flight: Gauge::default(),
            concurrency_limit: Gauge::default(),
            rate_share: Gauge::default(),
            limiter_wait_seconds: Gauge::default(),
            retry_after_pauses: Gauge::default(),
            auth_paused: Gauge::default(),
            committed_offset: Family::default(),
            high_watermark: Family::default(),
            consumer_lag: Family::default(),
            rebalances: Family::default(),
            paused_partitions: Gauge::default(),
            assigned_partitions: Gauge::default(),
            event_age: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 20))
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
            "pps_rate_share_per_second",
            "This pod's share of the group budget",
            metrics.rate_share.clone(),
        );
        r.register(
            "pps_rate_limiter_wait_seconds_total",
            "Time requests spent waiting for budget",
            metrics.limiter_wait_seconds.clone(),
        );
        r.register(
            "pps_retry_after_pauses_total",
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
            "Bulk batches by status: submitted, complete, stuck (sent again), rejected",
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

    /// The counter for consumed events of an outcome.
    pub fn consumed_counter(&self, outcome: &str, error_class: &str) -> Counter {
        self.consumed
            .get_or_create(&ConsumedLabels {
                outcome: outcome.into(),
                error_class: error_class.into(),
            })
            .clone()
    }

    /// The event-age histogram for a source (`kafka_timestamp`, `occurred_at`).
    pub fn age_histogram(&self, source: &str) -> Histogram {
        self.event_age
            .get_or_create(&AgeLabels {
                source: source.into(),
            })
            .clone()
    }

    /// The counter for dead letters of a class.
    pub fn dead_letter_counter(&self, error_class: &str) -> Counter {
        self.dead_letters
            .get_or_create(&ClassLabels {
                error_class: error_class.into(),
            })
            .clone()
    }

    /// Counts one Target request.
    pub fn count_request(&self, outcome: &'static str, status: Option<u16>, timed_out: bool) {
        let status_class = match status {
            Some(s) => format!("{}xx", s / 100),
            None if timed_out => "timeout".into(),
            None => "connection".into(),
        };
        self.target_requests
            .get_or_create(&RequestLabels {
                outcome: outcome.into(),
                status_class,
            })
            .inc();
    }

    /// Counts one bulk API call.
    pub fn count_bulk_call(&self, call: &'static str, outcome: &'static str) {
        self.bulk_calls
            .get_or_create(&BulkCallLabels {
                call: call.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts a batch reaching `status`.
    pub fn count_batch(&self, status: &'static str) {
        self.bulk_batches
            .get_or_create(&BatchLabels {
                status: status.into(),
            })
            .inc();
    }

    /// Counts `n` rows of completed batches as `applied` or `failed`.
    pub fn count_bulk_rows(&self, outcome: &'static str, n: u64) {
        self.bulk_rows
            .get_or_create(&RowLabels {
                outcome: outcome.into(),
            })
            .inc_by(n);
    }

    /// Publishes the route in force.
    pub fn set_route(&self, route: &'static str) {
        for other in ["single", "batch"] {
            self.route
                .get_or_create(&RouteLabels {
                    route: other.into(),
                })
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
