//! The verdict, from the outside: every profile, read back through Target's
//! fetch API as a user's own check would, equals what that customer's events
//! say; every malformed event is on the dead-letter topic with its class;
//! every offset is committed.

use super::readback::{fetch_all, Fetched, Wanted};
use super::{World, CLIENT, DLQ, GROUP, TOPIC};
use crate::generator::{customer_id, expected_profiles, EventKind};
use crate::mapping::{Decision, Mapping};
use pps_target_simulator::known_at_start;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// What the demo found.
pub(crate) struct Report {
    events: usize,
    partitions: usize,
    needed: u64,
    accepted: u64,
    requests: u64,
    non_2xx: u64,
    status_503: u64,
    anonymous: usize,
    dead_letters: BTreeMap<String, usize>,
    restarts: u64,
    /// Requests per whole second at Target, first and last (partial) seconds left out.
    rate_mean: f64,
    /// The busiest second at Target.
    rate_busiest: u64,
    budget: f64,
    burst: u32,
    elapsed: Duration,
    profiles: usize,
    /// Profiles that existed at Target before the run (known at start).
    existed: usize,
    /// Profiles that existed before the run and read back equal to their events.
    updated: usize,
    /// Profiles Target created from bulk v2 rows (the simulator's count).
    created_by_batches: u64,
    /// Profiles that read back equal to their events.
    verified: usize,
    /// Single updates Target answered 2xx without applying: no such profile.
    updates_to_unknown: u64,
    /// Profile fetches the pipeline made (existence checks).
    fetches: u64,
    /// Bulk batches submitted and status polls.
    batches: u64,
    status_polls: u64,
    /// Everything that did not arrive; empty means nothing was lost.
    pub(crate) lost: Vec<String>,
}

