//! Revoked partitions: drop their waiting work, wait for their in-flight
//! work up to the drain deadline, then cancel what is left, hand back the
//! offsets to commit, and let partitions paused for a full pod fetch again.
//! A lost partition is given up at once.

use super::*;

impl DeliveryState {
    /// Partitions are being taken away: stop their waiting work and start the drain.
    pub(super) fn on_revoke(
        &mut self,
        partitions: Vec<TopicPartition>,
        lost: bool,
        reply: std::sync::mpsc::SyncSender<Vec<(TopicPartition, i64)>>,
    ) {
        let revoked = self.partitions.start_revoke(partitions);
        self.update_share();
        // Waiting work of these partitions is dropped: unfinished, it is not
        // committed, and the new owner reads it again.
        self.queues
            .remove_where(|item| revoked.iter().any(|(tp, _)| *tp == item.event.tp));
        let revoke = PendingRevoke {
            partitions: revoked,
            reply,
            deadline: self.now + self.settings.drain_timeout,
        };
        if lost {
            // Another pod owns them already: commit nothing, stop everything now.
            self.give_up(&revoke.partitions);
            self.actions.push(Action::AnswerRevoke {
                reply: revoke.reply,
                offsets: Vec::new(),
            });
            return;
        }
        // A clean revoke: open batches go now, so the drain does not wait
        // for their age. (A loss took its rows out of them in `give_up`.)
        self.seal_due_batches(true);
        self.revokes.push(revoke);
        self.resume_if_room();
    }

    /// Answers revokes whose partitions are drained or whose deadline passed.
    pub(super) fn answer_drained_revokes(&mut self) {
        if self.revokes.is_empty() {
            return;
        }
        let now = self.now;
        let mut i = 0;
        while i < self.revokes.len() {
            let revoke = &self.revokes[i];
            if !self.partitions.drained(&revoke.partitions) && now < revoke.deadline {
                i += 1;
                continue;
            }
            let revoke = self.revokes.swap_remove(i);
            let offsets = self.give_up(&revoke.partitions);
            self.actions.push(Action::AnswerRevoke {
                reply: revoke.reply,
                offsets,
            });
        }
    }

    /// Lets these assignments of partitions go: cancels their running work
    /// and backoffs, forgets their state, and returns the offsets to commit.
    /// A partition assigned again since (a later epoch) is left alone.
    pub(super) fn give_up(
        &mut self,
        partitions: &[(TopicPartition, u64)],
    ) -> Vec<(TopicPartition, i64)> {
        let mut offsets = Vec::new();
        let mut gone = Vec::new();
        for (tp, state) in self.partitions.take(partitions) {
            if let Some(offset) = state.watermark.committable() {
                offsets.push((tp.clone(), offset));
            }
            if state.in_flight > 0 {
                tracing::warn!(partition = %tp, in_flight = state.in_flight, "Giving up in-flight work of a revoked partition (it will be re-read by its new owner).");
            }
            // Running attempts and dead-letter writes stop now: a stale
            // attempt must not land after the new owner's newer updates.
            state.cancel.cancel();
            self.abort_updates(|event| event.tp == tp && event.epoch == state.epoch);
            self.reported.remove(&tp);
            self.forget_partition_series(&tp);
            gone.push(tp);
        }
        self.drop_backoffs_of(&gone);
        self.drop_open_rows_of(&gone);
        self.publish_assignment();
        // The dropped work no longer fills the pod: partitions paused for
        // it may fetch again.
        self.resume_if_room();
        offsets
    }
}
