//! Metrics the coordinator owns: assignment, paused partitions, offsets and
//! lag, budget pauses, the rolling daily count.

use super::*;

impl DeliveryState {
    /// Partitions owned, for `/readyz` and the metrics.
    pub(super) fn publish_assignment(&self) {
        let assigned = self.partitions.owned();
        self.health.assigned.store(assigned, Ordering::Release);
        self.metrics.assigned_partitions.set(assigned as i64);
    }

    /// Partitions paused for back-pressure.
    pub(super) fn publish_paused(&self) {
        let paused = self.partitions.paused();
        self.metrics.paused_partitions.set(paused as i64);
    }

    /// Committed offsets, high watermarks, lag, the oldest unfinished
    /// event's age, pauses and the daily count.
    pub(in crate::delivery::coordinator) fn publish_offsets(&self) {
        let now = std::time::Instant::now();
        for (tp, state) in self.partitions.iter() {
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
            if let Some(reported) = self.reported.get(tp) {
                self.metrics
                    .high_watermark
                    .get_or_create(&labels)
                    .set(reported.high);
                // Before its first commit here, a partition's lag counts from
                // its first unfinished event, or from where the client fetches.
                let base = committed
                    .or(state.watermark.committable())
                    .or(reported.fetching);
                if let Some(base) = base {
                    self.metrics
                        .consumer_lag
                        .get_or_create(&labels)
                        .set((reported.high - base).max(0));
                }
            }
            let oldest = state.watermark.oldest_unfinished_since();
            self.metrics
                .oldest_unfinished_age
                .get_or_create(&labels)
                .set(oldest.map_or(0.0, |since| {
                    now.saturating_duration_since(since).as_secs_f64()
                }));
        }
        self.metrics
            .daily_updates
            .set(self.daily.total(current_minute()) as i64);
        if self.total_partitions > 0 {
            self.metrics
                .daily_quota_share
                .set(self.settings.daily_quota as f64 * self.owned_fraction());
        }
    }

    /// A partition this pod no longer owns: its series go, so that a
    /// `max by (topic, partition)` over the pods sees only the owner's.
    pub(super) fn forget_partition_series(&self, tp: &TopicPartition) {
        self.metrics.forget_partition(&PartitionLabels {
            topic: tp.topic.to_string(),
            partition: tp.partition,
        });
    }
}
