use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as OtlpKeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as OtlpSpan, Status as OtlpStatus,
};

use super::*;
use crate::category::Category;
use crate::otlp::encode;

pub(crate) fn kv(key: &str, value: Value) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(crate) fn string(text: &str) -> Value {
    Value::StringValue(text.into())
}

pub(crate) fn request(spans: Vec<OtlpSpan>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(OtlpResource {
                attributes: vec![
                    kv("service.name", string("auth")),
                    kv("service.version", string("1.0")),
                    kv("service.instance.id", string("auth-1")),
                ],
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

pub(crate) fn login_span() -> OtlpSpan {
    OtlpSpan {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "POST /login".into(),
        kind: 2,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 401_000,
        attributes: vec![
            kv("http.request.method", string("POST")),
            kv("http.route", string("/login")),
        ],
        status: Some(OtlpStatus {
            code: 2,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

#[test]
fn protobuf_round_trip_keeps_every_field() {
    let body = request(vec![login_span()]).encode_to_vec();
    let decoded = spans(protobuf(&body).unwrap());
    assert_eq!(decoded.n_rejected, 0);
    let span = &decoded.spans[0];
    assert_eq!(span.trace_id.to_hex(), "01010101010101010101010101010101");
    assert_eq!(span.parent_span_id, None);
    assert_eq!(span.resource.service_name, "auth");
    assert_eq!(span.resource.service_version.as_deref(), Some("1.0"));
    assert_eq!(span.resource.service_instance_id.as_deref(), Some("auth-1"));
    assert_eq!(span.kind, SpanKind::Server);
    assert_eq!(span.duration_ns, 400_000);
    assert_eq!(span.status.code, StatusCode::Error);
    assert_eq!(span.status.message, "boom");
    assert_eq!(span.semantics.http_route.as_deref(), Some("/login"));
    assert_eq!(span.category, Category::Cpu);
}

#[test]
fn encode_then_decode_gives_the_same_spans() {
    let mut raw = login_span();
    raw.parent_span_id = vec![9; 8];
    raw.events = vec![Default::default(), Default::default()];
    raw.links = vec![otlp_trace::span::Link {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        ..Default::default()
    }];
    raw.attributes.push(kv(
        "nested",
        Value::ArrayValue(otlp_common::ArrayValue {
            values: vec![AnyValue {
                value: Some(Value::IntValue(7)),
            }],
        }),
    ));
    let first = spans(request(vec![raw]));
    let again = spans(encode::request(first.spans.clone()));
    assert_eq!(first.spans, again.spans);
    assert_eq!(again.spans[0].n_events, 2);
}

#[test]
fn json_with_hex_ids_and_integer_enums() {
    let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"idp"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
      "name":"SELECT","kind":3,"startTimeUnixNano":"1000","endTimeUnixNano":2000,
      "attributes":[{"key":"db.system","value":{"stringValue":"postgresql"}}]}]}]}]}"#;
    let decoded = spans(json(body).unwrap());
    assert_eq!(decoded.n_rejected, 0);
    let span = &decoded.spans[0];
    assert_eq!(span.trace_id.to_hex(), "5b8efff798038103d269b633813fc60c");
    assert_eq!(span.resource.service_name, "idp");
    assert_eq!(span.kind, SpanKind::Client);
    assert_eq!(span.duration_ns, 1000);
    assert_eq!(span.category, Category::Db);
}

#[test]
fn json_with_enum_names_is_an_error() {
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","kind":"SPAN_KIND_SERVER"}]}]}]}"#;
    assert!(json(body).is_err());
}

#[test]
fn garbage_protobuf_is_an_error() {
    assert!(protobuf(&[0xff, 0xff, 0xff, 0x01]).is_err());
    let body = request(vec![login_span()]).encode_to_vec();
    assert!(protobuf(&body[..body.len() - 3]).is_err());
}

