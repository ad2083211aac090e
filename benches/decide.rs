//! The consumer thread's work on each record, alone: parsing and checking
//! the event, and deriving its update, over the pipeline bench's workload
//! (100,000 generated events, 5 % anonymous, about 0.1 % malformed).
//!
//! The baseline, in the same run: `serde_json` reading the same bytes into a
//! generic `Value`, which checks the syntax only (no rule of the contract,
//! no update). The three are measured in turns, round after round, and each
//! figure is the median of its rounds, so that a noisy neighbour weighs on
//! all three alike.
//!
//! `cargo bench --bench decide`; options (environment, defaults in
//! brackets): `PPS_BENCH_EVENTS` [100000], `PPS_BENCH_ROUNDS` [15].

/// The allocator the binary ships with (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod common;

use common::env_or;
use pos_profile_sync::generator::{Generator, GeneratorConfig};
use pos_profile_sync::mapping::{Decision, Mapping};
use std::hint::black_box;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let events: u64 = env_or("PPS_BENCH_EVENTS", 100_000)?;
    let rounds: usize = env_or("PPS_BENCH_ROUNDS", 15)?;
    let payloads: Vec<Vec<u8>> = Generator::new(GeneratorConfig {
        events,
        ..GeneratorConfig::default()
    })
    .map(|event| event.payload)
    .collect();
    let mapping = Mapping::default();
    let bytes: usize = payloads.iter().map(Vec::len).sum();

    let mut decide = Vec::with_capacity(rounds);
    let mut parse = Vec::with_capacity(rounds);
    let mut generic = Vec::with_capacity(rounds);
    let mut updates = 0;
    for _ in 0..rounds {
        updates = 0;
        decide.push(per_event(&payloads, |payload| {
            if let Decision::Update(update) = mapping.decide(payload) {
                updates += 1;
                black_box(update);
            }
        }));
        parse.push(per_event(&payloads, |payload| {
            let _ = black_box(pos_profile_sync::event::parse(payload));
        }));
        generic.push(per_event(&payloads, |payload| {
            let _ = black_box(serde_json::from_slice::<serde_json::Value>(payload));
        }));
    }
    let (decide, parse, generic) = (median(decide), median(parse), median(generic));

    println!(
        "workload   {} events, mean payload {} B, {updates} updates; median of {rounds} rounds",
        payloads.len(),
        bytes / payloads.len().max(1)
    );
    row(
        "decide (parse, check, derive) per event",
        format!("{decide:.0} ns"),
    );
    row("  parse and check alone", format!("{parse:.0} ns"));
    row(
        "baseline: serde_json into a Value (syntax only)",
        format!("{generic:.0} ns"),
    );
    row("decide / baseline", format!("{:.2}", decide / generic));
    row(
        "parse and check / baseline",
        format!("{:.2}", parse / generic),
    );
    Ok(())
}

/// Nanoseconds per payload of `work` over all of them.
fn per_event(payloads: &[Vec<u8>], mut work: impl FnMut(&[u8])) -> f64 {
    let started = Instant::now();
    for payload in payloads {
        work(payload);
    }
    started.elapsed().as_nanos() as f64 / payloads.len().max(1) as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn row(name: &str, value: String) {
    println!("{name:<50} {value:>12}");
}
