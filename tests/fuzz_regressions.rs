//! Replays the committed fuzz regression inputs (`fuzz/regressions/<target>/`)
//! through the same property checks the fuzz targets assert, so a finding
//! stays fixed without a fuzzer. A test binary of its own: the config check
//! sets `PPS_` environment variables for a moment, which must not leak into
//! the service processes the `it` tests start.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no regression inputs for {target}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| check(&bytes)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{}: {message}", file.display());
        }
    }
}

#[test]
fn every_decide_regression_input_keeps_the_mapping_properties() {
    replay("decide", checks::decide);
}

#[test]
fn every_classify_regression_input_keeps_the_classification_properties() {
    replay("classify", checks::classify_bytes);
}

#[test]
fn every_config_regression_input_is_loaded_or_refused_without_a_panic() {
    replay("config", checks::config);
}
