//! Memory and descriptors bounded by design (issue #31, items 1, 3, 4, 10 and 11): gzip bombs on
//! every transport stop inflating at the ratio to their wire bytes, a global budget of body bytes
//! in flight turns exports away before reading, whole bodies have a deadline, idle connections
//! are closed, each listener has a connection cap, the UI answers only to hosts it knows, and
//! services, versions, operation names and resources are capped, the excess counted as `other`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bottleneck::store::Store;
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::crash::start_server_with;
use crate::hostile::{export, letters, span};
use crate::ingest::{assert_login_stored, kv, login_request, post};
use crate::retention::{
    export as send, now_unix_ns, requests_by_endpoint, requests_by_version, selected_by_host,
    server_request,
};
use crate::support::{TestApp, TestDatabase, http_client, spawn_app, spawn_app_with};

const PROTOBUF: &str = "application/x-protobuf";

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// The head of an HTTP/1.1 response, read until its blank line.
async fn response_head(reader: &mut OwnedReadHalf) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match reader.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Uploads gzip of `n_zero_bytes` zeros as a chunked OTLP/HTTP export, compressing as it goes,
/// until the server answers or everything is sent. Once `hold_at` zeros are sent (or the server
/// answered sooner), it waits at `together` for the other bombs, so that all of them are in the
/// server at once rather than one after another. Returns the status and the wire bytes sent.
async fn chunked_gzip_bomb(
    url: &str,
    n_zero_bytes: usize,
    hold_at: usize,
    together: Arc<tokio::sync::Barrier>,
) -> (u16, usize) {
    let stream = TcpStream::connect(host_port(url)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let answered = Arc::new(AtomicBool::new(false));
    let reading = tokio::spawn({
        let answered = Arc::clone(&answered);
        async move {
            let head = response_head(&mut reader).await;
            answered.store(true, Relaxed);
            head
        }
    });
    writer
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\n\
              Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    let mut sent = 0;
    let mut fed = 0;
    let mut held = false;
    while fed < n_zero_bytes && !answered.load(Relaxed) {
        if fed >= hold_at && !held {
            together.wait().await;
            held = true;
        }
        encoder.write_all(&zeros).unwrap();
        fed += zeros.len();
        let mut chunk = std::mem::take(encoder.get_mut());
        if fed >= n_zero_bytes {
            chunk.extend(
                std::mem::replace(
                    &mut encoder,
                    GzEncoder::new(Vec::new(), Compression::best()),
                )
                .finish()
                .unwrap(),
            );
        }
        if chunk.is_empty() {
            continue;
        }
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        if writer.write_all(&framed).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    if !held {
        together.wait().await;
    }
    if !answered.load(Relaxed) {
        let _ = writer.write_all(b"0\r\n\r\n").await;
    }
    let head = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("an answer to the bomb")
        .unwrap()
        .expect("a response head before the connection closed");
    (status_of(&head), sent)
}

/// Kilobytes of a `/proc/<pid>/status` field (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Item 1's acceptance: six concurrent chunked uploads of 1 GiB of zeros, gzipped, against the
/// real binary. Each is refused with a 4xx after a few kilobytes, the server's peak resident
/// memory stays within 100 MiB of idle, and exports sent in the same seconds are acknowledged and
/// stored.
#[tokio::test]
async fn six_chunked_gzip_bombs_leave_memory_flat_while_exports_are_stored() {
    let db = TestDatabase::fresh().await;
    let server = start_server_with(db.cli_url(), &[], None);
    let pid = server.child.id();
    let url = server.otlp_http_url.clone();
    // Warm up: the first exports size the allocator's arenas and the store's caches.
    for seed in 200..205u8 {
        let res = post(&url, PROTOBUF, login_request(seed).encode_to_vec()).await;
        assert_eq!(res.status(), 200);
    }
    let idle_kib = proc_kib(pid, "VmRSS");

    let bombs_done = Arc::new(AtomicBool::new(false));
    let exporter = tokio::spawn({
        let url = url.clone();
        let bombs_done = Arc::clone(&bombs_done);
        async move {
            let mut acknowledged = Vec::new();
            for seed in 150..200u8 {
                let res = post(&url, PROTOBUF, login_request(seed).encode_to_vec()).await;
                assert_eq!(res.status(), 200, "an export beside the bombs");
                acknowledged.push(seed);
                if bombs_done.load(Relaxed) && acknowledged.len() >= 5 {
                    break;
                }
            }
            acknowledged
        }
    });
    let started = Instant::now();
    let mut bombs = tokio::task::JoinSet::new();
    // 60 MiB each before they go on together: under the decoded cap, so only the ratio stops them
    // before that.
    let together = Arc::new(tokio::sync::Barrier::new(6));
    for _ in 0..6 {
        let url = url.clone();
        let together = Arc::clone(&together);
        bombs.spawn(async move { chunked_gzip_bomb(&url, 1 << 30, 60 << 20, together).await });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = bombs.join_next().await {
        outcomes.push(outcome.unwrap());
    }
    bombs_done.store(true, Relaxed);
    let acknowledged = exporter.await.unwrap();
    let peak_kib = proc_kib(pid, "VmHWM");
    eprintln!(
        "6 chunked gzip bombs of 1 GiB: answered {:?} after {:?} (wire bytes sent {:?}); \
         server RSS idle {} MiB, peak {} MiB; {} exports acknowledged meanwhile",
        outcomes
            .iter()
            .map(|(status, _)| status)
            .collect::<Vec<_>>(),
        started.elapsed(),
        outcomes.iter().map(|(_, sent)| sent).collect::<Vec<_>>(),
        idle_kib / 1024,
        peak_kib / 1024,
        acknowledged.len(),
    );
    for (status, _) in &outcomes {
        assert!((400..500).contains(status), "a bomb answered {status}");
    }
    assert!(
        peak_kib.saturating_sub(idle_kib) <= 100 * 1024,
        "peak RSS {} MiB is more than 100 MiB over idle ({} MiB)",
        peak_kib / 1024,
        idle_kib / 1024
    );
    let store = Store::open(&db.url).await.unwrap();
    for seed in acknowledged {
        assert_login_stored(&store, seed).await;
    }
    store.close().await;
    server.kill();
}

/// An export whose one attribute is `n_bytes` of the same letter: valid OTLP that gzip shrinks a
/// thousandfold.
fn compressible_export(n_bytes: usize) -> Vec<u8> {
    let mut request = login_request(61);
    request.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(kv("padding", &"a".repeat(n_bytes)));
    request.encode_to_vec()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// HTTP/2 and gRPC bodies are held to the ratio too: an HTTP/2 stream declares no length, and a
/// compressed gRPC message used to be inflated up to the decoded cap.
#[tokio::test]
async fn gzip_bombs_over_http2_and_grpc_are_refused_at_the_ratio() {
    let app = spawn_app_with(|_| {}).await;
    // OTLP/HTTP over HTTP/2 (prior knowledge), 8 MiB of valid export in about 8 KB, sent in
    // pieces with no content-length.
    let bomb = gzip(&compressible_export(8 << 20));
    let tcp = TcpStream::connect(host_port(&app.otlp_http_url))
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    for piece in bomb.chunks(1024) {
        send.send_data(hyper::body::Bytes::copy_from_slice(piece), false)
            .unwrap();
    }
    send.send_data(hyper::body::Bytes::new(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 413);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let status = tonic_types::Status::decode(&bytes[..]).expect("a google.rpc.Status body");
    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
    assert!(
        status.message.contains("inflates more than 100 times"),
        "{}",
        status.message
    );

    // The same export as a gzip gRPC message.
    let mut grpc = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let request =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
            &compressible_export(8 << 20)[..],
        )
        .unwrap();
    let err = grpc.export(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("inflates more than 100 times"),
        "{err}"
    );
    // Refusals are counted (item 11).
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("bottleneck_exports_refused_total{reason=\"too_large\"} 2"),
        "{metrics}"
    );
    // A gzip export of an ordinary ratio still goes through both ways.
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(gzip(&login_request(62).encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    grpc.export(login_request(63)).await.unwrap();
    assert_login_stored(&app.store, 62).await;
    assert_login_stored(&app.store, 63).await;
    app.stop().await;
}

/// Opens an OTLP/HTTP export declaring `declared` bytes and sends only a few: it holds its share
/// of the budget while the body is awaited.
async fn stalled_upload(url: &str, declared: usize) -> TcpStream {
    let mut stream = TcpStream::connect(host_port(url)).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\nContent-Length: {declared}\r\n\r\n0123"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream
}

/// The global budget of body bytes in flight: with it taken by two stalled uploads, exports are
/// told to retry (429 with Retry-After, RESOURCE_EXHAUSTED) without their bodies being read; once
/// the uploads go away, exports are taken again.
#[tokio::test]
async fn the_budget_of_body_bytes_in_flight_turns_exports_away_until_it_is_free() {
    const BUDGET: usize = 2 << 20;
    let app = spawn_app_with(|config| {
        config.ingest.max_body_bytes = 1 << 20;
        config.ingest.max_decoded_body_bytes = 1 << 20;
        config.ingest.max_bytes_in_flight = BUDGET;
    })
    .await;
    let stalled = [
        stalled_upload(&app.otlp_http_url, 1 << 20).await,
        stalled_upload(&app.otlp_http_url, 1 << 20).await,
    ];
    // The stalled uploads take their bytes as soon as their heads are read.
    let res = app
        .eventually(Duration::from_secs(10), || async {
            let res = post(
                &app.otlp_http_url,
                PROTOBUF,
                login_request(71).encode_to_vec(),
            )
            .await;
            (res.status() == 429).then_some(res)
        })
        .await;
    assert_eq!(res.headers()["retry-after"], "1");
    let status = tonic_types::Status::decode(res.bytes().await.unwrap()).unwrap();
    assert!(status.message.contains("in flight"), "{}", status.message);
    let mut grpc = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap();
    let err = grpc.export(login_request(72)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    drop(stalled);
    app.eventually(Duration::from_secs(10), || async {
        let res = post(
            &app.otlp_http_url,
            PROTOBUF,
            login_request(73).encode_to_vec(),
        )
        .await;
        (res.status() == 200).then_some(())
    })
    .await;
    assert_login_stored(&app.store, 73).await;
    grpc.export(login_request(74)).await.unwrap();
    assert_login_stored(&app.store, 74).await;
    assert!(
        app.metrics()
            .await
            .contains("bottleneck_exports_refused_total{reason=\"body_budget\"} ")
    );
    app.stop().await;
}

/// A body that trickles steadily never pauses long enough for the read timeout, but the whole
/// body has a deadline.
#[tokio::test]
async fn a_trickling_body_is_answered_408_at_the_whole_body_deadline() {
    let app = spawn_app_with(|config| {
        config.timeouts.body_read = Duration::from_secs(30);
        config.timeouts.body_total = Duration::from_secs(1);
    })
    .await;
    let stream = TcpStream::connect(host_port(&app.otlp_http_url))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let head = tokio::time::timeout(Duration::from_secs(8), response_head(&mut reader))
        .await
        .expect("an answer while the body still trickles")
        .expect("a response head");
    assert_eq!(status_of(&head), 408, "{head}");
    assert!(started.elapsed() < Duration::from_secs(5));
    trickle.abort();
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        login_request(75).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_login_stored(&app.store, 75).await;
    app.stop().await;
}

/// Waits until the server closes `stream`; panics if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

/// One request over HTTP/2 on a fresh connection; returns the status and the connection's task,
/// which ends when the server closes the connection.
async fn h2_request(
    url: &str,
    request: http::Request<()>,
) -> (
    u16,
    tokio::task::JoinHandle<()>,
    h2::client::SendRequest<hyper::body::Bytes>,
) {
    let tcp = TcpStream::connect(host_port(url)).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let status = response.await.unwrap().status().as_u16();
    (status, connection, client)
}

/// Item 3: an HTTP/2 connection that served one request (even a 401) and then idles is closed
/// after the idle timeout, and so is an idle HTTP/1.1 keep-alive connection; a connection whose
/// request is still in flight is not idle, however long its body takes.
#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let app = spawn_app_with(|config| {
        config.connections.idle_timeout = Duration::from_millis(500);
        config.auth = bottleneck::config::AuthConfig {
            ingest_tokens: collector::auth::Tokens::new(["t0ken".to_owned()]),
            ..Default::default()
        };
    })
    .await;
    let limit = Duration::from_secs(10);
    let healthz = http::Request::get(format!("{}/healthz", app.ui_url))
        .body(())
        .unwrap();
    let (status, ui_connection, _ui_client) = h2_request(&app.ui_url, healthz).await;
    assert_eq!(status, 200);
    let unauthenticated = http::Request::post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", PROTOBUF)
        .body(())
        .unwrap();
    let (status, otlp_connection, _otlp_client) =
        h2_request(&app.otlp_http_url, unauthenticated).await;
    assert_eq!(status, 401);
    let started = Instant::now();
    for connection in [ui_connection, otlp_connection] {
        tokio::time::timeout(limit, connection)
            .await
            .expect("the idle HTTP/2 connection is closed by the server")
            .unwrap();
    }
    eprintln!(
        "idle HTTP/2 connections closed after {:?} (idle timeout 500 ms)",
        started.elapsed()
    );
    // HTTP/1.1 keep-alive.
    let mut keep_alive = TcpStream::connect(host_port(&app.ui_url)).await.unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut keep_alive, limit).await;
    // An export whose body takes three idle timeouts to arrive is still answered.
    let body = login_request(81).encode_to_vec();
    let stream = TcpStream::connect(host_port(&app.otlp_http_url))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            format!(
                "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t0ken\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let pieces: Vec<Vec<u8>> = body
        .chunks(body.len() / 4 + 1)
        .map(<[u8]>::to_vec)
        .collect();
    for piece in pieces {
        tokio::time::sleep(Duration::from_millis(400)).await;
        writer.write_all(&piece).await.unwrap();
    }
    let head = response_head(&mut reader).await.expect("a response");
    assert_eq!(status_of(&head), 200, "{head}");
    assert_login_stored(&app.store, 81).await;
    app.stop().await;
}

/// Item 3: past the cap, a listener's new connections wait until one closes, while the other
/// listeners and the store keep working.
#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_and_other_listeners_serve() {
    let app = spawn_app_with(|config| {
        config.connections.max_per_listener = 2;
        config.timeouts.header_read = Duration::from_secs(30);
    })
    .await;
    // Two connections hold the OTLP/HTTP listener's slots.
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(
            TcpStream::connect(host_port(&app.otlp_http_url))
                .await
                .unwrap(),
        );
    }
    // A third connects (the kernel accepts it) but is not served while they stay.
    let waiting = tokio::spawn({
        let url = app.otlp_http_url.clone();
        async move {
            post(&url, PROTOBUF, login_request(91).encode_to_vec())
                .await
                .status()
        }
    });
    let mut grpc = TraceServiceClient::connect(app.otlp_grpc_url.clone())
        .await
        .unwrap();
    grpc.export(login_request(92)).await.unwrap();
    assert_login_stored(&app.store, 92).await;
    let health = http_client()
        .get(format!("{}/healthz", app.ui_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the third connection was served past the cap"
    );
    drop(holders.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(status, 200);
    assert_login_stored(&app.store, 91).await;
    app.stop().await;
}

async fn ui_get(app: &TestApp, path: &str, host: &str) -> reqwest::Response {
    http_client()
        .get(format!("{}{path}", app.ui_url))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

/// Item 10: the UI answers only to hosts it knows, so a DNS-rebinding page cannot read it.
#[tokio::test]
async fn the_ui_answers_only_to_known_hosts() {
    let app = spawn_app_with(|config| {
        config.allowed_hosts = vec!["bottleneck.internal".to_owned()];
    })
    .await;
    let port = app.ui_url.rsplit(':').next().unwrap().to_owned();
    for host in ["evil.example", &format!("evil.example:{port}")] {
        let res = ui_get(&app, "/api/v1/services", host).await;
        assert_eq!(res.status(), 421, "{host}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("allowed_hosts"),
            "{body}"
        );
        assert_eq!(ui_get(&app, "/", host).await.status(), 421, "{host}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "bottleneck.internal".to_owned(),
    ] {
        let res = ui_get(&app, "/api/v1/services", &host).await;
        assert_eq!(res.status(), 200, "{host}");
    }
    // Probes name whatever host their platform uses.
    assert_eq!(ui_get(&app, "/healthz", "evil.example").await.status(), 200);
    // Over HTTP/2 the host is the :authority.
    let request = http::Request::get(format!("http://evil.example:{port}/api/v1/services"))
        .body(())
        .unwrap();
    let (status, _, _) = h2_request(&app.ui_url, request).await;
    assert_eq!(status, 421);
    app.stop().await;
}

/// Services past `max_services` count as the service `other`, versions past
/// `max_versions_per_service` as the version `other`, each request counted in
/// `bottleneck_cardinality_folded_total`; nothing is lost.
#[tokio::test]
async fn services_and_versions_past_their_caps_fold_into_other_and_are_counted() {
    let app = spawn_app_with(|config| {
        config.pipeline.max_services = 2;
        config.pipeline.max_versions_per_service = 2;
    })
    .await;
    let now = now_unix_ns();
    let trace = |n: u8| [0x3d, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n];
    let version = |v| [("service.version", v)];
    // One export after another: within one, the order requests are interned in is not fixed.
    let exports = [
        ("first", "1", "/a"),
        ("second", "1", "/b"),
        ("third", "1", "/c"),
        ("fourth", "1", "/d"),
        ("first", "2", "/a"),
        ("first", "3", "/a"),
        ("first", "4", "/a"),
    ];
    for (n, (service, v, route)) in (1u8..).zip(exports) {
        send(
            &app,
            vec![server_request(trace(n), service, &version(v), route, now)],
        )
        .await;
        app.eventually(Duration::from_secs(60), || async {
            (app.store.stats().await.unwrap().n_requests == u64::from(n)).then_some(())
        })
        .await;
    }
    let mut services: Vec<String> = (app.store.endpoints().await.unwrap().into_iter())
        .map(|e| e.service)
        .collect();
    services.dedup();
    assert_eq!(services, ["first", "second", "other"]);
    assert_eq!(
        requests_by_endpoint(&app, "other", 2).await,
        [("GET /c".to_owned(), 1), ("GET /d".to_owned(), 1)]
    );
    assert_eq!(
        requests_by_version(&app, "first", 4).await,
        [
            ("1".to_owned(), 1),
            ("2".to_owned(), 1),
            ("other".to_owned(), 2)
        ]
    );
    let folded = |kind: &str| format!("bottleneck_cardinality_folded_total{{kind=\"{kind}\"}}");
    assert_eq!(app.counter(&folded("service")).await, 2);
    assert_eq!(app.counter(&folded("version")).await, 2);
    assert_eq!(app.counter(&folded("resource")).await, 0);
    app.stop().await;
}

/// Six requests of one endpoint, each running a statement of its own: past
/// `max_operations_per_rollup` (3 here), a rollup row's new operation names count as `other` of
/// their category, every call counted, each name folded counted once per row written.
#[tokio::test]
async fn operation_names_past_the_cap_of_a_rollup_row_fold_into_other() {
    let app = spawn_app_with(|config| config.pipeline.max_operations_per_rollup = 3).await;
    let start = now_unix_ns() - 600_000_000_000;
    let spans = (0..6u64)
        .flat_map(|n| {
            let trace = [
                0x3f, n as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n as u8,
            ];
            let end = start + 10_000_000;
            let mut server = span(trace, 1, None, "GET /ops", start, end);
            server.attributes = vec![kv("http.request.method", "GET"), kv("http.route", "/ops")];
            // The query covers the request, so that no gap between spans adds a name.
            let mut query = span(trace, 2, Some(1), "SELECT", start, end);
            query.kind = 3;
            let statement = format!("SELECT * FROM table_{}", letters(n));
            query.attributes = vec![
                kv("db.system", "postgresql"),
                kv("db.statement", &statement),
            ];
            [server, query]
        })
        .collect();
    let res = post(
        &app.otlp_http_url,
        PROTOBUF,
        export("ops", spans).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let operations = app
        .eventually(Duration::from_secs(60), || async {
            let url = format!(
                "{}/api/v1/endpoint?service=ops&endpoint=GET%20/ops&from=0",
                app.ui_url
            );
            let (_, body) = crate::retention::get_json(url).await;
            (body["requests"].as_u64() == Some(6)).then(|| body["operations"].clone())
        })
        .await;
    let mut names: Vec<(String, f64)> = (operations.as_array().unwrap().iter())
        .filter(|op| op["category"] == "db")
        .map(|op| {
            let name = op["name"].as_str().unwrap().to_owned();
            (name, op["calls_per_request"].as_f64().unwrap())
        })
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names
            .iter()
            .any(|(name, calls)| name == "other" && *calls == 0.5),
        "{names:?}"
    );
    let total: f64 = names.iter().map(|(_, calls)| calls).sum();
    assert!((total - 1.0).abs() < 0.02, "every query counted: {names:?}");
    let folded = r#"bottleneck_cardinality_folded_total{kind="operation"}"#;
    // Each row (the minute's and the hour's) held 7 names: the six statements and the request's
    // own untraced time, named after it. The names are taken in order, statements first.
    assert_eq!(app.counter(folded).await, 8);
    app.stop().await;
}

/// Ordinary churn: 10,000 processes (a pod each) have sent requests within the retention
/// period; the next process's requests are still selected by its resource attributes. Before,
/// a fixed cap of 10,000 resources stored them without their process, so every selection of a
/// new process came back empty.
#[tokio::test]
async fn a_new_process_after_ten_thousand_is_still_selected_by_its_attributes() {
    const PODS: u32 = 10_000;
    let app = spawn_app().await;
    let now = now_unix_ns();
    let hour_ago = now - 3_600_000_000_000;
    let trace = |n: u32| {
        let mut id = [0x3e; 16];
        id[12..].copy_from_slice(&n.to_be_bytes());
        id
    };
    for first in (0..PODS).step_by(1_000) {
        let requests = (first..first + 1_000)
            .map(|n| {
                let pod = format!("pod-{n}");
                let start = hour_ago - u64::from(n) * 1_000_000;
                server_request(trace(n), "churn", &[("host.name", &pod)], "/items", start)
            })
            .collect();
        send(&app, requests).await;
    }
    requests_by_endpoint(&app, "churn", u64::from(PODS)).await;
    send(
        &app,
        vec![server_request(
            trace(PODS),
            "churn",
            &[("host.name", "fresh")],
            "/items",
            now,
        )],
    )
    .await;
    requests_by_endpoint(&app, "churn", u64::from(PODS) + 1).await;
    assert_eq!(
        selected_by_host(&app, "churn", "GET /items", "fresh").await,
        Some(Some(1))
    );
    let folded = r#"bottleneck_cardinality_folded_total{kind="resource"}"#;
    assert_eq!(app.counter(folded).await, 0);
    app.stop().await;
}
