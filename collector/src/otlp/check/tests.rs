use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use super::*;
use crate::otlp::decode::tests::{login_span, request};
use crate::otlp::sparse::tests::rich_request;

/// Asserts that the walk and prost agree on `body`: both refuse it, or both accept it and the
/// walk sums up what [`decode::accept`] does. Returns whether it was accepted.
fn agrees(body: &[u8]) -> bool {
    let walked = accept(body);
    match decode::protobuf(body) {
        Ok(request) => {
            let walked =
                walked.unwrap_or_else(|err| panic!("prost decodes it, the walk says {err}"));
            assert_eq!(
                format!("{walked:?}"),
                format!("{:?}", decode::accept(&request))
            );
            true
        }
        Err(err) => {
            assert!(
                walked.is_err(),
                "prost refuses it ({err}), the walk accepts it"
            );
            false
        }
    }
}

#[test]
fn sums_up_what_decoding_keeps() {
    assert!(agrees(&rich_request().encode_to_vec()));
    let login = request(vec![login_span()]).encode_to_vec();
    assert!(agrees(&login));
    assert_eq!(accept(&login).unwrap().n_spans, 1);
    assert!(agrees(&[]), "an empty export is a valid one");
}

#[test]
fn every_cut_of_a_body_is_judged_as_prost_judges_it() {
    let body = rich_request().encode_to_vec();
    for end in 0..body.len() {
        agrees(&body[..end]);
    }
}

#[test]
fn every_byte_changed_is_judged_as_prost_judges_it() {
    // Wire types, lengths, tags and UTF-8 in every field of every message, one byte at a time.
    let body = rich_request().encode_to_vec();
    for at in 0..body.len() {
        for byte in [0x00, 0x02, 0x07, 0x0b, 0x0c, 0x80, 0xc3, 0xff] {
            let mut changed = body.clone();
            changed[at] = byte;
            agrees(&changed);
        }
    }
}

#[test]
fn values_given_twice_are_counted_as_merged() {
    // A key whose value is given twice, a long string then a short one: prost keeps the short.
    let long = "x".repeat(MAX_ATTR_VALUE_BYTES + 1);
    let mut attribute = Vec::new();
    delimited_field(field::KEY, b"k", &mut attribute);
    for text in [long.as_str(), "short"] {
        let value = AnyValue {
            value: Some(OtlpValue::StringValue(text.into())),
        };
        delimited_field(field::VALUE, &value.encode_to_vec(), &mut attribute);
    }
    assert_eq!(key_value(&attribute, 4).unwrap(), 0);

    // The same attribute on a span of an export, appended to the span's encoding.
    let mut span = login_span().encode_to_vec();
    delimited_field(field::ATTRIBUTES, &attribute, &mut span);
    let mut scope_spans = Vec::new();
    delimited_field(field::SPANS, &span, &mut scope_spans);
    let mut resource_spans = Vec::new();
    delimited_field(field::SCOPE_SPANS, &scope_spans, &mut resource_spans);
    let mut body = Vec::new();
    delimited_field(field::REQUEST_RESOURCE_SPANS, &resource_spans, &mut body);
    assert!(agrees(&body));
    assert_eq!(accept(&body).unwrap().n_truncated_values, 0);
}

fn delimited_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend(bytes);
}

/// A login export whose span carries an attribute of arrays nested `levels` deep.
fn nested_arrays(levels: usize) -> Vec<u8> {
    let mut value = AnyValue {
        value: Some(OtlpValue::IntValue(1)),
    };
    for _ in 0..levels {
        value = AnyValue {
            value: Some(OtlpValue::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    let mut span = login_span();
    span.attributes = vec![opentelemetry_proto::tonic::common::v1::KeyValue {
        key: "deep".into(),
        value: Some(value),
        ..Default::default()
    }];
    request(vec![span]).encode_to_vec()
}

#[test]
fn the_recursion_limit_is_prosts() {
    let judged: Vec<bool> = (40..56)
        .map(|levels| agrees(&nested_arrays(levels)))
        .collect();
    assert!(judged[0], "shallow nesting is accepted");
    assert!(!judged[judged.len() - 1], "deep nesting is refused");
}

/// An export with, at its top, an unknown group nesting `levels` groups with a varint inside.
fn nested_groups(levels: u32) -> Vec<u8> {
    let mut body = ExportTraceServiceRequest::default().encode_to_vec();
    for level in 0..levels {
        encode_key(100 + level, WireType::StartGroup, &mut body);
    }
    encode_key(1, WireType::Varint, &mut body);
    encode_varint(1, &mut body);
    for level in (0..levels).rev() {
        encode_key(100 + level, WireType::EndGroup, &mut body);
    }
    body
}

#[test]
fn unknown_groups_are_skipped_as_prost_skips_them() {
    let judged: Vec<bool> = (95..105)
        .map(|levels| agrees(&nested_groups(levels)))
        .collect();
    assert!(judged[0] && !judged[judged.len() - 1], "{judged:?}");
    let mut unmatched = ExportTraceServiceRequest::default().encode_to_vec();
    encode_key(100, WireType::StartGroup, &mut unmatched);
    encode_key(101, WireType::EndGroup, &mut unmatched);
    assert!(!agrees(&unmatched));
    let mut stray_end = Vec::new();
    encode_key(100, WireType::EndGroup, &mut stray_end);
    assert!(!agrees(&stray_end));
}
