//! Export to visible: how long a request takes from its export until `/api/v1/endpoint` counts
//! it, measured during the load by probes of a service of their own.
//!
//! One probe at a time: a one-span request of service `bench-probe` is exported over OTLP/HTTP
//! (sent again while the server says retry, timed from the first send), then the endpoint's API
//! is polled until its request count reaches the probes sent so far. The grace period is part of
//! what is measured, as a user waiting for the request would see it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use prost::Message;

use super::payload::{http_export, kv, text};
use crate::time::now_unix_ns;

const SERVICE: &str = "bench-probe";
const ROUTE: &str = "/probe";
/// How often the API is asked while a probe is on its way.
const POLL: Duration = Duration::from_millis(25);
/// A probe not visible by then counts as this long and the probing stops.
const GIVE_UP: Duration = Duration::from_secs(60);

/// The export of probe number `n`: one SERVER span that ended just now.
fn probe_export(n: u64) -> Vec<u8> {
    let now = now_unix_ns();
    let mut trace_id = [0xb7; 16];
    trace_id[8..].copy_from_slice(&n.to_be_bytes());
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: format!("GET {ROUTE}"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: now.saturating_sub(1_000_000),
        end_time_unix_nano: now,
        attributes: vec![
            kv("http.request.method", text("GET")),
            kv("http.route", text(ROUTE)),
        ],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", text(SERVICE))],
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

/// Requests of the probe endpoint the API counts now; 0 while it is unknown.
async fn visible_requests(client: &reqwest::Client, ui: &str) -> u64 {
    let url = format!(
        "{ui}/api/v1/endpoint?service={SERVICE}&endpoint=GET%20{}&range=1h",
        ROUTE.replace('/', "%2F")
    );
    let Ok(response) = client.get(&url).send().await else {
        return 0;
    };
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return 0;
    };
    body["requests"].as_u64().unwrap_or(0)
}

/// One probe's times, both from its first send.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProbeTimes {
    /// Until the server acknowledged the export (its spans committed).
    pub(super) acknowledged: Duration,
    /// Until `/api/v1/endpoint` counted the request.
    pub(super) visible: Duration,
}

/// Sends probes every `every` until `stop`, and returns each one's times.
pub(super) async fn probe(
    client: reqwest::Client,
    otlp_http: String,
    ui: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<ProbeTimes> {
    let mut times = Vec::new();
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        let next = Instant::now() + every;
        let body = probe_export(n);
        let sent = Instant::now();
        loop {
            let accepted = http_export(&client, &otlp_http, body.clone())
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if accepted {
                break;
            }
            if sent.elapsed() > GIVE_UP {
                return times;
            }
            tokio::time::sleep(POLL).await;
        }
        let acknowledged = sent.elapsed();
        n += 1;
        while visible_requests(&client, &ui).await < n {
            if sent.elapsed() > GIVE_UP {
                times.push(ProbeTimes {
                    acknowledged,
                    visible: sent.elapsed(),
                });
                return times;
            }
            tokio::time::sleep(POLL).await;
        }
        times.push(ProbeTimes {
            acknowledged,
            visible: sent.elapsed(),
        });
        tokio::time::sleep_until(next.into()).await;
    }
    times
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use super::*;

    #[test]
    fn each_probe_is_its_own_trace_of_the_probe_endpoint() {
        let first = ExportTraceServiceRequest::decode(probe_export(0).as_slice()).unwrap();
        let second = ExportTraceServiceRequest::decode(probe_export(1).as_slice()).unwrap();
        let span = |request: &ExportTraceServiceRequest| {
            request.resource_spans[0].scope_spans[0].spans[0].clone()
        };
        assert_ne!(span(&first).trace_id, span(&second).trace_id);
        assert_eq!(span(&first).kind, SpanKind::Server as i32);
        assert!(span(&first).end_time_unix_nano > span(&first).start_time_unix_nano);
    }
}
