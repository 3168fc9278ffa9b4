//! Interop: the official OpenTelemetry Python SDK, with the sqlite3 and requests
//! instrumentations, exports over OTLP/HTTP and OTLP/gRPC; categories and normalized fields
//! come out right.
//!
//! Needs a Python with `opentelemetry-sdk`, `opentelemetry-exporter-otlp`,
//! `opentelemetry-instrumentation-sqlite3`, `opentelemetry-instrumentation-requests` and
//! `requests`: `BOTTLENECK_PYTHON` names it (CI sets it up); otherwise `python3` is tried. Without
//! such a Python the test says it is skipped, unless `BOTTLENECK_PYTHON_TESTS=1` demands it.

use std::process::Command;

use collector::category::Category;
use collector::model::{SpanKind, TraceId};

use crate::support::{spawn_app, spawn_app_with};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/python/interop.py");

fn python() -> Option<String> {
    let candidate = std::env::var("BOTTLENECK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, \
        opentelemetry.instrumentation.sqlite3, opentelemetry.instrumentation.requests, requests";
    let ok = Command::new(&candidate)
        .args(["-c", probe])
        .output()
        .is_ok_and(|out| out.status.success());
    if ok {
        return Some(candidate);
    }
    assert!(
        std::env::var("BOTTLENECK_PYTHON_TESTS").as_deref() != Ok("1"),
        "BOTTLENECK_PYTHON_TESTS=1 but {candidate} lacks the OpenTelemetry SDK packages"
    );
    eprintln!("skipped: no Python with the OpenTelemetry SDK (set BOTTLENECK_PYTHON)");
    None
}

#[tokio::test]
async fn python_sdk_exports_over_http_and_grpc() {
    let Some(python) = python() else { return };
    let app = spawn_app().await;
    let target = format!("{}/healthz", app.ui_url);
    for (protocol, endpoint) in [("http", &app.otlp_http_url), ("grpc", &app.otlp_grpc_url)] {
        let (python, endpoint, target) = (python.clone(), endpoint.clone(), target.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(SCRIPT)
                .args([protocol, &endpoint, &target])
                .output()
                .expect("python runs")
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "{protocol}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let trace_id = String::from_utf8(output.stdout).unwrap();
        let trace_id = TraceId::parse_hex(trace_id.trim()).expect("the script prints the trace id");
        let spans = app
            .store
            .trace(trace_id)
            .await
            .unwrap()
            .expect("the trace is stored");

        let server = spans
            .iter()
            .find(|s| s.kind == SpanKind::Server)
            .expect("the server span");
        assert_eq!(server.resource.service_name, format!("py-{protocol}"));
        assert_eq!(server.resource.service_version.as_deref(), Some("2.0"));
        assert_eq!(server.semantics.http_route.as_deref(), Some("/users/{id}"));
        assert!(server.semantics.cpu_time_ns.is_some_and(|ns| ns > 0));

        let queries: Vec<_> = spans
            .iter()
            .filter(|s| s.category == Category::Db)
            .collect();
        assert_eq!(
            queries.len(),
            3,
            "{protocol}: the sqlite3 instrumentation records each execute"
        );
        assert!(
            queries
                .iter()
                .all(|q| q.semantics.db_system.as_deref() == Some("sqlite"))
        );
        assert!(
            queries.iter().any(|q| q.semantics.db_statement.as_deref()
                == Some("SELECT name FROM users WHERE id = ?"))
        );

        let call = spans
            .iter()
            .find(|s| s.category == Category::Network)
            .expect("the requests span");
        assert_eq!(call.kind, SpanKind::Client);
        assert_eq!(call.semantics.http_method.as_deref(), Some("GET"));
        assert!(
            call.semantics
                .url_full
                .as_deref()
                .is_some_and(|url| url.ends_with("/healthz")),
            "{:?}",
            call.semantics
        );
        assert_eq!(call.semantics.http_status_code, Some(200));
    }
    app.stop().await;
}

/// The exporters' own way of sending a token, `OTEL_EXPORTER_OTLP_HEADERS`, passes the ingest
/// check on both transports; without it nothing is stored.
#[tokio::test]
async fn python_sdk_sends_the_ingest_token_from_otel_exporter_otlp_headers() {
    let Some(python) = python() else { return };
    let app = spawn_app_with(|config| {
        config.auth.ingest_tokens = collector::auth::Tokens::new(["s3cret".to_owned()]);
    })
    .await;
    let target = format!("{}/healthz", app.ui_url);
    for (protocol, endpoint) in [("http", &app.otlp_http_url), ("grpc", &app.otlp_grpc_url)] {
        for headers in [Some("Authorization=Bearer%20s3cret"), None] {
            let (python, endpoint, target) = (python.clone(), endpoint.clone(), target.clone());
            let output = tokio::task::spawn_blocking(move || {
                let mut command = Command::new(python);
                command.arg(SCRIPT).args([protocol, &endpoint, &target]);
                match headers {
                    Some(headers) => command.env("OTEL_EXPORTER_OTLP_HEADERS", headers),
                    None => command.env_remove("OTEL_EXPORTER_OTLP_HEADERS"),
                };
                command.output().expect("python runs")
            })
            .await
            .unwrap();
            let trace_id = String::from_utf8(output.stdout).unwrap();
            let trace_id =
                TraceId::parse_hex(trace_id.trim()).expect("the script prints the trace id");
            let stored = app.store.trace(trace_id).await.unwrap().is_some();
            assert_eq!(
                stored,
                headers.is_some(),
                "{protocol} with headers {headers:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    app.stop().await;
}
