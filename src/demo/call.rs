//! Outgoing calls of the simulated services, each a CLIENT (or PRODUCER) span around a real
//! wait: database queries, cache gets and message publishes. The remote side is a
//! `tokio::time::sleep`, so a span's duration is real wall time.
//!
//! Invariant: every span started here is ended here, with the attributes the semantic
//! conventions give for its kind of call, and as a child of the context it was given.

use std::time::Duration;

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

/// Which generation of the database semantic conventions a query's instrumentation uses. Real
/// fleets mix both, so the demo does too, and the collector must treat them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `db.system.name`, `db.query.text`, `db.operation.name` (semantic conventions 1.26+).
    Current,
    /// `db.system`, `db.statement`, `db.operation` (older instrumentations).
    Old,
}

/// One PostgreSQL query as its instrumentation reports it.
#[derive(Debug, Clone)]
pub struct Query {
    /// The statement: inline literals, or `$n` placeholders with `params`.
    pub text: String,
    /// `SELECT`, `INSERT`, ...
    pub operation: &'static str,
    /// The table, for the span name and `db.collection.name`.
    pub table: &'static str,
    /// The values of `$1`, `$2`, ...: reported as `db.query.parameter.<n>`.
    pub params: Vec<String>,
    /// Attribute names to use.
    pub naming: Naming,
    /// Where in the service's code it is issued.
    pub code: CodeSite,
}

/// A line of the simulated service's source, reported as `code.*` attributes (named by the
/// query's [`Naming`]), so that its findings point at the code.
#[derive(Debug, Clone, Copy)]
pub struct CodeSite {
    /// The file, relative to the repository.
    pub file: &'static str,
    /// The line (1-based).
    pub line: u32,
    /// The function.
    pub function: &'static str,
}

/// A call that failed; the message goes into the span status.
#[derive(Debug, Clone, Copy)]
pub struct CallFailed(pub &'static str);

/// Runs `query` against the simulated database, taking `latency`; `fail` makes it end in error.
pub async fn query(
    tracer: &SdkTracer,
    parent: &Context,
    database: &'static str,
    query: &Query,
    latency: Duration,
    fail: Option<&'static str>,
) -> Result<(), CallFailed> {
    let mut attributes = match query.naming {
        Naming::Current => vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.query.text", query.text.clone()),
            KeyValue::new("db.operation.name", query.operation),
            KeyValue::new("db.collection.name", query.table),
            KeyValue::new("db.namespace", database),
            KeyValue::new("server.address", "postgres"),
        ],
        Naming::Old => vec![
            KeyValue::new("db.system", "postgresql"),
            KeyValue::new("db.statement", query.text.clone()),
            KeyValue::new("db.operation", query.operation),
            KeyValue::new("db.sql.table", query.table),
            KeyValue::new("db.name", database),
            KeyValue::new("net.peer.name", "postgres"),
        ],
    };
    attributes.push(KeyValue::new("server.port", 5432));
    let code = query.code;
    let [file, line, function] = match query.naming {
        Naming::Current => ["code.file.path", "code.line.number", "code.function.name"],
        Naming::Old => ["code.filepath", "code.lineno", "code.function"],
    };
    attributes.extend([
        KeyValue::new(file, code.file),
        KeyValue::new(line, i64::from(code.line)),
        KeyValue::new(function, code.function),
    ]);
    for (idx, value) in query.params.iter().enumerate() {
        attributes.push(KeyValue::new(
            format!("db.query.parameter.{idx}"),
            value.clone(),
        ));
    }
    let name = format!("{} {}", query.operation, query.table);
    remote(
        tracer,
        parent,
        name,
        SpanKind::Client,
        attributes,
        latency,
        fail,
    )
    .await
}

/// A cache `GET` of `key` from the simulated Redis.
pub async fn cache_get(
    tracer: &SdkTracer,
    parent: &Context,
    key: &str,
    latency: Duration,
) -> Result<(), CallFailed> {
    let attributes = vec![
        KeyValue::new("db.system.name", "redis"),
        KeyValue::new("db.operation.name", "GET"),
        KeyValue::new("db.query.text", format!("GET {key}")),
        KeyValue::new("server.address", "redis"),
        KeyValue::new("server.port", 6379),
    ];
    remote(
        tracer,
        parent,
        "GET".to_owned(),
        SpanKind::Client,
        attributes,
        latency,
        None,
    )
    .await
}

/// The message broker and queue the demo's emails go through.
pub const EMAIL_QUEUE: &str = "emails";

/// Publishes one message to [`EMAIL_QUEUE`]; returns the PRODUCER span's context, which travels
/// with the message so the consumer can link to it.
pub async fn publish(
    tracer: &SdkTracer,
    parent: &Context,
    latency: Duration,
) -> opentelemetry::trace::SpanContext {
    let attributes = vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.destination.name", EMAIL_QUEUE),
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.operation.name", "publish"),
        KeyValue::new("server.address", "rabbitmq"),
    ];
    let span = tracer
        .span_builder(format!("publish {EMAIL_QUEUE}"))
        .with_kind(SpanKind::Producer)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    let span_context = span.span_context().clone();
    tokio::time::sleep(latency).await;
    let mut span = span;
    span.end();
    span_context
}

/// A span of `kind` around a remote operation that takes `latency`.
async fn remote(
    tracer: &SdkTracer,
    parent: &Context,
    name: String,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    latency: Duration,
    fail: Option<&'static str>,
) -> Result<(), CallFailed> {
    let mut span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    tokio::time::sleep(latency).await;
    let outcome = match fail {
        Some(message) => {
            span.set_attribute(KeyValue::new("error.type", message));
            span.set_status(Status::error(message));
            Err(CallFailed(message))
        }
        None => Ok(()),
    };
    span.end();
    outcome
}

/// The context of a new child span, for callers that manage a span across several awaits.
pub fn child(
    tracer: &SdkTracer,
    parent: &Context,
    name: String,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Context {
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    parent.with_span(span)
}
