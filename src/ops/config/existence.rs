//! `[existence]` and `[verify]`: whether Target has a profile before a single
//! update is sent to it, the budget of profile fetches that find out, and the
//! read-back verification of accepted updates that spends the same budget.
//!
//! Target's single update API only updates: an update for a profile Target does
//! not have (never seen on the web, or expired after Adobe's 14 days of
//! inactivity) is answered 2xx and changes nothing. Fetches
//! (`GET /rest/v1/profiles/...`) are neither single updates nor bulk calls, so
//! they have a budget of their own, split between the pods by partition share
//! like `rate_limit`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Adobe's default profile lifetime: a profile inactive this long is gone.
pub const ADOBE_PROFILE_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);

/// `existence.policy`: what to do with an update for a profile Target may not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistencePolicy {
    /// Unknown profiles go through bulk v2 batches, which create them.
    #[default]
    Create,
    /// Updates for profiles Target does not have are dead-lettered as
    /// `profile_not_found`.
    DeadLetter,
    /// Every 2xx counts as applied, without looking (tenants whose profiles all
    /// come from the web).
    Trust,
}

impl ExistencePolicy {
    /// The name used in the configuration, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ExistencePolicy::Create => "create",
            ExistencePolicy::DeadLetter => "dead_letter",
            ExistencePolicy::Trust => "trust",
        }
    }
}

/// `[existence]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExistenceSettings {
    /// What to do with profiles Target may not have.
    pub policy: ExistencePolicy,
    /// Profile fetches per second for the whole group (separate from
    /// `rate_limit.per_second` and the daily quota), split by partition share.
    pub fetch_per_second: f64,
    /// Group-wide fetch burst, split likewise (at least 1 per pod).
    pub fetch_burst: u32,
    /// How long a profile a fetch found is trusted to exist; below Adobe's
    /// 14-day inactivity expiry.
    pub confirmed_ttl_ms: u64,
    /// Confirmed profiles remembered per pod (the oldest are forgotten first).
    pub max_profiles: u64,
}

impl Default for ExistenceSettings {
    fn default() -> Self {
        ExistenceSettings {
            policy: ExistencePolicy::Create,
            fetch_per_second: 5.0,
            fetch_burst: 5,
            confirmed_ttl_ms: 86_400_000,
            max_profiles: 100_000,
        }
    }
}

impl ExistenceSettings {
    /// `confirmed_ttl_ms` as a duration.
    pub fn confirmed_ttl(&self) -> Duration {
        Duration::from_millis(self.confirmed_ttl_ms)
    }

    /// Every problem with these values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.fetch_per_second.is_finite() && self.fetch_per_second > 0.0) {
            problems.push(
                "existence.fetch_per_second: must be a number above 0 (the whole group's profile fetches per second)"
                    .to_owned(),
            );
        }
        if self.fetch_burst < 1 {
            problems.push("existence.fetch_burst: must be at least 1".to_owned());
        }
        let lifetime_ms = ADOBE_PROFILE_LIFETIME.as_millis() as u64;
        if self.confirmed_ttl_ms == 0 || self.confirmed_ttl_ms >= lifetime_ms {
            problems.push(format!(
                "existence.confirmed_ttl_ms: {} must be above 0 and below {lifetime_ms} (Adobe expires a profile after 14 days without activity, so a confirmation older than that proves nothing)",
                self.confirmed_ttl_ms
            ));
        }
        if self.max_profiles < 1 {
            problems.push("existence.max_profiles: must be at least 1".to_owned());
        }
        problems
    }
}

/// `[verify]`: read-back verification of accepted updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySettings {
    /// The share of profiles whose accepted updates are read back (0 is off,
    /// 1 is every profile).
    pub sample_ratio: f64,
    /// How long after acceptance a profile is read back (Adobe applies updates
    /// "generally under an hour").
    pub delay_ms: u64,
    /// How often the shares are logged.
    pub interval_ms: u64,
    /// Profiles waiting for their read-back at most; more are not sampled.
    pub max_pending: u64,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            sample_ratio: 0.0,
            delay_ms: 600_000,
            interval_ms: 60_000,
            max_pending: 10_000,
        }
    }
}

impl VerifySettings {
    /// Whether any profile is read back.
    pub fn enabled(&self) -> bool {
        self.sample_ratio > 0.0
    }