#[test]
fn invalid_spans_are_dropped_one_by_one() {
    let zero_trace = OtlpSpan {
        trace_id: vec![0; 16],
        ..login_span()
    };
    let short_span = OtlpSpan {
        span_id: vec![1; 3],
        ..login_span()
    };
    let bad_parent = OtlpSpan {
        parent_span_id: vec![1; 5],
        ..login_span()
    };
    let no_start = OtlpSpan {
        start_time_unix_nano: 0,
        ..login_span()
    };
    let own_parent = OtlpSpan {
        parent_span_id: vec![2; 8],
        ..login_span()
    };
    let decoded = spans(request(vec![
        zero_trace,
        login_span(),
        short_span,
        bad_parent,
        no_start,
        own_parent,
    ]));
    assert_eq!(decoded.spans.len(), 1);
    assert_eq!(decoded.n_rejected, 5);
    assert_eq!(
        decoded.first_rejection.as_deref(),
        Some("invalid trace id: id is all zeros")
    );
}

#[test]
fn end_before_start_is_clamped_to_zero() {
    let backwards = OtlpSpan {
        start_time_unix_nano: 5_000,
        end_time_unix_nano: 1_000,
        ..login_span()
    };
    assert_eq!(spans(request(vec![backwards])).spans[0].duration_ns, 0);
}

#[test]
fn huge_values_are_truncated_and_counted() {
    let mut raw = login_span();
    raw.attributes
        .push(kv("db.statement", string(&"é".repeat(600_000))));
    let decoded = spans(request(vec![raw]));
    assert_eq!(decoded.n_truncated_values, 1);
    let statement = decoded.spans[0].semantics.db_statement.as_deref().unwrap();
    assert!(statement.ends_with(TRUNCATION_MARKER));
    assert!(statement.len() <= MAX_ATTR_VALUE_BYTES + TRUNCATION_MARKER.len());
}

#[test]
fn missing_service_name_is_unknown_service() {
    let mut req = request(vec![login_span()]);
    req.resource_spans[0].resource = None;
    assert_eq!(spans(req).spans[0].resource.service_name, UNKNOWN_SERVICE);
}

#[test]
fn invalid_utf8_in_a_string_field_is_a_decode_error() {
    let mut raw = login_span();
    raw.name = "NAME_TO_BREAK".into();
    let mut body = request(vec![raw]).encode_to_vec();
    let at = body
        .windows(13)
        .position(|w| w == b"NAME_TO_BREAK")
        .expect("the name is in the encoding");
    body[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    let err = protobuf(&body).unwrap_err();
    assert!(err.to_string().contains("invalid OTLP protobuf"), "{err}");
}

#[test]
fn truncated_protobuf_is_an_error_at_every_cut() {
    let body = request(vec![login_span(), login_span()]).encode_to_vec();
    // Every prefix either fails to decode or decodes to fewer or equal spans; none panics.
    for end in 0..body.len() {
        if let Ok(request) = protobuf(&body[..end]) {
            assert!(spans(request).spans.len() <= 2);
        }
    }
}

#[test]
fn nesting_beyond_the_recursion_limit_is_an_error_not_a_stack_overflow() {
    let mut value = AnyValue {
        value: Some(string("leaf")),
    };
    for _ in 0..200 {
        value = AnyValue {
            value: Some(Value::ArrayValue(otlp_common::ArrayValue {
                values: vec![value],
            })),
        };
    }
    let mut raw = login_span();
    raw.attributes.push(OtlpKeyValue {
        key: "deep".into(),
        value: Some(value),
        ..Default::default()
    });
    assert!(protobuf(&request(vec![raw]).encode_to_vec()).is_err());

    let depth = 100_000;
    let mut json = String::from(
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"01010101010101010101010101010101","spanId":"0202020202020202","startTimeUnixNano":"1","attributes":[{"key":"k","value":"#,
    );
    for _ in 0..depth {
        json.push_str(r#"{"arrayValue":{"values":["#);
    }
    for _ in 0..depth {
        json.push_str("]}}");
    }
    json.push_str("}]}]}]}]}");
    assert!(super::json(json.as_bytes()).is_err());
}

#[test]
fn json_with_wrong_types_is_an_error() {
    for body in [
        r#"{"resourceSpans": 7}"#,
        r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}"#,
        r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 12}]}]}]}"#,
        r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "fast"}]}]}]}"#,
        r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}"#,
        "",
        "\u{0}",
    ] {
        assert!(super::json(body.as_bytes()).is_err(), "{body}");
    }
}

