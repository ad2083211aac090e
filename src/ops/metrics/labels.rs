//! The label sets of the metrics, and the closed sets of their values as
//! enums: a value is written as the exposition names it, nothing is
//! allocated to count, and a misspelt value does not compile. Values that a
//! domain type names already (a dead letter's class, a fetch's outcome, a
//! verification's result, the route) come from that type's `as_str`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use std::fmt::Write as _;

/// An enum of label values, each written as the given text.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as the exposition writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values! {
    /// What became of a consumed event.
    ConsumedOutcome {
        /// It makes a profile update.
        Update => "update",
        /// Anonymous: nothing to send.
        Skip => "skip",
        /// It could not be read: a dead letter.
        DeadLetter => "dead_letter",
    }
}

label_values! {
    /// What Target's answer to an update meant.
    RequestOutcome {
        /// 2xx.
        Accepted => "accepted",
        /// Another 4xx: refused for good.
        Rejected => "rejected",
        /// 401 or 403.
        AuthFailed => "auth_failed",
        /// 408, 429, 5xx, a timeout or a broken connection.
        Retryable => "retryable",
    }
}

label_values! {
    /// A rebalance's kind.
    RebalanceKind {
        /// Partitions assigned.
        Assign => "assign",
        /// Partitions revoked cleanly.
        Revoke => "revoke",
        /// Partitions lost without a clean revoke.
        Lost => "lost",
    }
}

label_values! {
    /// Where an event's age is measured from.
    AgeSource {
        /// The Kafka record's timestamp.
        KafkaTimestamp => "kafka_timestamp",
        /// The event's `occurred_at`.
        OccurredAt => "occurred_at",
    }
}

label_values! {
    /// A call of the bulk API.
    BulkCall {
        /// Submitting a batch.
        Submit => "submit",
        /// Polling a batch's status.
        Status => "status",
    }
}

label_values! {
    /// What a bulk call came to.
    CallOutcome {
        /// Answered with its value.
        Ok => "ok",
        /// To be tried again.
        Retryable => "retryable",
        /// 401 or 403.
        AuthFailed => "auth_failed",
        /// Refused for good.
        Rejected => "rejected",
    }
}

label_values! {
    /// Where a bulk batch got to.
    BatchStatus {
        /// Accepted for processing.
        Submitted => "submitted",
        /// Processed, its rows reported.
        Complete => "complete",
        /// Lost by Target and sent again.
        Stuck => "stuck",
        /// Refused.
        Rejected => "rejected",
        /// Lost too often: given up and dead-lettered.
        Lost => "lost",
    }
}

label_values! {
    /// What became of a bulk row.
    RowOutcome {
        /// Adobe applied it.
        Applied => "applied",
        /// Adobe reported it failed.
        Failed => "failed",
    }
}

/// The status class of an answer, or why there was none.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusClass {
    /// The hundreds of the status: `2xx` for 2.
    Hundreds(u16),
    /// No answer in time.
    Timeout,
    /// The connection failed or broke.
    Connection,
}

impl StatusClass {
    /// The class of `status`, or of its absence.
    pub fn of(status: Option<u16>, timed_out: bool) -> StatusClass {
        match status {
            Some(status) => StatusClass::Hundreds(status / 100),
            None if timed_out => StatusClass::Timeout,
            None => StatusClass::Connection,
        }
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            StatusClass::Hundreds(n) => write!(encoder, "{n}xx"),
            StatusClass::Timeout => encoder.write_str("timeout"),
            StatusClass::Connection => encoder.write_str("connection"),
        }
    }
}

/// `{outcome, error_class}` of a consumed event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumedLabels {
    /// What became of it.
    pub outcome: ConsumedOutcome,
    /// The parse error class for `dead_letter`, else empty.
    pub error_class: &'static str,
}

/// `{error_class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// A contract error class.
    pub error_class: &'static str,
}

/// `{outcome, status_class}` of a Target request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// What the answer meant.
    pub outcome: RequestOutcome,
    /// `2xx`..`5xx`, `timeout`, `connection`.
    pub status_class: StatusClass,
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
    /// Assign, revoke or lost.
    pub kind: RebalanceKind,
}

/// `{outcome}` of a profile fetch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// `found`, `not_found`, `auth_failed`, `retryable`, `rejected`.
    pub outcome: &'static str,
}

/// `{result}` of a read-back verification.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerifyLabels {
    /// `applied`, `not_yet_applied`, `not_found`, `different`, `failed`.
    pub result: &'static str,
}

/// `{source}` of an event age.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgeLabels {
    /// Where the age is measured from.
    pub source: AgeSource,
}

/// `{call, outcome}` of a bulk API call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BulkCallLabels {
    /// Which call.
    pub call: BulkCall,
    /// What it came to.
    pub outcome: CallOutcome,
}

/// `{status}` of a bulk batch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    /// Where it got to.
    pub status: BatchStatus,
}

/// `{outcome}` of bulk rows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RowLabels {
    /// Applied or failed.
    pub outcome: RowOutcome,
}

/// `{route}` of updates.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `single` or `batch`.
    pub route: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_the_exposition_names_them() {
        let mut registry = prometheus_client::registry::Registry::default();
        let requests = prometheus_client::metrics::family::Family::<
            RequestLabels,
            prometheus_client::metrics::counter::Counter,
        >::default();
        registry.register("requests", "", requests.clone());
        for (outcome, status, timed_out) in [
            (RequestOutcome::Accepted, Some(204), false),
            (RequestOutcome::AuthFailed, Some(401), false),
            (RequestOutcome::Retryable, None, true),
            (RequestOutcome::Retryable, None, false),
        ] {
            requests
                .get_or_create(&RequestLabels {
                    outcome,
                    status_class: StatusClass::of(status, timed_out),
                })
                .inc();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for series in [
            r#"requests_total{outcome="accepted",status_class="2xx"} 1"#,
            r#"requests_total{outcome="auth_failed",status_class="4xx"} 1"#,
            r#"requests_total{outcome="retryable",status_class="timeout"} 1"#,
            r#"requests_total{outcome="retryable",status_class="connection"} 1"#,
        ] {
            assert!(text.contains(series), "{series} not in\n{text}");
        }
    }

    #[test]
    fn every_value_of_a_set_is_distinct_and_snake_case() {
        let sets: [Vec<&str>; 8] = [
            ConsumedOutcome::ALL.iter().map(|v| v.as_str()).collect(),
            RequestOutcome::ALL.iter().map(|v| v.as_str()).collect(),
            RebalanceKind::ALL.iter().map(|v| v.as_str()).collect(),
            AgeSource::ALL.iter().map(|v| v.as_str()).collect(),
            BulkCall::ALL.iter().map(|v| v.as_str()).collect(),
            CallOutcome::ALL.iter().map(|v| v.as_str()).collect(),
            BatchStatus::ALL.iter().map(|v| v.as_str()).collect(),
            RowOutcome::ALL.iter().map(|v| v.as_str()).collect(),
        ];
        for values in sets {
            let unique: std::collections::BTreeSet<&str> = values.iter().copied().collect();
            assert_eq!(unique.len(), values.len(), "{values:?}");
            for value in values {
                assert!(
                    value.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{value}"
                );
            }
        }
    }
}
