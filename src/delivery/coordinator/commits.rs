//! Commits: one at a time on a blocking thread, counted only once the
//! broker confirmed them; and the shutdown drain that ends with a final commit.

use super::*;

impl Coordinator {
    /// Starts committing changed watermarks on a blocking thread, unless a
    /// commit is already under way.
    pub(super) fn start_commit(&mut self) {
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

    /// The broker answered a commit: only now do the offsets count as committed.
    pub(super) fn on_commit(&mut self, (offsets, result): CommitResult) {
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
    pub(super) fn changed_offsets(&self) -> Vec<(TopicPartition, u64, i64)> {
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
    pub(super) async fn drain(mut self) {
        self.draining = true;
        let waiting = self.queues.remove_where(|_| true).len();
        self.drop_open_batches();
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
}

/// Commits offsets and waits for the broker's answer.
pub(super) fn commit_sync(
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

/// The result of the commit under way (pending forever when there is none).
pub(super) async fn wait_commit(
    commit: &mut Option<tokio::task::JoinHandle<CommitResult>>,
) -> CommitResult {
    match commit.as_mut() {
        Some(handle) => handle
            .await
            .unwrap_or_else(|error| (Vec::new(), Err(error.to_string()))),
        None => std::future::pending().await,
    }
}
