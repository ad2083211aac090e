//! The spans of one event, from the coordinator tracking it to its offset
//! becoming committable:
//!
//! - `pps.event` (kind consumer): one per tracked record, child of the
//!   record's `traceparent` when it has one, with the OpenTelemetry
//!   messaging attributes and `pps.outcome` (`accepted`, `dead_lettered`,
//!   `skipped` or `abandoned`).
//! - `pps.target.request` (kind client): one per Target attempt. A coalesced
//!   request covers several events: it is the child of the first (oldest)
//!   event's span and links to the spans of the others, so each event's
//!   trace shows the request that carried it and the request shows every
//!   event it carried.
//! - `pps.dead_letter.write` (kind producer): the dead-letter write, child of
//!   the event's span.
//!
//! Never a customer id, the record key or a token as an attribute. When
//! traces are not exported every value here is empty and nothing is built.

use crate::kafka::TopicPartition;
use crate::ops::traces;
use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

/// How an event ended, as `pps.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Target accepted the update.
    Accepted,
    /// Written to the dead-letter topic.
    DeadLettered,
    /// Nothing to send (no customer identity).
    Skipped,
    /// Not finished (drain deadline, revoke, failed write): read again later.
    Abandoned,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Skipped => "skipped",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// The attributes of an event span, less the outcome.
pub fn event_attributes(tp: &TopicPartition, offset: i64, group: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.destination.name", tp.topic.to_string()),
        KeyValue::new(
            "messaging.destination.partition.id",
            tp.partition.to_string(),
        ),
        KeyValue::new("messaging.kafka.offset", offset),
        KeyValue::new("messaging.consumer.group.name", group.to_owned()),
    ]
}

/// The `pps.event` span of one event; ended by [`EventSpan::finish`], or as
/// `abandoned` when dropped unfinished (work dropped on revoke or shutdown).
#[derive(Debug, Default)]
pub struct EventSpan {
    /// A context holding the span; `None` when traces are off.
    context: Option<Context>,
}

impl EventSpan {
    /// Starts the span of a tracked record, under `remote` when the record
    /// carried a trace context.
    pub fn start(
        tp: &TopicPartition,
        offset: i64,
        group: &str,
        remote: Option<&SpanContext>,
    ) -> EventSpan {
        if !traces::enabled() {
            return EventSpan::default();
        }
        let parent = match remote {
            Some(remote) => Context::new().with_remote_span_context(remote.clone()),
            None => Context::new(),
        };
        let tracer = traces::tracer();
        let span = tracer
            .span_builder("pps.event")
            .with_kind(SpanKind::Consumer)
            .with_attributes(event_attributes(tp, offset, group))
            .start_with_context(&tracer, &parent);
        EventSpan {
            context: Some(parent.with_span(span)),
        }
    }

    /// Records the outcome and ends the span.
    pub fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        if let Some(context) = self.context.take() {
            let span = context.span();
            span.set_attribute(KeyValue::new("pps.outcome", outcome.as_str()));
            span.end();
        }
    }

    fn span_context(&self) -> Option<SpanContext> {
        self.context
            .as_ref()
            .map(|c| c.span().span_context().clone())
    }

    /// The span of the dead-letter write of this event.
    pub fn dead_letter_write(&self, dlq_topic: &str, class: &'static str) -> ChildSpan {
        let Some(parent) = &self.context else {
            return ChildSpan(None);
        };
        let tracer = traces::tracer();
        let span = tracer
            .span_builder("pps.dead_letter.write")
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.destination.name", dlq_topic.to_owned()),
                KeyValue::new("pps.error.class", class),
            ])
            .start_with_context(&tracer, parent);
        ChildSpan(Some(span))
    }
}

impl Drop for EventSpan {
    fn drop(&mut self) {
        self.end(Outcome::Abandoned);
    }
}