#[test]
fn timestamps_decades_away_are_kept_and_past_2262_rejected() {
    let ancient = OtlpSpan {
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..login_span()
    };
    let far_future = OtlpSpan {
        span_id: vec![3; 8],
        // The year 2200.
        start_time_unix_nano: 7_258_118_400_000_000_000,
        end_time_unix_nano: 7_258_118_400_000_000_100,
        ..login_span()
    };
    let beyond = OtlpSpan {
        span_id: vec![4; 8],
        start_time_unix_nano: 1_000,
        end_time_unix_nano: u64::MAX,
        ..login_span()
    };
    let decoded = spans(request(vec![ancient, far_future, beyond]));
    assert_eq!(decoded.spans.len(), 2);
    assert_eq!(decoded.spans[0].start_unix_ns, 1);
    assert_eq!(decoded.spans[1].duration_ns, 100);
    assert_eq!(decoded.n_rejected, 1);
    assert!(decoded.first_rejection.unwrap().contains("2262"));
}

#[test]
fn ids_of_every_wrong_shape_are_rejected_one_by_one() {
    let shapes: [(Vec<u8>, Vec<u8>, Vec<u8>); 7] = [
        (vec![], vec![2; 8], vec![]),
        (vec![0; 16], vec![2; 8], vec![]),
        (vec![1; 15], vec![2; 8], vec![]),
        (vec![1; 16], vec![], vec![]),
        (vec![1; 16], vec![0; 8], vec![]),
        (vec![1; 16], vec![2; 9], vec![]),
        (vec![1; 16], vec![2; 8], vec![3; 7]),
    ];
    let raw: Vec<_> = shapes
        .into_iter()
        .map(|(trace_id, span_id, parent_span_id)| OtlpSpan {
            trace_id,
            span_id,
            parent_span_id,
            ..login_span()
        })
        .collect();
    let decoded = spans(request(raw));
    assert!(decoded.spans.is_empty());
    assert_eq!(decoded.n_rejected, 7);
}

#[test]
fn a_block_packed_from_the_received_bytes_reads_back_as_the_accepted_spans() {
    let bad_id = OtlpSpan {
        span_id: vec![0; 8],
        ..login_span()
    };
    let huge = OtlpSpan {
        span_id: vec![3; 8],
        attributes: vec![kv(
            "db.statement",
            string(&"x".repeat(MAX_ATTR_VALUE_BYTES * 2)),
        )],
        ..login_span()
    };
    let body = request(vec![login_span(), bad_id, huge]).encode_to_vec();
    let accepted = spans(protobuf(&body).expect("decodes"));
    assert_eq!(accepted.n_rejected, 1);
    let block = crate::block::pack(&body, accept(&protobuf(&body).expect("decodes")), 7);
    assert_eq!(block.n_spans, 2, "the dropped span is not counted");
    assert_eq!(block.trace_ids, [TraceId([1; 16])]);
    assert_eq!(block.min_start_unix_ns, 1_000);
    assert_eq!(block.received_unix_ns, 7);
    let read_back = crate::block::decode(&block.data).expect("the block decodes");
    assert_eq!(
        read_back, accepted.spans,
        "dropped and truncated again, the same way"
    );
    assert_eq!(
        crate::block::trace_ids(&block.data).expect("the block decodes"),
        block.trace_ids,
        "a replay finds the traces packing recorded"
    );
}

#[test]
fn blocks_packed_one_after_another_on_one_thread_each_hold_their_own_export() {
    // The thread's compressor and buffer are reused: a large export between two small ones
    // (past the buffer the thread keeps) must not leak into either.
    let small = |name: &str| {
        request(vec![OtlpSpan {
            name: name.into(),
            ..login_span()
        }])
        .encode_to_vec()
    };
    let large = request(
        (0..3_000u16)
            .map(|n| OtlpSpan {
                span_id: [n.to_be_bytes().as_slice(), &[1; 6]].concat(),
                attributes: vec![kv("db.statement", string(&"q".repeat(2_000)))],
                ..login_span()
            })
            .collect(),
    )
    .encode_to_vec();
    assert!(
        large.len() > 4 << 20,
        "larger than the buffer a thread keeps"
    );
    for body in [small("first"), large, small("second")] {
        let block = crate::block::pack(&body, accept(&protobuf(&body).unwrap()), 0);
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&block.data).unwrap(),
            Some(body.len() as u64),
            "the frame states its size, which decompression allocates at once"
        );
        assert_eq!(
            crate::block::decode(&block.data).unwrap(),
            spans(protobuf(&body).unwrap()).spans
        );
    }
}

