//! The batches a simulator was given and their lifecycle: `incomplete` until the
//! completion delay has passed since submission, then applied to the profile store
//! exactly once, in the order submitted, by the first [`BatchRegistry::settle`] after
//! that (the simulator settles before answering any request), and `complete`; or
//! `stuck` for good and never applied. Whether a batch sticks and which rows fail is
//! drawn at submission. A v2 batch creates missing profiles, a v1 batch does not.
//!
//! Adobe keeps only the last statuses of a client: with `statuses_kept` set, the status
//! of a batch followed by that many newer ones is forgotten (polls answer as for an
//! unknown batch) while the batch itself is still applied.
//! Time is the simulator's clock, passed in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::decode::{DecodedBatch, DecodedRow};
use super::faults::BulkFaults;
use crate::params::ProfileUpdate;
use crate::sharded::lock;
use crate::store::{IdKind, Landing, ProfileKey};

/// Every batch, in the order submitted.
#[derive(Debug, Default)]
pub(crate) struct BatchRegistry {
    inner: Mutex<Batches>,
    sequence: AtomicU64,
    /// Batches submitted, not stuck and not yet applied: settling is free when 0.
    pending: AtomicUsize,
}

#[derive(Debug, Default)]
struct Batches {
    /// By submission sequence.
    by_sequence: BTreeMap<u64, Batch>,
    /// The batch ids whose status is still known, to their sequence.
    ids: HashMap<String, u64>,
    /// The sequences of the known statuses, oldest first.
    known: VecDeque<u64>,
}

#[derive(Debug)]
struct Batch {
    kind: IdKind,
    /// v2 (`true`) creates missing profiles; v1 does not.
    creates: bool,
    columns: Vec<String>,
    /// Rows and whether each fails; taken when the batch is applied.
    pending: Option<Vec<(DecodedRow, bool)>>,
    size: u64,
    ready_at: Duration,
    stuck: bool,
    failed_ids: Vec<String>,
    /// Rows whose profile did not exist (v1 batches only).
    not_found: u64,
    /// Its status was forgotten: it is dropped once applied.
    forgotten: bool,
}

/// Which API a batch came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BulkVersion {
    /// `/m2/{client}/profile/batchUpdate`: updates existing profiles only.
    V1,
    /// `/m2/{client}/v2/profile/batchUpdate`: creates missing profiles.
    V2,
}

/// What a status poll shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchView {
    pub(crate) batch_id: String,
    pub(crate) state: ViewState,
    pub(crate) size: u64,
    /// Rows reported failed (complete batches only).
    pub(crate) failed_ids: Vec<String>,
    /// Rows whose profile was not found (complete v1 batches only).
    pub(crate) not_found: u64,
}

/// `status` of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewState {
    Complete,
    Incomplete,
    Stuck,
}

/// What one settling did to the profiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Rows written to a profile (created or updated).
    pub(crate) applied: u64,
    /// Of those, rows that created their profile.
    pub(crate) created: u64,
    /// Rows whose profile did not exist and was not created.
    pub(crate) not_found: u64,
}

impl BatchRegistry {
    /// Registers a decoded batch submitted at `now` through `version` under the faults
    /// in force; its id.
    pub(crate) fn submit(
        &self,
        client_code: &str,
        version: BulkVersion,
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
            creates: version == BulkVersion::V2,
            columns: batch.columns,
            size: rows.len() as u64,
            pending: Some(rows),
            ready_at: now + Duration::from_millis(faults.completion_delay_ms),
            stuck,
            failed_ids,
            not_found: 0,
            forgotten: false,
        };
        let mut batches = lock(&self.inner);
        if !stuck {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        batches.by_sequence.insert(sequence, entry);
        batches.ids.insert(batch_id.clone(), sequence);
        batches.known.push_back(sequence);
        let kept = faults.statuses_kept as usize;
        while kept > 0 && batches.known.len() > kept {
            if let Some(oldest) = batches.known.pop_front() {
                batches.forget(oldest);
            }
        }
        batch_id
    }

