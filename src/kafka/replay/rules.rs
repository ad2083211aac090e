//! The replay's decisions as plain functions over plain data: which part of
//! a dead-letter partition a run reads, which dead letters move and where
//! to, which offset the group may commit after a batch, and the tally of it
//! all. The Kafka shell in `mod.rs` only moves records between them.

use std::collections::{BTreeMap, BTreeSet};

pub use crate::kafka::dead_letter::REPLAYED_FROM;
use crate::kafka::dead_letter::{KEY_OMITTED, VALUE_OMITTED};
/// How dead letters without a `pps-error-class` header are counted.
pub const NO_CLASS: &str = "(no class)";

/// Which dead letters a replay moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `pps-error-class` values to replay.
    pub classes: BTreeSet<String>,
    /// Per dead-letter partition, the first offset replayed (inclusive).
    pub from_offset: Option<i64>,
    /// Per dead-letter partition, the first offset not read (exclusive).
    pub until_offset: Option<i64>,
    /// Leave dead letters of records that were themselves replayed (they
    /// carry `pps-replayed-from`), so a record is replayed at most once.
    pub skip_replayed: bool,
}

/// What happens to one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Published again.
    Replay,
    /// Outside `--from-offset`/`--until-offset`.
    SkipRange,
    /// Its class was not asked for.
    SkipClass,
    /// Replayed before, and `--skip-replayed` was given.
    SkipReplayed,
    /// Its value (or key) was too large for the dead-letter topic and is not
    /// in the letter: only the source topic still has the record.
    SkipIncomplete,
}

impl Filter {
    /// The verdict for the dead letter at `offset` with these headers.
    pub fn verdict(&self, offset: i64, provenance: &Provenance) -> Verdict {
        let before = self.from_offset.is_some_and(|from| offset < from);
        let after = self.until_offset.is_some_and(|until| offset >= until);
        let class = provenance.class.as_deref();
        if before || after {
            Verdict::SkipRange
        } else if !class.is_some_and(|class| self.classes.contains(class)) {
            Verdict::SkipClass
        } else if provenance.incomplete {
            Verdict::SkipIncomplete
        } else if self.skip_replayed && provenance.replayed_from.is_some() {
            Verdict::SkipReplayed
        } else {
            Verdict::Replay
        }
    }
}

/// The part of one dead-letter partition a run reads: `[start, stop)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The dead-letter partition.
    pub partition: i32,
    /// Its low watermark at start.
    pub low: i64,
    /// Its end offset at start: records written later wait for the next run.
    pub high: i64,
    /// The replay group's committed offset, if any.
    pub committed: Option<i64>,
    /// First offset read.
    pub start: i64,
    /// First offset not read.
    pub stop: i64,
}

impl Span {
    /// From the committed offset (the low watermark when there is none, or
    /// when retention already removed it) to the end captured at start, cut
    /// at `until`.
    pub fn new(
        partition: i32,
        (low, high): (i64, i64),
        committed: Option<i64>,
        until: Option<i64>,
    ) -> Span {
        let start = committed.map_or(low, |committed| committed.max(low));
        let stop = until.map_or(high, |until| until.min(high));
        Span {
            partition,
            low,
            high,
            committed,
            start,
            stop,
        }
    }

    /// Nothing to read here.
    pub fn is_empty(&self) -> bool {
        self.start >= self.stop
    }
}

/// What a dead letter's headers say about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// `pps-error-class`.
    pub class: Option<String>,
    /// `pps-source-topic`.
    pub source_topic: Option<String>,
    /// `pps-source-partition`: `Err` holds a value that names no partition.
    pub source_partition: Option<Result<i32, String>>,
    /// `pps-replayed-from`: the letter's record was itself replayed.
    pub replayed_from: Option<String>,
    /// `pps-value-omitted` or `pps-key-omitted`: the letter lacks part of
    /// its record.
    pub incomplete: bool,
}

