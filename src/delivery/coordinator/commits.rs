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
        let offsets = self.partitions.changed_offsets();
        if offsets.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        self.commit = Some(tokio::task::spawn_blocking(move || {
            let result = commit_sync(&consumer, &offsets);
            CommitResult { offsets, result }
        }));
    }

    /// The broker answered a commit: only now do the offsets count as committed.
    pub(super) fn on_commit(&mut self, CommitResult { offsets, result }: CommitResult) {
        match result {
            Ok(()) => self.partitions.committed(&offsets),
            // Typically a rebalance in progress; the next tick tries again.
            Err(error) => {
                tracing::debug!(error = %error, "Offset commit failed; retrying on the next tick.")
            }
        }
        self.publish_offsets();
    }

    /// Shutdown: stop taking work, finish or abandon in-flight work within
    /// the deadline, commit what was accepted. Every wait is bounded, so the
    /// process ends within the drain deadline plus a few seconds even when
    /// the group coordinator cannot be reached.
    pub(super) async fn drain(mut self) {
        self.draining = true;
        let waiting = self.queues.remove_where(|_| true).len();
        self.drop_open_batches();
        let deadline = Instant::now() + self.settings.drain_timeout;
        tracing::info!(
            in_flight = self.tasks.len() + self.backoffs.len(),
            dropped_waiting = waiting,
            drain_ms = self.settings.drain_timeout.as_millis() as u64,
            "Shutting down: finishing in-flight work."
        );
        let mut consumer_gone = false;
        while !self.tasks.is_empty() || !self.backoffs.is_empty() {
            // Retries whose backoff ends within the deadline still go.
            self.next_wake = None;
            self.dispatch_single(Duration::ZERO, Instant::now());
            let wake = self.next_wake;
            tokio::select! {
                biased;
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.on_task(done),
                event = self.events.recv(), if !consumer_gone => match event {
                    Some(ConsumerEvent::Revoked { partitions, lost, reply }) => self.on_revoke(partitions, lost, reply),
                    Some(_) => {}
                    None => consumer_gone = true,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = sleep_until_opt(wake), if wake.is_some() => {}
            }
            self.check_revokes();
        }
        if !self.tasks.is_empty() || !self.backoffs.is_empty() {
            tracing::warn!(
                abandoned = self.tasks.len() + self.backoffs.len(),
                "Drain deadline passed; abandoning in-flight work (it will be re-read)."
            );
            self.abandon.cancel();
            // Abandoned tasks return at once; give them a moment.
            let grace = Instant::now() + Duration::from_secs(1);
            while let Ok(Some(done)) =
                tokio::time::timeout_at(grace, self.tasks.join_next_with_id()).await
            {
                self.on_task(done);
            }
            self.tasks.abort_all();
            while let Some(done) = self.tasks.join_next_with_id().await {
                self.on_task(done);
            }
            for backoff in self.backoffs.take_all() {
                for item in backoff.items {
                    item.span.finish(Outcome::Abandoned);
                }
            }
        }
        // Partitions still being revoked hand back what they finished.
        for revoke in std::mem::take(&mut self.revokes) {
            let offsets = self.give_up(&revoke.partitions);
            let _ = revoke.reply.send(offsets);
        }
        self.final_commit(Instant::now() + FINAL_COMMIT_LIMIT).await;
        self.publish_offsets();
    }

    /// Commits what was accepted, trying a few times while a rebalance
    /// settles, and giving up at `limit` (the group coordinator may be
    /// unreachable): the next owner then re-reads from the last commit.
    async fn final_commit(&mut self, limit: Instant) {
        if let Some(running) = self.commit.take() {
            match tokio::time::timeout_at(limit, running).await {
                Ok(Ok(result)) => self.on_commit(result),
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::error!("The last offset commit did not answer in time; the next owner re-reads from the last commit.");
                    return;
                }
            }
        }
        for attempt in 1..=3 {
            let offsets = self.partitions.changed_offsets();
            if offsets.is_empty() {
                break;
            }
            let consumer = self.consumer.clone();
            let count = offsets.len();
            let commit = tokio::task::spawn_blocking(move || {
                let result = commit_sync(&consumer, &offsets);
                (offsets, result)
            });
            match tokio::time::timeout_at(limit, commit).await {
                Ok(Ok((offsets, Ok(())))) => {
                    self.on_commit(CommitResult {
                        offsets,
                        result: Ok(()),
                    });
                    tracing::info!(partitions = count, "Committed final offsets.");
                }
                Ok(Ok((_, Err(error)))) => {
                    tracing::warn!(error = %error, attempt, "Final offset commit failed.");
                    tokio::time::sleep_until(
                        limit.min(Instant::now() + Duration::from_millis(300)),
                    )
                    .await;
                }
                Ok(Err(error)) => {
                    tracing::error!(error = %error, "Final offset commit did not run.");
                    break;
                }
                Err(_) => {
                    tracing::error!("The final offset commit did not answer in time.");
                    break;
                }
            }
        }
        if !self.partitions.changed_offsets().is_empty() {
            tracing::error!(
                "Could not commit final offsets; the next owner re-reads from the last commit."
            );
        }
    }
}

/// How long the final commit may take after the drain: the process must
/// end within the drain deadline plus 5 s, leaving time to leave the group.
const FINAL_COMMIT_LIMIT: Duration = Duration::from_millis(2500);

/// Commits offsets and waits for the broker's answer.
pub(super) fn commit_sync(
    consumer: &PipelineConsumer,
    offsets: &[CommitOffset],
) -> Result<(), String> {
    let mut list = TopicPartitionList::new();
    for CommitOffset { tp, offset, .. } in offsets {
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
        Some(handle) => handle.await.unwrap_or_else(|error| CommitResult {
            offsets: Vec::new(),
            result: Err(error.to_string()),
        }),
        None => std::future::pending().await,
    }
}
