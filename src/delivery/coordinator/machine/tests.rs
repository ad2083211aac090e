//! The delivery state machine on its own: no broker, no Target, no runtime.
//! A test plays the consumer thread, the tasks and the clock, and reads
//! the actions the state answers with.

use super::*;
use crate::delivery::coordinator::fixtures::{
    aborted, bulk_delivery, one_update, record, record_of, settings, tp, updates,
};
use crate::delivery::gate::SendGate;
use crate::mapping::Mapping;
use crate::ops::config::{BulkMode, CommitOn, TargetSettings};
use proptest::prelude::*;

/// Updates allowed in flight: more than any test starts.
const LIMIT: usize = 64;

/// A state with the clock in the test's hands.
struct Machine {
    state: DeliveryState,
    now: Instant,
    mapping: Mapping,
}

impl Machine {
    fn new(settings: CoordinatorSettings) -> Machine {
        let retry = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let target = TargetSettings {
            client_code: "acme".into(),
            // Never called: the state only builds requests.
            base_url: "http://127.0.0.1:9".into(),
            ..TargetSettings::default()
        };
        let share = RateShare::of_group(1e6, 1000, 0, 1);
        let gate = SendGate::new(share, retry);
        let now = Instant::now();
        let parts = StateParts {
            client: Arc::new(TargetClient::new(&target, 8).expect("client")),
            retry,
            max_attempts: 0,
            share,
            dead_letter_topic: Arc::from("pos.purchases.dlq"),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new(gate.readiness())),
        };
        Machine {
            state: DeliveryState::new(settings, parts, now),
            now,
            mapping: Mapping::default(),
        }
    }

    /// The actions decided since the last look.
    fn actions(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.state.take_actions(&mut out);
        out
    }

    fn event(&mut self, event: ConsumerEvent) -> Vec<Action> {
        self.state.on_event(event, self.now);
        self.actions()
    }

    fn assign(&mut self, partitions: &[i32]) -> Vec<Action> {
        self.event(ConsumerEvent::PartitionCount(4));
        self.event(ConsumerEvent::Assigned(
            partitions.iter().map(|&p| tp(p)).collect(),
        ))
    }

    /// A sale of `customer` at `offset` of `partition`.
    fn record(&mut self, partition: i32, offset: i64, customer: &str) -> Vec<Action> {
        let record = record(&self.mapping, partition, offset, Some(customer));
        self.event(ConsumerEvent::Records(vec![record]))
    }

    /// Revokes partitions; the answer comes as an action.
    fn revoke(&mut self, partitions: &[i32], lost: bool) -> Vec<Action> {
        // The receiver is dropped: the answer is read from the action.
        let (reply, _) = std::sync::mpsc::sync_channel(1);
        self.event(ConsumerEvent::Revoked {
            partitions: partitions.iter().map(|&p| tp(p)).collect(),
            lost,
            reply,
        })
    }

    fn dispatch(&mut self) -> Vec<Action> {
        self.dispatch_within(LIMIT)
    }

    /// The client's statistics: each partition's high watermark and the
    /// offset it fetches next.
    fn report(&mut self, offsets: &[(i32, i64, Option<i64>)]) -> Vec<Action> {
        self.event(ConsumerEvent::Offsets(
            offsets
                .iter()
                .map(|&(partition, high, fetching)| {
                    (
                        tp(partition),
                        crate::kafka::ReportedOffsets { high, fetching },
                    )
                })
                .collect(),
        ))
    }

    /// Dispatches with room for `limit` updates in flight.
    fn dispatch_within(&mut self, limit: usize) -> Vec<Action> {
        self.state.dispatch(self.now, limit);
        self.actions()
    }

    fn answer(&mut self, work: WorkId, outcome: AttemptOutcome) -> Vec<Action> {
        self.state
            .on_task_done(work, Ok(TaskDone::Update(outcome)), self.now);
        self.actions()
    }

    fn check_revokes(&mut self) -> Vec<Action> {
        self.state.check_revokes(self.now);
        self.actions()
    }

    /// The offsets a commit tick commits, confirmed by the broker at once.
    fn commit(&mut self) -> Vec<(i32, i64)> {
        self.state.on_commit_tick(self.now);
        let mut committed = Vec::new();
        for action in self.actions() {
            if let Action::Commit(offsets) = action {
                committed.extend(offsets.iter().map(|o| (o.tp.partition, o.offset)));
                self.state.on_commit(CommitResult {
                    offsets,
                    result: Ok(()),
                });
            }
        }
        committed
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }
}

/// What `pick` takes from each task started.
fn started<T>(actions: &[Action], pick: impl Fn(WorkId, &Task) -> Option<T>) -> Vec<T> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Start { work, task } => pick(*work, task),
            _ => None,
        })
        .collect()
}

