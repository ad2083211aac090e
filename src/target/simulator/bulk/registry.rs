//! The batches a simulator was given and their lifecycle: `incomplete` until the
//! completion delay has passed since submission, then applied to the profile store
//! exactly once (at the first poll after that) and `complete`; or `stuck` for good and
//! never applied. Whether a batch sticks and which rows fail is drawn at submission.
//! Time is the simulator's clock, passed in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::decode::{DecodedBatch, DecodedRow};
use super::faults::BulkFaults;
use crate::target::simulator::params::ProfileUpdate;
use crate::target::simulator::sharded::lock;
use crate::target::simulator::store::{IdKind, ProfileKey};

/// Every batch by id.
#[derive(Debug, Default)]
pub(crate) struct BatchRegistry {
    batches: Mutex<HashMap<String, Batch>>,
    sequence: AtomicU64,
}

#[derive(Debug)]
struct Batch {
    kind: IdKind,
    columns: Vec<String>,
    /// Rows and whether each fails; taken when the batch is applied.
    pending: Option<Vec<(DecodedRow, bool)>>,
    size: u64,
    ready_at: Duration,
    stuck: bool,
    failed_ids: Vec<String>,
}

/// What a status poll shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchView {
    pub(crate) batch_id: String,
    pub(crate) state: ViewState,
    pub(crate) size: u64,
    /// Rows reported failed (complete batches only).
    pub(crate) failed_ids: Vec<String>,
}

/// `status` of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewState {
    Complete,
    Incomplete,
    Stuck,
}

/// A poll's answer and how many rows it applied (non-zero once per batch at most).
#[derive(Debug)]
pub(crate) struct Polled {
    pub(crate) view: BatchView,
    pub(crate) newly_applied: u64,
}

impl BatchRegistry {
    /// Registers a decoded batch submitted at `now` under the faults in force; its id.
    pub(crate) fn submit(
        &self,
        client_code: &str,
        batch: DecodedBatch,
        faults: &BulkFaults,
        now: Duration,
        rng: &mut impl Rng,
    ) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let batch_id = format!("{client_code}-{millis}-{sequence}");
        let stuck = faults.draw_stuck(rng);
        let rows: Vec<(DecodedRow, bool)> = batch
            .rows
            .into_iter()
            .map(|row| {
                let failed = faults.draw_row_failure(&row.id, rng);
                (row, failed)
            })
            .collect();
        let failed_ids = rows
            .iter()
            .filter(|(_, failed)| *failed)
            .map(|(row, _)| row.id.clone())
            .collect();
        let entry = Batch {
            kind: batch.kind,
            columns: batch.columns,
            size: rows.len() as u64,
            pending: Some(rows),
            ready_at: now + Duration::from_millis(faults.completion_delay_ms),
            stuck,
            failed_ids,
        };
        lock(&self.batches).insert(batch_id.clone(), entry);
        batch_id
    }

    /// The batch's status at `now`, `None` for an unknown id. The first poll at or after
    /// its completion time hands every row that did not fail to `apply` (under the
    /// registry's lock, so no poll sees `complete` before the rows are in the store).
    pub(crate) fn poll(
        &self,
        batch_id: &str,
        now: Duration,
        mut apply: impl FnMut(ProfileUpdate),
    ) -> Option<Polled> {
        let mut batches = lock(&self.batches);
        let batch = batches.get_mut(batch_id)?;
        let mut newly_applied = 0;
        let state = if batch.stuck {
            ViewState::Stuck
        } else if now < batch.ready_at {
            ViewState::Incomplete
        } else {
            if let Some(rows) = batch.pending.take() {
                for (row, failed) in rows {
                    if failed {
                        continue;
                    }
                    newly_applied += 1;
                    if let Some(update) = update_of(batch.kind, &batch.columns, row) {
                        apply(update);
                    }
                }
            }
            ViewState::Complete
        };
        let failed_ids = if state == ViewState::Complete {
            batch.failed_ids.clone()
        } else {
            Vec::new()
        };
        Some(Polled {
            view: BatchView {
                batch_id: batch_id.to_owned(),
                state,
                size: batch.size,
                failed_ids,
            },
            newly_applied,
        })
    }

    /// Forgets every batch.
    pub(crate) fn clear(&self) {
        lock(&self.batches).clear();
    }
}

