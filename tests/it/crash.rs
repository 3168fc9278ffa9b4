//! Kill -9 during ingest: every span whose export was answered 200 is in the store afterwards.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bottleneck::store::Store;
use collector::model::TraceId;
use prost::Message;

use crate::ingest::login_request;
use crate::support::{TestDatabase, http_client};

/// Starts the real binary on free ports and returns it with its OTLP/HTTP address, read from the
/// log line it prints once every listener is bound.
pub fn start_server(db: &str) -> (std::process::Child, String) {
    start_server_with(db, &[])
}

/// [`start_server`] with more flags (e.g. `--config`).
pub fn start_server_with(db: &str, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--otlp-grpc",
            "127.0.0.1:0",
        ])
        .arg("--database-url")
        .arg(db)
        .args(extra)
        .env("BOTTLENECK_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server logs its addresses")
            .expect("readable log");
        if let Some(rest) = line.split("otlp_http=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"))
}

#[tokio::test]
async fn acknowledged_spans_survive_sigkill() {
    let db = TestDatabase::new().await;
    let (mut child, url) = start_server(&db.cli_url());
    let client = http_client();
    let mut acknowledged = HashSet::new();
    // Concurrent exporters, so the kill lands while exports are in flight.
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4u8 {
        let client = client.clone();
        let url = url.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for seq in 0..200u8 {
                let seed = worker.wrapping_mul(61).wrapping_add(seq) | 1;
                let mut request = login_request(seed);
                for span in &mut request.resource_spans[0].scope_spans[0].spans {
                    span.trace_id =
                        [worker + 1, seq, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7].to_vec();
                }
                let res = client
                    .post(format!("{url}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await;
                match res {
                    Ok(res) if res.status() == 200 => acked.push([worker + 1, seq]),
                    _ => break,
                }
            }
            acked
        });
    }
    // Let some exports through, then kill without warning.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    while let Some(acked) = tasks.join_next().await {
        acknowledged.extend(acked.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "some exports were acknowledged before the kill"
    );

    let store = Store::open(&db.url).await.unwrap();
    for [worker, seq] in &acknowledged {
        let trace_id = TraceId([*worker, *seq, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
        let spans = store.trace(trace_id).await.unwrap();
        assert_eq!(
            spans.map(|s| s.len()),
            Some(2),
            "acknowledged trace {trace_id} lost"
        );
    }
    store.close().await;

    // And the restarted server takes data again on the same database.
    let (mut child, url) = start_server(&db.cli_url());
    let res = http_client()
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(login_request(99).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