/// The dead letters started: class and reason.
fn dead_letters(actions: &[Action]) -> Vec<(DeadLetterClass, String)> {
    started(actions, |_, task| match task {
        Task::DeadLetter { letter, .. } => Some((letter.class, letter.reason.clone())),
        _ => None,
    })
}

/// The revoke answers: the offsets of each.
fn revoke_answers(actions: &[Action]) -> Vec<Vec<(i32, i64)>> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::AnswerRevoke { offsets, .. } => Some(
                offsets
                    .iter()
                    .map(|(tp, offset)| (tp.partition, *offset))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn batch_submissions(actions: &[Action]) -> usize {
    submissions(actions).len()
}

/// The batch submissions started: the work's id and the batch's rows.
fn submissions(actions: &[Action]) -> Vec<(WorkId, usize)> {
    started(actions, |work, task| match task {
        Task::Submit { batch, .. } => Some((work, batch.rows())),
        _ => None,
    })
}

/// The partitions of the dead letters started.
fn dead_letter_partitions(actions: &[Action]) -> Vec<i32> {
    started(actions, |_, task| match task {
        Task::DeadLetter { letter, .. } => Some(letter.source.partition),
        _ => None,
    })
}

fn paused(actions: &[Action]) -> Vec<i32> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Pause(tp) => Some(tp.partition),
            _ => None,
        })
        .collect()
}

fn default_settings() -> CoordinatorSettings {
    settings(Duration::from_secs(1), 1000)
}

#[test]
fn an_answer_for_an_earlier_assignment_of_the_partition_is_ignored() {
    let mut m = Machine::new(default_settings());
    m.assign(&[0]);
    m.record(0, 0, "c1");
    let stale = one_update(&m.dispatch());
    // Lost: another pod owns it already, nothing is committed.
    assert_eq!(revoke_answers(&m.revoke(&[0], true)), vec![vec![]]);
    // Assigned back: the consumer reads offset 0 again.
    m.assign(&[0]);
    m.record(0, 0, "c1");

    // The old attempt's success belongs to the lost assignment.
    m.answer(stale, AttemptOutcome::Accepted);
    assert_eq!(
        m.commit(),
        vec![(0, 0)],
        "only the position read from: nothing of the new assignment finished"
    );

    // The re-read event is sent again, and only its own answer commits.
    let fresh = one_update(&m.dispatch());
    m.answer(fresh, AttemptOutcome::Accepted);
    assert_eq!(m.commit(), vec![(0, 1)]);
}

#[test]
fn a_revoke_answers_with_the_committable_offsets_once_its_partition_is_drained() {
    let mut m = Machine::new(default_settings());
    m.assign(&[0]);
    for (offset, customer) in ["c1", "c2", "c3"].into_iter().enumerate() {
        m.record(0, offset as i64, customer);
    }
    let sent = updates(&m.dispatch());
    assert_eq!(sent.len(), 3);
    m.answer(sent[0], AttemptOutcome::Accepted);
    m.answer(sent[2], AttemptOutcome::Accepted);

    assert_eq!(revoke_answers(&m.revoke(&[0], false)), Vec::<Vec<_>>::new());
    assert_eq!(revoke_answers(&m.check_revokes()), Vec::<Vec<_>>::new());

    m.answer(sent[1], AttemptOutcome::Accepted);
    assert_eq!(revoke_answers(&m.check_revokes()), vec![vec![(0, 3)]]);
}

#[test]
fn at_the_revoke_deadline_the_answer_is_what_finished_and_the_rest_is_cancelled() {
    let mut m = Machine::new(default_settings());
    m.assign(&[0]);
    m.record(0, 0, "c1");
    m.record(0, 1, "c2");
    let sent = updates(&m.dispatch());
    m.answer(sent[0], AttemptOutcome::Accepted);
    m.revoke(&[0], false);

    m.advance(Duration::from_millis(999));
    let before = m.check_revokes();
    assert_eq!(revoke_answers(&before), Vec::<Vec<_>>::new());
    assert_eq!(aborted(&before), vec![]);

    m.advance(Duration::from_millis(1));
    let at_deadline = m.check_revokes();
    assert_eq!(revoke_answers(&at_deadline), vec![vec![(0, 1)]]);
    assert_eq!(
        aborted(&at_deadline),
        vec![sent[1]],
        "the unfinished attempt is stopped"
    );
    let stop = at_deadline
        .iter()
        .position(|action| matches!(action, Action::Abort(_)));
    let answer = at_deadline
        .iter()
        .position(|action| matches!(action, Action::AnswerRevoke { .. }));
    assert!(
        stop < answer,
        "the attempt is stopped before the partition is handed over: {at_deadline:?}"
    );
}