    /// Applies, in the order submitted, every batch whose completion time has come by
    /// `now` and that was not applied yet: each row that did not fail goes to `apply`
    /// with whether the batch creates profiles. Under the registry's lock, so no poll
    /// sees `complete` before the rows are in the store.
    pub(crate) fn settle(
        &self,
        now: Duration,
        mut apply: impl FnMut(ProfileUpdate, bool) -> Landing,
    ) -> Settled {
        let mut settled = Settled::default();
        if self.pending.load(Ordering::Relaxed) == 0 {
            return settled;
        }
        let mut batches = lock(&self.inner);
        let mut finished = Vec::new();
        for (&sequence, batch) in batches.by_sequence.iter_mut() {
            if batch.stuck || now < batch.ready_at {
                continue;
            }
            let Some(rows) = batch.pending.take() else {
                continue;
            };
            self.pending.fetch_sub(1, Ordering::Relaxed);
            for (row, failed) in rows {
                if failed {
                    continue;
                }
                let landing = match update_of(batch.kind, &batch.columns, row) {
                    Some(update) => apply(update, batch.creates),
                    // Only empty values: nothing to write, the profile is not looked up.
                    None => Landing::Updated,
                };
                match landing {
                    Landing::Updated => settled.applied += 1,
                    Landing::Created => {
                        settled.applied += 1;
                        settled.created += 1;
                    }
                    Landing::NotFound => {
                        settled.not_found += 1;
                        batch.not_found += 1;
                    }
                }
            }
            if batch.forgotten {
                finished.push(sequence);
            }
        }
        // A batch whose status was forgotten is dropped once applied.
        for sequence in finished {
            batches.by_sequence.remove(&sequence);
        }
        settled
    }

    /// The status of `batch_id` at `now` (after settling), `None` for an unknown or
    /// forgotten id.
    pub(crate) fn poll(&self, batch_id: &str, now: Duration) -> Option<BatchView> {
        let batches = lock(&self.inner);
        let sequence = batches.ids.get(batch_id)?;
        let batch = batches.by_sequence.get(sequence)?;
        let state = if batch.stuck {
            ViewState::Stuck
        } else if batch.pending.is_some() || now < batch.ready_at {
            ViewState::Incomplete
        } else {
            ViewState::Complete
        };
        let complete = state == ViewState::Complete;
        Some(BatchView {
            batch_id: batch_id.to_owned(),
            state,
            size: batch.size,
            failed_ids: if complete {
                batch.failed_ids.clone()
            } else {
                Vec::new()
            },
            not_found: if complete { batch.not_found } else { 0 },
        })
    }

    /// Forgets every batch.
    pub(crate) fn clear(&self) {
        let mut batches = lock(&self.inner);
        *batches = Batches::default();
        self.pending.store(0, Ordering::Relaxed);
    }
}

