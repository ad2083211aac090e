//! Revoked partitions: drop their waiting work, wait for their in-flight
//! work up to the drain deadline, then hand back the offsets to commit.

use super::*;

impl Coordinator {
    /// Partitions are being taken away: stop their waiting work and start the drain.
    pub(super) fn on_revoke(
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
        // Open batches go now, so the drain does not wait for their age.
        self.seal_due_batches(Instant::now(), true);
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
    pub(super) fn check_revokes(&mut self) {
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
}
