//! What can go wrong on the bulk path, as plain data: how long batches take, which get
//! stuck, which rows fail, Adobe's limit of calls a minute, and the quirks of Adobe's
//! status answers (a bare `&` in the status URL, status URLs on `http://`, statuses
//! forgotten after newer batches).

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::faults::InvalidFaults;

/// Adobe's documented limit for bulk and admin calls together.
pub const ADOBE_CALLS_PER_MINUTE: u32 = 50;

/// How many batch statuses Adobe keeps per client ("only the previous 10 statuses are
/// stored").
pub const ADOBE_STATUSES_KEPT: u32 = 10;

/// The bulk path's faults (`"bulk"` inside [`super::super::Faults`]). The default is a
/// well-behaved Target: batches complete at once, none is stuck, no row fails, status
/// URLs are well-formed and every status is kept, and Adobe's 50 calls a minute are
/// enforced.
///
/// As JSON, every field is optional:
/// `{"completion_delay_ms":200,"stuck_probability":0.1,"row_failure_ids":["CRM-9"],
///   "row_failure_probability":0.01,"calls_per_minute":50,
///   "status_url_bare_ampersand":true,"status_url_plain_http":true,"statuses_kept":10}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkFaults {
    /// A batch is `incomplete` until this long after it was submitted.
    pub completion_delay_ms: u64,
    /// Probability that a submitted batch is `stuck` for good (never applied).
    pub stuck_probability: f64,
    /// Rows with these ids are reported `failed` and not applied.
    pub row_failure_ids: Vec<String>,
    /// Probability that any other row is reported `failed` and not applied.
    pub row_failure_probability: f64,
    /// Bulk calls (submits and status polls together) allowed in any 60 s; more are
    /// answered 503. 0 means no limit.
    pub calls_per_minute: u32,
    /// The submit answer's status URL reads `...batchStatus?client=C&batchId=ID` with
    /// the `&` left bare inside the XML, as in Adobe's older sample.
    pub status_url_bare_ampersand: bool,
    /// The status URL says `http://` even when the simulator serves HTTPS, as Adobe's
    /// edge hosts do (`http://mboxedge45.tt.omtrdc.net/...`).
    pub status_url_plain_http: bool,
    /// Only the statuses of this many latest batches are kept; an older batch's status
    /// is answered as an unknown batch's (it is still applied). Adobe keeps 10; 0 keeps
    /// every status.
    pub statuses_kept: u32,
}

impl Default for BulkFaults {
    fn default() -> Self {
        Self {
            completion_delay_ms: 0,
            stuck_probability: 0.0,
            row_failure_ids: Vec::new(),
            row_failure_probability: 0.0,
            calls_per_minute: ADOBE_CALLS_PER_MINUTE,
            status_url_bare_ampersand: false,
            status_url_plain_http: false,
            statuses_kept: 0,
        }
    }
}

impl BulkFaults {
    /// Checks that the probabilities are between 0 and 1.
    pub fn validate(&self) -> Result<(), InvalidFaults> {
        for p in [self.stuck_probability, self.row_failure_probability] {
            if !(0.0..=1.0).contains(&p) {
                return Err(InvalidFaults::Probability(p));
            }
        }
        Ok(())
    }

    /// Whether a newly submitted batch gets stuck.
    pub(crate) fn draw_stuck(&self, rng: &mut impl Rng) -> bool {
        self.stuck_probability > 0.0 && rng.random::<f64>() < self.stuck_probability
    }

    /// Whether the row of profile `id` fails.
    pub(crate) fn draw_row_failure(&self, id: &str, rng: &mut impl Rng) -> bool {
        self.row_failure_ids.iter().any(|failing| failing == id)
            || (self.row_failure_probability > 0.0
                && rng.random::<f64>() < self.row_failure_probability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn the_default_only_enforces_adobes_call_limit() {
        let faults = BulkFaults::default();
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(faults.calls_per_minute, 50);
        assert!((0..1000).all(|_| !faults.draw_stuck(&mut rng)));
        assert!((0..1000).all(|_| !faults.draw_row_failure("x", &mut rng)));
    }

    #[test]
    fn listed_ids_always_fail_and_probabilities_are_followed() {
        let faults = BulkFaults {
            row_failure_ids: vec!["bad".into()],
            row_failure_probability: 0.25,
            stuck_probability: 1.0,
            ..BulkFaults::default()
        };
        let mut rng = SmallRng::seed_from_u64(2);
        assert!((0..100).all(|_| faults.draw_row_failure("bad", &mut rng)));
        let failed = (0..100_000)
            .filter(|_| faults.draw_row_failure("good", &mut rng))
            .count();
        assert!((24_000..26_000).contains(&failed), "{failed}");
        assert!(faults.draw_stuck(&mut rng));
    }

    #[test]
    fn probabilities_outside_zero_to_one_are_refused() {
        let bad = BulkFaults {
            stuck_probability: 1.5,
            ..BulkFaults::default()
        };
        assert_eq!(bad.validate(), Err(InvalidFaults::Probability(1.5)));
        let nan = BulkFaults {
            row_failure_probability: f64::NAN,
            ..BulkFaults::default()
        };
        assert!(nan.validate().is_err());
        assert_eq!(BulkFaults::default().validate(), Ok(()));
    }

    #[test]
    fn missing_json_fields_take_the_defaults() {
        let faults: BulkFaults =
            serde_json::from_str(r#"{"completion_delay_ms":20}"#).expect("valid");
        assert_eq!(faults.completion_delay_ms, 20);
        assert_eq!(faults.calls_per_minute, ADOBE_CALLS_PER_MINUTE);
        assert!(serde_json::from_str::<BulkFaults>(r#"{"delay":1}"#).is_err());
    }
}
