//! OTLP ingest through both transports and both encodings, and every error answer, each followed
//! by proof that the server still takes good data.

use std::io::Write;

use collector::model::{SpanKind, StatusCode, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use crate::support::{RawGrpcCall, grpc_frame, http_client, spawn_app, spawn_app_with};

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A login request with one query below it, in trace `seed`.
pub fn login_request(seed: u8) -> ExportTraceServiceRequest {
    let start = 1_700_000_000_000_000_000u64;
    let server = Span {
        trace_id: vec![seed; 16],
        span_id: vec![seed, 1, 1, 1, 1, 1, 1, 1],
        name: "POST /login".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 400_000_000,
        attributes: vec![
            kv("http.request.method", "POST"),
            kv("http.route", "/login"),
        ],
        status: Some(Status {
            code: 2,
            message: "denied".into(),
        }),
        ..Default::default()
    };
    let query = Span {
        trace_id: vec![seed; 16],
        span_id: vec![seed, 2, 2, 2, 2, 2, 2, 2],
        parent_span_id: vec![seed, 1, 1, 1, 1, 1, 1, 1],
        name: "SELECT users".into(),
        kind: 3,
        start_time_unix_nano: start + 10_000_000,
        end_time_unix_nano: start + 30_000_000,
        attributes: vec![
            kv("db.system", "postgresql"),
            kv("db.statement", "SELECT * FROM users WHERE id = 7"),
        ],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "auth"), kv("service.version", "1.0")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![server, query],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

pub async fn post(url: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    http_client()
        .post(format!("{url}/v1/traces"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the server answers")
}

pub async fn assert_login_stored(store: &bottleneck::store::Store, seed: u8) {
    let spans = store
        .trace(TraceId([seed; 16]))
        .await
        .unwrap()
        .expect("the trace is stored");
    assert_eq!(spans.len(), 2);
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(server.resource.service_name, "auth");
    assert_eq!(server.resource.service_version.as_deref(), Some("1.0"));
    assert_eq!(server.duration_ns, 400_000_000);
    assert_eq!(server.status.code, StatusCode::Error);
    assert_eq!(server.status.message, "denied");
    assert_eq!(server.semantics.http_route.as_deref(), Some("/login"));
    let query = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(query.parent_span_id, Some(server.span_id));
    assert_eq!(query.category.as_str(), "db");
    assert_eq!(
        query.semantics.db_statement.as_deref(),
        Some("SELECT * FROM users WHERE id = 7")
    );
}

#[tokio::test]
async fn http_protobuf_is_stored_before_it_is_acknowledged() {
    let app = spawn_app().await;
    let res = post(
        &app.otlp_http_url,
        "application/x-protobuf",
        login_request(1).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-protobuf");
    let body = ExportTraceServiceResponse::decode(res.bytes().await.unwrap()).unwrap();
    assert_eq!(body.partial_success, None);
    // No waiting: a 200 means committed.
    assert_login_stored(&app.store, 1).await;
    app.stop().await;
}

#[tokio::test]
async fn http_json_with_hex_ids_is_stored() {
    let app = spawn_app().await;
    let json = serde_json::to_vec(&login_request(2)).unwrap();
    let res = post(&app.otlp_http_url, "application/json", json).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_login_stored(&app.store, 2).await;
    app.stop().await;
}

#[tokio::test]
async fn http_gzip_body_is_accepted() {
    let app = spawn_app().await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&login_request(3).encode_to_vec())
        .unwrap();
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_login_stored(&app.store, 3).await;
    app.stop().await;
}

#[tokio::test]
async fn grpc_export_is_stored() {
    let app = spawn_app().await;
    let mut client = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap();
    let response = client.export(login_request(4)).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    assert_login_stored(&app.store, 4).await;
    app.stop().await;
}

#[tokio::test]
async fn grpc_gzip_export_is_stored() {
    let app = spawn_app().await;
    let mut client = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let response = client.export(login_request(61)).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    assert_login_stored(&app.store, 61).await;
    app.stop().await;
}

/// One unary gRPC call over plain h2 with `message` as its payload, uncompressed; the
/// `grpc-status` it ends with.
async fn raw_grpc_status(url: &str, path: &str, message: &[u8]) -> String {
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut call = RawGrpcCall::open(tcp, format!("{url}{path}")).await;
    call.send
        .send_data(grpc_frame(message.len(), message), true)
        .unwrap();
    let response = call.response.await.unwrap();
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("gRPC trailers");
    trailers["grpc-status"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn undecodable_grpc_message_is_invalid_argument_and_the_server_goes_on() {
    let app = spawn_app().await;
    let export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let garbage = raw_grpc_status(&app.otlp_grpc_url, export, &[0xff, 0xff, 0xff, 0x01]).await;
    assert_eq!(garbage, (tonic::Code::InvalidArgument as i32).to_string());
    let unknown = "/opentelemetry.proto.collector.trace.v1.TraceService/Other";
    let other = raw_grpc_status(&app.otlp_grpc_url, unknown, &[]).await;
    assert_eq!(other, (tonic::Code::Unimplemented as i32).to_string());
    let good = login_request(62).encode_to_vec();
    assert_eq!(
        raw_grpc_status(&app.otlp_grpc_url, export, &good).await,
        "0"
    );
    assert_login_stored(&app.store, 62).await;
    app.stop().await;
}

#[tokio::test]
async fn invalid_spans_are_rejected_one_by_one_with_partial_success() {
    let app = spawn_app().await;
    let mut request = login_request(5);
    let mut bad = request.resource_spans[0].scope_spans[0].spans[0].clone();
    bad.span_id = vec![0; 8];
    request.resource_spans[0].scope_spans[0].spans.push(bad);
    let res = post(
        &app.otlp_http_url,
        "application/x-protobuf",
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body = ExportTraceServiceResponse::decode(res.bytes().await.unwrap()).unwrap();
    let partial = body.partial_success.expect("one span was rejected");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("span id"),
        "{}",
        partial.error_message
    );
    assert_login_stored(&app.store, 5).await;

    let mut client = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap();
    let mut request = login_request(6);
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1; 3];
    let response = client.export(request).await.unwrap().into_inner();
    assert_eq!(response.partial_success.unwrap().rejected_spans, 1);
    app.stop().await;
}

#[tokio::test]
async fn undecodable_body_is_400_with_a_status_and_the_server_goes_on() {
    let app = spawn_app().await;
    let res = post(
        &app.otlp_http_url,
        "application/x-protobuf",
        vec![0xff, 0xff, 0xff, 0x01],
    )
    .await;
    assert_eq!(res.status(), 400);
    let status = tonic_types::Status::decode(res.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(status.message.contains("protobuf"), "{}", status.message);

    let res = post(
        &app.otlp_http_url,
        "application/json",
        br#"{"resourceSpans": 7}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("JSON"), "{body}");

    let res = post(
        &app.otlp_http_url,
        "application/x-protobuf",
        login_request(7).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_login_stored(&app.store, 7).await;
    app.stop().await;
}

#[tokio::test]
async fn other_content_type_is_415_and_the_server_goes_on() {
    let app = spawn_app().await;
    let res = post(&app.otlp_http_url, "text/plain", b"hello".to_vec()).await;
    assert_eq!(res.status(), 415);
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        415,
        "a missing content type is unsupported too"
    );
    let res = post(
        &app.otlp_http_url,
        "application/x-protobuf",
        login_request(8).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limits_are_413_and_the_server_goes_on() {
    let app = spawn_app_with(|config| {
        config.ingest.max_body_bytes = 2_000;
        config.ingest.max_decoded_body_bytes = 8_000;
    })
    .await;
    let res = post(&app.otlp_http_url, "application/x-protobuf", vec![0; 4_000]).await;
    assert_eq!(res.status(), 413);
    // A small gzip body that inflates past the decoded limit: a gzip bomb in miniature.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 1_000_000]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 2_000);
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let res = post(
        &app.otlp_http_url,
        "application/x-protobuf",
        login_request(9).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_login_stored(&app.store, 9).await;
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let app = spawn_app().await;
    post(
        &app.otlp_http_url,
        "application/x-protobuf",
        login_request(10).encode_to_vec(),
    )
    .await;
    post(&app.otlp_http_url, "text/plain", b"x".to_vec()).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("bottleneck_spans_committed_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bottleneck_export_requests_total{transport=\"http\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bottleneck_commit_latency_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bottleneck_write_queue_depth 0"),
        "{metrics}"
    );
    let health = http_client()
        .get(format!("{}/healthz", app.ui_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http_client()
        .get(format!("{}/readyz", app.ui_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}
