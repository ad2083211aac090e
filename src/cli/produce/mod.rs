//! `produce`: publishes the generator's POS traffic to real brokers, for load
//! tests, staging and demos. The same seed gives the same events, so what
//! Target should end up with is known in advance. Idempotent, lz4, keyed by
//! customer; paced by governor when `--rate` is set; Ctrl-C stops after the
//! events already handed to the producer are flushed.

mod publish;

use self::publish::{publish, Outcome, Refusal};
use super::kafka_options::{kafka_settings, parse_property, run_until_signal, Property};
use super::{ConfigArg, EXIT_USAGE};
use crate::generator::GeneratorConfig;
use crate::ops::config::LogFormat;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// Options of `produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Bootstrap servers, comma-separated (required unless --config gives kafka.brokers).
    #[arg(long, value_name = "HOST:PORT,...", required_unless_present = "config")]
    brokers: Option<String>,
    /// Topic to publish to [default: the first of kafka.topics, pos.purchases].
    #[arg(long)]
    topic: Option<String>,
    /// Events to publish.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Distinct customers (profiles) the events belong to; at least 1.
    #[arg(long, visible_alias = "profiles", default_value_t = 10_000, value_parser = parse_customers)]
    customers: u64,
    /// Zipf exponent for picking customers (1.1: a few buy a lot); 0 is uniform.
    #[arg(long, default_value_t = 0.0, value_parser = parse_zipf, allow_negative_numbers = true)]
    zipf: f64,
    /// Share of malformed events (they become dead letters), 0 to 1.
    #[arg(long, default_value_t = 0.001, value_parser = parse_ratio, allow_negative_numbers = true)]
    bad_ratio: f64,
    /// Events per second; 0 publishes as fast as the brokers take them.
    #[arg(long, value_name = "EVENTS_PER_SECOND", default_value_t = 0.0,
          value_parser = parse_rate, allow_negative_numbers = true)]
    rate: f64,
    /// Seed of the generator: the same seed publishes the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Extra librdkafka property for this run (repeatable), e.g. linger.ms=50.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    properties: Vec<Property>,
}

fn parse_number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| format!("{text:?} is not a number"))
}

/// `--customers`: at least one.
fn parse_customers(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1: events need customers to belong to".into()),
        Ok(customers) => Ok(customers),
        Err(_) => Err(format!("{text:?} is not a whole number of customers")),
    }
}

/// `--rate`: 0 or a positive, finite number.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate = parse_number(text)?;
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err("must be 0 (as fast as possible) or a positive number of events per second".into())
    }
}

/// `--bad-ratio`: a share from 0 to 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio = parse_number(text)?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err("must be a share from 0 to 1, e.g. 0.001 for one event in a thousand".into())
    }
}

/// `--zipf`: 0 (uniform) or a positive, finite exponent.
fn parse_zipf(text: &str) -> Result<f64, String> {
    let exponent = parse_number(text)?;
    if exponent.is_finite() && exponent >= 0.0 {
        Ok(exponent)
    } else {
        Err("must be 0 (uniform) or a positive exponent such as 1.1".into())
    }
}

/// The generator configuration these options stand for; the tests rebuild
/// the same one to know what was published.
fn generator_config(args: &ProduceArgs) -> GeneratorConfig {
    GeneratorConfig {
        events: args.events,
        customers: args.customers,
        zipf: args.zipf,
        bad_ratio: args.bad_ratio,
        seed: args.seed,
        ..GeneratorConfig::default()
    }
}

/// The one-line summary printed on stdout.
fn summary(outcome: &Outcome, planned: u64, topic: &str) -> String {
    let seconds = outcome.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        outcome.acknowledged as f64 / seconds
    } else {
        0.0
    };
    let mut line = format!(
        "produced {} events, {} bytes, to {topic} in {seconds:.1} s ({rate:.0} events/s)",
        outcome.acknowledged, outcome.bytes
    );
    if outcome.interrupted {
        line.push_str(&format!(
            "; interrupted after {} of {planned}",
            outcome.acknowledged
        ));
    }
    if outcome.failed > 0 {
        line.push_str(&format!("; {} failed", outcome.failed));
    }
    if outcome.unflushed > 0 {
        line.push_str(&format!("; {} not acknowledged", outcome.unflushed));
    }
    line
}

pub(super) fn main(args: ProduceArgs) -> ExitCode {
    let kafka = match kafka_settings(
        args.config.config.as_deref(),
        args.brokers.as_deref(),
        &args.properties,
    ) {
        Ok(kafka) => kafka,
        Err(error) => {
            eprintln!("produce: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let topic = match args.topic.clone().or_else(|| kafka.topics.first().cloned()) {
        Some(topic) if !topic.trim().is_empty() => topic,
        _ => {
            eprintln!("produce: no topic: pass --topic NAME");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    crate::ops::telemetry::init(LogFormat::Text);
    let generator = generator_config(&args);
    let rate = args.rate;
    let result = run_until_signal(
        publish::FLUSH_TIMEOUT + Duration::from_secs(10),
        move |stop| publish(&kafka, &topic, generator, rate, &stop).map(|outcome| (outcome, topic)),
    );
    match result {
        Ok(Ok((outcome, topic))) => {
            println!("{}", summary(&outcome, args.events, &topic));
            if let Some(error) = &outcome.error {
                eprintln!("produce: {error}");
                ExitCode::FAILURE
            } else if outcome.interrupted {
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(Err(Refusal::Usage(error))) => {
            eprintln!("produce: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Ok(Err(Refusal::Failure(error))) | Err(error) => {
            eprintln!("produce: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_numbers_are_refused_with_the_allowed_range() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["-1", "NaN", "inf", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ratio("1"), Ok(1.0));
        for bad in ["-0.1", "1.5", "NaN"] {
            assert!(parse_ratio(bad).unwrap_err().contains("0 to 1"), "{bad}");
        }
        assert!(parse_zipf("-1").is_err());
        assert!(parse_customers("0").unwrap_err().contains("at least 1"));
        assert_eq!(parse_customers("7"), Ok(7));
        assert_eq!(parse_zipf("1.1"), Ok(1.1));
    }

    #[test]
    fn the_summary_names_events_bytes_time_and_rate() {
        let outcome = Outcome {
            acknowledged: 1000,
            bytes: 250_000,
            failed: 0,
            unflushed: 0,
            elapsed: Duration::from_secs(2),
            interrupted: false,
            error: None,
        };
        assert_eq!(
            summary(&outcome, 1000, "pos.purchases"),
            "produced 1000 events, 250000 bytes, to pos.purchases in 2.0 s (500 events/s)"
        );
        let stopped = Outcome {
            interrupted: true,
            ..outcome
        };
        assert!(summary(&stopped, 5000, "t").ends_with("; interrupted after 1000 of 5000"));
    }
}
