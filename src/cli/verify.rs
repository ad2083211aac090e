//! `verify`: a one-off read-back check. NDJSON events (a file or stdin, as
//! `derive` reads them) are mapped as `run` maps them; per profile the latest
//! value of every attribute is what Target should hold (the event with the
//! latest `occurred_at` wins, then the later line; empty values are left out,
//! as Adobe never clears with them). Each profile is fetched through the
//! profile fetch API within `existence.fetch_per_second` (all of it: a one-off
//! owns no partitions) and compared.
//!
//! Output: one JSON object per profile on stdout, in order of first
//! appearance, `{"identity":{"mbox3rdPartyId":"CRM-1"},"result":"applied"}`
//! with `mismatches` (attribute, expected, found) or `detail` when there is
//! something to say; a summary line on stderr. Results: `applied`,
//! `not_yet_applied` (missing attributes, or values Target set before the
//! profile's latest event), `not_found`, `different`, `failed` (no usable
//! answer). Exit code 0 when every profile read back is applied, 1 otherwise
//! (also when there was no profile to check), 2 for an unusable configuration
//! or input file.

use super::{ConfigArg, EXIT_USAGE};
use crate::delivery::fetch_budget::{FetchBudget, ProfileFetcher};
use crate::delivery::gate::{RateShare, SendGate};
use crate::delivery::verify::task::{judge_read_back, retry_delay};
use crate::delivery::verify::{compare, Mismatch, ReadBack, Tally};
use crate::event::{Identity, Timestamp};
use crate::mapping::{Decision, Mapping};
use crate::ops::config::{ConfigError, Settings};
use crate::ops::metrics::Metrics;
use crate::target::fetch::{FetchClient, FetchOutcome};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Fetches under way at once (the budget paces them).
const CONCURRENT: usize = 8;

/// Options of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// NDJSON events to check; standard input when absent.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
}

/// What one profile should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedProfile {
    /// Whose profile.
    pub identity: Identity,
    /// Per attribute: value, and the `(occurred_at, line)` that set it.
    values: BTreeMap<String, (String, (Timestamp, u64))>,
    /// The latest `occurred_at` among its events.
    latest: Timestamp,
}

impl ExpectedProfile {
    /// The attributes and values to compare.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(name, (value, _))| (name.clone(), value.clone()))
            .collect()
    }
}

/// Every profile the events update, in order of first appearance.
pub fn expected_profiles(
    mapping: &Mapping,
    input: impl BufRead,
) -> std::io::Result<Vec<ExpectedProfile>> {
    let mut profiles: Vec<ExpectedProfile> = Vec::new();
    let mut index: HashMap<Identity, usize> = HashMap::new();
    super::derive::for_each_line(input, |number, text| {
        let Decision::Update(update) = mapping.decide(text) else {
            return Ok(());
        };
        let at = (update.occurred_at, number);
        let position = *index.entry(update.identity.clone()).or_insert_with(|| {
            profiles.push(ExpectedProfile {
                identity: update.identity.clone(),
                values: BTreeMap::new(),
                latest: update.occurred_at,
            });
            profiles.len() - 1
        });
        let profile = &mut profiles[position];
        profile.latest = profile.latest.max(update.occurred_at);
        for attribute in update.attributes {
            if attribute.value.is_empty() {
                continue;
            }
            let newer = profile
                .values
                .get(&*attribute.name)
                .is_none_or(|(_, set_at)| *set_at <= at);
            if newer {
                profile
                    .values
                    .insert(attribute.name.to_string(), (attribute.value.into(), at));
            }
        }
        Ok(())
    })?;
    Ok(profiles)
}

