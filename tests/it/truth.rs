//! Ground truth: a real Flask service under the official OpenTelemetry auto-instrumentation
//! (`tests/it/python/login`) logs in against PostgreSQL, signs a SAML assertion and calls an
//! identity provider, and measures itself on its own clocks. Version 1.1 hides a 300 ms round trip
//! without a span between the `policy_rules` query and the identity provider's POST. Bottleneck's
//! answers, through `/api/v1` only, must agree with what the service measured.
//!
//! Needs a Python with `opentelemetry-distro`, `opentelemetry-exporter-otlp`,
//! `opentelemetry-instrumentation-flask`, `-psycopg2` and `-requests`, `flask`, `requests` and
//! `psycopg2-binary` (the CPU test also `bottleneck-cputime`, from `sdk/python`), named by
//! `BOTTLENECK_PYTHON` (else `python3`), and PostgreSQL (`DATABASE_URL`, else
//! `postgresql://postgres@127.0.0.1:5432/test`), where the driver makes a schema of its own.
//! Without them the tests say they are skipped, unless `BOTTLENECK_PYTHON_TESTS=1` demands them.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::analysis::get_json;
use crate::support::{TestApp, http_client, spawn_app};

const DRIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/python/login/drive.py"
);
/// Logins per version: enough that a mean is steady, few enough for a test (about 20 s).
const LOGINS: u64 = 30;
/// The driver's own waits are bounded; this bounds the whole run in case Python hangs anyway.
const DRIVER_DEADLINE: Duration = Duration::from_secs(600);
/// How long analysing what the driver sent may take, after the driver is done (its exports
/// were acknowledged, so every span is stored by then).
const ANALYSIS_DEADLINE: Duration = Duration::from_secs(60);
/// The driver's exit status when PostgreSQL is not reachable.
const EXIT_NO_POSTGRES: i32 = 77;
/// The endpoint the Flask instrumentation names: method and route.
const ENDPOINT: &str = "POST%20/login";
/// The identity provider's POST as an operation: method and host.
const IDP_CALL: &str = "POST 127.0.0.1";

fn demanded() -> bool {
    std::env::var("BOTTLENECK_PYTHON_TESTS").as_deref() == Ok("1")
}

/// A Python that can run the service (and measure CPU time when `cpu`), or `None` to skip.
fn python(cpu: bool) -> Option<String> {
    let candidate = std::env::var("BOTTLENECK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut probe = "import flask, requests, psycopg2, opentelemetry.distro, \
        opentelemetry.exporter.otlp.proto.http.trace_exporter, \
        opentelemetry.instrumentation.flask, opentelemetry.instrumentation.psycopg2, \
        opentelemetry.instrumentation.requests"
        .to_owned();
    if cpu {
        probe.push_str(", bottleneck_cputime");
    }
    let ok = Command::new(&candidate)
        .args(["-c", &probe])
        .output()
        .is_ok_and(|out| out.status.success());
    if ok {
        return Some(candidate);
    }
    let lacks = if cpu {
        "Flask, psycopg2, the OpenTelemetry auto-instrumentation and bottleneck-cputime"
    } else {
        "Flask, psycopg2 and the OpenTelemetry auto-instrumentation"
    };
    assert!(
        !demanded(),
        "BOTTLENECK_PYTHON_TESTS=1 but {candidate} lacks {lacks}"
    );
    eprintln!("skipped: no Python with {lacks} (set BOTTLENECK_PYTHON)");
    None
}

/// Runs the driver against `app`; returns what the service measured, or `None` to skip.
async fn drive(app: &TestApp, python: String, cpu: bool) -> Option<Json> {
    let mut command = Command::new(python);
    command
        .arg(DRIVER)
        .arg(&app.otlp_http_url)
        .args(["--requests", &LOGINS.to_string()]);
    if cpu {
        command.arg("--cpu");
    }
    if let Ok(dsn) = std::env::var("DATABASE_URL") {
        command.args(["--dsn", &dsn]);
    }
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || run(command))
        .await
        .expect("the driver's thread joins");
    if status == Some(EXIT_NO_POSTGRES) {
        assert!(
            !demanded(),
            "BOTTLENECK_PYTHON_TESTS=1 but PostgreSQL is not reachable: {stderr}"
        );
        eprintln!("skipped: {}", stderr.lines().next().unwrap_or_default());
        return None;
    }
    assert_eq!(status, Some(0), "the driver failed: {stderr}");
    Some(serde_json::from_str(&stdout).expect("the driver prints JSON"))
}

/// Runs `command` to its end or DRIVER_DEADLINE, whichever comes first: exit status (`None`
/// when killed), stdout, stderr.
fn run(mut command: Command) -> (Option<i32>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + DRIVER_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the driver") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    (status, out, err)
}

