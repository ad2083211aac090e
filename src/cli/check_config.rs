//! `check-config`: load, validate, print the effective settings with secrets
//! masked; exit 2 when the configuration cannot be used.

use super::{ConfigArg, EXIT_USAGE};
use crate::ops::config::Settings;
use std::process::ExitCode;

/// Options of `check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub(super) fn main(args: CheckConfigArgs) -> ExitCode {
    let settings = match Settings::load(args.config.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(error) = crate::kafka::validate(&settings) {
        eprintln!("{error}");
        return ExitCode::from(EXIT_USAGE);
    }
    print!("{}", settings.to_masked_toml());
    for warning in settings.warnings() {
        eprintln!("warning: {warning}");
    }
    eprintln!("configuration is valid");
    ExitCode::SUCCESS
}
