//! `dlq replay`: re-publishes dead letters of the classes asked for to their
//! source topic (or `--to TOPIC`) once their cause is fixed (`docs/contract.md`,
//! sections 2 and 8). The work is in [`crate::kafka::replay`]; this module
//! turns options into a plan and the outcome into a summary and exit code.

use super::kafka_options::{kafka_settings, parse_property, run_until_signal, Property};
use super::{ConfigArg, EXIT_USAGE};
use crate::kafka::dead_letter::ERROR_CLASSES;
use crate::kafka::replay::rules::{Destination, Filter, ReplayReport};
use crate::kafka::replay::{self, ReplayError, ReplayPlan};
use crate::ops::config::{KafkaSettings, LogFormat};
use clap::builder::PossibleValuesParser;
use std::fmt::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// Options of `dlq`.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// Re-publish dead letters of some classes to their source topic (or --to TOPIC).
    ///
    /// Reads the dead-letter topic with its own consumer group from that
    /// group's committed position (the beginning when it has none) up to the
    /// end offsets seen at start, and commits only after the replayed records
    /// were acknowledged: an interrupted replay resumes where it stopped, a
    /// finished one is not repeated. Records the filters skip are passed over
    /// too; to read them again, use another --group.
    Replay(ReplayArgs),
}

/// Options of `dlq replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Bootstrap servers, comma-separated (overrides kafka.brokers).
    #[arg(long, value_name = "HOST:PORT,...")]
    brokers: Option<String>,
    /// Error class to replay (repeatable).
    #[arg(long = "class", value_name = "CLASS", required = true,
          value_parser = PossibleValuesParser::new(ERROR_CLASSES))]
    classes: Vec<String>,
    /// Publish every replayed record to this topic (which must exist) instead
    /// of its pps-source-topic.
    #[arg(long, value_name = "TOPIC")]
    to: Option<String>,
    /// Per dead-letter partition, the first offset replayed (inclusive);
    /// earlier dead letters are read and skipped.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    from_offset: Option<i64>,
    /// Per dead-letter partition, the offset to stop before (exclusive); later
    /// dead letters are not read and wait for a later run.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(i64).range(0..))]
    until_offset: Option<i64>,
    /// Dead-letter topic to read [default: kafka.dlq_topic].
    #[arg(long, value_name = "TOPIC")]
    dlq_topic: Option<String>,
    /// Consumer group that keeps the replay's position [default: <kafka.group_id>-dlq-replay].
    #[arg(long)]
    group: Option<String>,
    /// Leave dead letters of records that were themselves replayed (they
    /// carry pps-replayed-from): a record that fails again after a replay is
    /// then replayed at most once.
    #[arg(long)]
    skip_replayed: bool,
    /// Count what would be replayed, by class; produce and commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Extra librdkafka property for this run (repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    properties: Vec<Property>,
}

pub(super) fn main(args: DlqArgs) -> ExitCode {
    match args.command {
        DlqCommand::Replay(args) => replay_main(args),
    }
}

/// The plan these options stand for, or what to fix.
fn plan(args: &ReplayArgs, kafka: &KafkaSettings) -> Result<ReplayPlan, String> {
    let dlq_topic = args
        .dlq_topic
        .clone()
        .unwrap_or_else(|| kafka.dlq_topic.clone());
    if dlq_topic.trim().is_empty() {
        return Err(
            "no dead-letter topic: set kafka.dlq_topic in --config or pass --dlq-topic".into(),
        );
    }
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("{}-dlq-replay", kafka.group_id));
    if group.trim().is_empty() || group == kafka.group_id {
        return Err(format!(
            "--group {group:?}: give the replay its own consumer group, not the service's"
        ));
    }
    let destination = match &args.to {
        None => Destination::Source,
        Some(to) if to.trim().is_empty() => return Err("--to: give a topic name".into()),
        Some(to) if *to == dlq_topic => {
            return Err(format!(
                "--to {to}: that is the dead-letter topic being read"
            ))
        }
        Some(to) => Destination::Topic(to.clone()),
    };
    if let (Some(from), Some(until)) = (args.from_offset, args.until_offset) {
        if from >= until {
            return Err(format!(
                "--from-offset {from} must be below --until-offset {until} (from is inclusive, until exclusive)"
            ));
        }
    }
    Ok(ReplayPlan {
        dlq_topic,
        group,
        destination,
        filter: Filter {
            classes: args.classes.iter().cloned().collect(),
            from_offset: args.from_offset,
            until_offset: args.until_offset,
            skip_replayed: args.skip_replayed,
        },
        dry_run: args.dry_run,
    })
}

