//! A day of point-of-sale traffic, made up: repeat customers (uniform or
//! Zipf), sales and returns, loyalty tiers, multi-byte store and category
//! names, anonymous buyers and a few malformed events. Deterministic for a
//! seed, so `demo`, `produce` and the tests can say exactly what Target
//! should end up with.

use crate::mapping::{Decision, Mapping};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::json;
use std::borrow::Borrow;
use std::collections::BTreeMap;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Events in total.
    pub events: u64,
    /// Distinct customers.
    pub customers: u64,
    /// Zipf exponent for picking customers; 0 picks uniformly.
    pub zipf: f64,
    /// Share of malformed events (dead letters).
    pub bad_ratio: f64,
    /// Share of anonymous purchases (skipped).
    pub anonymous_ratio: f64,
    /// Share of returns among identified events.
    pub return_ratio: f64,
    /// Seed of the random sequence.
    pub seed: u64,
    /// Unix time (seconds) of the first event; events are one second apart.
    pub start_unix: i64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            events: 50_000,
            customers: 10_000,
            zipf: 0.0,
            bad_ratio: 0.001,
            anonymous_ratio: 0.05,
            return_ratio: 0.05,
            seed: 42,
            start_unix: 1_795_000_000, // 2026-11-17
        }
    }
}

/// What an event is, for whoever checks the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A valid event of this customer (index into `customer_id`).
    Customer(u64),
    /// A valid event without identity.
    Anonymous,
    /// Malformed on purpose; the dead-letter class it must get.
    Malformed(&'static str),
}

/// One generated Kafka record.
#[derive(Debug, Clone)]
pub struct GeneratedEvent {
    /// The record key: the customer id (so a profile stays in one partition).
    pub key: Vec<u8>,
    /// The record value.
    pub payload: Vec<u8>,
    /// What it is.
    pub kind: EventKind,
}

/// The id of customer `n`: most have a CRM id (`mbox3rdPartyId`), every
/// tenth only a Target pc id (`mboxPC`).
pub fn customer_id(n: u64) -> (bool, String) {
    if n % 10 == 9 {
        (
            false,
            format!("{:013}-{:06}.01_00", 1_700_000_000_000u64 + n, n),
        )
    } else {
        (true, format!("CRM-{n:07}"))
    }
}

const STORES: [&str; 6] = [
    "S-001",
    "S-002",
    "Zürich-Bahnhof",
    "東京-渋谷",
    "S-104",
    "Lyon-Part-Dieu",
];
const CHANNELS: [&str; 4] = ["store", "online", "mobile", "kiosk"];
const CATEGORIES: [&str; 8] = [
    "shoes",
    "bags",
    "socks",
    "Café & Thé",
    "électronique",
    "toys",
    "garden",
    "books",
];
const TIERS: [&str; 3] = ["bronze", "silver", "gold"];
const OFFSETS: [&str; 4] = ["Z", "+01:00", "-05:00", "+05:30"];

/// An endless-until-`events` iterator of generated records.
pub struct Generator {
    config: GeneratorConfig,
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
    index: u64,
}

impl Generator {
    /// A generator for this configuration.
    pub fn new(config: GeneratorConfig) -> Generator {
        let zipf = (config.zipf > 0.0)
            .then(|| Zipf::new(config.customers.max(1) as f64, config.zipf).ok())
            .flatten();
        Generator {
            rng: SmallRng::seed_from_u64(config.seed),
            zipf,
            index: 0,
            config,
        }
    }

    fn pick_customer(&mut self) -> u64 {
        match &self.zipf {
            Some(zipf) => {
                (zipf.sample(&mut self.rng) as u64).saturating_sub(1) % self.config.customers.max(1)
            }
            None => self.rng.random_range(0..self.config.customers.max(1)),
        }
    }

