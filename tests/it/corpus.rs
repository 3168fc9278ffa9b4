//! The corpus: the OTLP that real applications exported under the official auto-instrumentation
//! (`tests/corpus`: Flask, SQLAlchemy over psycopg2, Redis and Celery in Python; express, pg,
//! mysql2 on MariaDB, ioredis, amqplib and fetch in Node), replayed export by export through OTLP/HTTP, and judged
//! against what each application recorded of itself (`expect.json`, derived from its own
//! `truth.jsonl`). Offline: the captures are in the repository, so a plain `cargo test` checks
//! every span shape they hold.
//!
//! The live half runs the applications themselves (`drive.py` of each, against this machine's
//! PostgreSQL, MariaDB, Redis and RabbitMQ) and judges the exports of that run the same way. It needs a
//! Python with `tests/corpus/python/requirements.txt` (`BOTTLENECK_CORPUS_PYTHON`) and
//! `npm ci` done in `tests/corpus/node`; without them it says it is skipped, unless
//! `BOTTLENECK_PYTHON_TESTS=1` demands it (as CI does).
//!
//! Each export keeps its place in time relative to the others (moved to a few minutes ago as a
//! whole, so retention and the default window keep it), and exports are sent apart by more than
//! the grace period, as an SDK's batch processor sends them: a request whose root comes in a
//! later export than its children is analysed as it completes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value as Json;

use crate::analysis::get_json;
use crate::support::{TestApp, http_client, spawn_app};

pub(crate) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/fixtures");

/// Longer than the test app's grace period: each export is analysed before the next arrives.
const BETWEEN_EXPORTS: Duration = Duration::from_millis(700);

/// A per-request mean within this share of what the application counted (a fixed count of
/// statements is exact; the share leaves room for a mean over a handful of requests).
const TOLERANCE: f64 = 0.05;

/// The captured exports of a corpus folder, in order.
pub(crate) fn exports(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the corpus is in the repository")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pb"))
        .collect();
    files.sort();
    files
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Sends the captured exports in order, every timestamp moved by one offset so the first span
/// starts five minutes ago.
pub(crate) async fn replay(app: &TestApp, dir: &Path) {
    let name = dir.display();
    let mut requests: Vec<ExportTraceServiceRequest> = exports(dir)
        .iter()
        .map(|path| {
            ExportTraceServiceRequest::decode(std::fs::read(path).unwrap().as_slice())
                .expect("a captured export decodes")
        })
        .collect();
    let first = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|span| span.start_time_unix_nano)
        .min()
        .expect("the corpus has spans");
    let target = now_ns() - 300 * 1_000_000_000;
    for request in &mut requests {
        for resource_spans in &mut request.resource_spans {
            for scope_spans in &mut resource_spans.scope_spans {
                for span in &mut scope_spans.spans {
                    span.start_time_unix_nano = span.start_time_unix_nano - first + target;
                    span.end_time_unix_nano = span.end_time_unix_nano - first + target;
                }
            }
        }
        let res = http_client()
            .post(format!("{}/v1/traces", app.otlp_http_url))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{name}: the export is accepted");
        tokio::time::sleep(BETWEEN_EXPORTS).await;
    }
}

/// A fresh app that has been sent the captured exports of `dir` and has analysed all of them.
pub(crate) async fn replayed(dir: &Path) -> TestApp {
    let app = spawn_app().await;
    replay(&app, dir).await;
    // Every stored block analysed: SQLite's watermark reaches the last block; PostgreSQL has no
    // trace pending.
    app.eventually(Duration::from_secs(30), || async {
        let blocks = app.store.stats().await.ok()?.n_blocks;
        let analysed = if app.store.is_shared() {
            app.store.pending_traces().await.ok()? == 0
        } else {
            app.store.analysis_watermark().await.ok()? >= i64::try_from(blocks).ok()?
        };
        (blocks > 0 && analysed).then_some(())
    })
    .await;
    app
}

/// `/api/v1/endpoint` of one endpoint, its names encoded for the query string.
pub(crate) fn endpoint_url(app: &TestApp, service: &str, endpoint: &str) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "{}/api/v1/endpoint?service={}&endpoint={}",
        app.ui_url,
        encode(service),
        encode(endpoint)
    )
}