#[test]
fn a_partition_assigned_again_stops_its_earlier_assignments_attempts_only() {
    let mut m = Machine::new(default_settings());
    m.assign(&[0, 1]);
    m.record(0, 0, "c1");
    m.record(1, 0, "c2");
    let sent = updates(&m.dispatch());
    assert_eq!(sent.len(), 2);
    // The consumer stopped waiting for a revoke answer, and partition 0
    // came back: the earlier assignment's attempt is stale.
    m.revoke(&[0], false);
    let again = m.assign(&[0]);
    assert_eq!(
        aborted(&again),
        vec![sent[0]],
        "partition 1's attempt runs on"
    );
}

#[test]
fn each_answer_to_an_update_decides_what_becomes_of_its_event() {
    struct Case {
        outcome: AttemptOutcome,
        /// A dead letter is written instead (the event is committed once
        /// Kafka acknowledged it).
        dead_letter: Option<DeadLetterClass>,
        /// What the next commit carries: past the event only once accepted.
        committed: Vec<(i32, i64)>,
        /// Sent again after this long (a retry), if at all.
        again_after: Option<Duration>,
    }
    let cases = [
        Case {
            outcome: AttemptOutcome::Accepted,
            dead_letter: None,
            committed: vec![(0, 1)],
            again_after: None,
        },
        Case {
            outcome: AttemptOutcome::Rejected { status: 400 },
            dead_letter: Some(DeadLetterClass::TargetRejected),
            committed: vec![(0, 0)],
            again_after: None,
        },
        Case {
            outcome: AttemptOutcome::Retry {
                status: Some(503),
                retry_after: Some(Duration::from_secs(3)),
            },
            dead_letter: None,
            committed: vec![(0, 0)],
            again_after: Some(Duration::from_secs(3)),
        },
        Case {
            outcome: AttemptOutcome::AuthFailed,
            dead_letter: None,
            committed: vec![(0, 0)],
            again_after: Some(Duration::ZERO),
        },
        Case {
            outcome: AttemptOutcome::Abandoned,
            dead_letter: None,
            committed: vec![(0, 0)],
            again_after: Some(Duration::ZERO),
        },
    ];
    for case in cases {
        let mut m = Machine::new(default_settings());
        m.assign(&[0]);
        m.record(0, 0, "c1");
        let work = one_update(&m.dispatch());
        let after = m.answer(work, case.outcome);
        let letters = dead_letters(&after);
        assert_eq!(
            letters.iter().map(|(class, _)| *class).collect::<Vec<_>>(),
            case.dead_letter.into_iter().collect::<Vec<_>>(),
            "{:?}",
            case.outcome
        );
        assert_eq!(m.commit(), case.committed, "{:?}", case.outcome);
        match case.again_after {
            None => assert!(updates(&m.dispatch()).is_empty(), "{:?}", case.outcome),
            Some(delay) => {
                if !delay.is_zero() {
                    m.advance(delay - Duration::from_millis(1));
                    assert!(updates(&m.dispatch()).is_empty(), "{:?}", case.outcome);
                    m.advance(Duration::from_millis(1));
                }
                one_update(&m.dispatch());
            }
        }
    }
}

/// Partitions 0 and 1 owned, `c1`'s update of partition 0 out: the machine
/// and the attempt.
fn c1_out_on_partition_0() -> (Machine, WorkId) {
    let mut m = Machine::new(default_settings());
    m.assign(&[0, 1]);
    m.record(0, 0, "c1");
    let attempt = one_update(&m.dispatch());
    (m, attempt)
}

/// A 503 without `Retry-After`.
fn unavailable() -> AttemptOutcome {
    AttemptOutcome::Retry {
        status: Some(503),
        retry_after: None,
    }
}

/// `c1`, given up on partition 0, is free: its event on partition 1 goes.
fn assert_c1_goes_on_partition_1(m: &mut Machine) {
    m.record(1, 0, "c1");
    assert_eq!(updates(&m.dispatch()).len(), 1, "the profile is free");
}

#[test]
fn a_retryable_answer_after_the_partition_was_lost_ends_its_update() {
    // The 503 was in before the loss was handled: the attempt could not be
    // cancelled any more, and its answer comes after the loss.
    for retryable in [unavailable(), AttemptOutcome::AuthFailed] {
        let (mut m, attempt) = c1_out_on_partition_0();
        assert_eq!(revoke_answers(&m.revoke(&[0], true)), vec![vec![]]);
        assert!(m.answer(attempt, retryable).is_empty());
        m.advance(Duration::from_secs(2));
        assert!(
            updates(&m.dispatch()).is_empty(),
            "the lost partition's update was tried again"
        );
        assert_c1_goes_on_partition_1(&mut m);
    }
}

