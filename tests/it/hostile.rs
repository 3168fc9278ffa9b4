//! Hostile and broken clients through the real app: each test sends something bad, checks the
//! answer, and then proves that the server is still healthy and that data stored before is intact.

use std::time::{Duration, Instant};

use bottleneck::config::AuthConfig;
use collector::auth::Tokens;
use collector::model::TraceId;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ingest::{assert_login_stored, kv, login_request, post};
use crate::support::{RawGrpcCall, TestApp, grpc_frame, http_client, spawn_app, spawn_app_with};

const PROTOBUF: &str = "application/x-protobuf";
const START: u64 = 1_700_000_000_000_000_000;

/// The server still takes and stores a good export, and `earlier` (stored before) is intact.
async fn still_healthy(app: &TestApp, earlier: u8, fresh: u8) {
    assert_login_stored(&app.store, earlier).await;
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        login_request(fresh).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_login_stored(&app.store, fresh).await;
    let health = http_client()
        .get(format!("{}/healthz", app.ui_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

async fn store_login(app: &TestApp, seed: u8) {
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        login_request(seed).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
}

pub(crate) fn export(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

pub(crate) fn span(
    trace: [u8; 16],
    id: u64,
    parent: Option<u64>,
    name: &str,
    start: u64,
    end: u64,
) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map_or_else(Vec::new, |p| p.to_be_bytes().to_vec()),
        name: name.into(),
        kind: if parent.is_none() { 2 } else { 1 },
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

async fn trace_json(app: &TestApp, trace: [u8; 16]) -> serde_json::Value {
    let res = http_client()
        .get(format!("{}/api/v1/traces/{}", app.ui_url, TraceId(trace)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn garbage_truncated_and_mislabelled_bodies_are_400() {
    let app = spawn_app().await;
    store_login(&app, 21).await;
    let good = login_request(30).encode_to_vec();
    let json = serde_json::to_vec(&login_request(31)).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (PROTOBUF, good[..good.len() - 3].to_vec()),
        (PROTOBUF, good[..good.len() / 2].to_vec()),
        (
            PROTOBUF,
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        (PROTOBUF, json.clone()),
        ("application/json", good.clone()),
        (
            "application/json",
            br#"{"resourceSpans": [{"scopeSpans": {"spans": 1}}]}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": true}]}]}]}"#
                .to_vec(),
        ),
        ("application/json", json[..json.len() - 1].to_vec()),
        ("application/json", b"\xff\xfe{}".to_vec()),
    ];
    for (content_type, body) in cases {
        let res = post(&app.otlp_http_url, content_type, body).await;
        assert_eq!(res.status(), 400, "{content_type}");
    }
    // A content type with parameters is still the same content type.
    let res = post(&app.otlp_http_url, "application/json; charset=utf-8", json).await;
    assert_eq!(res.status(), 200);
    // An unknown or broken content encoding.
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "br")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a body that is not gzip");
    still_healthy(&app, 21, 22).await;
    app.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_protobuf_strings_is_400() {
    let app = spawn_app().await;
    store_login(&app, 23).await;
    let mut request = login_request(32);
    request.resource_spans[0].scope_spans[0].spans[0].name = "BREAK_ME_HERE".into();
    let mut body = request.encode_to_vec();
    let at = body
        .windows(13)
        .position(|w| w == b"BREAK_ME_HERE")
        .unwrap();
    body[at] = 0xff;
    body[at + 1] = 0xc0;
    let res = post(&app.otlp_http_url, PROTOBUF, body).await;
    assert_eq!(res.status(), 400);
    still_healthy(&app, 23, 24).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_ids_and_times_far_away_are_judged_per_span() {
    let app = spawn_app().await;
    store_login(&app, 25).await;
    let trace = [0x25; 16];
    let good = span(trace, 1, None, "GET /ok", START, START + 1_000);
    let mut spans = vec![good.clone()];
    for (trace_id, span_id, parent) in [
        (vec![], vec![1; 8], vec![]),
        (vec![0; 16], vec![1; 8], vec![]),
        (vec![1; 17], vec![1; 8], vec![]),
        (trace.to_vec(), vec![], vec![]),
        (trace.to_vec(), vec![0; 8], vec![]),
        (trace.to_vec(), vec![9; 4], vec![]),
        (trace.to_vec(), vec![9; 8], vec![0; 8]),
        (trace.to_vec(), vec![9; 8], vec![8; 9]),
    ] {
        spans.push(Span {
            trace_id,
            span_id,
            parent_span_id: parent,
            ..good.clone()
        });
    }
    // After the year 2262: rejected. The year 1970 and the year 2200: kept as sent.
    spans.push(span(trace, 2, Some(1), "too late", START, u64::MAX));
    spans.push(span(trace, 3, Some(1), "1970", 1, 2));
    spans.push(span(
        trace,
        4,
        Some(1),
        "2200",
        7_258_118_400_000_000_000,
        7_258_118_400_000_001_000,
    ));
    // No start time at all.
    spans.push(span(trace, 5, Some(1), "no start", 0, 10));
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        export("ids", spans).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body = ExportTraceServiceResponse::decode(res.bytes().await.unwrap()).unwrap();
    assert_eq!(body.partial_success.unwrap().rejected_spans, 10);
    let stored = app.store.trace(TraceId(trace)).await.unwrap().unwrap();
    let mut names: Vec<_> = stored.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["1970", "2200", "GET /ok"]);
    trace_json(&app, trace).await;
    still_healthy(&app, 25, 26).await;
    app.stop().await;
}

#[tokio::test]
async fn requests_lasting_centuries_saturate_the_sums_instead_of_overflowing() {
    // Three requests of 292 years each: their summed nanoseconds exceed u64::MAX.
    let app = spawn_app().await;
    let longest = i64::MAX as u64 - 1;
    for seed in 0..3u8 {
        let trace = [0x70 + seed; 16];
        let spans = vec![span(trace, 1, None, "GET /forever", 1, longest)];
        let res = post(
            &app.otlp_http_url,
            PROTOBUF,
            export("centuries", spans).encode_to_vec(),
        )
        .await;
        assert_eq!(res.status(), 200);
    }
    let count_line = "bottleneck_endpoint_request_duration_seconds_count{service=\"centuries\",endpoint=\"GET /forever\"} 3";
    let metrics = app
        .eventually(Duration::from_secs(30), || async {
            let metrics = app.metrics().await;
            metrics.contains(count_line).then_some(metrics)
        })
        .await;
    let sum_line = "bottleneck_endpoint_request_duration_seconds_sum{service=\"centuries\",endpoint=\"GET /forever\"} ";
    let sum: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(sum_line))
        .expect("the sum is exported")
        .parse()
        .unwrap();
    assert_eq!(sum, u64::MAX as f64 / 1e9);
    // The analysis goes on, and the counters still take new requests.
    store_login(&app, 27).await;
    app.eventually(Duration::from_secs(30), || async {
        app.metrics()
            .await
            .contains("endpoint=\"POST /login\"} 1")
            .then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn odd_trees_are_stored_analysed_and_served() {
    let app = spawn_app().await;
    store_login(&app, 27).await;
    let trace = [0x27; 16];
    let spans = vec![
        span(trace, 1, None, "GET /odd", START, START + 1_000_000),
        // Ends before it starts.
        span(trace, 2, Some(1), "backwards", START + 500, START + 100),
        // Duplicate span ids, with different content.
        span(trace, 3, Some(1), "first", START + 10, START + 20),
        span(trace, 3, Some(1), "second", START + 30, START + 40),
        // A parent cycle: 4 -> 5 -> 6 -> 4.
        span(trace, 4, Some(6), "cycle a", START, START + 10),
        span(trace, 5, Some(4), "cycle b", START, START + 10),
        span(trace, 6, Some(5), "cycle c", START, START + 10),
        // Orphans: their parent never arrives.
        span(trace, 7, Some(99), "orphan", START, START + 10),
        span(trace, 8, Some(7), "orphan's child", START, START + 5),
    ];
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        export("odd", spans.clone()).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    // The same spans again: exported twice, stored twice, analysed as one trace.
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        export("odd", spans).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let requests = app
        .eventually(Duration::from_secs(20), || async {
            let rows = app.store.trace_requests(TraceId(trace)).await.unwrap();
            (!rows.is_empty()).then_some(rows)
        })
        .await;
    // The root is a request, and so may be the top of a broken cycle or an orphan (the analysis
    // treats a span whose parent is missing as a root); each is counted once although every span
    // was exported twice.
    let ids: std::collections::HashSet<_> = requests.iter().map(|r| r.span_id).collect();
    assert_eq!(ids.len(), requests.len(), "a request counted twice");
    assert!(ids.contains(&collector::model::SpanId(1u64.to_be_bytes())));
    let json = trace_json(&app, trace).await;
    assert!(json["spans"].as_array().unwrap().len() >= 9, "{json}");
    still_healthy(&app, 27, 28).await;
    app.stop().await;
}

/// 100,000 spans in one trace, and a parent chain 100,000 deep: decode, store, analysis and the
/// trace API must neither overflow a stack nor give up.
#[tokio::test]
async fn a_huge_trace_and_a_deep_chain_do_not_overflow() {
    const N: u64 = 100_000;
    let app = spawn_app().await;
    store_login(&app, 29).await;
    let wide = [0x29; 16];
    let deep = [0x2a; 16];
    let mut spans = vec![span(wide, 1, None, "GET /wide", START, START + 10 * N)];
    spans.extend((2..=N).map(|i| span(wide, i, Some(1), "child", START + i, START + i + 5)));
    let started = Instant::now();
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        export("wide", spans).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut spans = vec![span(deep, 1, None, "GET /deep", START, START + 10 * N)];
    spans.extend(
        (2..=N).map(|i| span(deep, i, Some(i - 1), "level", START + i, START + 10 * N - i)),
    );
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        export("deep", spans).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    for trace in [wide, deep] {
        app.eventually(Duration::from_secs(120), || async {
            let rows = app.store.trace_requests(TraceId(trace)).await.unwrap();
            (!rows.is_empty()).then_some(())
        })
        .await;
        let json = trace_json(&app, trace).await;
        assert_eq!(json["spans"].as_array().unwrap().len(), N as usize);
    }
    eprintln!(
        "100,000-span trace and chain: ingested, analysed and served in {:?}",
        started.elapsed()
    );
    still_healthy(&app, 29, 30).await;
    app.stop().await;
}

#[tokio::test]
async fn megabyte_attribute_values_are_truncated_and_counted() {
    let app = spawn_app().await;
    let mut request = login_request(33);
    request.resource_spans[0].scope_spans[0].spans[1]
        .attributes
        .push(kv("blob", &"x".repeat(1 << 20)));
    let res = post(&app.otlp_http_url, PROTOBUF, request.encode_to_vec()).await;
    assert_eq!(res.status(), 200);
    let spans = app.store.trace(TraceId([33; 16])).await.unwrap().unwrap();
    let blob = spans
        .iter()
        .flat_map(|s| &s.attributes)
        .find(|kv| kv.key == "blob")
        .expect("the attribute is kept")
        .value
        .to_string();
    assert!(blob.ends_with(collector::otlp::decode::TRUNCATION_MARKER));
    assert!(blob.len() < 20 * 1024, "{}", blob.len());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("bottleneck_attribute_values_truncated_total 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// `n` in base 26, as letters: a path segment that is not taken for an id.
pub(crate) fn letters(mut n: u64) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            return String::from_utf8(out).expect("ascii");
        }
    }
}

/// A service sending raw paths as span names: 100,000 distinct endpoints fold into the cap.
#[tokio::test]
async fn distinct_span_names_stay_within_the_endpoint_cap() {
    const N: u64 = 100_000;
    const CAP: usize = 50;
    let app = spawn_app_with(|config| config.pipeline.max_endpoints_per_service = CAP).await;
    for batch in 0..10u64 {
        let spans = (0..N / 10)
            .map(|i| {
                let n = batch * (N / 10) + i;
                let mut trace = [0x3c; 16];
                trace[8..].copy_from_slice(&n.to_be_bytes());
                let path = format!("/raw/{}", letters(n));
                let mut server = span(
                    trace,
                    n + 1,
                    None,
                    &format!("GET {path}"),
                    START,
                    START + 1_000,
                );
                server.attributes = vec![kv("http.request.method", "GET"), kv("url.path", &path)];
                server
            })
            .collect();
        let res = post(
            &app.otlp_http_url,
            PROTOBUF,
            export("raw", spans).encode_to_vec(),
        )
        .await;
        assert_eq!(res.status(), 200);
    }
    let endpoints = app
        .eventually(Duration::from_secs(180), || async {
            let res = http_client()
                .get(format!(
                    "{}/api/v1/endpoints?service=raw&from=0",
                    app.ui_url
                ))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = res.json().await.unwrap();
            let endpoints = body["endpoints"].as_array().cloned().unwrap_or_default();
            let requests: u64 = endpoints
                .iter()
                .map(|e| e["requests"].as_u64().unwrap_or(0))
                .sum();
            (requests == N).then_some(endpoints)
        })
        .await;
    assert!(endpoints.len() <= CAP + 1, "{} endpoints", endpoints.len());
    app.stop().await;
}

/// Reads from `stream` until the server closes it; returns how long that took.
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept a stalled connection open for {limit:?}"),
        }
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn slow_loris_clients_are_disconnected_while_others_are_served() {
    let app = spawn_app_with(|config| {
        config.timeouts.header_read = Duration::from_millis(600);
        config.timeouts.body_read = Duration::from_millis(600);
        config.timeouts.grpc_request = Duration::from_millis(800);
    })
    .await;
    let limit = Duration::from_secs(10);
    let mut stalled = Vec::new();
    for url in [&app.otlp_http_url, &app.ui_url, &app.otlp_grpc_url] {
        // Connects and sends nothing.
        stalled.push(TcpStream::connect(host_port(url)).await.unwrap());
        // Sends half a request head and stops.
        let mut half = TcpStream::connect(host_port(url)).await.unwrap();
        half.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-")
            .await
            .unwrap();
        stalled.push(half);
    }
    // Sends the head and part of the body, then stops.
    let mut body = TcpStream::connect(host_port(&app.otlp_http_url))
        .await
        .unwrap();
    body.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();

    // Meanwhile, a well-behaved exporter is served.
    store_login(&app, 34).await;
    assert_login_stored(&app.store, 34).await;

    let mut slowest = Duration::ZERO;
    for stream in &mut stalled {
        let took = time_until_closed(stream, limit).await;
        assert!(took < Duration::from_secs(5), "closed after {took:?}");
        slowest = slowest.max(took);
    }
    // The stalled body is answered as late, not as malformed, before its connection closes.
    let mut answer = Vec::new();
    tokio::time::timeout(limit, body.read_to_end(&mut answer))
        .await
        .expect("the server kept a stalled body's connection open")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("no part of the request body arrived for 600ms"),
        "{answer}"
    );
    eprintln!("7 stalled connections closed, the last after {slowest:?} (timeouts 600 ms)");

    // gRPC: a stream that sends half a message and stalls is ended with DEADLINE_EXCEEDED.
    let tcp = TcpStream::connect(host_port(&app.otlp_grpc_url))
        .await
        .unwrap();
    let mut call = RawGrpcCall::open(
        tcp,
        format!(
            "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            app.otlp_grpc_url
        ),
    )
    .await;
    call.send
        .send_data(grpc_frame(1000, b"0123456789"), false)
        .unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(limit, call.response)
        .await
        .expect("an answer before the limit")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    eprintln!(
        "stalled gRPC stream answered after {:?} (deadline 800 ms)",
        started.elapsed()
    );
    assert_eq!(
        response.headers()["grpc-status"],
        (tonic::Code::DeadlineExceeded as i32).to_string()
    );

    // And the gRPC receiver still takes good exports.
    let mut grpc = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap();
    grpc.export(login_request(35)).await.unwrap();
    still_healthy(&app, 35, 36).await;
    app.stop().await;
}

pub(crate) fn auth(ingest: &[&str], read: &[&str], admin: &[&str]) -> AuthConfig {
    let tokens = |list: &[&str]| Tokens::new(list.iter().map(|t| (*t).to_owned()));
    AuthConfig {
        ingest_tokens: tokens(ingest),
        read_tokens: tokens(read),
        admin_tokens: tokens(admin),
    }
}

#[tokio::test]
async fn ingest_needs_a_token_when_tokens_are_configured() {
    let app = spawn_app_with(|config| config.auth = auth(&["in-1", "in-2"], &[], &[])).await;
    let body = login_request(37).encode_to_vec();
    for authorization in [None, Some("Bearer in-3"), Some("Basic aW4tMTo=")] {
        let mut request = http_client()
            .post(format!("{}/v1/traces", app.otlp_http_url))
            .header("content-type", PROTOBUF)
            .body(body.clone());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 401, "{authorization:?}");
    }
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", PROTOBUF)
        .header("authorization", "Bearer in-2")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_login_stored(&app.store, 37).await;

    let mut grpc = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap();
    let err = grpc.export(login_request(38)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(login_request(38));
    request
        .metadata_mut()
        .insert("authorization", "Bearer in-1".parse().unwrap());
    grpc.export(request).await.unwrap();
    assert_login_stored(&app.store, 38).await;

    // The UI has no tokens of its own here: it stays open (on loopback).
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("bottleneck_export_unauthenticated_total 4"),
        "{metrics}"
    );
    assert!(!metrics.contains("in-1"), "no token in the metrics");
    app.stop().await;
}

#[tokio::test]
async fn the_ui_needs_read_tokens_and_reload_an_admin_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("bottleneck.toml");
    std::fs::write(&config_file, "").unwrap();
    let config_path = config_file.clone();
    let app = spawn_app_with(move |config| {
        config.auth = auth(&[], &["reader"], &["admin"]);
        config.alerts.config_file = Some(config_path);
    })
    .await;
    let client = http_client();
    let get = |path: &str| client.get(format!("{}{path}", app.ui_url));
    assert_eq!(get("/healthz").send().await.unwrap().status(), 200);
    assert_eq!(get("/readyz").send().await.unwrap().status(), 200);
    let res = get("/api/v1/services").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(get("/metrics").send().await.unwrap().status(), 401);
    assert_eq!(
        get("/api/v1/services")
            .bearer_auth("reader")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/api/v1/services")
            .basic_auth("anyone", Some("reader"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/api/v1/services")
            .bearer_auth("admin")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let reload = || client.post(format!("{}/api/v1/reload", app.ui_url));
    assert_eq!(reload().send().await.unwrap().status(), 401);
    assert_eq!(
        reload()
            .bearer_auth("reader")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        reload()
            .basic_auth("anyone", Some("admin"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "basic credentials, which browsers replay cross-site, cannot change state"
    );
    assert_eq!(
        reload()
            .bearer_auth("admin")
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let res = reload().bearer_auth("admin").send().await.unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn cross_site_reloads_are_refused_without_tokens_too() {
    let app = spawn_app().await;
    let res = http_client()
        .post(format!("{}/api/v1/reload", app.ui_url))
        .header("origin", "http://attacker.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    app.stop().await;
}

fn tls_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/tls")
        .join(name)
}

#[tokio::test]
async fn tls_on_every_listener() {
    let app = spawn_app_with(|config| {
        config.tls = Some(bottleneck::config::TlsConfig {
            cert_file: tls_file("cert.pem"),
            key_file: tls_file("key.pem"),
        });
    })
    .await;
    crate::support::install_crypto();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls_file("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let https = |url: &str| url.replace("http://", "https://");
    let res = client
        .get(format!("{}/healthz", https(&app.ui_url)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .post(format!("{}/v1/traces", https(&app.otlp_http_url)))
        .header("content-type", PROTOBUF)
        .body(login_request(39).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_login_stored(&app.store, 39).await;
    // gRPC over TLS, negotiated as h2 through ALPN.
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_client()));
    let tcp = TcpStream::connect(host_port(&app.otlp_grpc_url))
        .await
        .unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut call = RawGrpcCall::open(
        tls,
        format!(
            "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            https(&app.otlp_grpc_url)
        ),
    )
    .await;
    let message = login_request(40).encode_to_vec();
    call.send
        .send_data(grpc_frame(message.len(), &message), true)
        .unwrap();
    let mut body = call.response.await.unwrap().into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("gRPC trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_login_stored(&app.store, 40).await;
    // Plain HTTP to a TLS listener gets nowhere.
    let plain = http_client()
        .get(format!("{}/healthz", app.ui_url))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    app.stop().await;
}

fn tls_client() -> tokio_rustls::rustls::ClientConfig {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls_file("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// A transaction of another client that stops every write of span blocks until it ends:
/// SQLite's file lock, or a lock on PostgreSQL's table of blocks.
enum StoreBlocker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl StoreBlocker {
    async fn hold(app: &TestApp) -> StoreBlocker {
        use sqlx::Connection;
        let url = app.cli_database_url();
        if url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            for statement in ["BEGIN", "LOCK TABLE span_blocks IN EXCLUSIVE MODE"] {
                sqlx::query(statement).execute(&mut conn).await.unwrap();
            }
            return StoreBlocker::Postgres(conn);
        }
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{url}"))
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .unwrap();
        StoreBlocker::Sqlite(conn)
    }

    async fn release(self) {
        use sqlx::Connection;
        match self {
            StoreBlocker::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            StoreBlocker::Postgres(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

/// Past capacity: with the store blocked and a queue of one export, further exports are turned
/// away at once (429 with Retry-After, RESOURCE_EXHAUSTED), and the queued ones are committed
/// once the store moves again.
#[tokio::test]
async fn overload_is_answered_quickly_and_nothing_accepted_is_lost() {
    let app = spawn_app_with(|config| config.ingest.queue_capacity = 1).await;
    store_login(&app, 41).await;
    let blocker = StoreBlocker::hold(&app).await;
    // Exports pile up: the first waits in the writer, the second in the queue, the rest bounce.
    let mut pending = tokio::task::JoinSet::new();
    for seed in 42..46u8 {
        let url = app.otlp_http_url.clone();
        pending.spawn(async move {
            let res = post(&url, PROTOBUF, login_request(seed).encode_to_vec()).await;
            (
                seed,
                res.status().as_u16(),
                res.headers().get("retry-after").cloned(),
            )
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        login_request(46).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut grpc = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap();
    let err = grpc.export(login_request(47)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    blocker.release().await;
    let mut accepted = 0;
    while let Some(outcome) = pending.join_next().await {
        let (seed, status, retry_after) = outcome.unwrap();
        match status {
            200 => {
                accepted += 1;
                assert_login_stored(&app.store, seed).await;
            }
            429 => assert_eq!(retry_after.unwrap(), "1"),
            other => panic!("export {seed} answered {other}"),
        }
    }
    assert!(accepted >= 1, "the queued exports were committed");
    still_healthy(&app, 41, 48).await;
    app.stop().await;
}