/// The comparison of 1.0 with 1.1, once every login of both is analysed.
async fn compare(app: &TestApp) -> Json {
    let url = format!(
        "{}/api/v1/compare?service=login&endpoint={ENDPOINT}&baseline=version:1.0&candidate=version:1.1",
        app.ui_url
    );
    let deadline = tokio::time::Instant::now() + ANALYSIS_DEADLINE;
    loop {
        let res = http_client()
            .get(&url)
            .send()
            .await
            .expect("compare answers");
        let status = res.status();
        let body = res.text().await.expect("a body");
        assert!(
            !status.is_server_error(),
            "compare answers {status}: {body}"
        );
        if status.is_success() {
            let compare: Json = serde_json::from_str(&body).expect("compare is JSON");
            let analysed = |side: &str| compare[side]["requests"].as_u64() == Some(LOGINS);
            if analysed("baseline") && analysed("candidate") {
                return compare;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every login analysed within {ANALYSIS_DEADLINE:?}; compare answers {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn endpoint(app: &TestApp) -> Json {
    let url = format!(
        "{}/api/v1/endpoint?service=login&endpoint={ENDPOINT}",
        app.ui_url
    );
    get_json(url).await.expect("the endpoint answers")
}

/// One version's summary of what the service measured.
fn measured<'a>(truth: &'a Json, version: &str) -> &'a Json {
    let summary = &truth["versions"][version];
    assert_eq!(summary["requests"].as_u64(), Some(LOGINS), "{truth}");
    summary
}

fn ms(value: &Json) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("a number of milliseconds, not {value}"))
}

/// `[least, most]` of a measured category.
fn bounds(summary: &Json, key: &str) -> (f64, f64) {
    (ms(&summary[key][0]), ms(&summary[key][1]))
}

/// What the service's clocks and Bottleneck's may disagree on around an exact bound: the spans'
/// wall clock against the service's monotonic one, and rounding.
const CLOCK_MARGIN_MS: f64 = 1.0;

/// How far Bottleneck's figure may be from the service's best single figure: 5% of it, and at
/// least 1 ms, so that a category of a few milliseconds (1.0's wait) is not held to
/// microseconds.
fn slack(measured_ms: f64) -> f64 {
    (0.05 * measured_ms.abs()).max(1.0)
}

/// Asserts that Bottleneck's figure agrees with what the service measured.
///
/// The service knows each category only between two sums (see `bounds` in drive.py): every call
/// with a span is timed from outside and from inside the instrumented call, and the
/// instrumentation's own work between the two (span creation, attributes, the export queue) is
/// real time that the service cannot place on either side of the span's edge. That work is
/// mostly CPU, a fraction of a millisecond per span, so with thirteen spans `cpu` has the widest
/// interval and `wait` a narrow one. Two checks:
/// - Bottleneck's figure lies in the interval, give or take [`CLOCK_MARGIN_MS`]: each of its
///   spans sits between the service's two windows, so anything outside is wrong attribution.
/// - It is within [`slack`] of the interval's midpoint, the service's best single figure: the
///   instrumentation starts a span midway through its set-up and ends it midway through its
///   clean-up, so its work falls on the two sides of a span's edge about evenly.
fn assert_agrees(what: &str, reported: f64, (least, most): (f64, f64)) {
    assert!(
        reported >= least - CLOCK_MARGIN_MS && reported <= most + CLOCK_MARGIN_MS,
        "{what}: Bottleneck reports {reported:.2} ms, the service measured {least:.2}..{most:.2} ms"
    );
    let midpoint = (least + most) / 2.0;
    assert!(
        (reported - midpoint).abs() <= slack(midpoint),
        "{what}: Bottleneck reports {reported:.2} ms, the service measured {midpoint:.2} ms \
         ({least:.2}..{most:.2})"
    );
}

/// Prints Bottleneck's breakdown next to what the service measured, for the test's log.
fn report(version: &str, summary: &Json, breakdown: &Json) {
    let mut line = format!("{version}:");
    for key in ["db", "network", "cpu", "wait", "untraced"] {
        line.push_str(&format!(" {key} {:.2}", ms(&breakdown[key])));
    }
    line.push_str(" | measured:");
    for key in ["duration", "db", "network", "cpu", "wait", "self"] {
        let (least, most) = bounds(summary, &format!("{key}_ms"));
        line.push_str(&format!(" {key} {least:.2}..{most:.2}"));
    }
    line.push_str(&format!(" hidden {:.2}", ms(&summary["hidden_ms"])));
    eprintln!("{line}");
}

/// The top change is the stretch between the `policy_rules` query and the identity provider's
/// POST, and it grew by the hidden round trip.
///
/// That stretch also holds the signature, whose wall time moves with the machine's load (time
/// waiting for a CPU or for the GIL while the exporter's thread runs): the part of the stretch's
/// change that the service measured besides the hidden round trip widens the 5%.
fn assert_hidden_round_trip(compare: &Json, truth: &Json, category: &str) {
    let top = &compare["top_changes"][0];
    assert_eq!(top["category"], category, "{top}");
    let after = top["after"].as_str().unwrap_or_default();
    assert!(
        after.contains("policy_rules"),
        "the gap follows the policy_rules query: {top}"
    );
    assert_eq!(
        top["before"], IDP_CALL,
        "the gap precedes the identity provider's POST: {top}"
    );

    let (old, new) = (measured(truth, "1.0"), measured(truth, "1.1"));
    let hidden = ms(&new["hidden_ms"]) - ms(&old["hidden_ms"]);
    let midpoint = |summary: &Json| {
        let (least, most) = bounds(summary, "stretch_ms");
        (least + most) / 2.0
    };
    let stretch = midpoint(new) - midpoint(old);
    let tolerance = 0.05 * hidden + (stretch - hidden).abs();
    let delta = ms(&top["delta_ms"]);
    eprintln!(
        "top change {delta:.2} ms; hidden round trip {hidden:.2} ms, stretch {stretch:.2} ms"
    );
    assert!(
        (delta - hidden).abs() <= tolerance,
        "the gap grew by {delta:.2} ms, the hidden round trip took {hidden:.2} ms more (the \
         stretch around it {stretch:.2} ms)"
    );
}

/// Without a CPU measurement, a hidden round trip is untraced: Bottleneck places it between the
/// right two operations, sizes it, and never calls it CPU.
#[tokio::test]
async fn login_without_cpu_time_finds_the_hidden_round_trip_as_untraced() {
    let Some(python) = python(false) else { return };
    let app = spawn_app().await;
    let Some(truth) = drive(&app, python, false).await else {
        app.stop().await;
        return;
    };
    let compare = compare(&app).await;
    for (side, version) in [("baseline", "1.0"), ("candidate", "1.1")] {
        let summary = measured(&truth, version);
        let breakdown = &compare[side]["breakdown_ms"];
        report(version, summary, breakdown);
        assert_agrees(
            &format!("{version} mean"),
            ms(&compare[side]["mean_ms"]),
            bounds(summary, "duration_ms"),
        );
        assert_agrees(
            &format!("{version} db"),
            ms(&breakdown["db"]),
            bounds(summary, "db_ms"),
        );
        assert_agrees(
            &format!("{version} network"),
            ms(&breakdown["network"]),
            bounds(summary, "network_ms"),
        );
        assert_agrees(
            &format!("{version} untraced"),
            ms(&breakdown["untraced"]),
            bounds(summary, "self_ms"),
        );
        for category in ["cpu", "wait"] {
            assert_eq!(
                ms(&breakdown[category]),
                0.0,
                "{version}: nothing measured {category}"
            );
        }
    }
    let hidden = ms(&measured(&truth, "1.1")["hidden_ms"]);
    let untraced = ms(&compare["candidate"]["breakdown_ms"]["untraced"]);
    assert!(
        untraced >= hidden,
        "1.1's untraced {untraced:.2} ms holds the hidden {hidden:.2} ms"
    );

    assert_hidden_round_trip(&compare, &truth, "untraced");
    let cpu_delta = ms(&compare["delta_ms"]["cpu"]);
    assert!(
        cpu_delta.abs() < 1.0,
        "no CPU was measured, yet cpu changed by {cpu_delta} ms"
    );
    let detail = endpoint(&app).await;
    let findings = detail["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .all(|finding| finding["kind"] != "cpu_hotspot"),
        "untraced time is never a CPU hotspot: {findings:?}"
    );
    app.stop().await;
}

/// With `cpu.time_ns` from bottleneck-cputime, each category agrees with what the service
/// measured of itself, and the hidden round trip is wait.
#[tokio::test]
async fn login_with_cpu_time_matches_what_the_service_measured() {
    let Some(python) = python(true) else { return };
    let app = spawn_app().await;
    let Some(truth) = drive(&app, python, true).await else {
        app.stop().await;
        return;
    };
    let compare = compare(&app).await;
    for (side, version) in [("baseline", "1.0"), ("candidate", "1.1")] {
        let summary = measured(&truth, version);
        let breakdown = &compare[side]["breakdown_ms"];
        report(version, summary, breakdown);
        assert_agrees(
            &format!("{version} mean"),
            ms(&compare[side]["mean_ms"]),
            bounds(summary, "duration_ms"),
        );
        for category in ["db", "network", "cpu", "wait"] {
            assert_agrees(
                &format!("{version} {category}"),
                ms(&breakdown[category]),
                bounds(summary, &format!("{category}_ms")),
            );
        }
        let untraced = ms(&breakdown["untraced"]);
        assert!(
            untraced < 1.0,
            "{version}: every span measured its CPU, yet {untraced} ms untraced"
        );
        let db_calls = ms(&compare[side]["db_calls_per_request"]);
        assert!(
            (db_calls - ms(&summary["db_calls"])).abs() < 1e-9,
            "{version}: {db_calls} statements per login, the service ran {}",
            summary["db_calls"]
        );
    }
    assert_hidden_round_trip(&compare, &truth, "wait");
    app.stop().await;
}
