//! OTLP (protobuf or JSON) into the span model.
//!
//! A body that cannot be decoded at all is a [`DecodeError`] (the whole export is rejected, a
//! permanent error). A decodable body may still hold individual bad spans (an invalid id, no start
//! time): those are dropped one by one and counted, and the export answers with `partial_success`,
//! as the OTLP specification asks.
//!
//! Invariant: no panics on any input; every allocation is bounded by the size of the input, except
//! that over-long attribute values are cut to [`MAX_ATTR_VALUE_BYTES`].

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as otlp_common;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1 as otlp_trace;
use prost::Message;

use crate::category;
use crate::model::{
    AttrValue, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode,
    TraceId, attr,
};
use crate::otlp::normalize;

/// Longest attribute value kept, in bytes. Statements and URLs fit comfortably; a 1 MB blob that
/// a buggy instrumentation attaches does not get to bloat every trace page and block.
pub const MAX_ATTR_VALUE_BYTES: usize = 16 * 1024;

/// Appended to a value cut at [`MAX_ATTR_VALUE_BYTES`], so a reader knows it is not whole.
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// Latest timestamp accepted: `i64::MAX` nanoseconds, in the year 2262. Stores keep instants as
/// signed 64-bit nanoseconds, so a later one is rejected per span rather than wrapped. Anything
/// earlier, however far from now (a 1970 clock, a year-2200 typo), is kept as sent: the data is
/// the exporter's, and clamping would invent a time nobody reported.
pub const MAX_UNIX_NS: u64 = i64::MAX as u64;

/// The service name the OpenTelemetry SDKs use when none is configured.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Why a body could not be decoded at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The protobuf was malformed (truncated, wrong wire types, invalid UTF-8 in a string).
    #[error("invalid OTLP protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The JSON did not match the OTLP/JSON encoding.
    #[error("invalid OTLP JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A length-delimited field ran past the end of its message (walked by [`super::sparse`]).
    #[error("invalid OTLP protobuf: a field runs past the end of its message")]
    Truncated,
    /// A field had a wire type its number does not take (walked by [`super::sparse`]).
    #[error("invalid OTLP protobuf: a field has the wrong wire type")]
    WireType,
    /// A string was not UTF-8 (walked by [`super::sparse`]).
    #[error("invalid OTLP protobuf: a string is not UTF-8")]
    Utf8,
    /// Messages or groups nested deeper than protobuf decoders allow (walked by [`super::check`]).
    #[error("invalid OTLP protobuf: messages nested more than 100 deep")]
    TooDeep,
    /// A group end without its start, or ending another group (walked by [`super::check`]).
    #[error("invalid OTLP protobuf: an unmatched group end")]
    Group,
}

/// The decoded export: good spans plus an account of the spans that were dropped.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Spans that passed validation, normalized.
    pub spans: Vec<Span>,
    /// Spans dropped one by one.
    pub n_rejected: u64,
    /// The reason for the first dropped span, for `partial_success.error_message`.
    pub first_rejection: Option<String>,
    /// Attribute values cut at [`MAX_ATTR_VALUE_BYTES`].
    pub n_truncated_values: u64,
}

/// Decodes an OTLP protobuf body.
pub fn protobuf(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    Ok(ExportTraceServiceRequest::decode(body)?)
}

/// Decodes an OTLP/JSON body (hex ids, integer enums, as the specification says).
pub fn json(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    Ok(serde_json::from_slice(body)?)
}

/// Converts a decoded request into model spans, dropping invalid spans one by one.
pub fn spans(request: ExportTraceServiceRequest) -> Decoded {
    let mut acc = Decoded::default();
    for resource_spans in request.resource_spans {
        let mut truncated = 0;
        let resource = Arc::new(resource(resource_spans.resource, &mut truncated));
        acc.n_truncated_values += truncated;
        for scope_spans in resource_spans.scope_spans {
            let scope = Arc::new(scope(scope_spans.scope));
            for raw in scope_spans.spans {
                match span(raw, &resource, &scope, &mut acc.n_truncated_values) {
                    Ok(span) => acc.spans.push(span),
                    Err(reason) => {
                        acc.n_rejected += 1;
                        acc.first_rejection.get_or_insert(reason);
                    }
                }
            }
        }
    }
    acc
}