#[test]
fn a_rejection_after_the_partition_was_lost_is_left_to_its_new_owner() {
    let (mut m, attempt) = c1_out_on_partition_0();
    m.revoke(&[0], true);
    let after = m.answer(attempt, AttemptOutcome::Rejected { status: 400 });
    assert_eq!(dead_letters(&after), vec![]);
    assert_c1_goes_on_partition_1(&mut m);
}

#[test]
fn a_retryable_answer_after_the_revoke_deadline_ends_its_update() {
    let (mut m, attempt) = c1_out_on_partition_0();
    m.revoke(&[0], false);
    m.advance(Duration::from_secs(1));
    assert_eq!(revoke_answers(&m.check_revokes()), vec![vec![(0, 0)]]);
    m.answer(attempt, unavailable());
    m.advance(Duration::from_secs(2));
    assert!(updates(&m.dispatch()).is_empty());
}

/// Settings that look a profile up before its first single update and do
/// as `policy` says with updates for profiles Target does not have.
fn fetching_settings(policy: crate::ops::config::ExistencePolicy) -> CoordinatorSettings {
    let metrics = Arc::new(Metrics::new());
    let target = TargetSettings {
        client_code: "acme".into(),
        // Never called: the state only starts fetches.
        base_url: "http://127.0.0.1:9".into(),
        ..TargetSettings::default()
    };
    CoordinatorSettings {
        existence: crate::delivery::coordinator::ExistenceRouting {
            policy,
            fetcher: Some(crate::delivery::fetch_budget::ProfileFetcher {
                client: Arc::new(
                    crate::target::fetch::FetchClient::new(&target, 1).expect("client"),
                ),
                budget: Arc::new(crate::delivery::fetch_budget::FetchBudget::whole(
                    10.0,
                    1,
                    metrics.clone(),
                )),
                metrics,
                gate: None,
            }),
            confirmed_ttl: Duration::from_secs(60),
            max_profiles: 100,
            max_fetches: 8,
        },
        ..default_settings()
    }
}

/// The one task started that `is` picks (`what`, for the message).
fn one_started(actions: &[Action], what: &str, is: impl Fn(&Task) -> bool) -> WorkId {
    let works = started(actions, |work, task| is(task).then_some(work));
    assert_eq!(works.len(), 1, "one {what}: {actions:?}");
    works[0]
}

/// The one profile fetch started.
fn one_fetch(actions: &[Action]) -> WorkId {
    one_started(actions, "fetch", |task| matches!(task, Task::Fetch { .. }))
}

/// The one status poll started.
fn one_poll(actions: &[Action]) -> WorkId {
    one_started(actions, "poll", |task| matches!(task, Task::Poll { .. }))
}

#[test]
fn a_fetch_answered_after_the_partition_was_lost_sends_nothing_for_it() {
    use crate::target::fetch::FetchOutcome;
    for answer in [
        FetchOutcome::NotFound,
        FetchOutcome::Rejected { status: 400 },
    ] {
        let mut m = Machine::new(fetching_settings(
            crate::ops::config::ExistencePolicy::DeadLetter,
        ));
        m.assign(&[0, 1]);
        m.record(0, 0, "c1");
        let fetch = one_fetch(&m.dispatch());
        assert_eq!(revoke_answers(&m.revoke(&[0], true)), vec![vec![]]);
        m.state
            .on_task_done(fetch, Ok(TaskDone::Fetched(Some(answer.clone()))), m.now);
        assert_eq!(
            dead_letters(&m.actions()),
            vec![],
            "a lost partition's event is its new owner's to dead-letter ({answer:?})"
        );
        // The profile is free: its event on a partition still owned goes on.
        m.record(1, 0, "c1");
        assert!(!m.dispatch().is_empty(), "c1 stayed held ({answer:?})");
    }
}

#[test]
fn a_fetch_answered_not_found_after_the_partition_was_lost_puts_nothing_in_a_batch() {
    use crate::target::fetch::FetchOutcome;
    let mut settings = fetching_settings(crate::ops::config::ExistencePolicy::Create);
    // A batch of one row is sealed and submitted as soon as the row is in.
    settings.bulk = Some(bulk_delivery(
        1,
        Duration::from_secs(60),
        CommitOn::Complete,
    ));
    for lost in [true, false] {
        let mut m = Machine::new(settings.clone());
        m.assign(&[0, 1]);
        m.record(0, 0, "c1");
        let fetch = one_fetch(&m.dispatch());
        if lost {
            m.revoke(&[0], true);
        }
        m.state.on_task_done(
            fetch,
            Ok(TaskDone::Fetched(Some(FetchOutcome::NotFound))),
            m.now,
        );
        let mut submitted = batch_submissions(&m.actions());
        m.advance(Duration::from_secs(61));
        submitted += batch_submissions(&m.dispatch());
        if lost {
            assert_eq!(submitted, 0, "a lost partition's event went into a batch");
            // The profile is free, and Target has no profile for it: its
            // event on a partition still owned goes into a batch.
            m.record(1, 0, "c1");
            assert_eq!(batch_submissions(&m.dispatch()), 1, "c1 stayed held");
        } else {
            assert_eq!(submitted, 1, "an owned partition's event goes into a batch");
        }
    }
}

