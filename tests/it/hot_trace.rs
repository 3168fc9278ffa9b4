//! A trace id reused by every export (a broken exporter): each late block of a trace analysed
//! before made the analysis re-read the whole trace, so the work grew with the square of the
//! blocks. Past `MAX_BLOCKS_PER_TRACE` stored blocks, late blocks of the trace are stored and
//! served but not analysed again, and counted; other traces are analysed as before.

use std::time::Duration;

use bottleneck::store::hot_trace::MAX_BLOCKS_PER_TRACE;
use collector::model::TraceId;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::ingest::kv;
use crate::support::{TestApp, export_to, http_client, json_at, spawn_app};

const HOT: [u8; 16] = [0x40; 16];

/// One request of `route` in `trace`, its span id made of `n`.
fn request(trace: [u8; 16], n: u32, route: &str) -> Vec<u8> {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut span_id = vec![0x51; 8];
    span_id[4..].copy_from_slice(&n.to_be_bytes());
    let span = Span {
        trace_id: trace.to_vec(),
        span_id,
        name: format!("GET {route}"),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 2_000_000,
        attributes: vec![kv("http.request.method", "GET"), kv("http.route", route)],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "reuser")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Requests of `GET route` of all time.
async fn requests_of(app: &TestApp, route: &str) -> u64 {
    let url = format!("{}/api/v1/endpoints?service=reuser&from=0", app.ui_url);
    let body = json_at(url).await.expect("the endpoints' JSON");
    (body["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["endpoint"] == format!("GET {route}").as_str())
        .and_then(|e| e["requests"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn late_blocks_of_a_trace_past_the_block_cap_are_stored_and_served_but_not_analysed_again() {
    let app = spawn_app().await;
    let n_first = MAX_BLOCKS_PER_TRACE as u32 + 1;
    let senders: Vec<_> = (0..8u32)
        .map(|worker| {
            let url = app.otlp_http_url.clone();
            tokio::spawn(async move {
                for n in (0..n_first).filter(|n| n % 8 == worker) {
                    export_to(&url, request(HOT, n, "/reused")).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    const SKIPS: &str = "bottleneck_hot_trace_skips_total";
    // Analysed as one trace, re-read while it had at most the cap of blocks; a batch arriving
    // after that is skipped already.
    let skips_before = app
        .eventually(Duration::from_secs(120), || async {
            let skips = app.counter(SKIPS).await;
            let analysed = requests_of(&app, "/reused").await;
            (analysed == u64::from(n_first) || skips > 0).then_some(skips)
        })
        .await;

    app.export(request(HOT, n_first, "/reused")).await;
    app.export(request([0x41; 16], 1, "/fresh")).await;
    app.eventually(Duration::from_secs(60), || async {
        let skipped = app.counter(SKIPS).await > skips_before;
        (skipped && requests_of(&app, "/fresh").await == 1).then_some(())
    })
    .await;

    let stored = app.store.trace(TraceId(HOT)).await.unwrap().unwrap();
    assert_eq!(stored.len(), n_first as usize + 1, "every span is stored");
    let url = format!("{}/api/v1/traces/{}", app.ui_url, hex(&HOT));
    let res = http_client().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "and served");
    assert!(
        requests_of(&app, "/reused").await <= u64::from(n_first),
        "the late request of the hot trace is not analysed"
    );
    app.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
