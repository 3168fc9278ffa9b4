use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link as OtlpLink};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span as OtlpSpan};

use super::*;
use crate::otlp::decode::tests::{kv, login_span, request, string};
use crate::otlp::decode::{MAX_ATTR_VALUE_BYTES, protobuf};
use crate::otlp::normalize;

fn analysis_keys(key: &[u8]) -> bool {
    key.starts_with(b"db.") || key.starts_with(b"http.")
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
            span.attributes.retain(|kv| {
                analysis_keys(kv.key.as_bytes()) || normalize::is_read(kv.key.as_bytes())
            });
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
                .all(|kv| normalize::is_read(kv.key.as_bytes()))
        );
    }
    assert_eq!(
        nothing.spans[1].semantics.db_system.as_deref(),
        Some("postgresql")
    );
}

/// A length-delimited field, encoded by hand: for messages prost's types cannot build (a field
/// given twice, a oneof with two members, an unknown field).
fn len_field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn any(value: Value) -> Vec<u8> {
    AnyValue { value: Some(value) }.encode_to_vec()
}

#[test]
fn values_read_in_place_are_those_prost_decodes() {
    let key = |name: &str| len_field(field::KEY, name.as_bytes());
    let attribute = |parts: &[Vec<u8>]| len_field(field::ATTRIBUTES, &parts.concat());
    let mut two_members = any(string("first"));
    two_members.extend(&any(Value::IntValue(5)));
    let mut unknown_first = vec![9 << 3, 1];
    unknown_first.extend(&any(string("after an unknown field")));
    let attributes = [
        attribute(&[
            key("db.bool"),
            len_field(field::VALUE, &any(Value::BoolValue(true))),
        ]),
        attribute(&[
            key("db.double"),
            len_field(field::VALUE, &any(Value::DoubleValue(2.5))),
        ]),
        attribute(&[
            key("db.negative"),
            len_field(field::VALUE, &any(Value::IntValue(-3))),
        ]),
        attribute(&[
            key("db.bytes"),
            len_field(field::VALUE, &any(Value::BytesValue(vec![1, 2]))),
        ]),
        attribute(&[key("db.empty"), len_field(field::VALUE, &[])]),
        attribute(&[key("db.two_members"), len_field(field::VALUE, &two_members)]),
        attribute(&[
            key("db.given_twice"),
            len_field(field::VALUE, &any(string("first"))),
            len_field(field::VALUE, &any(Value::IntValue(7))),
        ]),
        attribute(&[
            key("db.unknown_field"),
            len_field(field::VALUE, &unknown_first),
        ]),
        attribute(&[
            key("skipped"),
            key("db.last_key_wins"),
            len_field(field::VALUE, &any(string("kept"))),
        ]),
    ];
    let mut span = login_span().encode_to_vec();
    span.extend(attributes.concat());
    let body = len_field(
        field::REQUEST_RESOURCE_SPANS,
        &len_field(field::SCOPE_SPANS, &len_field(field::SPANS, &span)),
    );
    let full = decode::spans(protobuf(&body).expect("prost decodes it"));
    let sparse = spans_keeping(&body, analysis_keys).expect("decodes");
    let values: Vec<(&str, String)> = sparse.spans[0]
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), format!("{:?}", kv.value)))
        .collect();
    assert_eq!(
        values[2..],
        [
            ("db.bool", "Bool(true)".to_owned()),
            ("db.double", "Double(2.5)".to_owned()),
            ("db.negative", "Int(-3)".to_owned()),
            ("db.bytes", "Bytes([1, 2])".to_owned()),
            ("db.empty", "Empty".to_owned()),
            ("db.two_members", "Int(5)".to_owned()),
            ("db.given_twice", "Int(7)".to_owned()),
            (
                "db.unknown_field",
                "Str(\"after an unknown field\")".to_owned()
            ),
            ("db.last_key_wins", "Str(\"kept\")".to_owned()),
        ]
    );
    assert_eq!(sparse.spans, full.spans, "every attribute here is kept");
}