/// A machine that fetches before a profile's first update and sends
/// profiles Target does not have through batches of `max_rows` rows (a
/// minute old at most), committing them on `commit_on`; partitions 0 and 1
/// owned.
fn creating_through_batches(max_rows: usize, commit_on: CommitOn) -> Machine {
    let mut settings = fetching_settings(crate::ops::config::ExistencePolicy::Create);
    settings.bulk = Some(bulk_delivery(max_rows, Duration::from_secs(60), commit_on));
    let mut m = Machine::new(settings);
    m.assign(&[0, 1]);
    m
}

impl Machine {
    /// `customer`'s sale at `offset` of `partition`, fetched and found
    /// missing at Target: its row joins a batch. The actions after the fetch.
    fn not_found_at(&mut self, partition: i32, offset: i64, customer: &str) -> Vec<Action> {
        use crate::target::fetch::FetchOutcome;
        self.record(partition, offset, customer);
        let fetch = one_fetch(&self.dispatch());
        self.state.on_task_done(
            fetch,
            Ok(TaskDone::Fetched(Some(FetchOutcome::NotFound))),
            self.now,
        );
        self.actions()
    }
}

#[test]
fn a_lost_partitions_rows_leave_the_open_batch_and_the_rest_goes_at_its_age() {
    let mut m = creating_through_batches(100, CommitOn::Complete);
    assert_eq!(batch_submissions(&m.not_found_at(0, 0, "c1")), 0);
    assert_eq!(batch_submissions(&m.not_found_at(1, 0, "c2")), 0);
    assert_eq!(
        batch_submissions(&m.revoke(&[0], true)),
        0,
        "a lost partition's row was submitted after the loss"
    );
    m.advance(Duration::from_secs(60));
    let sent = submissions(&m.dispatch());
    assert_eq!(
        sent.iter().map(|(_, rows)| *rows).collect::<Vec<_>>(),
        vec![1],
        "c2's row, alone"
    );
}

#[test]
fn a_batch_refused_after_a_loss_dead_letters_only_the_events_still_owned() {
    use crate::delivery::batch_sender::Submission;
    let mut m = creating_through_batches(2, CommitOn::Complete);
    m.not_found_at(0, 0, "c1");
    let sent = submissions(&m.not_found_at(1, 0, "c2"));
    assert_eq!(sent.len(), 1, "two rows: the batch is full and goes");
    m.revoke(&[0], true);
    let refused = Submission::Rejected {
        status: Some(400),
        message: "bad batch".into(),
    };
    m.state
        .on_task_done(sent[0].0, Ok(TaskDone::BatchSubmitted(refused)), m.now);
    assert_eq!(dead_letter_partitions(&m.actions()), vec![1]);
}

#[test]
fn a_batch_sent_again_after_a_loss_carries_only_the_rows_still_owned() {
    use crate::delivery::batch_sender::{Completion, Submission};
    let mut m = creating_through_batches(2, CommitOn::Complete);
    m.not_found_at(0, 0, "c1");
    let sent = submissions(&m.not_found_at(1, 0, "c2"));
    assert_eq!(sent.iter().map(|(_, rows)| *rows).collect::<Vec<_>>(), [2]);
    let accepted = Submission::Submitted {
        status_url: "https://acme.tt.omtrdc.net/status/1".into(),
    };
    m.state
        .on_task_done(sent[0].0, Ok(TaskDone::BatchSubmitted(accepted)), m.now);
    let poll = one_poll(&m.actions());
    m.revoke(&[0], true);
    let lost = Completion::Resubmit {
        why: "Target lost the batch".into(),
    };
    m.state
        .on_task_done(poll, Ok(TaskDone::BatchCompleted(lost)), m.now);
    let again = submissions(&m.actions());
    assert_eq!(
        again.iter().map(|(_, rows)| *rows).collect::<Vec<_>>(),
        [1],
        "sent again with the lost partition's row"
    );
    // c1 is free: its event on partition 1 goes (Target has no profile: a batch).
    m.record(1, 1, "c1");
    m.dispatch();
    m.advance(Duration::from_secs(60));
    assert_eq!(batch_submissions(&m.dispatch()), 1, "c1 stayed held");
}

#[test]
fn a_revoke_during_the_drain_waits_for_no_row_of_a_batch_left_unsent() {
    let mut m = creating_through_batches(100, CommitOn::Complete);
    m.not_found_at(0, 0, "c1");
    m.state.begin_drain(m.now);
    m.revoke(&[0], false);
    assert_eq!(
        revoke_answers(&m.check_revokes()),
        vec![vec![(0, 0)]],
        "answered at once: nothing of partition 0 is out"
    );
}