/// The events of one trace's spans in a request, in the order sent. Only spans [`spans`] keeps
/// have their events read back, so every event names a span of the trace.
pub fn events(request: &ExportTraceServiceRequest, trace: TraceId) -> Vec<Event> {
    let mut out = Vec::new();
    let mut truncated = 0;
    for resource_spans in &request.resource_spans {
        for scope_spans in &resource_spans.scope_spans {
            for raw in &scope_spans.spans {
                if raw.events.is_empty() || raw.trace_id.as_slice() != trace.0.as_slice() {
                    continue;
                }
                let Ok(header) = Header::of(raw) else {
                    continue;
                };
                out.extend(raw.events.iter().map(|event| Event {
                    span_id: header.span_id,
                    time_unix_ns: event.time_unix_nano,
                    name: cut(event.name.clone(), &mut truncated),
                    attributes: attributes(event.attributes.clone(), &mut truncated),
                }));
            }
        }
    }
    out
}

/// What ingest needs of a request: which spans [`spans`] would keep, without building them.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Distinct traces of the kept spans, sorted.
    pub trace_ids: Vec<TraceId>,
    /// Earliest start among the kept spans.
    pub min_start_unix_ns: Option<u64>,
    /// Spans kept.
    pub n_spans: u64,
    /// Spans dropped one by one.
    pub n_rejected: u64,
    /// The reason for the first dropped span, for `partial_success.error_message`.
    pub first_rejection: Option<String>,
    /// Attribute values and names that [`spans`] cuts at [`MAX_ATTR_VALUE_BYTES`].
    pub n_truncated_values: u64,
}

/// Applies [`spans`]' rule to every span of a request and sums up what it keeps, for OTLP/JSON
/// ingest: the block stores the request, so building model spans (attributes, normalization)
/// would be waste. Protobuf bodies are summed up by [`super::check::accept`] without decoding.
pub fn accept(request: &ExportTraceServiceRequest) -> Accepted {
    let mut acc = Accepted::default();
    for resource_spans in &request.resource_spans {
        if let Some(resource) = &resource_spans.resource {
            acc.n_truncated_values += long_values(&resource.attributes);
        }
        for raw in resource_spans
            .scope_spans
            .iter()
            .flat_map(|scope| &scope.spans)
        {
            match Header::of(raw) {
                Ok(header) => {
                    acc.n_spans += 1;
                    acc.trace_ids.push(header.trace_id);
                    acc.min_start_unix_ns = Some(
                        acc.min_start_unix_ns
                            .map_or(header.start_unix_ns, |min| min.min(header.start_unix_ns)),
                    );
                    acc.n_truncated_values += u64::from(raw.name.len() > MAX_ATTR_VALUE_BYTES)
                        + long_values(&raw.attributes);
                }
                Err(reason) => {
                    acc.n_rejected += 1;
                    acc.first_rejection.get_or_insert(reason);
                }
            }
        }
    }
    acc.trace_ids.sort_unstable();
    acc.trace_ids.dedup();
    acc
}

/// How many keys and values of `attributes` (nested ones included) [`cut`] would shorten.
fn long_values(attributes: &[otlp_common::KeyValue]) -> u64 {
    attributes
        .iter()
        .map(|kv| u64::from(kv.key.len() > MAX_ATTR_VALUE_BYTES) + long_value(kv.value.as_ref()))
        .sum()
}

