//! The `idp` service: the identity provider `auth` asks to assert a user, `POST /saml/assert`.
//! It exports over OTLP/gRPC and receives the caller's trace context in `traceparent` headers,
//! so its SERVER span joins the login's trace.
//!
//! It measures no CPU time: its provider has no `cputime` processor and its spans never carry
//! `cpu.time_ns`, so Bottleneck shows its self time as untraced, next to `auth`'s CPU and wait.
//! Its assertion still burns real CPU, on a blocking thread.
//!
//! Invariant: the SERVER span always ends, with a status code, whatever the outcome, and no span
//! here ever carries `cpu.time_ns`.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rand::Rng;
use rand::rngs::SmallRng;

use super::call::{self, CodeSite, Naming, Query};
use super::cpu;
use super::latency::log_normal;
use super::report::{Counters, Endpoint};
use super::service::Service;

/// Building and encoding the assertion: a little CPU, much less than `auth`'s signing.
const ASSERTION_CPU: Duration = Duration::from_millis(2);

/// Handles one assertion request carrying `headers`; returns the HTTP status it answers with.
/// `overloaded` makes it fail with a 503, as an IdP under load does.
pub async fn saml_assert(
    idp: &Service,
    counters: &Counters,
    headers: &HashMap<String, String>,
    rng: &mut SmallRng,
    overloaded: bool,
) -> u16 {
    counters.count(Endpoint::IdpAssert, overloaded);
    let tracer = &idp.tracer;
    let parent = TraceContextPropagator::new().extract(headers);
    let attributes = vec![
        KeyValue::new("http.request.method", "POST"),
        KeyValue::new("http.route", "/saml/assert"),
        KeyValue::new("url.path", "/saml/assert"),
        KeyValue::new("url.scheme", "https"),
        KeyValue::new("server.address", "idp"),
    ];
    let cx = call::child(
        tracer,
        &parent,
        "POST /saml/assert".to_owned(),
        SpanKind::Server,
        attributes,
    );
    let status = handle(idp, &cx, rng, overloaded).await;
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error("service unavailable"));
    }
    span.end();
    status
}

async fn handle(idp: &Service, cx: &Context, rng: &mut SmallRng, overloaded: bool) -> u16 {
    let tracer = &idp.tracer;
    let provider = Query {
        text: "SELECT * FROM service_providers WHERE entity_id = $1".to_owned(),
        operation: "SELECT",
        table: "service_providers",
        params: vec!["https://auth.example/saml".to_owned()],
        naming: Naming::Current,
        code: CodeSite {
            file: "idp/providers.py",
            line: 40,
            function: "service_provider",
        },
    };
    let latency = log_normal(rng, Duration::from_millis(3), 0.4);
    if call::query(
        tracer,
        cx,
        "idp",
        &provider,
        latency,
        overloaded.then_some("connection pool exhausted"),
    )
    .await
    .is_err()
    {
        return 503;
    }
    cpu::spend(ASSERTION_CPU, rng.random()).await;
    let audit = Query {
        text: "INSERT INTO assertions (user_id, issued_at) VALUES ($1, now())".to_owned(),
        operation: "INSERT",
        table: "assertions",
        params: vec![rng.random_range(1..=5000_u32).to_string()],
        naming: Naming::Current,
        code: CodeSite {
            file: "idp/assertions.py",
            line: 71,
            function: "record_assertion",
        },
    };
    let latency = log_normal(rng, Duration::from_millis(4), 0.4);
    match call::query(tracer, cx, "idp", &audit, latency, None).await {
        Ok(()) => 200,
        Err(_) => 503,
    }
}