pub(crate) async fn verify(world: &World, elapsed: Duration) -> Result<Report, String> {
    let mapping = Mapping::default();
    let mut lost = Vec::new();

    // Offsets: committed to the end everywhere.
    let committed = world
        .inspector
        .committed(GROUP, TOPIC, world.end_offsets.len())?;
    for (p, (c, end)) in committed.iter().zip(&world.end_offsets).enumerate() {
        if c != end {
            lost.push(format!("{TOPIC}/{p}: committed {c}, end {end}"));
        }
    }

    // Profiles: each customer's events folded in order.
    let expected = expected_profiles(&world.events);
    let (mut needed, mut anonymous) = (0u64, 0);
    for event in &world.events {
        match (&event.kind, mapping.decide(&event.payload)) {
            (EventKind::Customer(_), Decision::Update(_)) => needed += 1,
            (EventKind::Anonymous, Decision::Skip(_)) => anonymous += 1,
            _ => {}
        }
    }
    let wanted = expected
        .keys()
        .map(|n| {
            let (crm, id) = customer_id(*n);
            Wanted { crm, id }
        })
        .collect();
    // The pipeline's own calls, before the read-back adds fetches of its own.
    let before_read_back = world.sim.stats();
    let fetched = fetch_all(&world.sim.base_url(), CLIENT, wanted).await?;
    let (mut existed, mut updated, mut verified) = (0, 0, 0);
    for (n, attributes) in &expected {
        let (_, id) = customer_id(*n);
        let known = known_at_start(&id, world.known_share);
        existed += usize::from(known);
        match fetched.get(&id) {
            Some(Fetched::Found(values)) if values == attributes => {
                verified += 1;
                updated += usize::from(known);
            }
            Some(Fetched::Found(_)) => lost.push(format!(
                "profile {id}: attributes differ from its latest events"
            )),
            Some(Fetched::NotFound) | None => lost.push(format!(
                "profile {id}: not found by the fetch API{}",
                if known {
                    ""
                } else {
                    " (no profile at Target before the run)"
                }
            )),
        }
    }

    // Dead letters: one per malformed event (and per rejected update), by source position.
    let letters = world.inspector.read_all(DLQ)?;
    let mut dead_letters: BTreeMap<String, usize> = BTreeMap::new();
    let mut positions = BTreeSet::new();
    for letter in &letters {
        let class = letter
            .headers
            .get("pps-error-class")
            .cloned()
            .unwrap_or_default();
        let position = (
            letter
                .headers
                .get("pps-source-partition")
                .cloned()
                .unwrap_or_default(),
            letter
                .headers
                .get("pps-source-offset")
                .cloned()
                .unwrap_or_default(),
        );
        if positions.insert(position) {
            *dead_letters.entry(class).or_default() += 1;
        }
    }
    let source = world.inspector.read_all(TOPIC)?;
    for record in &source {
        if let Decision::DeadLetter(error) = mapping.decide(&record.value) {
            let position = (record.partition.to_string(), record.offset.to_string());
            if !positions.contains(&position) {
                lost.push(format!(
                    "{TOPIC}/{}@{}: {} event not dead-lettered",
                    record.partition, record.offset, error.class
                ));
            }
        }
    }
    // Rejected updates never reach Target: their profiles are not "lost".
    if dead_letters.get("target_rejected").copied().unwrap_or(0) > 0 {
        lost.retain(|line| !line.starts_with("profile "));
    }

    let stats = world.sim.stats();
    let seconds: Vec<u64> = stats.requests_per_second.0.values().copied().collect();
    let full = if seconds.len() > 2 {
        &seconds[1..seconds.len() - 1]
    } else {
        &seconds[..]
    };
    let rate_mean = full.iter().sum::<u64>() as f64 / full.len().max(1) as f64;
    Ok(Report {
        events: world.events.len(),
        partitions: world.end_offsets.len(),
        needed,
        accepted: stats.accepted,
        requests: stats.total,
        non_2xx: stats.total - stats.accepted,
        status_503: stats.by_status.get(&503).copied().unwrap_or(0),
        anonymous,
        dead_letters,
        restarts: world.restarts,
        rate_mean,
        rate_busiest: stats.requests_per_second.busiest().map_or(0, |(_, n)| n),
        budget: world.rate,
        burst: super::burst_of(world.rate),
        elapsed,
        profiles: expected.len(),
        existed,
        updated,
        created_by_batches: stats.bulk.profiles_created,
        verified,
        updates_to_unknown: stats.updates_to_unknown_profiles,
        fetches: before_read_back.fetch.requests,
        batches: before_read_back.bulk.batches_submitted,
        status_polls: before_read_back.bulk.status_polls,
        lost,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.events as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let classes = if self.dead_letters.is_empty() {
            "none".to_owned()
        } else {
            self.dead_letters
                .iter()
                .map(|(class, n)| format!("{class} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f)?;
        writeln!(f, "pos-profile-sync demo report")?;
        writeln!(
            f,
            "  events produced           {:>9}  ({} partitions)",
            self.events, self.partitions
        )?;
        writeln!(
            f,
            "  updates needed            {:>9}  (one per identified event)",
            self.needed
        )?;
        writeln!(
            f,
            "  updates accepted          {:>9}  (single updates to profiles Target has; a restart may send one again)",
            self.accepted
        )?;
        writeln!(
            f,
            "  requests sent             {:>9}  ({} not accepted, {} of them 503s that were retried)",
            self.requests, self.non_2xx, self.status_503
        )?;
        writeln!(
            f,
            "  Target request rate       {:>7.1}/s  (mean of whole seconds; busiest {}; budget {:.0}/s + burst {})",
            self.rate_mean, self.rate_busiest, self.budget, self.burst
        )?;
        writeln!(f, "  skipped (anonymous)       {:>9}", self.anonymous)?;
        writeln!(
            f,
            "  dead letters              {:>9}  ({classes})",
            self.dead_letters.values().sum::<usize>()
        )?;
        writeln!(
            f,
            "  pipeline restarts         {:>9}  (SIGKILL)",
            self.restarts
        )?;
        writeln!(
            f,
            "  elapsed                   {:>8.1}s  ({rate:.0} events/s)",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  profiles                  {:>9}  ({} had a profile at Target before the run)",
            self.profiles, self.existed
        )?;
        writeln!(
            f,
            "  profiles updated          {:>9}  (existed before the run, read back equal)",
            self.updated
        )?;
        writeln!(
            f,
            "  created through batches   {:>9}  (bulk v2 rows that created a profile, counted by Target)",
            self.created_by_batches
        )?;
        let calls = self.requests + self.fetches + self.batches + self.status_polls;
        writeln!(
            f,
            "  profile fetches           {:>9}  (existence checks, on their own budget; the read-back's not counted)",
            self.fetches
        )?;
        writeln!(
            f,
            "  bulk calls                {:>9}  ({} batches submitted, {} status polls)",
            self.batches + self.status_polls,
            self.batches,
            self.status_polls
        )?;
        writeln!(
            f,
            "  Target calls per update   {:>9.3}  (requests, fetches and bulk calls per identified event)",
            calls as f64 / self.needed.max(1) as f64
        )?;
        writeln!(
            f,
            "  verified by read-back     {:>9}  (fetch API: attributes equal their events)",
            self.verified
        )?;
        writeln!(
            f,
            "  updates to no profile     {:>9}  (answered 2xx by Target, changed nothing)",
            self.updates_to_unknown
        )?;
        writeln!(
            f,
            "  verified                  {} of {} profiles equal their events; every malformed event dead-lettered; offsets committed to the end",
            self.verified, self.profiles
        )?;
        if self.lost.is_empty() {
            writeln!(f, "  0 lost")
        } else {
            writeln!(f, "  {} lost:", self.lost.len())?;
            for line in self.lost.iter().take(20) {
                writeln!(f, "    {line}")?;
            }
            if self.lost.len() > 20 {
                writeln!(f, "    ... and {} more", self.lost.len() - 20)?;
            }
            Ok(())
        }
    }
}