/// Whether [`any_value`] cuts `raw`, or how many of its nested values it cuts.
pub(crate) fn long_value(raw: Option<&otlp_common::AnyValue>) -> u64 {
    match raw.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => u64::from(s.len() > MAX_ATTR_VALUE_BYTES),
        Some(Value::BytesValue(b)) => u64::from(b.len() > MAX_ATTR_VALUE_BYTES),
        Some(Value::ArrayValue(array)) => array.values.iter().map(|v| long_value(Some(v))).sum(),
        Some(Value::KvlistValue(list)) => long_values(&list.values),
        _ => 0,
    }
}

/// The model's scope of an OTLP one (an absent scope has empty names).
pub(crate) fn scope(raw: Option<otlp_common::InstrumentationScope>) -> Scope {
    raw.map_or_else(Scope::default, |scope| Scope {
        name: scope.name,
        version: scope.version,
    })
}

/// The model's resource of an OTLP one, its service fields read from its attributes.
pub(crate) fn resource(
    raw: Option<opentelemetry_proto::tonic::resource::v1::Resource>,
    truncated: &mut u64,
) -> Resource {
    let attributes = raw
        .map(|r| attributes(r.attributes, truncated))
        .unwrap_or_default();
    let text = |key: &str| {
        attr(&attributes, key)
            .map(|v| v.to_string())
            .filter(|s| !s.is_empty())
    };
    Resource {
        service_name: text("service.name").unwrap_or_else(|| UNKNOWN_SERVICE.to_owned()),
        service_version: text("service.version"),
        service_instance_id: text("service.instance.id"),
        attributes,
    }
}

fn span(
    raw: otlp_trace::Span,
    resource: &Arc<Resource>,
    scope: &Arc<Scope>,
    truncated: &mut u64,
) -> Result<Span, String> {
    let header = Header::of(&raw)?;
    let n_events = u32::try_from(raw.events.len()).unwrap_or(u32::MAX);
    let links = raw
        .links
        .iter()
        .filter_map(|link| link_to(&link.trace_id, &link.span_id))
        .collect();
    Ok(header.into_span(
        Body {
            name: cut(raw.name, truncated),
            kind: raw.kind,
            status: raw.status,
            attributes: attributes(raw.attributes, truncated),
            n_events: n_events.saturating_add(raw.dropped_events_count),
            links,
        },
        resource,
        scope,
    ))
}

/// What makes a span acceptable: valid ids and times. Every decoder of this crate applies this
/// one rule, so they all keep the same spans of a body.
pub(crate) struct Header {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    start_unix_ns: u64,
    end_unix_ns: u64,
}

/// The rest of a span, as the model holds it.
pub(crate) struct Body {
    pub name: String,
    pub kind: i32,
    pub status: Option<otlp_trace::Status>,
    pub attributes: Vec<KeyValue>,
    pub n_events: u32,
    pub links: Vec<Link>,
}

impl Header {
    /// The span's trace.
    pub(crate) fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Checks an OTLP span.
    fn of(raw: &otlp_trace::Span) -> Result<Self, String> {
        Self::check(
            &raw.trace_id,
            &raw.span_id,
            &raw.parent_span_id,
            raw.start_time_unix_nano,
            raw.end_time_unix_nano,
        )
    }

    /// Checks a span's ids and times; the error is the reason it is dropped.
    pub(crate) fn check(
        trace_id: &[u8],
        span_id: &[u8],
        parent_span_id: &[u8],
        start_unix_ns: u64,
        end_unix_ns: u64,
    ) -> Result<Self, String> {
        let trace_id = TraceId::parse(trace_id).map_err(|e| format!("invalid trace id: {e}"))?;
        let span_id = SpanId::parse(span_id).map_err(|e| format!("invalid span id: {e}"))?;
        // An empty parent id means "root"; anything else must be a valid id.
        let parent_span_id = if parent_span_id.is_empty() {
            None
        } else {
            Some(
                SpanId::parse(parent_span_id)
                    .map_err(|e| format!("invalid parent span id: {e}"))?,
            )
        };
        if parent_span_id == Some(span_id) {
            return Err("span is its own parent".to_owned());
        }
        if start_unix_ns == 0 {
            return Err("span has no start time".to_owned());
        }
        if start_unix_ns > MAX_UNIX_NS || end_unix_ns > MAX_UNIX_NS {
            return Err("span time is after the year 2262".to_owned());
        }
        Ok(Self {
            trace_id,
            span_id,
            parent_span_id,
            start_unix_ns,
            end_unix_ns,
        })
    }