#[test]
fn a_committed_events_dead_letter_is_not_stopped_by_a_loss() {
    use crate::delivery::batch_sender::{Completion, Submission};
    let mut m = creating_through_batches(1, CommitOn::Submitted);
    let submit = submissions(&m.not_found_at(0, 0, "c1"))[0].0;
    let accepted = Submission::Submitted {
        status_url: "https://acme.tt.omtrdc.net/status/1".into(),
    };
    m.state
        .on_task_done(submit, Ok(TaskDone::BatchSubmitted(accepted)), m.now);
    let poll = one_poll(&m.actions());
    assert_eq!(m.commit(), vec![(0, 1)], "committed on submission");
    let failed = Completion::Complete {
        failed_ids: vec!["c1".into()],
        failed_updates: Some(1),
    };
    m.state
        .on_task_done(poll, Ok(TaskDone::BatchCompleted(failed)), m.now);
    let cancel = started(&m.actions(), |_, task| match task {
        Task::DeadLetter { cancel, .. } => Some(cancel.clone()),
        _ => None,
    })
    .pop()
    .expect("a dead letter for the failed row");
    m.revoke(&[0], true);
    assert!(
        !cancel.is_cancelled(),
        "the loss stopped the only record of a committed event's failure"
    );
}

/// `bulk.mode = "overflow"` with a budget of `per_second` and a backlog
/// limit of `after` seconds of it.
fn overflow_settings(per_second: f64, after: u64) -> CoordinatorSettings {
    let mut settings = default_settings();
    settings.bulk_mode = BulkMode::Overflow;
    settings.bulk = Some(bulk_delivery(
        100,
        Duration::from_secs(60),
        CommitOn::Complete,
    ));
    settings.per_second = per_second;
    settings.overflow_after_seconds = after;
    settings
}

#[test]
fn a_retry_goes_on_after_the_overflow_route_switched_to_batches() {
    let mut m = Machine::new(overflow_settings(1.0, 1));
    m.assign(&[0]);
    m.record(0, 0, "c1");
    let first = one_update(&m.dispatch());
    m.answer(first, unavailable());
    // A backlog far past a second of budget: new work goes to batches.
    m.report(&[(0, 10_000, Some(1))]);
    m.commit();
    assert_eq!(
        m.state.router.route(),
        crate::delivery::routing::Route::Batch
    );
    // c1's retry goes once its backoff (at most 1 s) is over, as it started.
    m.advance(Duration::from_secs(1));
    let again = one_update(&m.dispatch());
    m.answer(again, AttemptOutcome::Accepted);
    assert_eq!(m.commit(), vec![(0, 1)], "the partition commits past c1");
}

#[test]
fn with_time_order_what_the_pod_delivered_before_its_partition_went_drops_nothing_after() {
    let mut settings = default_settings();
    settings.time_order = crate::ops::config::TimeOrder::OccurredAt;
    let mut m = Machine::new(settings);
    let sale = |m: &mut Machine, offset: i64, time: &str| {
        let json = format!(
            r#"{{"event_id":"e{offset}","event_type":"sale","occurred_at":"2026-11-28T{time}Z",
            "store_id":"S{offset}","customer":{{"third_party_id":"c1"}},"currency":"EUR",
            "total":"1.00","items":[]}}"#
        );
        let record = record_of(&m.mapping, 0, offset, Some("c1"), json);
        m.event(ConsumerEvent::Records(vec![record]));
        updates(&m.dispatch())
    };
    m.assign(&[0]);
    let first = sale(&mut m, 0, "10:00:00");
    m.answer(first[0], AttemptOutcome::Accepted);
    assert_eq!(m.commit(), vec![(0, 1)]);
    // Within the assignment, an older sale is left out: 10:00 was delivered.
    assert!(sale(&mut m, 1, "09:00:00").is_empty());
    // The partition goes (another pod may send offsets 2.. meanwhile, older
    // values among them) and comes back: what this pod delivered before
    // says nothing about the profile now.
    m.revoke(&[0], false);
    m.check_revokes();
    m.assign(&[0]);
    assert_eq!(
        sale(&mut m, 3, "09:30:00").len(),
        1,
        "the 09:30 sale was dropped for a delivery of an assignment given up"
    );
}

