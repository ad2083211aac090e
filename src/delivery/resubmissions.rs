//! How often Target lost track of each batch, so that sending one again is
//! bounded.
//!
//! Target can lose a batch after taking it: it reports it `stuck`, forgets its
//! status (Adobe keeps only the last 10 batch statuses per client, for at most
//! 24 hours), refuses the status call, or never completes it. Sending the same
//! batch again is safe for at-least-once: while a batch is out its profiles
//! are held, so nothing newer was sent for them, and applying the same values
//! twice leaves the same profile; its events are not committed until it
//! completes (with `bulk.commit_on = "complete"`). It is not free, though, and
//! a batch Target keeps losing must not go round forever: it is sent again at
//! most [`MAX_RESUBMISSIONS`] times, and lost once more its events are
//! dead-lettered as `target_rejected` with the last reason, where
//! `dlq replay` can send them again.
//!
//! A batch is known by its body (the coordinator submits the same body again),
//! and a submission by the status URL Target answered.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Times a lost batch is sent again; lost once more, its events are dead-lettered.
pub const MAX_RESUBMISSIONS: u32 = 3;

/// A batch, by its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchKey {
    hash: u64,
    len: usize,
}

impl BatchKey {
    /// The key of a batch body.
    pub fn of(body: &[u8]) -> BatchKey {
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        BatchKey {
            hash: hasher.finish(),
            len: body.len(),
        }
    }
}

/// How a batch was lost, last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// How many times.
    pub times: u32,
    /// The HTTP status of Target's last answer about it; none when the last
    /// call had no answer.
    pub status: Option<u16>,
    /// Why, for the dead letter.
    pub why: String,
}

#[derive(Debug, Default)]
struct Ledger {
    lost: HashMap<BatchKey, Lost>,
    /// Status URL of every batch being polled.
    polled: HashMap<String, BatchKey>,
}

/// The losses of every batch under way. Shared by the batch senders.
#[derive(Debug, Default)]
pub struct Resubmissions {
    ledger: Mutex<Ledger>,
}

impl Resubmissions {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before submitting: `Some` (and forgotten) when the batch was lost more
    /// than [`MAX_RESUBMISSIONS`] times and must not be sent again.
    pub fn give_up(&self, key: BatchKey) -> Option<Lost> {
        let mut ledger = self.ledger();
        match ledger.lost.get(&key) {
            Some(lost) if lost.times > MAX_RESUBMISSIONS => ledger.lost.remove(&key),
            _ => None,
        }
    }

    /// Target took the batch; it is polled at `status_url`.
    pub fn submitted(&self, key: BatchKey, status_url: &str) {
        self.ledger().polled.insert(status_url.to_owned(), key);
    }

    /// Target lost the batch polled at `status_url`; how many times so far.
    pub fn lost(&self, status_url: &str, status: Option<u16>, why: &str) -> u32 {
        let mut ledger = self.ledger();
        let Some(key) = ledger.polled.remove(status_url) else {
            return 0;
        };
        let lost = ledger.lost.entry(key).or_insert(Lost {
            times: 0,
            status,
            why: String::new(),
        });
        lost.times += 1;
        lost.status = status;
        why.clone_into(&mut lost.why);
        lost.times
    }

    /// The batch polled at `status_url` completed: nothing more to remember.
    pub fn completed(&self, status_url: &str) {
        let mut ledger = self.ledger();
        if let Some(key) = ledger.polled.remove(status_url) {
            ledger.lost.remove(&key);
        }
    }

    /// The batch ended otherwise (Target rejected it): nothing more to remember.
    pub fn forget(&self, key: BatchKey) {
        self.ledger().lost.remove(&key);
    }

    /// Batches remembered (lost at least once, or being polled).
    pub fn len(&self) -> usize {
        let ledger = self.ledger();
        ledger.lost.len() + ledger.polled.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_sent_again_three_times_and_not_after_a_fourth_loss() {
        let ledger = Resubmissions::default();
        let body = b"batch=thirdPartyId%2Ca%0ACRM-1%2C1";
        let key = BatchKey::of(body);
        for round in 1..=MAX_RESUBMISSIONS + 1 {
            assert_eq!(ledger.give_up(key), None, "round {round}");
            let url = format!("http://edge/s?batchId=b{round}");
            ledger.submitted(key, &url);
            assert_eq!(ledger.lost(&url, Some(404), "Batch not found"), round);
        }
        assert_eq!(
            ledger.give_up(key),
            Some(Lost {
                times: 4,
                status: Some(404),
                why: "Batch not found".into()
            })
        );
        assert!(ledger.is_empty(), "given up means forgotten");
        assert_eq!(ledger.give_up(key), None);
    }

    #[test]
    fn completion_and_rejection_forget_a_batch_and_other_batches_count_apart() {
        let ledger = Resubmissions::default();
        let (a, b) = (BatchKey::of(b"batch=a"), BatchKey::of(b"batch=b"));
        assert_ne!(a, b);
        ledger.submitted(a, "u1");
        ledger.submitted(b, "u2");
        assert_eq!(ledger.lost("u1", Some(200), "stuck"), 1);
        assert_eq!(
            ledger.lost("u1", Some(200), "stuck"),
            0,
            "a URL is lost once"
        );
        ledger.submitted(a, "u3");
        ledger.completed("u3");
        ledger.completed("unknown");
        assert_eq!(ledger.lost("u2", Some(200), "stuck"), 1);
        ledger.forget(b);
        assert!(ledger.is_empty());
    }
}
