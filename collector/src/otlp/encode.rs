//! The span model back into OTLP, so stored blocks are standard OTLP protobuf (`TracesData`) that
//! any OpenTelemetry tool can read, and decoding a stored block reuses [`crate::otlp::decode`].
//!
//! Invariant: `decode::spans(encode::request(spans))` gives back the same spans.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as otlp_common;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1 as otlp_resource;
use opentelemetry_proto::tonic::trace::v1 as otlp_trace;

use crate::model::{AttrValue, KeyValue, Span};

/// Groups spans by resource and scope (shared `Arc`s, as decoding produced them) into a request.
/// Takes the spans by value, so that their strings move into the request rather than being
/// copied: copying them would be most of the cost of encoding a block on the ingest path.
pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<otlp_trace::ResourceSpans> = Vec::new();
    let mut last_resource = None;
    let mut last_scope = None;
    for span in spans {
        let same_resource = last_resource
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &span.resource));
        if !same_resource {
            resource_spans.push(otlp_trace::ResourceSpans {
                resource: Some(otlp_resource::Resource {
                    attributes: attributes(span.resource.attributes.clone()),
                    ..Default::default()
                }),
                scope_spans: Vec::new(),
                schema_url: String::new(),
            });
            last_resource = Some(Arc::clone(&span.resource));
            last_scope = None;
        }
        let current = resource_spans
            .last_mut()
            .expect("a resource was pushed above");
        let same_scope = last_scope
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &span.scope));
        if !same_scope {
            current.scope_spans.push(otlp_trace::ScopeSpans {
                scope: Some(otlp_common::InstrumentationScope {
                    name: span.scope.name.clone(),
                    version: span.scope.version.clone(),
                    ..Default::default()
                }),
                spans: Vec::new(),
                schema_url: String::new(),
            });
            last_scope = Some(Arc::clone(&span.scope));
        }
        current
            .scope_spans
            .last_mut()
            .expect("a scope was pushed above")
            .spans
            .push(self::span(span));
    }
    ExportTraceServiceRequest { resource_spans }
}

fn span(span: Span) -> otlp_trace::Span {
    let end_time_unix_nano = span.end_unix_ns();
    otlp_trace::Span {
        trace_id: span.trace_id.0.to_vec(),
        span_id: span.span_id.0.to_vec(),
        parent_span_id: span
            .parent_span_id
            .map(|id| id.0.to_vec())
            .unwrap_or_default(),
        name: span.name,
        kind: span.kind.to_otlp(),
        start_time_unix_nano: span.start_unix_ns,
        end_time_unix_nano,
        attributes: attributes(span.attributes),
        // Events are counted, not kept: the count survives as dropped events.
        dropped_events_count: span.n_events,
        links: span
            .links
            .into_iter()
            .map(|link| otlp_trace::span::Link {
                trace_id: link.trace_id.0.to_vec(),
                span_id: link.span_id.0.to_vec(),
                ..Default::default()
            })
            .collect(),
        status: Some(otlp_trace::Status {
            code: span.status.code.to_otlp(),
            message: span.status.message,
        }),
        ..Default::default()
    }
}

fn attributes(attributes: Vec<KeyValue>) -> Vec<otlp_common::KeyValue> {
    attributes
        .into_iter()
        .map(|kv| otlp_common::KeyValue {
            key: kv.key,
            value: Some(any_value(kv.value)),
            ..Default::default()
        })
        .collect()
}

fn any_value(value: AttrValue) -> otlp_common::AnyValue {
    let value = match value {
        AttrValue::Str(s) => Some(Value::StringValue(s)),
        AttrValue::Bool(b) => Some(Value::BoolValue(b)),
        AttrValue::Int(i) => Some(Value::IntValue(i)),
        AttrValue::Double(d) => Some(Value::DoubleValue(d)),
        AttrValue::Bytes(b) => Some(Value::BytesValue(b)),
        AttrValue::Array(values) => Some(Value::ArrayValue(otlp_common::ArrayValue {
            values: values.into_iter().map(any_value).collect(),
        })),
        AttrValue::Map(kvs) => Some(Value::KvlistValue(otlp_common::KeyValueList {
            values: attributes(kvs),
        })),
        AttrValue::Empty => None,
    };
    otlp_common::AnyValue { value }
}
