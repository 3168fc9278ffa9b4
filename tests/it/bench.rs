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

#[test]
fn a_gzipped_grpc_load_of_pre_encoded_exports_is_acknowledged_stored_and_analysed() {
    let scratch = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .args([
            "bench",
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
        ])
        .env("TMPDIR", scratch.path())
        .env("BOTTLENECK_LOG", "warn")
        .output()
        .expect("the binary runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(figure(&report, "spans refused (told to retry)"), "0");
    let stored = number(figure(&report, "spans stored"));
    assert!(stored >= 2_000, "{report}");
    // The visibility probes add a one-span request each.
    assert!(
        number(figure(&report, "requests analysed")) >= stored / 10,
        "every 10-span request of what was stored is analysed:\n{report}"
    );
}