    /// `delay_ms` as a duration.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    /// `interval_ms` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Every problem with these values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.sample_ratio.is_finite() && (0.0..=1.0).contains(&self.sample_ratio)) {
            problems.push("verify.sample_ratio: must be 0 (off) to 1 (every profile)".to_owned());
        }
        if self.interval_ms == 0 {
            problems.push("verify.interval_ms: must be above 0".to_owned());
        }
        if self.max_pending < 1 {
            problems.push("verify.max_pending: must be at least 1".to_owned());
        }
        if self.delay_ms >= ADOBE_PROFILE_LIFETIME.as_millis() as u64 {
            problems.push(
                "verify.delay_ms: must be below 14 days (Adobe's profile lifetime)".to_owned(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::*;

    #[test]
    fn the_defaults_create_unknown_profiles_and_verify_nothing() {
        let settings = Settings::default();
        assert_eq!(settings.existence.policy, ExistencePolicy::Create);
        assert_eq!(settings.existence.fetch_per_second, 5.0);
        assert_eq!(settings.existence.fetch_burst, 5);
        assert_eq!(
            settings.existence.confirmed_ttl(),
            Duration::from_secs(86_400)
        );
        assert_eq!(settings.existence.max_profiles, 100_000);
        assert!(!settings.verify.enabled());
        assert_eq!(settings.verify.delay(), Duration::from_secs(600));
        assert_eq!(settings.verify.interval(), Duration::from_secs(60));
        assert_eq!(settings.verify.max_pending, 10_000);
        assert!(settings.existence.problems().is_empty());
        assert!(settings.verify.problems().is_empty());
    }

    #[test]
    // figment's `Jail` closures return `figment::Error`, which is large; the
    // signature is the library's.
    #[allow(clippy::result_large_err)]
    fn the_policy_and_budgets_are_read_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PPS_EXISTENCE__FETCH_PER_SECOND", "2.5");
            jail.set_env("PPS_VERIFY__SAMPLE_RATIO", "0.01");
            let settings = Settings::load_text(
                "[existence]\npolicy = \"dead_letter\"\nconfirmed_ttl_ms = 3600000\n\
                 [verify]\ndelay_ms = 5000\n",
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(settings.existence.policy, ExistencePolicy::DeadLetter);
            assert_eq!(settings.existence.fetch_per_second, 2.5);
            assert_eq!(settings.existence.confirmed_ttl_ms, 3_600_000);
            assert_eq!(settings.verify.sample_ratio, 0.01);
            assert_eq!(settings.verify.delay_ms, 5_000);
            for policy in ["create", "trust"] {
                let text = format!("[existence]\npolicy = \"{policy}\"\n");
                let settings = Settings::load_text(&text).map_err(|e| e.to_string())?;
                assert_eq!(settings.existence.policy.as_str(), policy);
            }
            let error = Settings::load_text("[existence]\npolicy = \"hope\"\n").unwrap_err();
            assert!(error.problems[0].starts_with("existence.policy"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_confirmation_must_expire_before_adobe_forgets_the_profile() {
        let mut existence = ExistenceSettings {
            confirmed_ttl_ms: 14 * 24 * 3600 * 1000,
            ..ExistenceSettings::default()
        };
        let text = existence.problems().join("\n");
        assert!(
            text.contains(
                "existence.confirmed_ttl_ms: 1209600000 must be above 0 and below 1209600000"
            ),
            "{text}"
        );
        existence.confirmed_ttl_ms = 14 * 24 * 3600 * 1000 - 1;
        assert!(existence.problems().is_empty());
        existence.confirmed_ttl_ms = 0;
        assert_eq!(existence.problems().len(), 1);
    }

    #[test]
    fn every_bad_value_is_named() {
        let existence = ExistenceSettings {
            fetch_per_second: f64::NAN,
            fetch_burst: 0,
            max_profiles: 0,
            ..ExistenceSettings::default()
        };
        let text = existence.problems().join("\n");
        for key in ["fetch_per_second", "fetch_burst", "max_profiles"] {
            assert!(text.contains(&format!("existence.{key}:")), "{text}");
        }
        let verify = VerifySettings {
            sample_ratio: 1.5,
            interval_ms: 0,
            max_pending: 0,
            delay_ms: u64::MAX,
        };
        let text = verify.problems().join("\n");
        for key in ["sample_ratio", "interval_ms", "max_pending", "delay_ms"] {
            assert!(text.contains(&format!("verify.{key}:")), "{text}");
        }
        let mut settings = Settings::default();
        settings.target.client_code = "acme".into();
        settings.verify.sample_ratio = -0.1;
        settings.existence.fetch_burst = 0;
        let all = settings.value_problems().join("\n");
        assert!(all.contains("verify.sample_ratio"), "{all}");
        assert!(all.contains("existence.fetch_burst"), "{all}");
    }
}