/// Where the attempts of one (possibly coalesced) request hang: under the
/// first event's span, linked to the others.
#[derive(Debug, Default, Clone)]
pub struct RequestTrace {
    parent: Option<Context>,
    links: Vec<SpanContext>,
}

impl RequestTrace {
    /// For the events one request carries, oldest first.
    pub fn of<'a>(mut events: impl Iterator<Item = &'a EventSpan>) -> RequestTrace {
        let Some(first) = events.next().and_then(|e| e.context.clone()) else {
            return RequestTrace::default();
        };
        RequestTrace {
            parent: Some(first),
            links: events.filter_map(EventSpan::span_context).collect(),
        }
    }

    /// The span of attempt `attempt` (1 for the first).
    pub fn attempt(&self, attempt: u32) -> ChildSpan {
        let Some(parent) = &self.parent else {
            return ChildSpan(None);
        };
        let tracer = traces::tracer();
        let mut attributes = vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("pps.target.attempt", i64::from(attempt)),
            KeyValue::new("pps.coalesced_events", self.links.len() as i64 + 1),
        ];
        if attempt > 1 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(attempt - 1),
            ));
        }
        let span = tracer
            .span_builder("pps.target.request")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .with_links(self.links.iter().cloned().map(Link::with_context).collect())
            .start_with_context(&tracer, parent);
        ChildSpan(Some(span))
    }
}

/// A request or dead-letter span; ends when dropped.
#[derive(Default)]
pub struct ChildSpan(Option<BoxedSpan>);

impl std::fmt::Debug for ChildSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ChildSpan").field(&self.0.is_some()).finish()
    }
}

impl ChildSpan {
    /// Records Target's answer to an attempt: the status, or why there was
    /// none, and `verdict` (`accepted`, `rejected`, `auth_failed`, `retryable`).
    pub fn answered(mut self, status: Option<u16>, timed_out: bool, verdict: &'static str) {
        let Some(span) = self.0.as_mut() else {
            return;
        };
        span.set_attribute(KeyValue::new("pps.target.verdict", verdict));
        match status {
            Some(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 400 {
                    span.set_attribute(KeyValue::new("error.type", status.to_string()));
                }
            }
            None => {
                let kind = if timed_out { "timeout" } else { "no_response" };
                span.set_attribute(KeyValue::new("error.type", kind));
            }
        }
        if verdict != "accepted" {
            span.set_status(Status::error(verdict));
        }
    }

    /// Records whether the dead letter was written.
    pub fn written(mut self, written: bool) {
        if let Some(span) = self.0.as_mut() {
            if !written {
                span.set_attribute(KeyValue::new("error.type", "abandoned"));
                span.set_status(Status::error("abandoned"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn event_attributes_follow_the_messaging_conventions_and_carry_no_key() {
        let tp = TopicPartition {
            topic: Arc::from("pos.purchases"),
            partition: 3,
        };
        let attributes = event_attributes(&tp, 42, "pos-profile-sync");
        let get = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(get("messaging.system").as_deref(), Some("kafka"));
        assert_eq!(
            get("messaging.destination.name").as_deref(),
            Some("pos.purchases")
        );
        assert_eq!(
            get("messaging.destination.partition.id").as_deref(),
            Some("3")
        );
        assert_eq!(get("messaging.kafka.offset").as_deref(), Some("42"));
        assert_eq!(
            get("messaging.consumer.group.name").as_deref(),
            Some("pos-profile-sync")
        );
        assert_eq!(get("messaging.kafka.message.key"), None);
    }

    #[test]
    fn without_an_export_nothing_is_built() {
        let tp = TopicPartition {
            topic: Arc::from("t"),
            partition: 0,
        };
        let span = EventSpan::start(&tp, 1, "g", None);
        assert!(span.context.is_none());
        let request = RequestTrace::of([&span].into_iter());
        assert!(request.parent.is_none());
        assert!(request.attempt(1).0.is_none());
        assert!(span.dead_letter_write("dlq", "invalid_json").0.is_none());
        span.finish(Outcome::Skipped);
    }
}