fn replay_main(args: ReplayArgs) -> ExitCode {
    let prepared = kafka_settings(
        args.config.config.as_deref(),
        args.brokers.as_deref(),
        &args.properties,
    )
    .and_then(|kafka| plan(&args, &kafka).map(|plan| (kafka, plan)));
    let (kafka, plan) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("dlq replay: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    crate::ops::telemetry::init(LogFormat::Text);
    let shown = plan.clone();
    // A batch waits for its acknowledgements (at most message.timeout.ms).
    let outcome = match run_until_signal(Duration::from_secs(90), move |stop| {
        replay::run(&kafka, &plan, &stop)
    }) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("dlq replay: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error @ ReplayError::MissingTopic { .. }) = &outcome.result {
        eprintln!("dlq replay: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    // Spans exist once the topic was found and the group's position read.
    let started = !outcome.report.spans.is_empty();
    match nothing_to_replay(&outcome.report, &shown) {
        Some(line) if outcome.result.is_ok() => println!("{line}"),
        _ if started => print!("{}", summary(&outcome.report, &shown)),
        _ => {}
    }
    match outcome.result {
        Err(error) => {
            eprintln!("dlq replay: {error}");
            if started && !shown.dry_run {
                eprintln!("dlq replay: what was acknowledged before is committed; run the same command again to resume");
            }
            ExitCode::FAILURE
        }
        Ok(()) if outcome.interrupted => {
            eprintln!("dlq replay: interrupted; what was acknowledged is committed; run the same command again to resume");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Ok(()) => ExitCode::SUCCESS,
    }
}

/// The one line to print when no partition had anything to read.
fn nothing_to_replay(report: &ReplayReport, plan: &ReplayPlan) -> Option<String> {
    if report.spans.iter().any(|span| !span.is_empty()) {
        return None;
    }
    let topic = &plan.dlq_topic;
    if report.spans.iter().all(|span| span.low >= span.high) {
        return Some(format!("nothing to replay: {topic} is empty"));
    }
    let positions: Vec<String> = report
        .spans
        .iter()
        .map(|span| format!("{}:{}/{}", span.partition, span.start, span.high))
        .collect();
    Some(format!(
        "nothing to replay: group {} has read {topic} up to the end (or --until-offset) in every partition (partition:position/end {}); pass another --group to read it again",
        plan.group,
        positions.join(" ")
    ))
}

/// The summary printed on stdout: replayed, skipped by filter, by class.
fn summary(report: &ReplayReport, plan: &ReplayPlan) -> String {
    let total = &report.total;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "read {} dead letters from {} (group {})",
        total.read(),
        plan.dlq_topic,
        plan.group
    );
    let to = match &plan.destination {
        Destination::Source => "their source topics".to_owned(),
        Destination::Topic(topic) => topic.clone(),
    };
    if plan.dry_run {
        let _ = writeln!(
            out,
            "would replay {} to {to} (dry run: nothing produced, nothing committed)",
            total.replayed
        );
    } else {
        let _ = writeln!(out, "replayed {} to {to}", total.replayed);
    }
    let _ = write!(
        out,
        "skipped by filter {}: {} by class, {} by offset range",
        total.skipped(),
        total.skipped_by_class,
        total.skipped_by_range
    );
    if plan.filter.skip_replayed {
        let _ = write!(out, ", {} replayed before", total.skipped_as_replayed);
    }
    if total.skipped_incomplete > 0 {
        let _ = write!(
            out,
            ", {} without their value (too large for the dead-letter topic: see the log)",
            total.skipped_incomplete
        );
    }
    out.push('\n');
    if !report.by_class.is_empty() {
        out.push_str("by class:\n");
    }
    let verb = if plan.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    for (class, tally) in &report.by_class {
        let mut parts = Vec::new();
        if tally.replayed > 0 {
            parts.push(format!("{verb} {}", tally.replayed));
        }
        let skipped = tally.skipped();
        if skipped > 0 {
            parts.push(format!("skipped {skipped}"));
        }
        let _ = writeln!(out, "  {class}: {}", parts.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::replay::rules::{Span, Verdict};
    use clap::Parser;

    fn args(line: &[&str]) -> Result<ReplayArgs, clap::Error> {
        #[derive(Debug, clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ReplayArgs,
        }
        Wrapper::try_parse_from(std::iter::once("replay").chain(line.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn unknown_classes_and_a_missing_class_are_usage_errors() {
        let unknown = args(&["--class", "oops"]).unwrap_err();
        assert_eq!(unknown.exit_code(), 2);
        assert!(unknown.to_string().contains("invalid_json"), "{unknown}");
        assert_eq!(args(&[]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn the_plan_defaults_to_the_source_topic_and_a_group_of_its_own() {
        let kafka = KafkaSettings::default();
        let plan = plan(&args(&["--class", "target_rejected"]).unwrap(), &kafka).unwrap();
        assert_eq!(plan.dlq_topic, "pos.purchases.dlq");
        assert_eq!(plan.group, "pos-profile-sync-dlq-replay");
        assert_eq!(plan.destination, Destination::Source);
        let error = |line: &[&str]| super::plan(&args(line).unwrap(), &kafka).unwrap_err();
        assert!(error(&["--class", "invalid_json", "--to", "pos.purchases.dlq"]).contains("--to"));
        assert!(
            error(&["--class", "invalid_json", "--group", "pos-profile-sync"]).contains("--group")
        );
        assert!(error(&[
            "--class",
            "invalid_json",
            "--from-offset",
            "5",
            "--until-offset",
            "5"
        ])
        .contains("below"));
    }

    #[test]
    fn the_summary_says_replayed_skipped_and_by_class() {
        let kafka = KafkaSettings::default();
        let mut plan = plan(
            &args(&["--class", "invalid_json", "--to", "replayed"]).unwrap(),
            &kafka,
        )
        .unwrap();
        let mut report = ReplayReport::default();
        report.count("invalid_json", Verdict::Replay);
        report.count("invalid_json", Verdict::SkipRange);
        report.count("schema_violation", Verdict::SkipClass);
        assert_eq!(
            summary(&report, &plan),
            "read 3 dead letters from pos.purchases.dlq (group pos-profile-sync-dlq-replay)\n\
             replayed 1 to replayed\n\
             skipped by filter 2: 1 by class, 1 by offset range\n\
             by class:\n  invalid_json: replayed 1, skipped 1\n  schema_violation: skipped 1\n"
        );
        plan.dry_run = true;
        assert!(summary(&report, &plan).contains("would replay 1 to replayed (dry run"));
        plan.filter.skip_replayed = true;
        report.count("invalid_json", Verdict::SkipReplayed);
        let said = summary(&report, &plan);
        assert!(
            said.contains(
                "skipped by filter 3: 1 by class, 1 by offset range, 1 replayed before\n"
            ),
            "{said}"
        );
    }

    #[test]
    fn nothing_to_replay_tells_an_empty_topic_from_a_finished_group() {
        let plan = plan(
            &args(&["--class", "invalid_json"]).unwrap(),
            &KafkaSettings::default(),
        )
        .unwrap();
        let mut report = ReplayReport {
            spans: vec![Span::new(0, (0, 0), None, None)],
            ..ReplayReport::default()
        };
        assert_eq!(
            nothing_to_replay(&report, &plan).as_deref(),
            Some("nothing to replay: pos.purchases.dlq is empty")
        );
        report.spans = vec![Span::new(0, (0, 9), Some(9), None)];
        assert!(nothing_to_replay(&report, &plan)
            .unwrap()
            .contains("pass another --group"));
        report.spans = vec![Span::new(0, (0, 9), Some(3), None)];
        assert_eq!(nothing_to_replay(&report, &plan), None);
    }
}