#[test]
fn a_damaged_block_is_an_error() {
    let block = crate::block::encode(spans(request(vec![login_span()])).spans, 0);
    let cut = &block.data[..block.data.len() / 2];
    assert!(crate::block::decode(cut).is_err());
    assert!(crate::block::decode(b"not zstd").is_err());
}

#[test]
fn a_block_framed_without_its_size_decodes_as_one_with_it() {
    let block = crate::block::encode(spans(request(vec![login_span()])).spans, 0);
    let protobuf = zstd::stream::decode_all(&block.data[..]).unwrap();
    let unsized_frame = zstd::stream::encode_all(&protobuf[..], 3).unwrap();
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&unsized_frame).unwrap(),
        None
    );
    assert_eq!(
        crate::block::decode(&unsized_frame).unwrap(),
        crate::block::decode(&block.data).unwrap()
    );
}

#[test]
fn accept_keeps_what_spans_keeps_without_building_spans() {
    let bad_id = OtlpSpan {
        span_id: vec![0; 8],
        ..login_span()
    };
    let other_trace = OtlpSpan {
        trace_id: vec![9; 16],
        start_time_unix_nano: 500,
        end_time_unix_nano: 600,
        attributes: vec![kv(
            "payload",
            Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: vec![AnyValue {
                    value: Some(string(&"y".repeat(MAX_ATTR_VALUE_BYTES + 1))),
                }],
            }),
        )],
        name: "n".repeat(MAX_ATTR_VALUE_BYTES + 1),
        ..login_span()
    };
    let no_start = OtlpSpan {
        start_time_unix_nano: 0,
        ..login_span()
    };
    let req = request(vec![
        no_start,
        login_span(),
        bad_id,
        other_trace,
        login_span(),
    ]);
    let accepted = accept(&req);
    let decoded = spans(req);
    assert_eq!(accepted.n_spans, decoded.spans.len() as u64);
    assert_eq!(accepted.n_spans, 3);
    assert_eq!(accepted.n_rejected, decoded.n_rejected);
    assert_eq!(accepted.first_rejection, decoded.first_rejection);
    assert_eq!(accepted.n_truncated_values, decoded.n_truncated_values);
    assert_eq!(
        accepted.n_truncated_values, 2,
        "the long name and the nested value"
    );
    assert_eq!(accepted.trace_ids, [TraceId([1; 16]), TraceId([9; 16])]);
    assert_eq!(accepted.min_start_unix_ns, Some(500));
    assert_eq!(accept(&request(Vec::new())).min_start_unix_ns, None);
}

#[test]
fn a_traces_spans_and_events_read_back_from_a_block_of_several_traces() {
    use opentelemetry_proto::tonic::trace::v1::span::Event as OtlpEvent;
    let event = |name: &str| OtlpEvent {
        time_unix_nano: 2_000,
        name: name.into(),
        attributes: vec![kv("exception.type", string("ValueError"))],
        dropped_attributes_count: 0,
    };
    let wanted = OtlpSpan {
        events: vec![event("exception")],
        ..login_span()
    };
    let other = OtlpSpan {
        trace_id: vec![9; 16],
        events: vec![event("other")],
        ..login_span()
    };
    let bad_id = OtlpSpan {
        span_id: vec![0; 8],
        events: vec![event("dropped")],
        ..login_span()
    };
    let body = request(vec![other, wanted, bad_id]).encode_to_vec();
    let block = crate::block::pack(&body, accept(&protobuf(&body).expect("decodes")), 7);
    let (spans, events) = crate::block::decode_trace_with_events(&block.data, TraceId([1; 16]))
        .expect("the block decodes");
    assert_eq!(
        spans.len(),
        1,
        "only the trace's spans, and only accepted ones"
    );
    assert_eq!(spans[0].trace_id, TraceId([1; 16]));
    assert_eq!(spans[0].n_events, 1);
    assert_eq!(
        events,
        [Event {
            span_id: SpanId([2; 8]),
            time_unix_ns: 2_000,
            name: "exception".into(),
            attributes: vec![KeyValue {
                key: "exception.type".into(),
                value: AttrValue::Str("ValueError".into()),
            }],
        }],
        "events of rejected spans and of other traces are left out"
    );
}