    /// The model span: the header, the body, and what the model derives from them.
    pub(crate) fn into_span(
        self,
        body: Body,
        resource: &Arc<Resource>,
        scope: &Arc<Scope>,
    ) -> Span {
        let kind = SpanKind::from_otlp(body.kind);
        let semantics = normalize::semantics(&body.attributes);
        let category = category::classify(kind, &semantics, &body.attributes);
        let status = body.status.map_or(
            Status {
                code: StatusCode::Unset,
                message: String::new(),
            },
            |status| Status {
                code: StatusCode::from_otlp(status.code),
                message: status.message,
            },
        );
        Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            resource: Arc::clone(resource),
            scope: Arc::clone(scope),
            name: body.name,
            kind,
            start_unix_ns: self.start_unix_ns,
            duration_ns: self.end_unix_ns.saturating_sub(self.start_unix_ns),
            status,
            attributes: body.attributes,
            n_events: body.n_events,
            links: body.links,
            semantics,
            category,
        }
    }
}

/// A link, when both its ids are valid (a bad link is dropped, not its span).
pub(crate) fn link_to(trace_id: &[u8], span_id: &[u8]) -> Option<Link> {
    Some(Link {
        trace_id: TraceId::parse(trace_id).ok()?,
        span_id: SpanId::parse(span_id).ok()?,
    })
}

fn attributes(raw: Vec<otlp_common::KeyValue>, truncated: &mut u64) -> Vec<KeyValue> {
    raw.into_iter()
        .map(|kv| KeyValue {
            key: cut(kv.key, truncated),
            value: any_value(kv.value, truncated),
        })
        .collect()
}

/// The model's value of an OTLP `AnyValue`, long strings and bytes cut.
pub(crate) fn any_value(raw: Option<otlp_common::AnyValue>, truncated: &mut u64) -> AttrValue {
    match raw.and_then(|v| v.value) {
        None => AttrValue::Empty,
        Some(Value::StringValue(s)) => AttrValue::Str(cut(s, truncated)),
        Some(Value::BoolValue(b)) => AttrValue::Bool(b),
        Some(Value::IntValue(i)) => AttrValue::Int(i),
        Some(Value::DoubleValue(d)) => AttrValue::Double(d),
        Some(Value::BytesValue(mut b)) => {
            if b.len() > MAX_ATTR_VALUE_BYTES {
                b.truncate(MAX_ATTR_VALUE_BYTES);
                *truncated += 1;
            }
            AttrValue::Bytes(b)
        }
        Some(Value::ArrayValue(array)) => AttrValue::Array(
            array
                .values
                .into_iter()
                .map(|v| any_value(Some(v), truncated))
                .collect(),
        ),
        Some(Value::KvlistValue(list)) => AttrValue::Map(attributes(list.values, truncated)),
        // Dictionary-encoded strings belong to the profiles signal; traces never carry them.
        Some(Value::StringValueStrindex(_)) => AttrValue::Empty,
    }
}

/// Cuts a string to [`MAX_ATTR_VALUE_BYTES`] on a character boundary and marks it.
pub(crate) fn cut(mut text: String, truncated: &mut u64) -> String {
    if text.len() > MAX_ATTR_VALUE_BYTES {
        let mut end = MAX_ATTR_VALUE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(TRUNCATION_MARKER);
        *truncated += 1;
    }
    text
}

#[cfg(test)]
pub(crate) mod tests;
