//! How many single profile updates per second the Target simulator serves, so that we
//! know it is never the bottleneck of a test or benchmark of the service.
//!
//! Starts the simulator in-process on 127.0.0.1:0 and drives it over HTTP with reqwest
//! at concurrency 64 for 10 s with realistic updates (an identity and 9 attributes over
//! 50,000 profiles), then again with 20 ms of injected latency. The client shares the
//! machine's cores with the simulator, so the figures are a lower bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use pps_target_simulator::{Faults, Latency, Simulator, SimulatorConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CONCURRENCY: usize = 64;
const PHASE: Duration = Duration::from_secs(10);
const PROFILES: u32 = 50_000;
const CLIENT_CODE: &str = "bench";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        phase("no injected latency", Faults::none()).await?;
        let slow = Faults {
            latency: Latency::fixed_ms(20),
            ..Faults::none()
        };
        phase("20 ms injected latency", slow).await
    })
}

async fn phase(name: &str, faults: Faults) -> anyhow::Result<()> {
    // Every profile exists, so each update is applied (the path measured).
    let config = SimulatorConfig {
        faults,
        ..pps_test_kit::simulator_config(CLIENT_CODE)
    };
    let simulator = Simulator::start(([127, 0, 0, 1], 0).into(), config).await?;
    let urls = Arc::new(update_urls(&simulator.base_url()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .timeout(Duration::from_secs(10))
        .build()?;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let (client, urls) = (client.clone(), Arc::clone(&urls));
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(worker as u64);
                while started.elapsed() < PHASE {
                    let url = &urls[rng.random_range(0..urls.len())];
                    match client.post(url.as_str()).send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = simulator.stats();
    let (_, busiest) = stats.accepted_per_second.busiest().unwrap_or_default();
    println!(
        "{name}: {:.0} requests/s ({} accepted, {} failed in {elapsed:.1} s; busiest second {busiest}, \
         max in flight {}, {} profiles)",
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        stats.accepted,
        failed.load(Ordering::Relaxed),
        stats.max_in_flight,
        stats.profiles.third_party.len(),
    );
    simulator.shutdown().await;
    Ok(())
}

/// One update URL per profile, shaped like the service's default mapping.
fn update_urls(base_url: &str) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(42);
    let categories = [
        "grocery",
        "electronics",
        "toys & games",
        "home/garden",
        "café",
    ];
    (0..PROFILES)
        .map(|n| {
            let top = categories[rng.random_range(0..categories.len())];
            let attributes = [
                (
                    "lastPurchaseAt",
                    format!("2026-11-{:02}T10:15:00Z", 1 + n % 28),
                ),
                ("lastPurchaseStore", format!("store-{}", n % 500)),
                ("lastPurchaseChannel", "store".to_owned()),
                ("lastPurchaseTotal", format!("{}.{:02}", n % 900, n % 100)),
                ("lastPurchaseCurrency", "EUR".to_owned()),
                ("lastPurchaseItemCount", (1 + n % 12).to_string()),
                ("lastPurchaseCategories", format!("{top},grocery")),
                ("lastPurchaseTopCategory", top.to_owned()),
                ("loyaltyTier", "gold".to_owned()),
            ];
            let mut url =
                format!("{base_url}/m2/{CLIENT_CODE}/profile/update?mbox3rdPartyId=CRM-{n:06}");
            for (name, value) in attributes {
                let value = utf8_percent_encode(&value, NON_ALPHANUMERIC);
                url.push_str(&format!("&profile.{name}={value}"));
            }
            url
        })
        .collect()
}
