//! The coordinator: one task that owns the delivery state and moves events
//! between Kafka and Target. It tracks every consumed offset in its
//! partition's [`CommitWatermark`], queues updates per profile
//! ([`ProfileQueues`]), starts senders up to `delivery.max_in_flight`,
//! dead-letters what must be, commits the watermarks on a short interval,
//! drains revoked partitions before they go, and on shutdown finishes or
//! abandons in-flight work within the drain deadline and commits.

use super::queues::ProfileQueues;
use super::sender::{DeliveryOutcome, Sender};
use super::spans::{EventSpan, Outcome, RequestTrace};
use super::watermark::CommitWatermark;
use crate::event::Identity;
use crate::kafka::consumer::PipelineConsumer;
use crate::kafka::dead_letter::{DeadLetter, DeadLetterWriter};
use crate::kafka::{ConsumerEvent, Record, TopicPartition};
use crate::mapping::{merge_updates, Decision, ProfileUpdate};
use crate::ops::health::Health;
use crate::ops::metrics::{AgeLabels, Metrics, PartitionLabels};
use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Settings the coordinator needs.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// Concurrent update requests.
    pub max_in_flight: usize,
    /// Records held per partition before it is paused.
    pub max_buffered_per_partition: usize,
    /// How often watermarks are committed.
    pub commit_interval: Duration,
    /// Time to finish in-flight work on revoke and shutdown.
    pub drain_timeout: Duration,
    /// The group budget, split by assignment.
    pub per_second: f64,
    /// The group burst, split likewise.
    pub burst: u32,
    /// Single updates per rolling 24 h for the group, split likewise.
    pub daily_quota: u64,
    /// `delivery.coalesce_window_ms`; zero sends one update per event.
    pub coalesce_window: Duration,
    /// `kafka.group_id`, for the event spans.
    pub group_id: Arc<str>,
}

/// An event's place: partition, assignment epoch, offset. Completions from an
/// earlier epoch (a partition revoked and assigned again) are ignored.
#[derive(Debug, Clone)]
struct EventRef {
    tp: TopicPartition,
    epoch: u64,
    offset: i64,
}

/// An update waiting for its turn, with what a dead letter would need.
#[derive(Debug)]
struct Pending {
    event: EventRef,
    update: ProfileUpdate,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    timestamp_ms: Option<i64>,
    occurred_at_s: f64,
    /// When the coordinator received it (the coalescing window starts here).
    received_at: Instant,
    span: EventSpan,
}

enum TaskDone {
    Update {
        profile: Identity,
        items: Vec<Pending>,
        outcome: DeliveryOutcome,
    },
    DeadLetter {
        event: EventRef,
        written: bool,
        span: EventSpan,
    },
}

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    watermark: CommitWatermark,
    /// Events of this partition inside running tasks.
    in_flight: usize,
    paused: bool,
    revoking: bool,
    last_committed: Option<i64>,
}

struct PendingRevoke {
    partitions: Vec<TopicPartition>,
    reply: std::sync::mpsc::SyncSender<Vec<(TopicPartition, i64)>>,
    deadline: Instant,
}

/// Counters resolved once.
struct Counters {
    update: Counter,
    skip: Counter,
    invalid: HashMap<&'static str, Counter>,
}

/// The delivery state and its loop.
pub struct Coordinator {
    settings: CoordinatorSettings,
    consumer: Arc<PipelineConsumer>,
    events: mpsc::Receiver<ConsumerEvent>,
    sender: Sender,
    dead_letters: Arc<DeadLetterWriter>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    partitions: HashMap<TopicPartition, PartitionState>,
    queues: ProfileQueues<Identity, Pending>,
    tasks: JoinSet<TaskDone>,
    updates_in_flight: usize,
    next_epoch: u64,
    revokes: Vec<PendingRevoke>,
    /// Cancelled at the shutdown drain deadline: in-flight work is abandoned.
    abandon: CancellationToken,
    draining: bool,
    counters: Counters,
    high_watermarks: HashMap<TopicPartition, i64>,
    /// The commit under way, if any: one at a time, and a partition's offset
    /// counts as committed only once the broker confirmed it.
    commit: Option<tokio::task::JoinHandle<CommitResult>>,
    /// Partitions of all subscribed topics (from metadata), for the share.
    total_partitions: usize,
    /// Updates accepted in the last 24 hours.
    daily: super::quota::RollingDay,
    /// When the oldest coalescing profile may send.
    next_wake: Option<Instant>,
}

