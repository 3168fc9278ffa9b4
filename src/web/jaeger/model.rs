//! Jaeger's JSON model (`model/json` of Jaeger's query service) and the conversion of stored
//! spans into it, as the OpenTelemetry Collector's OTLP-to-Jaeger translator does it: attributes
//! as typed tags, `span.kind`, `otel.status_code` and `error` tags, the scope as
//! `otel.scope.name`/`otel.scope.version`, events as logs, the parent as a `CHILD_OF` reference
//! and links as `FOLLOWS_FROM`, resource attributes as process tags.
//!
//! Invariant: these are the only `Serialize` types of the Jaeger API; field names are Jaeger's.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use collector::model::{
    AttrValue, Event, KeyValue, Resource, Span, SpanId, SpanKind, StatusCode, TraceId,
};
use serde::Serialize;
use serde_json::Value;

/// Every answer: Jaeger's `structuredResponse`.
#[derive(Debug, Serialize)]
pub struct Answer<T: Serialize> {
    pub data: T,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    pub errors: Option<Vec<ErrorJson>>,
    /// Not Jaeger's: why a search stopped before its limit (see `search::find`); absent
    /// otherwise, so answers are Jaeger's field for field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

impl<T: Serialize> Answer<T> {
    /// `data` with `total` set as Jaeger sets it.
    pub fn new(data: T, total: usize) -> Self {
        Self {
            data,
            total,
            limit: 0,
            offset: 0,
            errors: None,
            warnings: None,
        }
    }
}

/// One error of an answer (`structuredError`).
#[derive(Debug, Serialize)]
pub struct ErrorJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub msg: String,
    #[serde(rename = "traceID", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// An operation of `GET /api/operations`.
#[derive(Debug, Serialize)]
pub struct OperationJson {
    pub name: String,
    #[serde(rename = "spanKind")]
    pub span_kind: String,
}

/// A trace.
#[derive(Debug, Serialize)]
pub struct TraceJson {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<SpanJson>,
    pub processes: BTreeMap<String, ProcessJson>,
    pub warnings: Option<Vec<String>>,
}

/// A span.
#[derive(Debug, Serialize)]
pub struct SpanJson {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    pub flags: u32,
    #[serde(rename = "operationName")]
    pub operation_name: String,
    pub references: Vec<ReferenceJson>,
    /// Microseconds since the epoch.
    #[serde(rename = "startTime")]
    pub start_time: u64,
    /// Microseconds.
    pub duration: u64,
    pub tags: Vec<TagJson>,
    pub logs: Vec<LogJson>,
    #[serde(rename = "processID")]
    pub process_id: String,
    pub warnings: Option<Vec<String>>,
}

/// A reference to another span.
#[derive(Debug, Serialize)]
pub struct ReferenceJson {
    #[serde(rename = "refType")]
    pub ref_type: &'static str,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

/// A typed tag: `type` is `string`, `bool`, `int64`, `float64` or `binary`.
#[derive(Debug, Clone, Serialize)]
pub struct TagJson {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: Value,
}

impl TagJson {
    /// The value as text, as Jaeger compares tags in a search.
    pub fn text(&self) -> String {
        match &self.value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }
}

/// A log: an event.
#[derive(Debug, Serialize)]
pub struct LogJson {
    /// Microseconds since the epoch.
    pub timestamp: u64,
    pub fields: Vec<TagJson>,
}

/// A process: a resource.
#[derive(Debug, Serialize)]
pub struct ProcessJson {
    #[serde(rename = "serviceName")]
    pub service_name: String,
    pub tags: Vec<TagJson>,
}

const NS_PER_US: u64 = 1_000;

/// The tag of an attribute. Arrays and maps become their JSON text, as the translator writes
/// them.
pub fn tag(key: &str, value: &AttrValue) -> TagJson {
    let (kind, value) = match value {
        AttrValue::Str(text) => ("string", Value::from(text.as_str())),
        AttrValue::Bool(b) => ("bool", Value::from(*b)),
        AttrValue::Int(i) => ("int64", Value::from(*i)),
        AttrValue::Double(d) if d.is_finite() => ("float64", Value::from(*d)),
        AttrValue::Double(d) => ("string", Value::from(d.to_string())),
        AttrValue::Bytes(bytes) => (
            "binary",
            Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
        AttrValue::Array(_) | AttrValue::Map(_) => ("string", Value::from(json(value).to_string())),
        AttrValue::Empty => ("string", Value::from("")),
    };
    TagJson {
        key: key.to_owned(),
        kind,
        value,
    }
}

fn json(value: &AttrValue) -> Value {
    match value {
        AttrValue::Str(text) => Value::from(text.as_str()),
        AttrValue::Bool(b) => Value::from(*b),
        AttrValue::Int(i) => Value::from(*i),
        AttrValue::Double(d) => Value::from(*d),
        AttrValue::Bytes(bytes) => {
            Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        AttrValue::Array(values) => Value::Array(values.iter().map(json).collect()),
        AttrValue::Map(kvs) => Value::Object(
            kvs.iter()
                .map(|kv| (kv.key.clone(), json(&kv.value)))
                .collect(),
        ),
        AttrValue::Empty => Value::Null,
    }
}

fn tags(attributes: &[KeyValue]) -> Vec<TagJson> {
    attributes
        .iter()
        .map(|kv| tag(&kv.key, &kv.value))
        .collect()
}

fn string_tag(key: &str, value: &str) -> TagJson {
    tag(key, &AttrValue::Str(value.to_owned()))
}

/// The tags the translator adds to a span's attributes.
fn span_tags(span: &Span) -> Vec<TagJson> {
    let mut out = tags(&span.attributes);
    if !span.scope.name.is_empty() {
        out.push(string_tag("otel.scope.name", &span.scope.name));
        if !span.scope.version.is_empty() {
            out.push(string_tag("otel.scope.version", &span.scope.version));
        }
    }
    if span.kind != SpanKind::Unspecified {
        out.push(string_tag("span.kind", span.kind.as_str()));
    }
    match span.status.code {
        StatusCode::Unset => {}
        StatusCode::Ok => out.push(string_tag("otel.status_code", "OK")),
        StatusCode::Error => {
            out.push(string_tag("otel.status_code", "ERROR"));
            out.push(tag("error", &AttrValue::Bool(true)));
        }
    }
    if !span.status.message.is_empty() {
        out.push(string_tag("otel.status_description", &span.status.message));
    }
    out
}

fn log(event: &Event) -> LogJson {
    let mut fields = Vec::with_capacity(event.attributes.len() + 1);
    if !event.name.is_empty() {
        fields.push(string_tag("event", &event.name));
    }
    fields.extend(tags(&event.attributes));
    LogJson {
        timestamp: event.time_unix_ns / NS_PER_US,
        fields,
    }
}

fn process(resource: &Resource) -> ProcessJson {
    ProcessJson {
        service_name: resource.service_name.clone(),
        tags: tags(
            &resource
                .attributes
                .iter()
                .filter(|kv| kv.key != "service.name")
                .cloned()
                .collect::<Vec<_>>(),
        ),
    }
}

/// A trace in Jaeger's model; `extra` adds tags to spans (Bottleneck's verdict).
pub fn trace(
    trace_id: TraceId,
    spans: &[Span],
    events: &[Event],
    extra: &HashMap<SpanId, Vec<KeyValue>>,
) -> TraceJson {
    let trace_hex = trace_id.to_hex();
    let mut events_by_span: HashMap<SpanId, Vec<&Event>> = HashMap::new();
    for event in events {
        events_by_span.entry(event.span_id).or_default().push(event);
    }
    // Processes are numbered in order of first appearance; equal resources from different
    // exports are one process.
    let mut resources: Vec<&Resource> = Vec::new();
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        let idx = match resources.iter().position(|r| **r == *span.resource) {
            Some(idx) => idx,
            None => {
                resources.push(&span.resource);
                resources.len() - 1
            }
        };
        let mut references = Vec::with_capacity(span.links.len() + 1);
        if let Some(parent) = span.parent_span_id {
            references.push(ReferenceJson {
                ref_type: "CHILD_OF",
                trace_id: trace_hex.clone(),
                span_id: parent.to_hex(),
            });
        }
        references.extend(span.links.iter().map(|link| ReferenceJson {
            ref_type: "FOLLOWS_FROM",
            trace_id: link.trace_id.to_hex(),
            span_id: link.span_id.to_hex(),
        }));
        let mut span_tags = span_tags(span);
        if let Some(added) = extra.get(&span.span_id) {
            span_tags.extend(tags(added));
        }
        let mut logs: Vec<LogJson> = events_by_span
            .get(&span.span_id)
            .map(|events| events.iter().map(|event| log(event)).collect())
            .unwrap_or_default();
        logs.sort_by_key(|log| log.timestamp);
        out.push(SpanJson {
            trace_id: trace_hex.clone(),
            span_id: span.span_id.to_hex(),
            flags: 1,
            operation_name: span.name.clone(),
            references,
            start_time: span.start_unix_ns / NS_PER_US,
            duration: span.duration_ns / NS_PER_US,
            tags: span_tags,
            logs,
            process_id: format!("p{}", idx + 1),
            warnings: None,
        });
    }
    TraceJson {
        trace_id: trace_hex,
        spans: out,
        processes: resources
            .iter()
            .enumerate()
            .map(|(idx, resource)| (format!("p{}", idx + 1), process(resource)))
            .collect(),
        warnings: None,
    }
}

impl TraceJson {
    /// Whether one span of `service` carries every tag, in its own tags, its process's or its
    /// logs' fields: Jaeger's rule for a tag search.
    pub fn matches(&self, service: &str, wanted: &BTreeMap<String, String>) -> bool {
        self.spans.iter().any(|span| {
            let Some(process) = self.processes.get(&span.process_id) else {
                return false;
            };
            process.service_name == service
                && wanted.iter().all(|(key, value)| {
                    let hit = |tag: &TagJson| tag.key == *key && tag.text() == *value;
                    span.tags.iter().any(hit)
                        || process.tags.iter().any(hit)
                        || span.logs.iter().any(|log| log.fields.iter().any(hit))
                })
        })
    }
}