/// What differs from the expectation, one line each.
async fn judge(app: &TestApp, expect: &Json) -> Vec<String> {
    let mut wrong = Vec::new();
    let endpoints = get_json(format!("{}/api/v1/endpoints", app.ui_url))
        .await
        .expect("endpoints");
    for (service, names) in expect["request_endpoints"].as_object().unwrap() {
        let mut want: Vec<&str> = names
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        want.sort_unstable();
        let mut got: Vec<&str> = endpoints["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["service"] == service.as_str())
            .map(|e| e["endpoint"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        if got != want {
            wrong.push(format!("{service}: endpoints {got:?}, expected {want:?}"));
        }
    }
    for (name, e) in expect["endpoints"].as_object().unwrap() {
        let service = e["service"].as_str().unwrap();
        let Some(detail) = get_json(endpoint_url(app, service, name)).await else {
            wrong.push(format!("{service} {name}: no such endpoint"));
            continue;
        };
        let requests = detail["requests"].as_u64().unwrap_or(0);
        if requests != e["requests"].as_u64().unwrap() {
            wrong.push(format!(
                "{name}: {requests} requests, expected {}",
                e["requests"]
            ));
        }
        let db_calls = detail["db_calls_per_request"].as_f64().unwrap();
        let want = e["db_calls_per_request"].as_f64().unwrap();
        if (db_calls - want).abs() > want * TOLERANCE + 0.01 {
            wrong.push(format!(
                "{name}: {db_calls} database calls per request, expected {want}"
            ));
        }
        let kinds: Vec<&str> = detail["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap())
            .collect();
        for (key, kind) in [
            ("n_plus_one", "n_plus_one"),
            ("duplicate", "duplicate_query"),
            ("cpu_hot_spot", "cpu_hotspot"),
        ] {
            let found = kinds.contains(&kind);
            match e[key].as_str() {
                Some("must") if !found => wrong.push(format!(
                    "{name}: no {kind} finding, expected one ({kinds:?})"
                )),
                Some("must_not") if found => wrong.push(format!(
                    "{name}: a {kind} finding, expected none ({kinds:?})"
                )),
                _ => {}
            }
        }
        let network = detail["breakdown_ms"]["network"].as_f64().unwrap();
        match e["network_on_critical_path"].as_str() {
            Some("must") if network <= 0.0 => {
                wrong.push(format!("{name}: no network on the critical path"))
            }
            Some("must_not") if network > 0.5 => wrong.push(format!(
                "{name}: {network} ms network on the critical path, expected none"
            )),
            _ => {}
        }
    }
    wrong
}

async fn check(dir: &Path) {
    let name = dir.display();
    let expect: Json =
        serde_json::from_slice(&std::fs::read(dir.join("expect.json")).unwrap()).unwrap();
    let app = replayed(dir).await;
    let wrong = judge(&app, &expect).await;
    app.stop().await;
    assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_flask_sqlalchemy_redis_celery() {
    check(&Path::new(FIXTURES).join("python")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_express_pg_mysql2_ioredis_amqplib() {
    check(&Path::new(FIXTURES).join("node")).await;
}

/// The driver's exit status when PostgreSQL, MariaDB, Redis or RabbitMQ does not answer.
const EXIT_NO_SERVICES: i32 = 77;

/// Runs one application's driver into a fresh folder and judges what it exported; says so and
/// returns when it cannot run here and that is allowed.
async fn live(app: &str) {
    let demanded = std::env::var("BOTTLENECK_PYTHON_TESTS").as_deref() == Ok("1");
    let Ok(python) = std::env::var("BOTTLENECK_CORPUS_PYTHON") else {
        assert!(
            !demanded,
            "BOTTLENECK_PYTHON_TESTS=1 but BOTTLENECK_CORPUS_PYTHON is not set"
        );
        eprintln!("skipped: the live {app} corpus needs BOTTLENECK_CORPUS_PYTHON");
        return;
    };
    let driver = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(app)
        .join("drive.py");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_owned();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(driver)
            .arg("--out")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("python runs")
    })
    .await
    .unwrap();
    if status.code() == Some(EXIT_NO_SERVICES) && !demanded {
        eprintln!(
            "skipped: PostgreSQL, Redis or RabbitMQ does not answer for the live {app} corpus"
        );
        return;
    }
    assert!(
        status.success(),
        "the live {app} corpus run failed: {status}"
    );
    check(out.path()).await;
}

/// One after the other: the two runs share this machine's services and its two cores, and each
/// app's timing (its late roots) depends on not being starved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_python_and_node_apps() {
    live("python").await;
    live("node").await;
}
