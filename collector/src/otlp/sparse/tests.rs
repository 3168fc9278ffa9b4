use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link as OtlpLink};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span as OtlpSpan};

use super::*;
use crate::otlp::decode::tests::{kv, login_span, request, string};
use crate::otlp::decode::{MAX_ATTR_VALUE_BYTES, protobuf};
use crate::otlp::normalize;

fn analysis_keys(key: &str) -> bool {
    key.starts_with("db.") || key.starts_with("http.")
}

/// Spans that exercise every part of the mirror: skipped and kept attributes (nested, long,
/// valueless), events, links (one invalid), invalid spans, two resources.
pub(crate) fn rich_request() -> ExportTraceServiceRequest {
    let query = OtlpSpan {
        span_id: vec![3; 8],
        parent_span_id: vec![2; 8],
        kind: 3,
        attributes: vec![
            kv("db.system.name", string("postgresql")),
            kv("client.address", string("10.0.0.1")),
            kv(
                "db.query.text",
                string(&"q".repeat(MAX_ATTR_VALUE_BYTES + 5)),
            ),
            kv(
                "enduser.payload",
                string(&"p".repeat(MAX_ATTR_VALUE_BYTES + 5)),
            ),
            kv("db.query.parameter.id", Value::IntValue(7)),
            kv(
                "db.nested",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv(
                        "inner",
                        Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::BoolValue(true)),
                            }],
                        }),
                    )],
                }),
            ),
            opentelemetry_proto::tonic::common::v1::KeyValue {
                key: "db.valueless".into(),
                value: None,
                ..Default::default()
            },
        ],
        events: vec![Event {
            name: "exception".into(),
            attributes: vec![kv("exception.message", string("boom"))],
            ..Default::default()
        }],
        dropped_events_count: 2,
        links: vec![
            OtlpLink {
                trace_id: vec![5; 16],
                span_id: vec![6; 8],
                ..Default::default()
            },
            OtlpLink {
                trace_id: vec![5; 3],
                span_id: vec![6; 8],
                ..Default::default()
            },
        ],
        ..login_span()
    };
    let invalid = OtlpSpan {
        span_id: vec![0; 8],
        ..login_span()
    };
    let mut request = request(vec![login_span(), query, invalid]);
    let mut other = request.resource_spans[0].clone();
    other.resource = None;
    other.scope_spans[0].spans = vec![OtlpSpan {
        trace_id: vec![4; 16],
        ..login_span()
    }];
    request.resource_spans.push(ResourceSpans { ..other });
    request
}

#[test]
fn spans_are_those_of_the_full_decoder_with_the_kept_attributes_only() {
    let body = rich_request().encode_to_vec();
    let full = decode::spans(protobuf(&body).expect("decodes"));
    let sparse = spans_keeping(&body, analysis_keys).expect("decodes");
    assert_eq!(sparse.n_rejected, full.n_rejected);
    assert_eq!(sparse.n_rejected, 1);
    assert_eq!(sparse.first_rejection, full.first_rejection);
    let expected: Vec<_> = full
        .spans
        .into_iter()
        .map(|mut span| {
            span.attributes
                .retain(|kv| analysis_keys(&kv.key) || normalize::is_read(&kv.key));
            span
        })
        .collect();
    assert_eq!(sparse.spans, expected);
    let query = &sparse.spans[1];
    assert_eq!(
        query.attributes.len(),
        5,
        "client.address and enduser.payload skipped"
    );
    assert_eq!(
        query.n_events, 3,
        "one sent and two dropped by the exporter"
    );
    assert_eq!(query.links.len(), 1, "the invalid link is dropped");
    assert_eq!(query.semantics.db_system.as_deref(), Some("postgresql"));
    assert_eq!(
        sparse.n_truncated_values, 1,
        "only the kept long value is decoded, so only it is cut"
    );
    assert_eq!(sparse.spans[2].resource.service_name, "unknown_service");
}

#[test]
fn a_cut_body_is_refused_by_both_decoders() {
    let body = rich_request().encode_to_vec();
    for cut in [1, body.len() / 3, body.len() - 1] {
        let cut = &body[..cut];
        assert!(protobuf(cut).is_err());
        assert!(
            spans_keeping(cut, analysis_keys).is_err(),
            "cut at {}",
            body.len()
        );
    }
}

#[test]
fn semantics_and_category_do_not_depend_on_what_is_kept() {
    let body = rich_request().encode_to_vec();
    let full = decode::spans(protobuf(&body).expect("decodes"));
    let nothing = spans_keeping(&body, |_| false).expect("decodes");
    assert_eq!(nothing.spans.len(), full.spans.len());
    for (sparse, whole) in nothing.spans.iter().zip(&full.spans) {
        assert_eq!(sparse.semantics, whole.semantics);
        assert_eq!(sparse.category, whole.category);
        assert!(
            sparse
                .attributes
                .iter()
                .all(|kv| normalize::is_read(&kv.key))
        );
    }
    assert_eq!(
        nothing.spans[1].semantics.db_system.as_deref(),
        Some("postgresql")
    );
}