#[test]
fn a_partition_with_nothing_to_read_adds_no_backlog_to_the_overflow_route() {
    let mut m = Machine::new(overflow_settings(1000.0, 60));
    m.assign(&[0, 1, 2]);
    // Partition 0 is caught up: its one event read and accepted.
    m.record(0, 5_000_000, "c1");
    let first = one_update(&m.dispatch());
    m.answer(first, AttemptOutcome::Accepted);
    // Partition 1 has nothing to read: the group committed its end. Nothing
    // is known yet of partition 2's position.
    m.report(&[
        (0, 5_000_001, Some(5_000_001)),
        (1, 2_000_000, Some(2_000_000)),
        (2, 3_000_000, None),
    ]);
    m.commit();
    assert_eq!(
        m.state.router.route(),
        crate::delivery::routing::Route::Single,
        "nothing is left to read"
    );
    // Far behind on partition 1 (the client fetches from 100): batches.
    m.report(&[(1, 2_000_000, Some(100))]);
    m.commit();
    assert_eq!(
        m.state.router.route(),
        crate::delivery::routing::Route::Batch
    );
}

#[test]
fn a_task_that_panicked_holds_no_place_and_its_update_is_tried_again_after_a_backoff() {
    let mut m = Machine::new(default_settings());
    m.assign(&[0]);
    m.record(0, 0, "c1");
    m.record(0, 1, "c2");
    // Room for one update: c1's.
    let first = one_update(&m.dispatch_within(1));
    m.state
        .on_task_done(first, Err(Ended::Panicked("a bug".into())), m.now);
    assert!(m.actions().is_empty());
    // The panicked attempt holds no place: c2 goes.
    one_update(&m.dispatch_within(1));
    // c1 waits out a backoff (at most the policy's maximum, 1 s), then goes.
    m.advance(Duration::from_secs(1));
    one_update(&m.dispatch_within(2));
}

#[test]
fn one_commit_is_under_way_at_a_time_and_the_next_carries_what_changed_meanwhile() {
    let mut m = Machine::new(default_settings());
    m.assign(&[0]);
    m.record(0, 0, "c1");
    m.record(0, 1, "c2");
    let sent = updates(&m.dispatch());
    m.answer(sent[0], AttemptOutcome::Accepted);
    m.state.on_commit_tick(m.now);
    let offsets = match m.actions().as_slice() {
        [Action::Commit(offsets)] => offsets.clone(),
        other => panic!("expected one commit, got {other:?}"),
    };
    assert_eq!(offsets.iter().map(|o| o.offset).collect::<Vec<_>>(), [1]);

    // The broker has not answered: the next tick waits.
    m.answer(sent[1], AttemptOutcome::Accepted);
    m.state.on_commit_tick(m.now);
    assert!(!m.actions().iter().any(|a| matches!(a, Action::Commit(_))));

    // A failed commit counts for nothing: the next one carries everything.
    m.state.on_commit(CommitResult {
        offsets,
        result: Err("rebalance in progress".into()),
    });
    assert_eq!(m.commit(), vec![(0, 2)]);
    assert_eq!(
        m.commit(),
        vec![],
        "confirmed offsets are not committed again"
    );
}

#[test]
fn a_profiles_later_event_waits_for_its_earlier_one_and_both_commit_in_order() {
    let mut m = Machine::new(default_settings());
    m.assign(&[0]);
    m.record(0, 0, "c1");
    m.record(0, 1, "c1");
    let first = one_update(&m.dispatch());
    assert!(
        updates(&m.dispatch()).is_empty(),
        "one update per profile at a time"
    );
    m.answer(first, AttemptOutcome::Accepted);
    assert_eq!(m.commit(), vec![(0, 1)]);
    let second = one_update(&m.dispatch());
    m.answer(second, AttemptOutcome::Accepted);
    assert_eq!(m.commit(), vec![(0, 2)]);
}

#[test]
fn a_full_pod_seals_its_open_batches_once_per_time_it_fills() {
    let mut settings = settings(Duration::from_secs(1), 2);
    settings.bulk_mode = BulkMode::Always;
    settings.bulk = Some(bulk_delivery(
        100,
        Duration::from_secs(60),
        CommitOn::Complete,
    ));
    let mut m = Machine::new(settings);
    m.assign(&[0, 1, 2]);

    m.record(0, 0, "c1");
    // Into the open batch, which waits for its age (a minute).
    assert_eq!(batch_submissions(&m.dispatch()), 0);

    // The pod holds two events now: the growing partition pauses and the
    // open batch goes at once, nothing more can join it for a while.
    let full = m.record(1, 0, "c2");
    assert_eq!(paused(&full), vec![1]);
    assert_eq!(batch_submissions(&full), 1);

    // The new row waits in a new open batch; another partition pausing
    // while the pod is still full (and one partition still fetches) does
    // not seal it again.
    assert_eq!(batch_submissions(&m.dispatch()), 0);
    let again = m.record(2, 0, "c3");
    assert_eq!(paused(&again), vec![2]);
    assert_eq!(batch_submissions(&again), 0);
}

