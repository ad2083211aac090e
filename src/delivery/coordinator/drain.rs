//! The shutdown drain: stop taking work, finish or abandon in-flight work
//! within the deadline, commit what was accepted.

use super::effects::{commit_sync, wait_commit};
use super::*;
use rdkafka::consumer::Consumer;

/// How long the final commit may take after the drain: the process must
/// end within the drain deadline plus 5 s, leaving time to leave the group.
const FINAL_COMMIT_LIMIT: Duration = Duration::from_millis(2500);

impl Coordinator {
    /// Shutdown: stop taking work, finish or abandon in-flight work within
    /// the deadline, commit what was accepted. Every wait is bounded, so the
    /// process ends within the drain deadline plus a few seconds even when
    /// the group coordinator cannot be reached.
    pub(super) async fn drain(mut self) -> Drained {
        let now = Instant::now();
        let waiting = self.state.begin_drain(now);
        let drain_timeout = self.state.settings().drain_timeout;
        let deadline = now + drain_timeout;
        tracing::info!(
            in_flight = self.state.work_in_flight(),
            dropped_waiting = waiting,
            drain_ms = drain_timeout.as_millis() as u64,
            "Shutting down: finishing in-flight work."
        );
        let mut consumer_gone = false;
        while self.state.work_in_flight() > 0 {
            // Retries whose backoff ends within the deadline still go.
            let wake = self.start_ready();
            if self.tasks.is_empty() && wake.is_none_or(|at| at >= deadline) {
                // Only backoffs are left, and none ends before the
                // deadline: waiting for it would finish nothing.
                break;
            }
            tokio::select! {
                biased;
                Some(done) = self.tasks.next(), if !self.tasks.is_empty() => self.on_task(done),
                event = self.events.recv(), if !consumer_gone => match event {
                    Some(event @ ConsumerEvent::Revoked { .. }) => self.state.on_event(event, Instant::now()),
                    Some(_) => {}
                    None => consumer_gone = true,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = sleep_until_opt(wake), if wake.is_some() => {}
            }
            self.state.check_revokes(Instant::now());
            self.carry_out();
        }
        let abandoned = self.state.work_in_flight();
        if abandoned > 0 {
            if self.tasks.is_empty() {
                tracing::warn!(
                    abandoned,
                    "Every retry left waits past the drain deadline; leaving them to the next owner (they will be re-read)."
                );
            } else {
                tracing::warn!(
                    abandoned,
                    "Drain deadline passed; abandoning in-flight work (it will be re-read)."
                );
            }
            self.state.abandon_all();
            // Update attempts end here; the other tasks see their tokens
            // cancelled and return at once: give them a moment.
            self.carry_out();
            let grace = Instant::now() + Duration::from_secs(1);
            while let Ok(Some(done)) = tokio::time::timeout_at(grace, self.tasks.next()).await {
                self.on_task(done);
                self.carry_out();
            }
            for done in self.tasks.abort_all() {
                self.on_task(done);
                self.carry_out();
            }
        }
        // Partitions still being revoked hand back what they finished.
        self.state.answer_all_revokes();
        self.carry_out();
        let committed = self.final_commit(Instant::now() + FINAL_COMMIT_LIMIT).await;
        self.state.publish_offsets();
        self.publish_gate();
        Drained {
            abandoned,
            committed,
        }
    }

    /// Commits what was accepted, trying a few times while a rebalance
    /// settles, and giving up at `limit` (the group coordinator may be
    /// unreachable): the next owner then re-reads from the last commit.
    /// Whether every accepted offset was committed.
    async fn final_commit(&mut self, limit: Instant) -> bool {
        if self.commit.is_some() {
            match tokio::time::timeout_at(limit, wait_commit(&mut self.commit)).await {
                Ok(result) => {
                    self.commit = None;
                    self.state.on_commit(result);
                }
                Err(_) => {
                    tracing::error!("The last offset commit did not answer in time; the next owner re-reads from the last commit.");
                    self.consumer.context().abandon_commit();
                    return false;
                }
            }
        }
        for attempt in 1..=3 {
            let offsets = self.state.changed_offsets();
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
                    self.state.on_commit(CommitResult {
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
                    self.consumer.context().abandon_commit();
                    break;
                }
            }
        }
        let committed = self.state.changed_offsets().is_empty();
        if !committed {
            tracing::error!(
                "Could not commit final offsets; the next owner re-reads from the last commit."
            );
        }
        committed
    }
}

/// Sleeps until `deadline`; pending forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
