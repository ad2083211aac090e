//! The coordinator's running work: every task's future, polled on the
//! coordinator's own task, not spawned on the runtime.
//!
//! A task here is an update attempt, a profile fetch, a dead-letter write,
//! a batch submission or poll: each mostly waits (for the gate, for
//! Target's answer, for the broker's acknowledgement), while the I/O itself
//! runs in the HTTP client's and librdkafka's own tasks and threads.
//! Spawning one runtime task per attempt cost a task allocation, a
//! scheduler hand-off and a join-set entry per update, plus a map from task
//! ids back to the state's [`WorkId`]s; a set of futures polled where their
//! answers are wanted costs none of that, and each future carries its
//! `WorkId` itself.
//!
//! What a spawned task gave for free is kept: a future that panics ends as
//! [`Ended::Panicked`] (its work is dead-lettered or retried by the state,
//! never lost), and [`Running::abort_all`] ends every future at once, each
//! reported as [`Ended::Cancelled`].
//!
//! A future here must never block its thread: the coordinator's loop waits
//! while it is polled.

use super::machine::{Ended, TaskDone, WorkId};
use futures::stream::{FuturesUnordered, StreamExt as _};
use futures::FutureExt as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a finished task comes to: its work's id and its result.
pub(super) type Finished = (WorkId, Result<TaskDone, Ended>);

/// The running tasks.
#[derive(Default)]
pub(super) struct Running {
    tasks: FuturesUnordered<RunningTask>,
}

impl Running {
    /// Starts `future` as the task of `work`: it is first polled with the
    /// others, at the next [`Running::next`].
    pub(super) fn start(
        &mut self,
        work: WorkId,
        future: impl Future<Output = TaskDone> + Send + 'static,
    ) {
        self.tasks.push(RunningTask {
            work,
            future: Box::pin(future),
        });
    }

    /// Whether no task runs.
    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// How many tasks run.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The next task to finish; `None` at once when none runs.
    pub(super) async fn next(&mut self) -> Option<Finished> {
        self.tasks.next().await
    }

    /// A task that has finished already, if any, without waiting. The
    /// coordinator's loop polls [`Running::next`] again before it waits,
    /// so no wake-up is lost to this look.
    pub(super) fn try_next(&mut self) -> Option<Finished> {
        self.tasks.next().now_or_never().flatten()
    }

    /// Ends the tasks of these works now (their futures are dropped, which
    /// cancels their requests); each is reported as [`Ended::Cancelled`].
    /// Those no longer running are skipped. It goes over every task, so it
    /// is for rare events (a partition given up, the drain's end).
    pub(super) fn abort(&mut self, works: &[WorkId]) -> Vec<Finished> {
        let mut ended = Vec::new();
        let tasks = std::mem::take(&mut self.tasks);
        for task in tasks {
            if works.contains(&task.work) {
                ended.push((task.work, Err(Ended::Cancelled)));
            } else {
                // Polled again at the next `next`: a future may be polled
                // without a wake-up.
                self.tasks.push(task);
            }
        }
        ended
    }

    /// Ends every task now (their futures are dropped, which cancels their
    /// requests); each is reported as [`Ended::Cancelled`].
    pub(super) fn abort_all(&mut self) -> Vec<Finished> {
        let ended = self
            .tasks
            .iter()
            .map(|task| (task.work, Err(Ended::Cancelled)))
            .collect();
        self.tasks.clear();
        ended
    }
}

/// A task's future with the name of its work.
struct RunningTask {
    work: WorkId,
    future: Pin<Box<dyn Future<Output = TaskDone> + Send>>,
}

impl Future for RunningTask {
    type Output = Finished;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished> {
        let work = self.work;
        // A panic is the task's end, as it would be for a spawned task:
        // the set drops a future once it answered, so it is never polled
        // again, and the coordinator's state is not touched by it.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.future.as_mut().poll(cx))) {
            Ok(Poll::Ready(done)) => Poll::Ready((work, Ok(done))),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready((work, Err(Ended::Panicked(panic_message(&*panic))))),
        }
    }
}

/// A panic's message, as far as it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str));
    match text {
        Some(text) => format!("the task panicked: {text}"),
        None => "the task panicked".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::attempt::AttemptOutcome;
    use std::time::Duration;

    fn id(n: u64) -> WorkId {
        WorkId::for_tests(n)
    }

    /// The numbers of the works that ended, sorted, each checked to have
    /// ended as cancelled.
    fn cancelled(ended: Vec<Finished>) -> Vec<u64> {
        let mut works: Vec<u64> = ended
            .into_iter()
            .map(|(work, done)| {
                assert!(matches!(done, Err(Ended::Cancelled)));
                work.number()
            })
            .collect();
        works.sort_unstable();
        works
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_answer_in_the_order_they_finish_under_their_work_ids() {
        let mut running = Running::default();
        running.start(id(1), async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            TaskDone::Update(AttemptOutcome::Accepted)
        });
        running.start(id(2), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            TaskDone::DeadLetter { written: true }
        });
        assert!(running.try_next().is_none());
        let (first, done) = running.next().await.unwrap();
        assert_eq!(first, id(2));
        assert!(matches!(done, Ok(TaskDone::DeadLetter { written: true })));
        let (second, done) = running.next().await.unwrap();
        assert_eq!(second, id(1));
        assert!(matches!(
            done,
            Ok(TaskDone::Update(AttemptOutcome::Accepted))
        ));
        assert!(running.is_empty());
        assert!(running.next().await.is_none());
    }

    #[tokio::test]
    async fn a_task_that_panics_ends_as_panicked_and_the_others_run_on() {
        let mut running = Running::default();
        running.start(id(7), async {
            tokio::task::yield_now().await;
            panic!("a bug in a task");
        });
        running.start(id(8), async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            TaskDone::DeadLetter { written: false }
        });
        let (work, done) = running.next().await.unwrap();
        assert_eq!(work, id(7));
        match done {
            Err(Ended::Panicked(message)) => assert!(message.contains("a bug in a task")),
            _ => panic!("the panic was not reported"),
        }
        let (work, done) = running.next().await.unwrap();
        assert_eq!(work, id(8));
        assert!(matches!(done, Ok(TaskDone::DeadLetter { written: false })));
    }

    #[tokio::test]
    async fn aborting_drops_every_future_and_reports_each_cancelled() {
        struct Dropped(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut running = Running::default();
        for n in 0..3 {
            let guard = Dropped(drops.clone());
            running.start(id(n), async move {
                let _guard = guard;
                std::future::pending::<TaskDone>().await
            });
        }
        assert!(running.try_next().is_none());
        assert_eq!(running.len(), 3);
        assert_eq!(cancelled(running.abort_all()), [0, 1, 2]);
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(running.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn aborting_some_works_drops_only_theirs_and_the_rest_still_answer() {
        let mut running = Running::default();
        for n in 0..4 {
            running.start(id(n), async move {
                tokio::time::sleep(Duration::from_secs(n + 1)).await;
                TaskDone::DeadLetter { written: true }
            });
        }
        // Polled once, so the survivors' wake-ups are registered before the
        // set is rebuilt.
        assert!(running.try_next().is_none());
        assert_eq!(
            cancelled(running.abort(&[id(1), id(3), id(9)])),
            [1, 3],
            "a work not running is skipped"
        );
        assert_eq!(running.len(), 2);
        let (first, _) = running.next().await.unwrap();
        let (second, _) = running.next().await.unwrap();
        assert_eq!([first.number(), second.number()], [0, 2]);
        assert!(running.next().await.is_none());
    }
}