impl Provenance {
    /// Reads the contract's headers (section 8); others are ignored here
    /// (and still copied to the replayed record).
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Self {
        let mut provenance = Provenance::default();
        for (key, value) in headers {
            let text = value
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::trim)
                .filter(|v| !v.is_empty());
            match key {
                "pps-error-class" => provenance.class = text.map(str::to_owned),
                "pps-source-topic" => provenance.source_topic = text.map(str::to_owned),
                "pps-source-partition" => {
                    provenance.source_partition = Some(match text.map(str::parse::<i32>) {
                        Some(Ok(partition)) if partition >= 0 => Ok(partition),
                        _ => Err(String::from_utf8_lossy(value.unwrap_or_default())
                            .chars()
                            .take(64)
                            .collect()),
                    })
                }
                REPLAYED_FROM => provenance.replayed_from = text.map(str::to_owned),
                VALUE_OMITTED | KEY_OMITTED => provenance.incomplete = true,
                _ => {}
            }
        }
        provenance
    }

    /// The class as counted in the summary.
    pub fn class_label(&self) -> &str {
        self.class.as_deref().unwrap_or(NO_CLASS)
    }
}

/// Where replayed records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Each back to its `pps-source-topic`, in its `pps-source-partition`.
    Source,
    /// All to this topic, partitioned by key.
    Topic(String),
}

/// The topic (and, back at the source, the original partition, so a
/// profile's events stay in one partition whatever partitioner the original
/// producer used) of one dead letter; `Err` says why it cannot move. A
/// letter whose partition header is missing or names no partition is not
/// sent back by key: librdkafka's partitioner is not the producers', so the
/// record could land behind a customer's later events.
pub fn destination(
    to: &Destination,
    provenance: &Provenance,
    dlq_topic: &str,
) -> Result<(String, Option<i32>), String> {
    match to {
        Destination::Topic(topic) => Ok((topic.clone(), None)),
        Destination::Source => match (&provenance.source_topic, &provenance.source_partition) {
            (None, _) => Err("it has no pps-source-topic header; pass --to TOPIC".into()),
            (Some(topic), _) if topic == dlq_topic => {
                Err("its pps-source-topic is the dead-letter topic itself; pass --to TOPIC".into())
            }
            (Some(_), None) => Err("it has no pps-source-partition header; pass --to TOPIC".into()),
            (Some(_), Some(Err(value))) => Err(format!(
                "its pps-source-partition {value:?} is not a partition number; pass --to TOPIC"
            )),
            (Some(topic), Some(Ok(partition))) => Ok((topic.clone(), Some(*partition))),
        },
    }
}

/// The offset the group may commit per dead-letter partition after a batch
/// of `(partition, offset, handled)` in read order: past every handled
/// record up to the first one that was not (replayed records count as
/// handled once acknowledged, skipped ones at once).
pub fn positions(batch: impl IntoIterator<Item = (i32, i64, bool)>) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    let mut blocked = BTreeSet::new();
    for (partition, offset, handled) in batch {
        if blocked.contains(&partition) {
            continue;
        }
        if handled {
            out.insert(partition, offset + 1);
        } else {
            out.insert(partition, offset);
            blocked.insert(partition);
        }
    }
    out
}

/// Counts of one class (or of all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Replayed and acknowledged (in a dry run: would be replayed).
    pub replayed: u64,
    /// Skipped: class not asked for.
    pub skipped_by_class: u64,
    /// Skipped: outside the offset range.
    pub skipped_by_range: u64,
    /// Skipped: replayed before (`--skip-replayed`).
    pub skipped_as_replayed: u64,
    /// Skipped: the letter lacks its value or key (too large for the topic).
    pub skipped_incomplete: u64,
}

impl Tally {
    fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Replay => self.replayed += 1,
            Verdict::SkipClass => self.skipped_by_class += 1,
            Verdict::SkipRange => self.skipped_by_range += 1,
            Verdict::SkipReplayed => self.skipped_as_replayed += 1,
            Verdict::SkipIncomplete => self.skipped_incomplete += 1,
        }
    }

    /// Dead letters skipped, for whatever reason.
    pub fn skipped(&self) -> u64 {
        self.skipped_by_class
            + self.skipped_by_range
            + self.skipped_as_replayed
            + self.skipped_incomplete
    }

    /// Dead letters read.
    pub fn read(&self) -> u64 {
        self.replayed + self.skipped()
    }
}

