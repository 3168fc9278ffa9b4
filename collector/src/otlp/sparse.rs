//! Decoding for readers that need only some attributes: the same spans as [`decode::spans`],
//! each holding only the attributes its caller keeps, and those its semantics and category are
//! derived from (so they are always the whole decoder's).
//!
//! The analysis reads a few semantic-convention attributes of every span, and decoding all of
//! them (a string allocated and checked for each key and value, events too) was the larger part
//! of its cost (BENCHMARKS.md). Here the OTLP messages are mirrored with the attribute list and
//! the events left as `Bytes`: prost takes those as slices of the body without copying them, and
//! only an attribute whose key is kept is decoded, by prost's own `AnyValue`. Which spans are
//! kept is decided by [`decode::Header::check`], the rule every decoder of this crate applies.
//!
//! Invariant: for a body [`decode::protobuf`] accepts, `spans_keeping(body, keep)` equals
//! [`decode::spans`] of it with each span's attributes filtered by `keep` or
//! [`normalize::is_read`], provided no attribute carries its value twice (protobuf merges a
//! repeated message field; here the last one wins; no encoder writes that). It checks less than
//! the whole decoder (UTF-8 and wire types inside what it skips), which is safe for what it
//! reads: stored blocks, each accepted whole at ingest.

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1 as otlp_common;
use opentelemetry_proto::tonic::resource::v1 as otlp_resource;
use opentelemetry_proto::tonic::trace::v1 as otlp_trace;
use prost::Message;

use crate::model::{KeyValue, Resource, Scope};
use crate::otlp::decode::{self, Body, DecodeError, Decoded, Header};
use crate::otlp::normalize;

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, Message)]
struct Request {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`; the resource is decoded whole, as every attribute of it is read.
#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<otlp_resource::Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    scope: Option<otlp_common::InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    spans: Vec<SparseSpan>,
}

/// `Span` with its attributes and events undecoded (trace state and flags are skipped: the model
/// has neither).
#[derive(Clone, PartialEq, Message)]
struct SparseSpan {
    #[prost(bytes = "bytes", tag = "1")]
    trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    span_id: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    parent_span_id: Bytes,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<RawKeyValue>,
    #[prost(bytes = "bytes", repeated, tag = "11")]
    events: Vec<Bytes>,
    #[prost(uint32, tag = "12")]
    dropped_events_count: u32,
    #[prost(message, repeated, tag = "13")]
    links: Vec<RawLink>,
    #[prost(message, optional, tag = "15")]
    status: Option<otlp_trace::Status>,
}

/// `KeyValue` with its value still encoded (an `AnyValue` message).
#[derive(Clone, PartialEq, Message)]
struct RawKeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// `Span.Link`: only the ids.
#[derive(Clone, PartialEq, Message)]
struct RawLink {
    #[prost(bytes = "bytes", tag = "1")]
    trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    span_id: Bytes,
}

/// Decodes an OTLP protobuf body into spans that hold only the attributes `keep` accepts by key,
/// besides those their semantics and category are derived from.
pub fn spans_keeping(body: Bytes, keep: impl Fn(&str) -> bool) -> Result<Decoded, DecodeError> {
    let request = Request::decode(body)?;
    let mut acc = Decoded::default();
    for resource_spans in request.resource_spans {
        let resource = Arc::new(decode::resource(
            resource_spans.resource,
            &mut acc.n_truncated_values,
        ));
        for scope_spans in resource_spans.scope_spans {
            let scope = Arc::new(decode::scope(scope_spans.scope));
            for raw in scope_spans.spans {
                match span(raw, &resource, &scope, &keep, &mut acc.n_truncated_values) {
                    Ok(span) => acc.spans.push(span),
                    Err(reason) => {
                        acc.n_rejected += 1;
                        acc.first_rejection.get_or_insert(reason);
                    }
                }
            }
        }
    }
    Ok(acc)
}

fn span(
    raw: SparseSpan,
    resource: &Arc<Resource>,
    scope: &Arc<Scope>,
    keep: &impl Fn(&str) -> bool,
    truncated: &mut u64,
) -> Result<crate::model::Span, String> {
    let header = Header::check(
        &raw.trace_id,
        &raw.span_id,
        &raw.parent_span_id,
        raw.start_time_unix_nano,
        raw.end_time_unix_nano,
    )?;
    let attributes = raw
        .attributes
        .iter()
        .filter_map(|kv| kept_attribute(kv, keep, truncated))
        .collect();
    let n_events = u32::try_from(raw.events.len()).unwrap_or(u32::MAX);
    let links = raw
        .links
        .iter()
        .filter_map(|link| decode::link_to(&link.trace_id, &link.span_id))
        .collect();
    Ok(header.into_span(
        Body {
            name: decode::cut(raw.name, truncated),
            kind: raw.kind,
            status: raw.status,
            attributes,
            n_events: n_events.saturating_add(raw.dropped_events_count),
            links,
        },
        resource,
        scope,
    ))
}

/// The attribute decoded, when its key is kept. A value that does not decode cannot come from a
/// body [`decode::protobuf`] accepted; it reads as absent rather than failing the whole body.
fn kept_attribute(
    raw: &RawKeyValue,
    keep: &impl Fn(&str) -> bool,
    truncated: &mut u64,
) -> Option<KeyValue> {
    let key = std::str::from_utf8(&raw.key)
        .ok()
        .filter(|key| keep(key) || normalize::is_read(key))?;
    let value = otlp_common::AnyValue::decode(raw.value.clone()).ok()?;
    Some(KeyValue {
        key: decode::cut(key.to_owned(), truncated),
        value: decode::any_value(Some(value), truncated),
    })
}

#[cfg(test)]
mod tests;
