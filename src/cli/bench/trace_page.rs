//! The trace page of a 10,001-span trace, part of `bench --api`: two such traces are exported
//! over OTLP/HTTP to the server holding the day of data, then their page and their API call are
//! timed. One has 100 batches of 99 equal queries, which the waterfall folds into one row a
//! batch; the other has 10,000 spans of distinct names, which it cuts at its row cap.

use anyhow::Context;
use collector::model::TraceId;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use prost::Message;

use super::payload::{http_export, kv, text};

/// Batches in the folding trace, and queries in each.
const BATCHES: u64 = 100;
const QUERIES_PER_BATCH: u64 = 99;

/// Children of the root in the trace of distinct spans.
const DISTINCT_SPANS: u64 = 10_000;

/// What the two traces are: how their children hang under the root.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    /// 100 batch spans under the root, 99 equal queries under each.
    Folding,
    /// 10,000 spans of distinct names under the root.
    Distinct,
}

impl Shape {
    pub(super) fn label(self) -> &'static str {
        match self {
            Shape::Folding => "10,001 spans folding into 201 rows",
            Shape::Distinct => "10,001 distinct spans, cut at the row cap",
        }
    }

    /// The trace's id, hex as the pages take it.
    pub(super) fn trace_id_hex(self) -> String {
        TraceId(self.trace_id()).to_hex()
    }

    fn trace_id(self) -> [u8; 16] {
        match self {
            Shape::Folding => [0x7f; 16],
            Shape::Distinct => [0x6e; 16],
        }
    }
}

/// The spans of one trace, given ids in the order they are added.
struct Builder {
    trace_id: [u8; 16],
    next_span_id: u64,
    spans: Vec<Span>,
}

impl Builder {
    /// Adds a span and returns its id.
    fn span(
        &mut self,
        parent: Option<[u8; 8]>,
        name: String,
        kind: SpanKind,
        (start, end): (u64, u64),
        attributes: Vec<KeyValue>,
    ) -> [u8; 8] {
        self.next_span_id += 1;
        let span_id = self.next_span_id.to_be_bytes();
        self.spans.push(Span {
            trace_id: self.trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|id| id.to_vec()).unwrap_or_default(),
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            ..Default::default()
        });
        span_id
    }
}

/// The export of one 10,001-span trace that ended at `end_ns`.
pub(super) fn export(shape: Shape, end_ns: u64) -> Vec<u8> {
    const QUERY_NS: u64 = 100_000;
    let children = match shape {
        Shape::Folding => BATCHES * QUERIES_PER_BATCH,
        Shape::Distinct => DISTINCT_SPANS,
    };
    let start_ns = end_ns - (children + 1) * QUERY_NS;
    let mut trace = Builder {
        trace_id: shape.trace_id(),
        next_span_id: 0,
        spans: Vec::new(),
    };
    let root = trace.span(
        None,
        "POST /import".into(),
        SpanKind::Server,
        (start_ns, end_ns),
        vec![
            kv("http.request.method", text("POST")),
            kv("http.route", text("/import")),
        ],
    );
    let mut at = start_ns;
    match shape {
        Shape::Folding => {
            for batch in 0..BATCHES {
                let batch_end = at + QUERIES_PER_BATCH * QUERY_NS;
                let batch_id = trace.span(
                    Some(root),
                    format!("import batch {batch}"),
                    SpanKind::Internal,
                    (at, batch_end),
                    Vec::new(),
                );
                for _ in 0..QUERIES_PER_BATCH {
                    trace.span(
                        Some(batch_id),
                        "INSERT items".into(),
                        SpanKind::Client,
                        (at, at + QUERY_NS),
                        vec![
                            kv("db.system.name", text("postgresql")),
                            kv(
                                "db.query.text",
                                text("INSERT INTO items (id, name) VALUES ($1, $2)"),
                            ),
                        ],
                    );
                    at += QUERY_NS;
                }
            }
        }
        Shape::Distinct => {
            for step in 0..DISTINCT_SPANS {
                trace.span(
                    Some(root),
                    format!("step {step}"),
                    SpanKind::Internal,
                    (at, at + QUERY_NS),
                    Vec::new(),
                );
                at += QUERY_NS;
            }
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", text("bench-import"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: trace.spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Exports both traces to the server's OTLP/HTTP receiver; each is stored when answered.
pub(super) async fn send_both(client: &reqwest::Client, otlp_http: &str) -> anyhow::Result<()> {
    let now_ns = crate::time::now_unix_ns();
    for shape in [Shape::Folding, Shape::Distinct] {
        let response = http_export(client, otlp_http, export(shape, now_ns))
            .send()
            .await
            .with_context(|| format!("exporting the trace of {}", shape.label()))?;
        anyhow::ensure!(
            response.status().is_success(),
            "the trace of {} was answered {}",
            shape.label(),
            response.status()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_traces_have_ten_thousand_and_one_spans_under_one_root() {
        for shape in [Shape::Folding, Shape::Distinct] {
            let body = export(shape, 1_000_000_000_000);
            let decoded = collector::otlp::decode::spans(
                collector::otlp::decode::protobuf(&body).expect("a valid export"),
            );
            assert_eq!(decoded.n_rejected, 0);
            assert_eq!(decoded.spans.len(), 10_001);
            let roots = decoded
                .spans
                .iter()
                .filter(|span| span.parent_span_id.is_none())
                .count();
            assert_eq!(roots, 1);
            assert!(
                decoded
                    .spans
                    .iter()
                    .all(|span| span.trace_id.0 == shape.trace_id())
            );
        }
    }
}
