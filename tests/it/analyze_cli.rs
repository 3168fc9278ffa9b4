//! `bottleneck analyze`, the binary, on captures made by real exporters: the OpenTelemetry Rust
//! SDK's OTLP exporters (the demo workload, and a small login service built on the demo's SDK
//! pipeline) export to a capture receiver in the test, which writes each export as one line of
//! OTLP JSON, as the Collector's file exporter does. The receiver is the collector crate's own
//! OTLP/HTTP and OTLP/gRPC adapters; it can also forward each export, as received, to the
//! real server before acknowledging it, so the server and the capture see the same exports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bottleneck::demo::telemetry;
use bottleneck::demo::{self, WorkloadConfig};
use collector::otlp::body::{BodyLimits, Intake};
use collector::sink::{CommitError, ExportReceiver, IngestStats, SpanSink};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::analysis::get_json;
use crate::corpus::{self, endpoint_url};
use crate::support::{TestApp, http_client, install_crypto, shop_exporter, spawn_app};

/// An OTLP receiver that writes every export it acknowledges as a line of OTLP JSON.
struct CaptureReceiver {
    http_url: String,
    grpc_url: String,
}

/// Writes each export to `file` (after forwarding it to `forward_to`, an OTLP/HTTP base URL,
/// if given) and only then acknowledges it: an exporter that was answered is in the file.
fn write_exports(
    mut exports: ExportReceiver,
    file: Arc<Mutex<std::fs::File>>,
    forward_to: Option<String>,
) {
    tokio::spawn(async move {
        while let Some(export) = exports.recv().await {
            let protobuf = zstd::stream::decode_all(export.block.data.as_slice())
                .expect("a block holds the export as received, zstd-compressed");
            if let Some(base) = &forward_to {
                let res = http_client()
                    .post(format!("{base}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(protobuf.clone())
                    .send()
                    .await;
                if !res.is_ok_and(|res| res.status().is_success()) {
                    let _ = export
                        .reply
                        .send(Err(CommitError("forwarding failed".into())));
                    continue;
                }
            }
            let request = ExportTraceServiceRequest::decode(protobuf.as_slice())
                .expect("an accepted export decodes");
            let line = serde_json::to_string(&request).expect("an export serializes");
            {
                let mut file = file.lock().expect("no panics while holding the file");
                writeln!(file, "{line}").expect("the capture file takes a line");
                file.flush().expect("the capture file flushes");
            }
            let _ = export.reply.send(Ok(()));
        }
    });
}

async fn capture_receiver(path: &Path, forward_to: Option<String>) -> CaptureReceiver {
    // The SDK's HTTP exporter builds a reqwest client too.
    install_crypto();
    let file = Arc::new(Mutex::new(
        std::fs::File::create(path).expect("the capture file is created"),
    ));
    let stats = Arc::new(IngestStats::default());
    let (http_sink, http_exports) = SpanSink::channel(64, Arc::clone(&stats));
    let (grpc_sink, grpc_exports) = SpanSink::channel(64, stats);
    write_exports(http_exports, Arc::clone(&file), forward_to.clone());
    write_exports(grpc_exports, file, forward_to);
    let intake = Intake::new(
        BodyLimits {
            max_wire_bytes: 16 << 20,
            max_decoded_bytes: 64 << 20,
            max_inflation_ratio: 100,
            deadline: Duration::from_secs(60),
            max_pause: Duration::from_secs(30),
        },
        128 << 20,
    );
    let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let http_url = format!("http://{}", http_listener.local_addr().unwrap());
    let router = collector::otlp::http::router(http_sink, intake.clone(), Default::default());
    tokio::spawn(async move { axum::serve(http_listener, router).await });
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let grpc_url = format!("http://{}", grpc_listener.local_addr().unwrap());
    let grpc = tonic::transport::Server::builder()
        .add_service(collector::otlp::grpc::service(
            grpc_sink,
            intake,
            Default::default(),
        ))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener));
    tokio::spawn(grpc);
    CaptureReceiver { http_url, grpc_url }
}

/// What the binary printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn analyze(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bottleneck"))
            .arg("analyze")
            .args(&args)
            .output()
            .expect("the binary runs");
        Run {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 output"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 errors"),
        }
    })
    .await
    .expect("the run joins")
}

fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    items
        .iter()
        .map(|item| item.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// An endpoint's numbers as both the server and `analyze` give them: the summary's fields that
/// do not depend on the window (the request rate does), operations, findings and gaps.
fn comparable(summary: &Value, detail: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in [
        "service",
        "endpoint",
        "requests",
        "errors",
        "mean_ms",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "breakdown_ms",
        "io_ms",
        "cpu_ms",
        "db_calls_per_request",
        "speedup_if_cpu_free",
        "speedup_if_cpu_free_max",
        "bottleneck",
        "total_ms",
    ] {
        out.insert(key.into(), summary[key].clone());
    }
    let findings: Vec<Value> = detail["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|finding| {
            let mut finding = finding.clone();
            // Only `analyze` reads code locations so far.
            finding
                .as_object_mut()
                .expect("an object")
                .remove("location");
            finding
        })
        .collect();
    out.insert("operations".into(), detail["operations"].clone());
    out.insert("findings".into(), Value::Array(findings));
    out.insert("gaps".into(), detail["gaps"].clone());
    Value::Object(out)
}

/// Every endpoint as the server shows it, comparable; `None` until its list can be read.
async fn server_endpoints(app: &TestApp) -> Option<Vec<Value>> {
    let list = get_json(format!("{}/api/v1/endpoints", app.ui_url)).await?;
    let mut out = Vec::new();
    for summary in list["endpoints"].as_array()? {
        let (service, endpoint) = (summary["service"].as_str()?, summary["endpoint"].as_str()?);
        let detail = get_json(endpoint_url(app, service, endpoint)).await?;
        out.push(comparable(summary, &detail));
    }
    Some(out)
}