    fn occurred_at(&mut self) -> String {
        let at = self.config.start_unix + self.index as i64;
        let offset = OFFSETS[self.rng.random_range(0..OFFSETS.len())];
        let shift = match offset {
            "+01:00" => 3600,
            "-05:00" => -5 * 3600,
            "+05:30" => 5 * 3600 + 1800,
            _ => 0,
        };
        let local = time::OffsetDateTime::from_unix_timestamp(at + shift)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let millis = self.rng.random_range(0..1000);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}{offset}",
            local.year(),
            u8::from(local.month()),
            local.day(),
            local.hour(),
            local.minute(),
            local.second()
        )
    }

    fn valid(&mut self, customer: Option<u64>) -> serde_json::Value {
        let lines = self.rng.random_range(0..=4);
        let mut total_cents = 0u64;
        let items: Vec<serde_json::Value> = (0..lines)
            .map(|i| {
                let quantity = self.rng.random_range(1..=3u64);
                let cents = self.rng.random_range(50..20_000u64);
                total_cents += quantity * cents;
                let mut item = json!({
                    "sku": format!("SKU-{:05}", self.rng.random_range(0..50_000)),
                    "quantity": quantity,
                    "unit_price": format!("{}.{:02}", cents / 100, cents % 100),
                });
                if i % 4 != 3 {
                    item["category"] =
                        CATEGORIES[self.rng.random_range(0..CATEGORIES.len())].into();
                }
                item
            })
            .collect();
        let is_return = customer.is_some() && self.rng.random_bool(self.config.return_ratio);
        let mut customer_json = json!({});
        if let Some(n) = customer {
            let (crm, id) = customer_id(n);
            customer_json[if crm { "third_party_id" } else { "pc_id" }] = id.into();
            if n % 3 != 0 {
                customer_json["loyalty_tier"] = TIERS[(n % 3) as usize].into();
            }
        }
        json!({
            "schema_version": 1,
            "event_id": format!("evt-{:010}", self.index),
            "event_type": if is_return { "return" } else { "sale" },
            "occurred_at": self.occurred_at(),
            "store_id": STORES[self.rng.random_range(0..STORES.len())],
            "channel": CHANNELS[self.rng.random_range(0..CHANNELS.len())],
            "customer": customer_json,
            "currency": "EUR",
            "total": format!("{}.{:02}", total_cents / 100, total_cents % 100),
            "items": items,
        })
    }

    fn malformed(&mut self) -> (Vec<u8>, &'static str) {
        match self.rng.random_range(0..4) {
            0 => (b"{\"event_id\": \"truncated".to_vec(), "invalid_json"),
            1 => (b"\xff\xfe not utf-8".to_vec(), "invalid_json"),
            2 => {
                let mut event = self.valid(Some(0));
                event["currency"] = "euro".into();
                (event.to_string().into_bytes(), "schema_violation")
            }
            _ => {
                let mut event = self.valid(Some(0));
                event["schema_version"] = 2.into();
                (event.to_string().into_bytes(), "unsupported_version")
            }
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedEvent;

    fn next(&mut self) -> Option<GeneratedEvent> {
        if self.index >= self.config.events {
            return None;
        }
        let roll: f64 = self.rng.random();
        let event = if roll < self.config.bad_ratio {
            let (payload, class) = self.malformed();
            GeneratedEvent {
                key: b"malformed".to_vec(),
                payload,
                kind: EventKind::Malformed(class),
            }
        } else if roll < self.config.bad_ratio + self.config.anonymous_ratio {
            let event = self.valid(None);
            GeneratedEvent {
                key: event["store_id"]
                    .as_str()
                    .unwrap_or("store")
                    .as_bytes()
                    .to_vec(),
                payload: event.to_string().into_bytes(),
                kind: EventKind::Anonymous,
            }
        } else {
            let n = self.pick_customer();
            let event = self.valid(Some(n));
            GeneratedEvent {
                key: customer_id(n).1.into_bytes(),
                payload: event.to_string().into_bytes(),
                kind: EventKind::Customer(n),
            }
        };
        self.index += 1;
        Some(event)
    }
}

/// What Target must end up with for generated events: each customer's
/// attributes (by customer number), the updates of its events folded in the
/// order given, as `Mapping::default()` derives them.
pub fn expected_profiles<E: Borrow<GeneratedEvent>>(
    events: impl IntoIterator<Item = E>,
) -> BTreeMap<u64, BTreeMap<String, String>> {
    let mapping = Mapping::default();
    let mut out: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for event in events {
        let event = event.borrow();
        if let (EventKind::Customer(n), Decision::Update(update)) =
            (&event.kind, mapping.decide(&event.payload))
        {
            let profile = out.entry(*n).or_default();
            for attribute in update.attributes {
                profile.insert(attribute.name.to_string(), attribute.value.into());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_profiles_fold_each_customers_updates_in_order() {
        let event = |kind, store: &str, total: &str| GeneratedEvent {
            key: b"CRM-7".to_vec(),
            payload: format!(
                r#"{{"event_id":"e","event_type":"sale","occurred_at":"2026-11-28T10:15:00Z",
                "store_id":"{store}","customer":{{"third_party_id":"CRM-7"}},"currency":"EUR",
                "total":"{total}","items":[]}}"#
            )
            .into_bytes(),
            kind,
        };
        let events = [
            event(EventKind::Customer(7), "S1", "1.00"),
            event(EventKind::Customer(7), "S2", "2.00"),
            event(EventKind::Anonymous, "S3", "3.00"),
            event(EventKind::Malformed("schema_violation"), "S4", "x"),
        ];
        let expected = expected_profiles(&events);
        assert_eq!(expected.keys().collect::<Vec<_>>(), [&7]);
        let profile = &expected[&7];
        assert_eq!(profile["lastPurchaseStore"], "S2");
        assert_eq!(profile["lastPurchaseTotal"], "2.00");
        let last = Mapping::default().decide(&events[1].payload);
        let Decision::Update(last) = last else {
            panic!("{last:?}")
        };
        assert!(last.attributes.iter().all(|a| profile[&*a.name] == a.value));
    }

    #[test]
    fn generated_events_are_what_they_claim_to_be() {
        let mapping = Mapping::default();
        let config = GeneratorConfig {
            events: 3000,
            customers: 100,
            bad_ratio: 0.05,
            ..GeneratorConfig::default()
        };
        let mut seen = [0usize; 3];
        for event in Generator::new(config) {
            match (event.kind, mapping.decide(&event.payload)) {
                (EventKind::Customer(n), Decision::Update(update)) => {
                    assert_eq!(update.identity.id(), customer_id(n).1);
                    seen[0] += 1;
                }
                (EventKind::Anonymous, Decision::Skip(_)) => seen[1] += 1,
                (EventKind::Malformed(class), Decision::DeadLetter(error)) => {
                    assert_eq!(error.class.as_str(), class);
                    seen[2] += 1;
                }
                (kind, decision) => panic!("{kind:?} became {decision:?}"),
            }
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let a: Vec<_> = Generator::new(GeneratorConfig {
            events: 50,
            ..Default::default()
        })
        .map(|e| e.payload)
        .collect();
        let b: Vec<_> = Generator::new(GeneratorConfig {
            events: 50,
            ..Default::default()
        })
        .map(|e| e.payload)
        .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn zipf_traffic_favours_few_customers() {
        let config = GeneratorConfig {
            events: 5000,
            customers: 1000,
            zipf: 1.1,
            bad_ratio: 0.0,
            anonymous_ratio: 0.0,
            ..Default::default()
        };
        let top = Generator::new(config)
            .filter(|e| e.kind == EventKind::Customer(0))
            .count();
        assert!(
            top > 200,
            "customer 0 should be the most frequent, got {top}"
        );
    }
}