/// What a commit attempted and whether the broker took it.
type CommitResult = (Vec<(TopicPartition, u64, i64)>, Result<(), String>);

impl Coordinator {
    /// A coordinator over a started consumer.
    pub fn new(
        settings: CoordinatorSettings,
        consumer: Arc<PipelineConsumer>,
        events: mpsc::Receiver<ConsumerEvent>,
        sender: Sender,
        dead_letters: Arc<DeadLetterWriter>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Coordinator {
        let counters = Counters {
            update: metrics.consumed_counter("update", ""),
            skip: metrics.consumed_counter("skip", ""),
            invalid: ["invalid_json", "schema_violation", "unsupported_version"]
                .into_iter()
                .map(|class| (class, metrics.consumed_counter("dead_letter", class)))
                .collect(),
        };
        Coordinator {
            settings,
            consumer,
            events,
            sender,
            dead_letters,
            metrics,
            health,
            partitions: HashMap::new(),
            queues: ProfileQueues::default(),
            tasks: JoinSet::new(),
            updates_in_flight: 0,
            next_epoch: 0,
            revokes: Vec::new(),
            abandon: CancellationToken::new(),
            draining: false,
            counters,
            high_watermarks: HashMap::new(),
            commit: None,
            total_partitions: 0,
            daily: super::quota::RollingDay::default(),
            next_wake: None,
        }
    }

    /// Runs until `shutdown`, then drains within the deadline and commits.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut commit_tick = tokio::time::interval(self.settings.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.dispatch();
            let revoke_deadline = self.revokes.iter().map(|r| r.deadline).min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.on_task(done),
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => {
                        tracing::error!("The Kafka consumer stopped; shutting down.");
                        break;
                    }
                },
                _ = commit_tick.tick() => self.start_commit(),
                result = wait_commit(&mut self.commit), if self.commit.is_some() => {
                    self.commit = None;
                    self.on_commit(result);
                }
                _ = sleep_until_opt(revoke_deadline), if revoke_deadline.is_some() => {}
                _ = sleep_until_opt(self.next_wake), if self.next_wake.is_some() => {}
            }
            self.check_revokes();
        }
        self.drain().await;
    }

    /// Starts senders while there is room and work.
    /// Starts senders while there is room and work. With a coalescing
    /// window, a profile sends once its oldest waiting event has waited the
    /// window, and everything it has waiting goes as one merged update.
    fn dispatch(&mut self) {
        let window = self.settings.coalesce_window;
        self.next_wake = None;
        let now = Instant::now();
        while self.updates_in_flight < self.settings.max_in_flight {
            if !window.is_zero() {
                match self.queues.peek_next() {
                    None => break,
                    Some(head) if head.received_at + window > now => {
                        // Oldest first is also ready-time order: nobody else is ready.
                        self.next_wake = Some(head.received_at + window);
                        break;
                    }
                    Some(_) => {}
                }
            }
            let batch = if window.is_zero() { 1 } else { usize::MAX };
            let Some((profile, items)) = self.queues.next_ready(batch) else {
                break;
            };
            let update = if items.len() == 1 {
                items[0].update.clone()
            } else {
                match merge_updates(items.iter().map(|i| (&i.update, i.event.offset))) {
                    Some(update) => update,
                    None => break,
                }
            };
            for item in &items {
                if let Some(p) = self.partition(&item.event) {
                    p.in_flight += 1;
                }
            }
            self.updates_in_flight += 1;
            let sender = self.sender.clone();
            let abandon = self.abandon.clone();
            let trace = RequestTrace::of(items.iter().map(|i| &i.span));
            self.tasks.spawn(async move {
                let outcome = sender.deliver(&update, &abandon, &trace).await;
                TaskDone::Update {
                    profile,
                    items,
                    outcome,
                }
            });
        }
    }

    fn partition(&mut self, event: &EventRef) -> Option<&mut PartitionState> {
        self.partitions
            .get_mut(&event.tp)
            .filter(|p| p.epoch == event.epoch)
    }

    fn on_event(&mut self, event: ConsumerEvent) {
        match event {
            ConsumerEvent::Record(record) => self.on_record(record),
            ConsumerEvent::Assigned(partitions) => {
                for tp in partitions {
                    self.next_epoch += 1;
                    self.partitions.insert(
                        tp,
                        PartitionState {
                            epoch: self.next_epoch,
                            watermark: CommitWatermark::new(),
                            in_flight: 0,
                            paused: false,
                            revoking: false,
                            last_committed: None,
                        },
                    );
                }
                self.publish_assignment();
                self.update_share();
            }
            ConsumerEvent::Revoked {
                partitions,
                lost,
                reply,
            } => self.on_revoke(partitions, lost, reply),
            ConsumerEvent::Share { total, .. } => {
                self.total_partitions = total;
                self.update_share();
            }
            ConsumerEvent::HighWatermarks(marks) => {
                for (tp, mark) in marks {
                    if self.partitions.contains_key(&tp) {
                        self.high_watermarks.insert(tp, mark);
                    }
                }
                self.publish_offsets();
            }
        }
    }

    /// Sets this pod's share from the partitions it owns (and is not giving
    /// up). Called when partitions arrive (after their previous owner let go)
    /// and when a revoke starts (before they are handed over), so the pods'
    /// shares never add up to more than the group budget.
    fn update_share(&mut self) {
        let owned = self.partitions.values().filter(|p| !p.revoking).count();
        let share = super::gate::RateShare::of_group(
            self.settings.per_second,
            self.settings.burst,
            owned,
            self.total_partitions,
        );
        if share != self.sender.gate.share() {
            self.sender.gate.set_share(share);
            self.metrics.rate_share.set(share.per_second);
            tracing::info!(
                owned,
                total = self.total_partitions,
                per_second = share.per_second,
                burst = share.burst,
                "Rate share set from the assignment."
            );
        }
    }

    fn on_record(&mut self, record: Record) {
        let Some(state) = self.partitions.get_mut(&record.tp) else {
            return;
        };
        if state.revoking || self.draining || !state.watermark.track(record.offset) {
            // Not tracked, so never committed: it is read again.
            tracing::debug!(partition = %record.tp, offset = record.offset, "Record not tracked.");
            return;
        }
        let span = EventSpan::start(
            &record.tp,
            record.offset,
            &self.settings.group_id,
            record.trace_context.as_ref(),
        );
        let event = EventRef {
            tp: record.tp,
            epoch: state.epoch,
            offset: record.offset,
        };
        match record.decision {
            Decision::Skip(_) => {
                self.counters.skip.inc();
                state.watermark.finish(event.offset);
                span.finish(Outcome::Skipped);
            }
            Decision::DeadLetter(error) => {
                tracing::debug!(partition = %event.tp, offset = event.offset, class = error.class.as_str(), "Dead-lettering a record.");
                if let Some(counter) = self.counters.invalid.get(error.class.as_str()) {
                    counter.inc();
                }
                state.in_flight += 1;
                let letter = DeadLetter {
                    key: record.key,
                    payload: record.payload,
                    class: error.class.as_str(),
                    reason: error.reason,
                    source: event.tp.clone(),
                    offset: event.offset,
                    target_status: None,
                };
                self.spawn_dead_letter(event, letter, span);
            }
            Decision::Update(update) => {
                self.counters.update.inc();
                let occurred_at_s = update.occurred_at.unix_seconds_f64();
                let profile = update.identity.clone();
                self.queues.push(
                    profile,
                    Pending {
                        event,
                        update,
                        key: record.key,
                        payload: record.payload,
                        timestamp_ms: record.timestamp_ms,
                        occurred_at_s,
                        received_at: Instant::now(),
                        span,
                    },
                );
            }
        }
        self.apply_backpressure_for_last();
    }

    /// Pauses partitions whose buffer is full.
    fn apply_backpressure_for_last(&mut self) {
        let limit = self.settings.max_buffered_per_partition;
        let mut to_pause = TopicPartitionList::new();
        for (tp, state) in &mut self.partitions {
            if !state.paused && state.watermark.buffered() >= limit {
                state.paused = true;
                let _ = to_pause.add_partition(&tp.topic, tp.partition);
                tracing::info!(partition = %tp, buffered = state.watermark.buffered(), "Partition paused: too much work buffered.");
            }
        }
        if to_pause.count() > 0 {
            if let Err(error) = self.consumer.pause(&to_pause) {
                tracing::warn!(error = %error, "Could not pause partitions.");
            }
            self.publish_paused();
        }
    }

    fn spawn_dead_letter(&mut self, event: EventRef, letter: DeadLetter, span: EventSpan) {
        let writer = self.dead_letters.clone();
        let abandon = self.abandon.clone();
        let write_span = span.dead_letter_write(writer.topic(), letter.class);
        self.tasks.spawn(async move {
            let written = writer.write(&letter, &abandon).await;
            write_span.written(written);
            TaskDone::DeadLetter {
                event,
                written,
                span,
            }
        });
    }

    fn on_task(&mut self, done: Result<TaskDone, tokio::task::JoinError>) {
        let done = match done {
            Ok(done) => done,
            Err(error) => {
                // A panicking task loses nothing: its events stay unfinished,
                // so their offsets are never committed and are read again.
                tracing::error!(error = %error, "A delivery task failed; its events will be re-read after a restart.");
                return;
            }
        };
        match done {
            TaskDone::Update {
                profile,
                items,
                outcome,
            } => {
                self.updates_in_flight -= 1;
                self.queues.finish(&profile);
                match outcome {
                    DeliveryOutcome::Accepted => {
                        let now = SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64();
                        self.daily.add(now as u64 / 60, 1);
                        for item in items {
                            self.metrics.events_accepted.inc();
                            if let Some(ms) = item.timestamp_ms {
                                self.metrics
                                    .event_age
                                    .get_or_create(&AgeLabels {
                                        source: "kafka_timestamp".into(),
                                    })
                                    .observe((now - ms as f64 / 1000.0).max(0.0));
                            }
                            {
                                self.metrics
                                    .event_age
                                    .get_or_create(&AgeLabels {
                                        source: "occurred_at".into(),
                                    })
                                    .observe((now - item.occurred_at_s).max(0.0));
                            }
                            self.finish(&item.event);
                            item.span.finish(Outcome::Accepted);
                        }
                    }
                    DeliveryOutcome::Rejected { status } => {
                        for item in items {
                            let letter = dead_letter_of(
                                &item,
                                "target_rejected",
                                format!("Target rejected the update with HTTP {status}"),
                                Some(status),
                            );
                            self.spawn_dead_letter(item.event, letter, item.span);
                        }
                    }
                    DeliveryOutcome::Exhausted { last_status } => {
                        for item in items {
                            let reason = match last_status {
                                Some(status) => format!("gave up after delivery.max_attempts retryable failures; last HTTP {status}"),
                                None => "gave up after delivery.max_attempts retryable failures; last attempt got no response".to_owned(),
                            };
                            let letter =
                                dead_letter_of(&item, "retries_exhausted", reason, last_status);
                            self.spawn_dead_letter(item.event, letter, item.span);
                        }
                    }
                    DeliveryOutcome::Abandoned => {
                        for item in items {
                            if let Some(p) = self.partition(&item.event) {
                                p.in_flight -= 1;
                            }
                            item.span.finish(Outcome::Abandoned);
                        }
                    }
                }
            }
            TaskDone::DeadLetter {
                event,
                written,
                span,
            } => {
                tracing::debug!(partition = %event.tp, offset = event.offset, written, "Dead letter done.");
                if written {
                    self.finish(&event);
                    span.finish(Outcome::DeadLettered);
                } else {
                    if let Some(p) = self.partition(&event) {
                        p.in_flight -= 1;
                    }
                    span.finish(Outcome::Abandoned);
                }
            }
        }
    }

    /// An event is done (accepted or dead-lettered): its offset may be committed.
    fn finish(&mut self, event: &EventRef) {
        let limit = self.settings.max_buffered_per_partition;
        let Some(state) = self.partition(event) else {
            return;
        };
        state.in_flight -= 1;
        state.watermark.finish(event.offset);
        if state.paused && !state.revoking && state.watermark.buffered() <= limit / 2 {
            state.paused = false;
            let mut list = TopicPartitionList::new();
            let _ = list.add_partition(&event.tp.topic, event.tp.partition);
            if let Err(error) = self.consumer.resume(&list) {
                tracing::warn!(error = %error, "Could not resume a partition.");
            } else {
                tracing::info!(partition = %event.tp, "Partition resumed.");
            }
            self.publish_paused();
        }
    }

    fn on_revoke(
        &mut self,
        partitions: Vec<TopicPartition>,
        lost: bool,
        reply: std::sync::mpsc::SyncSender<Vec<(TopicPartition, i64)>>,
    ) {
        for tp in &partitions {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.revoking = true;
            }
        }
        self.update_share();
        // Waiting work of these partitions is dropped: unfinished, it is not
        // committed, and the new owner reads it again.
        self.queues
            .remove_where(|item| partitions.contains(&item.event.tp));
        if lost {
            for tp in &partitions {
                self.partitions.remove(tp);
            }
            let _ = reply.send(Vec::new());
            self.publish_assignment();
            return;
        }
        self.revokes.push(PendingRevoke {
            partitions,
            reply,
            deadline: Instant::now() + self.settings.drain_timeout,
        });
    }

    /// Answers revokes whose partitions are drained or whose deadline passed.
    fn check_revokes(&mut self) {
        if self.revokes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.revokes.len() {
            let revoke = &self.revokes[i];
            let drained = revoke
                .partitions
                .iter()
                .all(|tp| self.partitions.get(tp).is_none_or(|p| p.in_flight == 0));
            if !drained && now < revoke.deadline {
                i += 1;
                continue;
            }
            let revoke = self.revokes.swap_remove(i);
            let mut offsets = Vec::new();
            for tp in revoke.partitions {
                if let Some(state) = self.partitions.remove(&tp) {
                    if let Some(offset) = state.watermark.committable() {
                        offsets.push((tp.clone(), offset));
                    }
                    if state.in_flight > 0 {
                        tracing::warn!(partition = %tp, in_flight = state.in_flight, "Drain deadline passed; abandoning in-flight work of a revoked partition (it will be re-read).");
                    }
                }
                self.high_watermarks.remove(&tp);
            }
            let _ = revoke.reply.send(offsets);
            self.publish_assignment();
        }
    }

    /// Starts committing changed watermarks on a blocking thread, unless a
    /// commit is already under way.
    fn start_commit(&mut self) {
        self.publish_offsets();
        if self.commit.is_some() {
            return;
        }
        let offsets = self.changed_offsets();
        if offsets.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        self.commit = Some(tokio::task::spawn_blocking(move || {
            let result = commit_sync(&consumer, &offsets);
            (offsets, result)
        }));
    }

    fn on_commit(&mut self, (offsets, result): CommitResult) {
        match result {
            Ok(()) => {
                for (tp, epoch, offset) in offsets {
                    if let Some(state) = self.partitions.get_mut(&tp).filter(|p| p.epoch == epoch) {
                        state.last_committed = Some(offset);
                    }
                }
            }
            // Typically a rebalance in progress; the next tick tries again.
            Err(error) => {
                tracing::debug!(error = %error, "Offset commit failed; retrying on the next tick.")
            }
        }
        self.publish_offsets();
    }

    /// Owned partitions whose committable offset is not yet confirmed.
    fn changed_offsets(&self) -> Vec<(TopicPartition, u64, i64)> {
        self.partitions
            .iter()
            .filter(|(_, state)| !state.revoking)
            .filter_map(|(tp, state)| {
                let offset = state.watermark.committable()?;
                (state.last_committed != Some(offset)).then(|| (tp.clone(), state.epoch, offset))
            })
            .collect()
    }

    /// Shutdown: stop taking work, finish or abandon in-flight work within
    /// the deadline, commit what was accepted.
    async fn drain(mut self) {
        self.draining = true;
        let waiting = self.queues.remove_where(|_| true).len();
        let deadline = Instant::now() + self.settings.drain_timeout;
        tracing::info!(
            in_flight = self.tasks.len(),
            dropped_waiting = waiting,
            drain_ms = self.settings.drain_timeout.as_millis() as u64,
            "Shutting down: finishing in-flight work."
        );
        while !self.tasks.is_empty() {
            tokio::select! {
                biased;
                Some(done) = self.tasks.join_next() => self.on_task(done),
                event = self.events.recv() => match event {
                    Some(ConsumerEvent::Revoked { partitions, lost, reply }) => self.on_revoke(partitions, lost, reply),
                    Some(_) => {}
                    None => {}
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
            self.check_revokes();
        }
        if !self.tasks.is_empty() {
            tracing::warn!(
                abandoned = self.tasks.len(),
                "Drain deadline passed; abandoning in-flight work (it will be re-read)."
            );
            self.abandon.cancel();
            // Abandoned tasks return at once; give them a moment.
            let grace = Instant::now() + Duration::from_secs(1);
            while let Ok(Some(done)) = tokio::time::timeout_at(grace, self.tasks.join_next()).await
            {
                self.on_task(done);
            }
            self.tasks.abort_all();
        }
        for revoke in std::mem::take(&mut self.revokes) {
            let _ = revoke.reply.send(Vec::new());
        }
        if let Some(running) = self.commit.take() {
            if let Ok(result) = running.await {
                self.on_commit(result);
            }
        }
        // A commit can fail while a rebalance settles: try a few times.
        for attempt in 1..=3 {
            let offsets = self.changed_offsets();
            if offsets.is_empty() {
                break;
            }
            let consumer = self.consumer.clone();
            let count = offsets.len();
            let result = tokio::task::spawn_blocking(move || {
                let result = commit_sync(&consumer, &offsets);
                (offsets, result)
            })
            .await;
            match result {
                Ok((offsets, Ok(()))) => {
                    self.on_commit((offsets, Ok(())));
                    tracing::info!(partitions = count, "Committed final offsets.");
                }
                Ok((_, Err(error))) => {
                    tracing::warn!(error = %error, attempt, "Final offset commit failed.");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(error) => {
                    tracing::error!(error = %error, "Final offset commit did not run.");
                    break;
                }
            }
        }
        if !self.changed_offsets().is_empty() {
            tracing::error!(
                "Could not commit final offsets; the next owner re-reads from the last commit."
            );
        }
        self.publish_offsets();
    }

    fn publish_assignment(&self) {
        let assigned = self.partitions.values().filter(|p| !p.revoking).count();
        self.health.assigned.store(assigned, Ordering::Release);
        self.metrics.assigned_partitions.set(assigned as i64);
    }

    fn publish_paused(&self) {
        let paused = self.partitions.values().filter(|p| p.paused).count();
        self.metrics.paused_partitions.set(paused as i64);
    }

    fn publish_offsets(&self) {
        for (tp, state) in &self.partitions {
            let labels = PartitionLabels {
                topic: tp.topic.to_string(),
                partition: tp.partition,
            };
            let committed = state.last_committed;
            if let Some(committed) = committed {
                self.metrics
                    .committed_offset
                    .get_or_create(&labels)
                    .set(committed);
            }
            if let Some(high) = self.high_watermarks.get(tp) {
                self.metrics
                    .high_watermark
                    .get_or_create(&labels)
                    .set(*high);
                let base = committed.unwrap_or(0);
                self.metrics
                    .consumer_lag
                    .get_or_create(&labels)
                    .set((high - base).max(0));
            }
        }
        let minute = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / 60;
        self.metrics
            .daily_updates
            .set(self.daily.total(minute) as i64);
        let owned = self.partitions.values().filter(|p| !p.revoking).count();
        if self.total_partitions > 0 {
            self.metrics.daily_quota_share.set(
                self.settings.daily_quota as f64 * owned as f64 / self.total_partitions as f64,
            );
        }
        self.metrics
            .retry_after_pauses
            .set(self.sender.gate.retry_after_pauses() as i64);
        self.metrics
            .auth_paused
            .set(i64::from(self.sender.gate.is_auth_paused()));
        self.metrics
            .limiter_wait_seconds
            .set(self.sender.gate.limiter_wait_seconds());
    }
}

fn dead_letter_of(
    item: &Pending,
    class: &'static str,
    reason: String,
    target_status: Option<u16>,
) -> DeadLetter {
    DeadLetter {
        key: item.key.clone(),
        payload: item.payload.clone(),
        class,
        reason,
        source: item.event.tp.clone(),
        offset: item.event.offset,
        target_status,
    }
}

/// Commits offsets and waits for the broker's answer.
fn commit_sync(
    consumer: &PipelineConsumer,
    offsets: &[(TopicPartition, u64, i64)],
) -> Result<(), String> {
    let mut list = TopicPartitionList::new();
    for (tp, _, offset) in offsets {
        list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
            .map_err(|error| error.to_string())?;
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|error| error.to_string())
}

async fn wait_commit(commit: &mut Option<tokio::task::JoinHandle<CommitResult>>) -> CommitResult {
    match commit.as_mut() {
        Some(handle) => handle
            .await
            .unwrap_or_else(|error| (Vec::new(), Err(error.to_string()))),
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