impl Batches {
    /// Forgets the status of batch `sequence`; an applied or stuck batch goes entirely,
    /// a pending one stays until it is applied.
    fn forget(&mut self, sequence: u64) {
        self.ids.retain(|_, known| *known != sequence);
        let done = match self.by_sequence.get_mut(&sequence) {
            Some(batch) => {
                batch.forgotten = true;
                batch.stuck || batch.pending.is_none()
            }
            None => false,
        };
        if done {
            self.by_sequence.remove(&sequence);
        }
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

    fn submit(registry: &BatchRegistry, rows: &[(&str, &[&str])], faults: &BulkFaults) -> String {
        let mut rng = SmallRng::seed_from_u64(1);
        registry.submit(
            "acme",
            BulkVersion::V2,
            batch(rows),
            faults,
            ms(0),
            &mut rng,
        )
    }

    /// Settles at `now` (every row lands as an update, recorded in `applied`), then polls.
    fn poll(
        registry: &BatchRegistry,
        id: &str,
        now: u64,
        applied: &mut Vec<ProfileUpdate>,
    ) -> (Option<BatchView>, Settled) {
        let settled = registry.settle(ms(now), |update, _| {
            applied.push(update);
            Landing::Updated
        });
        (registry.poll(id, ms(now)), settled)
    }

    #[test]
    fn a_batch_is_incomplete_until_its_delay_then_applied_exactly_once() {
        let registry = BatchRegistry::default();
        let faults = BulkFaults {
            completion_delay_ms: 100,
            ..BulkFaults::default()
        };
        let id = submit(
            &registry,
            &[("c1", &["1", "x"]), ("c2", &["", ""]), ("c3", &["3"])],
            &faults,
        );
        assert!(id.starts_with("acme-"), "{id}");
        let mut applied = Vec::new();
        let (early, _) = poll(&registry, &id, 99, &mut applied);
        assert_eq!(early.expect("known").state, ViewState::Incomplete);
        assert!(applied.is_empty());
        let (done, settled) = poll(&registry, &id, 100, &mut applied);
        let done = done.expect("known");
        assert_eq!(done.state, ViewState::Complete);
        assert_eq!((done.size, settled.applied), (3, 3));
        // c2 has only empty values: nothing to set.
        let keys: Vec<&str> = applied.iter().map(|u| u.key.id()).collect();
        assert_eq!(keys, ["c1", "c3"]);
        assert_eq!(applied[1].attributes, [("a".to_owned(), "3".to_owned())]);
        let (again, settled) = poll(&registry, &id, 5000, &mut applied);
        assert_eq!(again.expect("known").state, ViewState::Complete);
        assert_eq!(settled, Settled::default());
        assert_eq!(applied.len(), 2);
    }

    #[test]
    fn failed_rows_are_reported_and_not_applied() {
        let registry = BatchRegistry::default();
        let faults = BulkFaults {
            row_failure_ids: vec!["c2".into()],
            ..BulkFaults::default()
        };
        let id = submit(&registry, &[("c1", &["1"]), ("c2", &["2"])], &faults);
        let mut applied = Vec::new();
        let (polled, settled) = poll(&registry, &id, 0, &mut applied);
        assert_eq!(polled.expect("known").failed_ids, ["c2"]);
        assert_eq!(settled.applied, 1);
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
        let id = submit(&registry, &[("c1", &["1"])], &faults);
        for at in [0, 10_000, 1_000_000] {
            let (polled, settled) = poll(&registry, &id, at, &mut Vec::new());
            assert_eq!(polled.expect("known").state, ViewState::Stuck);
            assert_eq!(settled, Settled::default());
        }
    }

    #[test]
    fn unknown_and_forgotten_batches_are_not_found() {
        let registry = BatchRegistry::default();
        assert!(registry.poll("nope", ms(0)).is_none());
        let id = submit(&registry, &[("c1", &["1"])], &BulkFaults::default());
        registry.clear();
        assert!(registry.poll(&id, ms(0)).is_none());
    }

    #[test]
    fn v1_rows_report_profiles_not_found_and_v2_rows_count_creations() {
        let registry = BatchRegistry::default();
        let mut rng = SmallRng::seed_from_u64(1);
        let rows: &[(&str, &[&str])] = &[("known", &["1"]), ("new", &["1"])];
        let v1 = registry.submit(
            "acme",
            BulkVersion::V1,
            batch(rows),
            &BulkFaults::default(),
            ms(0),
            &mut rng,
        );
        let v2 = registry.submit(
            "acme",
            BulkVersion::V2,
            batch(rows),
            &BulkFaults::default(),
            ms(0),
            &mut rng,
        );
        let mut creates_seen = Vec::new();
        let settled = registry.settle(ms(0), |update, creates| {
            creates_seen.push(creates);
            match (update.key.id(), creates) {
                ("known", _) => Landing::Updated,
                (_, true) => Landing::Created,
                (_, false) => Landing::NotFound,
            }
        });
        assert_eq!(
            creates_seen,
            [false, false, true, true],
            "v1 first, as submitted"
        );
        assert_eq!(
            settled,
            Settled {
                applied: 3,
                created: 1,
                not_found: 1
            }
        );
        assert_eq!(registry.poll(&v1, ms(0)).expect("known").not_found, 1);
        assert_eq!(registry.poll(&v2, ms(0)).expect("known").not_found, 0);
    }

    #[test]
    fn a_status_followed_by_more_than_the_kept_number_of_batches_is_forgotten_but_applied() {
        let registry = BatchRegistry::default();
        let faults = BulkFaults {
            statuses_kept: 10,
            completion_delay_ms: 100,
            ..BulkFaults::default()
        };
        let ids: Vec<String> = (0..12)
            .map(|n| submit(&registry, &[(&format!("c{n}"), &["1"])], &faults))
            .collect();
        assert!(registry.poll(&ids[0], ms(0)).is_none());
        assert!(registry.poll(&ids[1], ms(0)).is_none());
        for id in &ids[2..] {
            assert_eq!(
                registry.poll(id, ms(0)).expect("kept").state,
                ViewState::Incomplete
            );
        }
        let mut applied = Vec::new();
        let (_, settled) = poll(&registry, &ids[11], 100, &mut applied);
        assert_eq!(
            settled.applied, 12,
            "forgotten batches are applied all the same"
        );
        assert_eq!(applied[0].key.id(), "c0");
        assert_eq!(lock(&registry.inner).by_sequence.len(), 10);
    }
}
