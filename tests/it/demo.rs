//! `demo` as a newcomer runs it: the real binary, a small workload, the
//! report it prints, and clear usage errors for impossible options.

use std::process::Command;

fn demo(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
        .arg("demo")
        .args(args)
        .output()
        .expect("run demo");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn report_value(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in the report:\n{report}"))
}

#[test]
fn a_small_demo_delivers_everything_and_says_0_lost() {
    let (code, report, log) = demo(&[
        "--events",
        "3000",
        "--customers",
        "400",
        "--rate",
        "2000",
        "--partitions",
        "4",
        // Every customer known: every update is a single update, counted by Target.
        "--known-share",
        "1",
    ]);
    assert_eq!(code, Some(0), "report:\n{report}\nlog:\n{log}");
    assert!(report.contains("  0 lost"), "{report}");
    assert_eq!(report_value(&report, "events produced"), 3000);
    let needed = report_value(&report, "updates needed");
    let accepted = report_value(&report, "updates accepted");
    assert_eq!(accepted, needed, "no restarts, no duplicates:\n{report}");
    let skipped = report_value(&report, "skipped (anonymous)");
    let dead = report_value(&report, "dead letters");
    assert_eq!(
        needed + skipped + dead,
        3000,
        "every event has one outcome:\n{report}"
    );
}

#[test]
fn a_demo_with_sigkills_still_loses_nothing() {
    let (code, report, log) = demo(&[
        "--events",
        "3000",
        "--customers",
        "400",
        "--rate",
        "1500",
        "--partitions",
        "4",
        "--crash-every",
        "700",
        // Every customer has a profile, so every event goes out as a single
        // update and commits move forward a few hundred at a time. With
        // profiles to create, most events wait for one bulk batch and the
        // commits of so small a run can jump from the first kill point to the
        // end in one step, crossing none (seen in CI).
        "--known-share",
        "1",
    ]);
    assert_eq!(code, Some(0), "report:\n{report}\nlog:\n{log}");
    assert!(report.contains("  0 lost"), "{report}");
    // How many kill points a run crosses depends on timing (commits can jump
    // past one after a restart); what matters is that kills happened mid-run.
    assert!(report_value(&report, "pipeline restarts") >= 1, "{report}");
}

#[test]
fn impossible_demo_options_are_usage_errors() {
    for (args, says) in [
        (vec!["--customers", "0"], "--customers"),
        (vec!["--rate=-5"], "--rate"),
        (vec!["--events", "0"], "--events"),
        (
            vec!["--events", "1000000", "--partitions", "2"],
            "--partitions",
        ),
    ] {
        let (code, _, stderr) = demo(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
