//! The load generator, run as a user runs it: it starts its own server and sends real exports.

use std::process::Command;

/// The figure `name` of the bench's report table, as printed.
fn figure<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find_map(|line| line.strip_prefix(&format!("| {name} | ")))
        .and_then(|rest| rest.split(" |").next())
        .unwrap_or_else(|| panic!("no `{name}` in the report:\n{report}"))
}

fn number(text: &str) -> u64 {
    text.split_whitespace()
        .next()
        .and_then(|digits| digits.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("not a count: {text}"))
}

/// Runs `bottleneck bench` with `args` and returns its report; panics if it fails.
fn bench(args: &[&str]) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .arg("bench")
        .args(args)
        .env("TMPDIR", scratch.path())
        .env("BOTTLENECK_LOG", "warn")
        .output()
        .expect("the binary runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

#[test]
fn a_gzipped_grpc_load_of_pre_encoded_exports_is_acknowledged_stored_and_analysed() {
    let report = bench(&[
        "--protocol",
        "grpc",
        "--gzip",
        "--duration",
        "2s",
        "--rate",
        "2000",
        "--connections",
        "2",
        "--spans-per-export",
        "100",
    ]);
    assert_eq!(figure(&report, "spans refused (told to retry)"), "0");
    let stored = number(figure(&report, "spans stored"));
    assert!(stored >= 2_000, "{report}");
    // The visibility probes add a one-span request each.
    assert!(
        number(figure(&report, "requests analysed")) >= stored / 10,
        "every 10-span request of what was stored is analysed:\n{report}"
    );
}

/// The line of the soak's acceptance that starts with `name`, as printed.
fn acceptance<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find_map(|line| line.strip_prefix(&format!("- {name}: ")))
        .unwrap_or_else(|| panic!("no `{name}` in the report:\n{report}"))
}

/// A few seconds of the soak: every kind of hostile input goes out at least once beside the load
/// and is refused, and every span acknowledged meanwhile is stored. (Timing does not matter: each
/// kind is sent once however short the run, and the bench waits for every answer.)
#[test]
fn a_short_soak_refuses_every_hostile_input_and_loses_nothing_acknowledged() {
    let report = bench(&[
        "--hostile",
        "--idle-connections",
        "5",
        "--duration",
        "3s",
        "--rate",
        "2000",
        "--connections",
        "2",
        "--spans-per-export",
        "100",
        "--sample-every",
        "1s",
    ]);
    let hostile = acceptance(&report, "every hostile input refused");
    let sent = number(hostile);
    assert!(sent >= 11, "each of the 11 kinds at least once:\n{report}");
    assert!(
        hostile.ends_with(&format!("{sent} sent, 0 accepted, 0 unanswered: met")),
        "{report}"
    );
    let lost = acceptance(&report, "nothing acknowledged lost");
    assert!(
        lost.starts_with("0 acknowledged spans not stored ("),
        "{report}"
    );
    let of_the_load = number(lost.split_once('(').unwrap().1);
    assert!(
        of_the_load > 0,
        "the load was acknowledged beside:\n{report}"
    );
}