/// What a run read and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Every dead letter read.
    pub total: Tally,
    /// Per `pps-error-class`.
    pub by_class: BTreeMap<String, Tally>,
    /// What each partition was to be read from and up to.
    pub spans: Vec<Span>,
}

impl ReplayReport {
    /// Counts one handled dead letter.
    pub fn count(&mut self, class: &str, verdict: Verdict) {
        self.total.add(verdict);
        self.by_class
            .entry(class.to_owned())
            .or_default()
            .add(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(classes: &[&str], from: Option<i64>, until: Option<i64>) -> Filter {
        Filter {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            from_offset: from,
            until_offset: until,
            skip_replayed: false,
        }
    }

    fn of_class(class: Option<&str>) -> Provenance {
        Provenance {
            class: class.map(str::to_owned),
            ..Provenance::default()
        }
    }

    #[test]
    fn the_offset_range_includes_from_and_excludes_until_before_the_class_counts() {
        let f = filter(&["invalid_json"], Some(10), Some(20));
        let cases = [
            (9, Some("invalid_json"), Verdict::SkipRange),
            (10, Some("invalid_json"), Verdict::Replay),
            (19, Some("invalid_json"), Verdict::Replay),
            (20, Some("invalid_json"), Verdict::SkipRange),
            (15, Some("schema_violation"), Verdict::SkipClass),
            (15, None, Verdict::SkipClass),
            (5, Some("schema_violation"), Verdict::SkipRange),
        ];
        for (offset, class, expected) in cases {
            assert_eq!(
                f.verdict(offset, &of_class(class)),
                expected,
                "{offset} {class:?}"
            );
        }
        assert_eq!(
            filter(&["a", "b"], None, None).verdict(i64::MAX - 1, &of_class(Some("b"))),
            Verdict::Replay
        );
    }

    #[test]
    fn a_letter_replayed_before_is_left_only_when_asked() {
        let again = Provenance {
            replayed_from: Some("pos.purchases.dlq/0/7".into()),
            ..of_class(Some("target_rejected"))
        };
        let mut f = filter(&["target_rejected"], None, None);
        assert_eq!(f.verdict(9, &again), Verdict::Replay);
        f.skip_replayed = true;
        assert_eq!(f.verdict(9, &again), Verdict::SkipReplayed);
        assert_eq!(
            f.verdict(9, &of_class(Some("target_rejected"))),
            Verdict::Replay
        );
        let cut = Provenance {
            incomplete: true,
            ..of_class(Some("target_rejected"))
        };
        assert_eq!(f.verdict(9, &cut), Verdict::SkipIncomplete);
        // The other filters speak first.
        assert_eq!(
            filter(&["invalid_json"], None, None).verdict(9, &again),
            Verdict::SkipClass
        );
    }

    #[test]
    fn a_span_starts_at_the_committed_offset_and_stops_at_the_end_seen_at_start() {
        assert_eq!(Span::new(0, (0, 10), None, None).start, 0);
        let resumed = Span::new(0, (0, 10), Some(4), None);
        assert_eq!((resumed.start, resumed.stop), (4, 10));
        // Retention removed what the group had not read: start at what is left.
        assert_eq!(Span::new(0, (7, 10), Some(4), None).start, 7);
        assert_eq!(Span::new(0, (0, 10), None, Some(6)).stop, 6);
        assert_eq!(Span::new(0, (0, 10), None, Some(60)).stop, 10);
        assert!(Span::new(0, (0, 10), Some(10), None).is_empty());
        assert!(Span::new(0, (3, 3), None, None).is_empty());
        assert!(Span::new(0, (0, 10), Some(5), Some(5)).is_empty());
    }

    #[test]
    fn provenance_comes_from_the_contract_headers() {
        let headers: [(&str, Option<&[u8]>); 6] = [
            ("pps-error-class", Some(b"target_rejected")),
            ("pps-source-topic", Some(b"pos.purchases")),
            ("pps-source-partition", Some(b"3")),
            ("pps-target-status", Some(b"400")),
            ("pps-replayed-from", Some(b"pos.purchases.dlq/0/12")),
            ("traceparent", None),
        ];
        let p = Provenance::from_headers(headers);
        assert_eq!(p.class.as_deref(), Some("target_rejected"));
        assert_eq!(p.source_topic.as_deref(), Some("pos.purchases"));
        assert_eq!(p.source_partition, Some(Ok(3)));
        assert_eq!(p.replayed_from.as_deref(), Some("pos.purchases.dlq/0/12"));
        assert!(!p.incomplete);
        for omitted in ["pps-value-omitted", "pps-key-omitted"] {
            assert!(Provenance::from_headers([(omitted, Some(&b"1200000"[..]))]).incomplete);
        }
        let bare = Provenance::from_headers([("pps-error-class", None)]);
        assert_eq!(bare, Provenance::default());
        assert_eq!(bare.class_label(), NO_CLASS);
        for bad in [&b"x"[..], b"-1", b"", b"99999999999", b"\xff"] {
            let p = Provenance::from_headers([("pps-source-partition", Some(bad))]);
            assert!(matches!(p.source_partition, Some(Err(_))), "{bad:?}: {p:?}");
        }
        let p = Provenance::from_headers([("pps-source-partition", None)]);
        assert!(matches!(p.source_partition, Some(Err(_))), "{p:?}");
    }

    #[test]
    fn dead_letters_go_back_to_their_source_partition_unless_told_otherwise() {
        let p = Provenance {
            class: Some("invalid_json".into()),
            source_topic: Some("pos.purchases".into()),
            source_partition: Some(Ok(2)),
            replayed_from: None,
            incomplete: false,
        };
        let dlq = "pos.purchases.dlq";
        assert_eq!(
            destination(&Destination::Source, &p, dlq),
            Ok(("pos.purchases".into(), Some(2)))
        );
        assert_eq!(
            destination(&Destination::Topic("other".into()), &p, dlq),
            Ok(("other".into(), None))
        );
        let orphan = Provenance::default();
        assert!(destination(&Destination::Source, &orphan, dlq)
            .unwrap_err()
            .contains("--to"));
        let looped = Provenance {
            source_topic: Some(dlq.into()),
            ..p.clone()
        };
        assert!(destination(&Destination::Source, &looped, dlq).is_err());
        // Never back by key: the producers' partitioner is not librdkafka's.
        for source_partition in [None, Some(Err("-1".to_owned()))] {
            let unplaced = Provenance {
                source_partition,
                ..p.clone()
            };
            let why = destination(&Destination::Source, &unplaced, dlq).unwrap_err();
            assert!(
                why.contains("pps-source-partition") && why.contains("--to"),
                "{why}"
            );
            assert!(destination(&Destination::Topic("other".into()), &unplaced, dlq).is_ok());
        }
    }

    #[test]
    fn a_partition_is_committed_up_to_its_first_unacknowledged_record() {
        let batch = [
            (0, 10, true),
            (1, 3, true),
            (0, 11, true),
            (1, 4, false),
            (0, 12, true),
            (1, 5, true),
        ];
        assert_eq!(positions(batch), BTreeMap::from([(0, 13), (1, 4)]));
        assert_eq!(positions([(2, 7, false)]), BTreeMap::from([(2, 7)]));
        assert!(positions([]).is_empty());
    }

    #[test]
    fn the_report_counts_by_class_and_in_total() {
        let mut report = ReplayReport::default();
        report.count("invalid_json", Verdict::Replay);
        report.count("invalid_json", Verdict::SkipRange);
        report.count("schema_violation", Verdict::SkipClass);
        report.count("target_rejected", Verdict::SkipReplayed);
        assert_eq!(
            report.total,
            Tally {
                replayed: 1,
                skipped_by_class: 1,
                skipped_by_range: 1,
                skipped_as_replayed: 1,
                skipped_incomplete: 0,
            }
        );
        assert_eq!(report.total.read(), 4);
        assert_eq!(report.by_class["invalid_json"].replayed, 1);
        assert_eq!(report.by_class["schema_violation"].skipped_by_class, 1);
    }
}