#[test]
fn a_partition_lost_while_paused_is_fetched_again_when_it_returns() {
    let mut settings = default_settings();
    settings.max_buffered_per_partition = 2;
    let mut m = Machine::new(settings);
    m.assign(&[0, 1]);
    m.record(0, 0, "c1");
    assert_eq!(paused(&m.record(0, 1, "c2")), vec![0]);

    let fetchable = |m: &mut Machine| -> Vec<i32> {
        m.state.reconcile_pauses();
        let mut partitions: Vec<i32> = m
            .actions()
            .iter()
            .flat_map(|action| match action {
                Action::ConfirmFetching(tps) => tps.iter().map(|tp| tp.partition).collect(),
                _ => Vec::new(),
            })
            .collect();
        partitions.sort_unstable();
        partitions
    };
    assert_eq!(
        fetchable(&mut m),
        vec![1],
        "a paused partition is not resumed"
    );

    m.revoke(&[0], true);
    m.assign(&[0]);
    assert_eq!(
        fetchable(&mut m),
        vec![0, 1],
        "back from the loss, it is fetched"
    );
}

proptest! {
    /// Whatever order attempts end in, a commit carries the first offset
    /// not yet accepted: never past an unfinished event.
    #[test]
    fn the_committed_offset_is_always_the_first_one_not_yet_accepted(
        order in (1usize..30).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    ) {
        let mut m = Machine::new(default_settings());
        m.assign(&[0]);
        for offset in 0..order.len() {
            m.record(0, offset as i64, &format!("c{offset}"));
        }
        let sent = updates(&m.dispatch());
        prop_assert_eq!(sent.len(), order.len());
        let mut accepted = vec![false; order.len()];
        let mut last = None;
        for index in order {
            m.answer(sent[index], AttemptOutcome::Accepted);
            accepted[index] = true;
            let first_open = accepted.iter().position(|done| !done).unwrap_or(accepted.len()) as i64;
            if let Some((_, offset)) = m.commit().pop() {
                last = Some(offset);
            }
            prop_assert_eq!(last.unwrap_or(0), first_open);
        }
    }
}

#[test]
fn a_profile_the_fetch_api_cannot_address_is_never_fetched() {
    // "." and ".." are path steps to every HTTP client: a fetch would ask
    // Target about another resource and take its answer for the profile's.
    for id in [".", ".."] {
        // Dead-letter policy: not known to exist, and cannot be asked.
        let mut m = Machine::new(fetching_settings(
            crate::ops::config::ExistencePolicy::DeadLetter,
        ));
        m.assign(&[0]);
        m.record(0, 0, id);
        let actions = m.dispatch();
        assert!(
            started(&actions, |_, task| matches!(task, Task::Fetch { .. })
                .then_some(()))
            .is_empty(),
            "fetched {id:?}: {actions:?}"
        );
        let letters = dead_letters(&actions);
        assert_eq!(letters.len(), 1, "{id:?}: {actions:?}");
        assert_eq!(letters[0].0, DeadLetterClass::TargetRejected);
        assert!(
            letters[0].1.contains("cannot be fetched"),
            "{}",
            letters[0].1
        );
        // Create policy: a v2 batch lands whether Target has it or not.
        let mut m = creating_through_batches(1, CommitOn::Complete);
        m.record(0, 0, id);
        let actions = m.dispatch();
        assert_eq!(batch_submissions(&actions), 1, "{id:?}: {actions:?}");
    }
    // Ids that merely contain dots are fetched as usual.
    let mut m = creating_through_batches(1, CommitOn::Complete);
    m.record(0, 0, "...");
    one_fetch(&m.dispatch());
}

#[test]
fn a_fetch_that_keeps_failing_is_given_up_after_max_attempts() {
    use crate::target::fetch::FetchOutcome;
    let mut m = Machine::new(fetching_settings(
        crate::ops::config::ExistencePolicy::DeadLetter,
    ));
    m.state.max_attempts = 3;
    m.assign(&[0]);
    m.record(0, 0, "c1");
    let mut fetch = one_fetch(&m.dispatch());
    let failed = FetchOutcome::Retry {
        status: Some(503),
        retry_after: None,
    };
    for round in 1..=3 {
        m.state
            .on_task_done(fetch, Ok(TaskDone::Fetched(Some(failed.clone()))), m.now);
        if round < 3 {
            assert_eq!(dead_letters(&m.actions()), vec![], "round {round}");
            m.advance(Duration::from_secs(2));
            fetch = one_fetch(&m.dispatch());
        }
    }
    let letters = dead_letters(&m.actions());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, DeadLetterClass::RetriesExhausted);
    assert!(
        letters[0].1.contains("of the profile fetch") && letters[0].1.contains("HTTP 503"),
        "{}",
        letters[0].1
    );
}