/// One profile's line of output.
#[derive(Debug, Serialize)]
struct Line {
    identity: BTreeMap<&'static str, String>,
    result: &'static str,
    #[serde(skip)]
    read_back: ReadBack,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mismatches: Vec<MismatchJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct MismatchJson {
    attribute: String,
    expected: String,
    found: Option<String>,
}

/// Fetches one profile (trying again a few times) and judges it.
async fn check(fetcher: &ProfileFetcher, profile: &ExpectedProfile) -> Line {
    let attributes = profile.attributes();
    let reference = profile.latest.as_offset_date_time();
    let mut attempts = 0;
    let (result, mismatches, detail) = loop {
        if !profile.identity.is_fetchable() {
            let detail =
                "Target's profile fetch API cannot address this id (it reads it as a path step)";
            break (ReadBack::Failed, Vec::new(), Some(detail.to_owned()));
        }
        let outcome = fetcher.fetch(&profile.identity).await;
        match judge_read_back(&attributes, reference, &outcome) {
            Ok(result) => {
                let mismatches: Vec<Mismatch> = match &outcome {
                    FetchOutcome::Found { attributes: found } => {
                        compare(&attributes, found, reference).1
                    }
                    _ => Vec::new(),
                };
                let detail = match outcome {
                    FetchOutcome::Rejected { status } => {
                        Some(format!("Target refused the fetch with HTTP {status}"))
                    }
                    _ => None,
                };
                break (result, mismatches, detail);
            }
            Err(retry_after) => match retry_delay(attempts, retry_after) {
                Some(delay) => {
                    attempts += 1;
                    tokio::time::sleep(delay).await;
                }
                None => {
                    let detail = match outcome {
                        FetchOutcome::AuthFailed { status } => {
                            format!("Target refused the credentials (HTTP {status}); check target.token_file")
                        }
                        FetchOutcome::Retry {
                            status: Some(status),
                            ..
                        } => format!(
                            "no usable answer after {} tries; last HTTP {status}",
                            attempts + 1
                        ),
                        _ => format!("no answer after {} tries", attempts + 1),
                    };
                    break (ReadBack::Failed, Vec::new(), Some(detail));
                }
            },
        }
    };
    Line {
        identity: BTreeMap::from([(profile.identity.param(), profile.identity.id().to_owned())]),
        result: result.as_str(),
        read_back: result,
        mismatches: mismatches
            .into_iter()
            .map(|m| MismatchJson {
                attribute: m.name,
                expected: m.expected,
                found: m.found,
            })
            .collect(),
        detail,
    }
}

pub(super) fn main(args: VerifyArgs) -> ExitCode {
    let settings = match load(&args.config) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mapping = match Mapping::from_settings(&settings.mapping) {
        Ok(mapping) => mapping,
        Err(problems) => {
            eprintln!("{}", ConfigError { problems });
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let profiles = match &args.input {
        Some(path) => std::fs::File::open(path)
            .and_then(|file| expected_profiles(&mapping, std::io::BufReader::new(file)))
            .map_err(|error| format!("--input {}: {error}", path.display())),
        None => expected_profiles(&mapping, std::io::stdin().lock())
            .map_err(|error| format!("standard input: {error}")),
    };
    let profiles = match profiles {
        Ok(profiles) => profiles,
        Err(error) => {
            eprintln!("verify: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let tally = runtime.block_on(run(&settings, &profiles));
    match tally {
        Ok(tally) => {
            eprintln!("verify: {tally}");
            if tally.all_applied() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("verify: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The settings `verify` needs: Target's and the fetch budget, checked.
fn load(config: &ConfigArg) -> Result<Settings, ConfigError> {
    let settings = Settings::load(config.config.as_deref())?;
    let problems: Vec<String> = settings
        .value_problems()
        .into_iter()
        .filter(|problem| {
            ["target.", "existence.", "mapping"]
                .iter()
                .any(|prefix| problem.starts_with(prefix))
        })
        .collect();
    ConfigError::from_problems(problems).map(|()| settings)
}

/// The fetches of `verify`: the whole fetch budget (`existence.fetch_per_second`),
/// and a gate of their own that holds `Retry-After` pauses. Target throttles
/// the client, not one profile, so one fetch's `Retry-After` holds back every
/// fetch, as it does in the service.
fn fetcher(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<ProfileFetcher> {
    let existence = &settings.existence;
    let share = RateShare {
        per_second: existence.fetch_per_second,
        burst: existence.fetch_burst,
    };
    Ok(ProfileFetcher {
        client: Arc::new(FetchClient::new(&settings.target, CONCURRENT)?),
        budget: Arc::new(FetchBudget::whole(
            share.per_second,
            share.burst,
            metrics.clone(),
        )),
        metrics,
        // Only its pause is used: the budget above paces the fetches, and
        // refused credentials end a profile's check (no probing).
        gate: Some(Arc::new(SendGate::new(share, settings.delivery.retry()))),
    })
}

async fn run(settings: &Settings, profiles: &[ExpectedProfile]) -> anyhow::Result<Tally> {
    let fetcher = fetcher(settings, Arc::new(Metrics::new()))?;
    let mut lines = futures::stream::iter(profiles)
        .map(|profile| check(&fetcher, profile))
        .buffered(CONCURRENT);
    let mut tally = Tally::default();
    let mut stdout = std::io::stdout().lock();
    while let Some(line) = lines.next().await {
        tally.add(line.read_back);
        serde_json::to_writer(&mut stdout, &line)?;
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> String {
        format!("{line}\n")
    }

    #[tokio::test]
    async fn one_fetchs_retry_after_holds_back_the_next_profiles_fetch() {
        let (address, arrivals) = crate::target::client::canned_server(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n",
            crate::target::client::Then::Next,
        )
        .await;
        let mut settings = Settings::default();
        settings.target.client_code = "acme".into();
        settings.target.base_url = format!("http://{address}");
        settings.existence.fetch_per_second = 1000.0;
        settings.existence.fetch_burst = 10;
        let fetcher = fetcher(&settings, Arc::new(Metrics::new())).expect("fetcher");
        assert!(matches!(
            fetcher.fetch(&Identity::ThirdParty("CRM-1".into())).await,
            FetchOutcome::Retry {
                retry_after: Some(pause),
                ..
            } if pause == std::time::Duration::from_secs(1)
        ));
        // Another profile, well within the budget: it waits out the pause.
        fetcher.fetch(&Identity::ThirdParty("CRM-2".into())).await;
        let arrivals = arrivals.lock().expect("arrivals").clone();
        assert_eq!(arrivals.len(), 2);
        let apart = arrivals[1] - arrivals[0];
        assert!(
            apart >= std::time::Duration::from_millis(900),
            "the second profile's fetch came {apart:?} after Target asked for 1 s"
        );
    }

    #[test]
    fn the_latest_event_of_each_profile_decides_what_it_should_hold() {
        let sale = |id: &str, at: &str, store: &str, total: &str| {
            event(&format!(
                r#"{{"event_id":"e","event_type":"sale","occurred_at":"{at}","store_id":"{store}","customer":{{"third_party_id":"{id}"}},"currency":"EUR","total":"{total}","items":[]}}"#
            ))
        };
        let input = [
            sale("CRM-1", "2026-11-28T10:00:00Z", "S1", "10"),
            sale("CRM-2", "2026-11-28T10:00:00Z", "S2", "20"),
            // Later line, earlier event: does not win.
            sale("CRM-1", "2026-11-28T09:00:00Z", "S0", "5"),
            "\n".to_owned(),
            r#"{"event_id":"e","event_type":"sale","occurred_at":"2026-11-28T10:00:00Z","store_id":"S1","customer":{},"currency":"EUR","total":1,"items":[]}"#.to_owned() + "\n",
            "not json\n".to_owned(),
            sale("CRM-1", "2026-11-28T10:00:00Z", "S3", "30"),
        ]
        .concat();
        let profiles = expected_profiles(&Mapping::default(), input.as_bytes()).unwrap();
        assert_eq!(
            profiles.len(),
            2,
            "anonymous and malformed events name no profile"
        );
        assert_eq!(profiles[0].identity, Identity::ThirdParty("CRM-1".into()));
        let first = profiles[0].attributes();
        assert_eq!(
            first["lastPurchaseStore"], "S3",
            "same time: the later line wins"
        );
        assert_eq!(first["lastPurchaseTotal"], "30.00");
        assert_eq!(profiles[1].attributes()["lastPurchaseStore"], "S2");
        assert_eq!(
            profiles[0].latest,
            crate::event::parse_rfc3339("2026-11-28T10:00:00Z").unwrap()
        );
    }
}
