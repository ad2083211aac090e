//! A generated workload and the profiles Target must end up with.

use pos_profile_sync::generator::{
    self, customer_id, EventKind, GeneratedEvent, Generator, GeneratorConfig,
};
use pps_target_simulator::SimulatorHandle;
use std::collections::BTreeMap;

/// Attributes by name: a profile as the simulator keeps it.
pub type Attributes = BTreeMap<String, String>;

/// A workload and what Target must end up with.
pub struct Workload {
    /// The events, in the order they are produced.
    pub events: Vec<GeneratedEvent>,
}

impl Workload {
    /// Every event the generator makes with `config`.
    pub fn new(config: GeneratorConfig) -> Workload {
        Workload {
            events: Generator::new(config).collect(),
        }
    }

    /// Events that make a Target call (one each without coalescing).
    pub fn customer_events(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Customer(_)))
            .count()
    }

    /// Malformed events by the class they must be dead-lettered with.
    pub fn malformed(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for event in &self.events {
            if let EventKind::Malformed(class) = event.kind {
                *out.entry(class).or_default() += 1;
            }
        }
        out
    }

    /// Every profile's expected attributes: the updates folded in order.
    pub fn expected_profiles(&self) -> BTreeMap<u64, Attributes> {
        generator::expected_profiles(&self.events)
    }

    /// Profiles whose state at the simulator differs from the expected one,
    /// each with both states.
    pub fn lost_profiles(&self, sim: &SimulatorHandle) -> Vec<String> {
        let expected = self.expected_profiles();
        lost_profiles(&expected, sim)
            .into_iter()
            .map(|n| {
                let (_, id) = customer_id(n);
                format!(
                    "{id}: expected {:?}, got {:?}",
                    expected[&n],
                    profile_at(sim, n)
                )
            })
            .collect()
    }
}

/// Customer `n`'s profile at the simulator, if it has one.
pub fn profile_at(simulator: &SimulatorHandle, n: u64) -> Option<Attributes> {
    let (crm, id) = customer_id(n);
    if crm {
        simulator.profile_third_party(&id)
    } else {
        simulator.profile_pc(&id)
    }
}

/// The customers whose profile at the simulator differs from the expected one.
pub fn lost_profiles(
    expected: &BTreeMap<u64, Attributes>,
    simulator: &SimulatorHandle,
) -> Vec<u64> {
    expected
        .iter()
        .filter(|(n, attributes)| profile_at(simulator, **n).as_ref() != Some(*attributes))
        .map(|(n, _)| *n)
        .collect()
}
