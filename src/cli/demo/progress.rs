//! The live progress line: what Kafka and Target see while the pipeline works.

use super::{World, DLQ, GROUP, TOPIC};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// One look at the outside world.
pub(crate) struct Snapshot {
    /// Offsets committed by the group, summed over partitions.
    pub(crate) committed: u64,
    /// Every partition committed to its end.
    pub(crate) committed_all: bool,
    /// Events not yet committed.
    pub(crate) lag: u64,
    /// Updates Target accepted.
    pub(crate) accepted: u64,
    /// Records on the dead-letter topic.
    pub(crate) dead_letters: u64,
    /// Updates accepted in the last whole second.
    pub(crate) rate: u64,
}

impl Snapshot {
    pub(crate) fn take(world: &World) -> anyhow::Result<Snapshot> {
        let committed = world
            .inspector
            .committed(GROUP, TOPIC, world.end_offsets.len())
            .map_err(anyhow::Error::msg)?;
        let mut sum = 0u64;
        let mut lag = 0u64;
        for (c, end) in committed.iter().zip(&world.end_offsets) {
            let c = (*c).max(0);
            sum += c as u64;
            lag += (end - c).max(0) as u64;
        }
        let stats = world.sim.stats();
        let dead_letters = world
            .inspector
            .end_offsets(DLQ)
            .map_err(anyhow::Error::msg)?
            .iter()
            .sum::<i64>() as u64;
        let second = stats.uptime_ms / 1000;
        let rate = second
            .checked_sub(1)
            .and_then(|s| stats.accepted_per_second.0.get(&s).copied())
            .unwrap_or(0);
        Ok(Snapshot {
            committed: sum,
            committed_all: committed == world.end_offsets,
            lag,
            accepted: stats.accepted,
            dead_letters,
            rate,
        })
    }
}

/// A progress bar on a terminal, a line every few seconds elsewhere.
pub(crate) struct Progress {
    bar: ProgressBar,
    plain: bool,
    last_line: Instant,
}

impl Progress {
    pub(crate) fn new(events: u64) -> Progress {
        let plain = !std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(Some(events), ProgressDrawTarget::stderr());
        if plain {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed:>4} [{bar:32.cyan/blue}] {pos}/{len} committed  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Progress {
            bar,
            plain,
            last_line: Instant::now(),
        }
    }

    pub(crate) fn show(&mut self, snapshot: &Snapshot, world: &World) {
        let message = format!(
            "accepted {} | dead letters {} | {}/s of {:.0}/s budget | lag {}{}",
            snapshot.accepted,
            snapshot.dead_letters,
            snapshot.rate,
            world.rate,
            snapshot.lag,
            if world.restarts > 0 {
                format!(" | restarts {}", world.restarts)
            } else {
                String::new()
            }
        );
        self.bar.set_position(snapshot.committed);
        if self.plain {
            if self.last_line.elapsed() >= Duration::from_secs(5) || snapshot.committed_all {
                eprintln!("{} committed, {message}", snapshot.committed);
                self.last_line = Instant::now();
            }
        } else {
            self.bar.set_message(message);
        }
    }

    pub(crate) fn note(&self, line: &str) {
        if self.plain {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish();
    }
}
