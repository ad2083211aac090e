//! Metrics the coordinator owns: assignment, paused partitions, offsets and
//! lag, budget pauses, the rolling daily count.

use super::*;

impl Coordinator {
    /// Partitions owned, for `/readyz` and the metrics.
    pub(super) fn publish_assignment(&self) {
        let assigned = self.partitions.values().filter(|p| !p.revoking).count();
        self.health.assigned.store(assigned, Ordering::Release);
        self.metrics.assigned_partitions.set(assigned as i64);
    }

    /// Partitions paused for back-pressure.
    pub(super) fn publish_paused(&self) {
        let paused = self.partitions.values().filter(|p| p.paused).count();
        self.metrics.paused_partitions.set(paused as i64);
    }

    /// Committed offsets, high watermarks, lag, pauses and the daily count.
    pub(super) fn publish_offsets(&self) {
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
        self.metrics
            .daily_updates
            .set(self.daily.total(current_minute()) as i64);
        if self.total_partitions > 0 {
            self.metrics
                .daily_quota_share
                .set(self.settings.daily_quota as f64 * self.owned_fraction());
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