/// Waits until the server shows exactly `captured`: it analyses a trace once its grace period
/// has passed, and again when late spans of it arrive.
async fn assert_server_agrees(app: &TestApp, captured: &[Value]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let served = server_endpoints(app).await.unwrap_or_default();
        if served == captured {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let differing: Vec<String> = captured
                .iter()
                .filter(|e| !served.contains(e))
                .map(|e| {
                    let twin = served
                        .iter()
                        .find(|s| s["service"] == e["service"] && s["endpoint"] == e["endpoint"]);
                    format!("analyze: {e}\nserver:  {twin:?}")
                })
                .collect();
            panic!(
                "the server and analyze disagree ({} vs {} endpoints):\n{}",
                served.len(),
                captured.len(),
                differing.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_finds_what_the_server_finds_on_the_same_exports() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("traces.jsonl");
    let receiver = capture_receiver(&capture, Some(app.otlp_http_url.clone())).await;
    let report = demo::run(
        WorkloadConfig {
            otlp_http_endpoint: receiver.http_url.clone(),
            otlp_grpc_endpoint: receiver.grpc_url.clone(),
            rate_per_sec: 10.0,
            seed: 33,
            regress_after: Duration::from_secs(2),
            duration: Some(Duration::from_secs(4)),
        },
        std::future::pending(),
    )
    .await
    .expect("the workload runs");
    assert_eq!(report.spans_failed, 0, "{report}");

    let run = analyze(args(&[&capture, &"--format", &"json"])).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).expect("json output");
    let captured: Vec<Value> = json["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|endpoint| comparable(endpoint, endpoint))
        .collect();
    let names: Vec<&str> = captured
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    for endpoint in ["POST /login", "GET /report", "POST /saml/assert"] {
        assert!(names.contains(&endpoint), "{endpoint} missing: {names:?}");
    }
    let login = captured
        .iter()
        .find(|e| e["endpoint"] == "POST /login")
        .unwrap();
    let kinds: Vec<&str> = login["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"n_plus_one") && kinds.contains(&"duplicate_query"),
        "{kinds:?}"
    );

    assert_server_agrees(&app, &captured).await;

    // The same capture gzipped reads the same.
    let gzipped = dir.path().join("traces.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&std::fs::read(&capture).unwrap()).unwrap();
    std::fs::write(&gzipped, gz.finish().unwrap()).unwrap();
    let again = analyze(args(&[&gzipped, &"--format", &"json"])).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let again: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["endpoints"], json["endpoints"]);

    // The demo names its code: SARIF points the login's N+1 at its policy loader.
    let sarif = analyze(args(&[&capture, &"--format", &"sarif"])).await;
    assert_eq!(sarif.code, 0, "{}", sarif.stderr);
    let sarif: Value = serde_json::from_str(&sarif.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    let n_plus_one = results
        .iter()
        .find(|r| r["ruleId"] == "n_plus_one")
        .unwrap_or_else(|| panic!("an N+1 result: {results:?}"));
    let location = &n_plus_one["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "app/policies.py");
    assert_eq!(location["region"]["startLine"], 88);
}

/// The OTLP protobuf the official Python and Node SDKs exported (one export per file, a
/// request's root often in a later export than its children): `analyze` on the files finds
/// what the server finds after receiving them one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_agrees_with_the_server_on_the_corpus_exports() {
    for app_name in ["python", "node"] {
        let dir = Path::new(corpus::FIXTURES).join(app_name);
        let app = spawn_app().await;
        corpus::replay(&app, &dir).await;
        let mut run_args = args(&[&"--format", &"json"]);
        run_args.extend(
            corpus::exports(&dir)
                .iter()
                .map(|p| p.display().to_string()),
        );
        let run = analyze(run_args).await;
        assert_eq!(run.code, 0, "{app_name}: {}", run.stderr);
        let json: Value = serde_json::from_str(&run.stdout).unwrap();
        let captured: Vec<Value> = json["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|endpoint| comparable(endpoint, endpoint))
            .collect();
        assert!(captured.len() >= 5, "{app_name}: {captured:?}");
        assert_server_agrees(&app, &captured).await;
        app.stop().await;
    }
}

/// Statements of one login of the little service below, in order, each with its code location.
const LOGIN_QUERIES: [(&str, &str, u32, &str); 6] = [
    (
        "SELECT * FROM users WHERE id = 7",
        "app/users.py",
        12,
        "load_user",
    ),
    (
        "SELECT * FROM rules WHERE id = 1",
        "app/policies.py",
        88,
        "load_rules",
    ),
    (
        "SELECT * FROM rules WHERE id = 2",
        "app/policies.py",
        88,
        "load_rules",
    ),
    (
        "SELECT * FROM rules WHERE id = 3",
        "app/policies.py",
        88,
        "load_rules",
    ),
    (
        "SELECT * FROM rules WHERE id = 4",
        "app/policies.py",
        88,
        "load_rules",
    ),
    (
        "SELECT * FROM rules WHERE id = 5",
        "app/policies.py",
        88,
        "load_rules",
    ),
];

/// The query the change under review adds to every login.
const AUDIT_QUERY: (&str, &str, u32, &str) = (
    "INSERT INTO audit (user_id) VALUES (7)",
    "app/audit.py",
    40,
    "record_login",
);

/// Where the service's checkout is: code paths are absolute under it.
const CHECKOUT: &str = "/srv/shop";

/// Twenty logins of a small service, recorded with the OpenTelemetry SDK at fixed times and
/// exported over OTLP/HTTP by its real exporter to a capture file: `extra_query` adds one
/// statement per login.
async fn capture_logins(path: &Path, extra_query: bool) {
    let receiver = capture_receiver(path, None).await;
    let version = if extra_query { "2.0" } else { "1.0" };
    let (provider, stats) = shop_exporter(version, &receiver.http_url);
    let tracer = telemetry::tracer(&provider);
    let ms = Duration::from_millis;
    let base = SystemTime::now() - Duration::from_secs(120);
    let mut queries: Vec<(&str, &str, u32, &str)> = LOGIN_QUERIES.to_vec();
    if extra_query {
        queries.push(AUDIT_QUERY);
    }
    for n in 0..20u32 {
        let start = base + ms(u64::from(n) * 100);
        let login = tracer
            .span_builder("POST /login")
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", "/login"),
                KeyValue::new("http.response.status_code", 200),
            ])
            .start(&tracer);
        let cx = Context::new().with_span(login);
        let mut at = start + ms(1);
        for (statement, file, line, function) in &queries {
            let mut query = tracer
                .span_builder(statement.split(' ').next().unwrap_or("query").to_owned())
                .with_kind(SpanKind::Client)
                .with_start_time(at)
                .with_attributes([
                    KeyValue::new("db.system.name", "postgresql"),
                    KeyValue::new("db.query.text", *statement),
                    KeyValue::new("code.file.path", format!("{CHECKOUT}/{file}")),
                    KeyValue::new("code.line.number", i64::from(*line)),
                    KeyValue::new("code.function.name", *function),
                ])
                .start_with_context(&tracer, &cx);
            at += ms(3);
            query.end_with_timestamp(at);
        }
        cx.span().end_with_timestamp(at + ms(1));
    }
    telemetry::shutdown(provider, "shop")
        .await
        .expect("every span is exported");
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

async fn login_captures(dir: &Path) -> (PathBuf, PathBuf) {
    let baseline = dir.join("baseline.jsonl");
    let candidate = dir.join("candidate.jsonl");
    capture_logins(&baseline, false).await;
    capture_logins(&candidate, true).await;
    (baseline, candidate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_diff_reports_one_more_query_per_request_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (baseline, candidate) = login_captures(dir.path()).await;

    let run = analyze(args(&[&candidate, &"--baseline", &baseline])).await;
    assert_eq!(
        run.code, 3,
        "a regression has its own exit code\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("this change adds 1 query per request to shop POST /login (6 → 7)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "shop POST /login: db `INSERT INTO audit (user_id) VALUES (...)` appeared (1 per request)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("regressed: shop POST /login"),
        "{}",
        run.stdout
    );

    let json = analyze(args(&[
        &candidate,
        &"--baseline",
        &baseline,
        &"--format",
        &"json",
    ]))
    .await;
    assert_eq!(json.code, 3, "{}", json.stderr);
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    let login = &json["baseline"]["endpoints"][0];
    assert_eq!(json["baseline"]["regressed"], true);
    assert_eq!(login["endpoint"], "POST /login");
    assert_eq!(
        login["calls"],
        serde_json::json!([{"category": "db", "baseline_calls_per_request": 6.0, "candidate_calls_per_request": 7.0}])
    );
    let appeared: Vec<&Value> = login["comparison"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["change"] == "appeared" && op["gap"] == false)
        .collect();
    assert_eq!(appeared.len(), 1, "{appeared:?}");
    assert_eq!(
        appeared[0]["name"],
        "INSERT INTO audit (user_id) VALUES (...)"
    );

    // The same capture on both sides, and the change undone, are no regression.
    let same = analyze(args(&[&baseline, &"--baseline", &baseline])).await;
    assert_eq!(same.code, 0, "{}", same.stdout);
    assert!(
        same.stdout.contains("no endpoint regressed"),
        "{}",
        same.stdout
    );
    let undone = analyze(args(&[&baseline, &"--baseline", &candidate])).await;
    assert_eq!(undone.code, 0, "{}", undone.stdout);
    assert!(
        undone
            .stdout
            .contains("this change removes 1 query per request from shop POST /login (7 → 6)"),
        "{}",
        undone.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_are_judged_on_the_capture_and_sarif_points_at_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let (baseline, candidate) = login_captures(dir.path()).await;
    let config = dir.path().join("budgets.toml");
    std::fs::write(
        &config,
        "[[budget]]\nservice = \"shop\"\nendpoint = \"POST /login\"\ndb_calls_per_request = 6.5\nmin_requests = 10\n",
    )
    .unwrap();

    let holds = analyze(args(&[&baseline, &"--config", &config])).await;
    assert_eq!(holds.code, 0, "{}{}", holds.stdout, holds.stderr);
    assert!(
        holds.stdout.contains("all 1 budget checks hold"),
        "{}",
        holds.stdout
    );
    let broken = analyze(args(&[&candidate, &"--config", &config])).await;
    assert_eq!(broken.code, 1, "{}{}", broken.stdout, broken.stderr);
    assert!(broken.stdout.contains("OVER BUDGET"), "{}", broken.stdout);
    // A broken budget outranks a regression: the exit code of `check`.
    let both = analyze(args(&[
        &candidate,
        &"--config",
        &config,
        &"--baseline",
        &baseline,
    ]))
    .await;
    assert_eq!(both.code, 1, "{}", both.stdout);

    let text = analyze(args(&[&candidate])).await;
    assert!(
        text.stdout
            .contains("at /srv/shop/app/policies.py:88 in load_rules"),
        "{}",
        text.stdout
    );
    let sarif = analyze(args(&[
        &candidate,
        &"--format",
        &"sarif",
        &"--source-root",
        &CHECKOUT,
    ]))
    .await;
    assert_eq!(sarif.code, 0, "{}", sarif.stderr);
    let sarif: Value = serde_json::from_str(&sarif.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "bottleneck");
    let results = run["results"].as_array().unwrap();
    let n_plus_one = results
        .iter()
        .find(|r| r["ruleId"] == "n_plus_one")
        .unwrap_or_else(|| panic!("an N+1 result: {results:?}"));
    let location = &n_plus_one["locations"][0];
    assert_eq!(
        location["physicalLocation"]["artifactLocation"]["uri"],
        "app/policies.py"
    );
    assert_eq!(location["physicalLocation"]["region"]["startLine"], 88);
    assert_eq!(
        location["logicalLocations"][0]["fullyQualifiedName"],
        "load_rules"
    );
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], result["ruleId"], "{result}");
        assert!(
            result["message"]["text"]
                .as_str()
                .unwrap()
                .starts_with("shop POST /login: ")
        );
    }
}

#[tokio::test]
async fn a_capture_that_cannot_be_read_is_an_error_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"resourceSpans\": []}\n{\"resourceSpans\": 7}\n").unwrap();
    let run = analyze(args(&[&bad])).await;
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stdout, "",
        "nothing is reported from a capture read in part"
    );
    assert!(run.stderr.contains("bad.jsonl: line 2:"), "{}", run.stderr);
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "{\"resourceSpans\": []}\n").unwrap();
    let run = analyze(args(&[&empty])).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("holds no spans"), "{}", run.stderr);
    let missing = analyze(args(&[&dir.path().join("nowhere.jsonl")])).await;
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("nowhere.jsonl"),
        "{}",
        missing.stderr
    );
}