/// A row as a profile update; empty values are left out (they never clear an
/// attribute), and a row with nothing left changes nothing.
fn update_of(kind: IdKind, columns: &[String], row: DecodedRow) -> Option<ProfileUpdate> {
    let attributes: Vec<(String, String)> = columns
        .iter()
        .zip(row.values)
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.clone(), value))
        .collect();
    (!attributes.is_empty()).then(|| ProfileUpdate {
        key: ProfileKey::new(kind, row.id),
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn batch(rows: &[(&str, &[&str])]) -> DecodedBatch {
        DecodedBatch {
            kind: IdKind::ThirdParty,
            columns: vec!["a".into(), "b".into()],
            rows: rows
                .iter()
                .map(|(id, values)| DecodedRow {
                    id: (*id).into(),
                    values: values.iter().map(|v| (*v).to_owned()).collect(),
                })
                .collect(),
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_batch_is_incomplete_until_its_delay_then_applied_exactly_once() {
        let registry = BatchRegistry::default();
        let faults = BulkFaults {
            completion_delay_ms: 100,
            ..BulkFaults::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let id = registry.submit(
            "acme",
            batch(&[("c1", &["1", "x"]), ("c2", &["", ""]), ("c3", &["3"])]),
            &faults,
            ms(1000),
            &mut rng,
        );
        assert!(id.starts_with("acme-"), "{id}");
        let mut applied = Vec::new();
        let early = registry
            .poll(&id, ms(1099), |u| applied.push(u))
            .expect("known");
        assert_eq!(early.view.state, ViewState::Incomplete);
        assert!(applied.is_empty());
        let done = registry
            .poll(&id, ms(1100), |u| applied.push(u))
            .expect("known");
        assert_eq!(done.view.state, ViewState::Complete);
        assert_eq!((done.view.size, done.newly_applied), (3, 3));
        // c2 has only empty values: nothing to set.
        let keys: Vec<&str> = applied.iter().map(|u| u.key.id()).collect();
        assert_eq!(keys, ["c1", "c3"]);
        assert_eq!(applied[1].attributes, [("a".to_owned(), "3".to_owned())]);
        let again = registry
            .poll(&id, ms(5000), |u| applied.push(u))
            .expect("known");
        assert_eq!(again.view.state, ViewState::Complete);
        assert_eq!(again.newly_applied, 0);
        assert_eq!(applied.len(), 2);
    }

    #[test]
    fn failed_rows_are_reported_and_not_applied() {
        let registry = BatchRegistry::default();
        let faults = BulkFaults {
            row_failure_ids: vec!["c2".into()],
            ..BulkFaults::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let id = registry.submit(
            "acme",
            batch(&[("c1", &["1"]), ("c2", &["2"])]),
            &faults,
            ms(0),
            &mut rng,
        );
        let mut applied = Vec::new();
        let polled = registry
            .poll(&id, ms(0), |u| applied.push(u))
            .expect("known");
        assert_eq!(polled.view.failed_ids, ["c2"]);
        assert_eq!(polled.newly_applied, 1);
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].key.id(), "c1");
    }

    #[test]
    fn a_stuck_batch_stays_stuck_and_is_never_applied() {
        let registry = BatchRegistry::default();
        let faults = BulkFaults {
            stuck_probability: 1.0,
            ..BulkFaults::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let id = registry.submit("acme", batch(&[("c1", &["1"])]), &faults, ms(0), &mut rng);
        for at in [0, 10_000, 1_000_000] {
            let polled = registry
                .poll(&id, ms(at), |_| panic!("applied"))
                .expect("known");
            assert_eq!(polled.view.state, ViewState::Stuck);
        }
    }

    #[test]
    fn unknown_and_forgotten_batches_are_not_found() {
        let registry = BatchRegistry::default();
        assert!(registry.poll("nope", ms(0), |_| {}).is_none());
        let mut rng = SmallRng::seed_from_u64(1);
        let id = registry.submit(
            "acme",
            batch(&[("c1", &["1"])]),
            &BulkFaults::default(),
            ms(0),
            &mut rng,
        );
        registry.clear();
        assert!(registry.poll(&id, ms(0), |_| {}).is_none());
    }
}
