//! The `mailer` service: consumes the `emails` queue and sends each email over SMTP. Its request
//! is the CONSUMER span of one message, the root of its own trace, linked to the login's
//! PRODUCER span: the email goes out after the login has answered, so it is not part of the
//! login's time.
//!
//! Each message is handled on a CPU clock of its own (`with_cpu_time`), so the provider's
//! processor gives the CONSUMER span and its SMTP call `cpu.time_ns`, children included.
//!
//! Invariant: the CONSUMER span always ends, in the measured future it started in.

use std::time::Duration;

use cputime::CpuTimeExt as _;
use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::call::{self, EMAIL_QUEUE};
use super::cpu;
use super::latency::log_normal;
use super::report::{Counters, Endpoint};
use super::service::Service;

/// Delivers the message published under `producer`: it waits in the queue, then the consumer
/// renders the template and talks to the SMTP relay.
pub async fn deliver(mailer: &Service, counters: &Counters, producer: SpanContext, seed: u64) {
    consume(mailer, counters, producer, seed)
        .with_cpu_time()
        .await;
}

async fn consume(mailer: &Service, counters: &Counters, producer: SpanContext, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    // Time in the queue is nobody's span: the broker is not instrumented.
    tokio::time::sleep(log_normal(&mut rng, Duration::from_millis(10), 0.5)).await;
    counters.count(Endpoint::MailerProcess, false);
    let tracer = &mailer.tracer;
    let attributes = vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.destination.name", EMAIL_QUEUE),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.operation.name", "consume"),
    ];
    let span = tracer
        .span_builder(Endpoint::MailerProcess.name())
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes)
        .with_links(vec![Link::with_context(producer)])
        .start_with_context(tracer, &Context::new());
    let cx = Context::new().with_span(span);
    // Rendering the email template.
    cpu::spend(Duration::from_millis(2), rng.random()).await;
    let smtp = vec![
        KeyValue::new("server.address", "smtp-relay"),
        KeyValue::new("server.port", 587),
        KeyValue::new("network.protocol.name", "smtp"),
    ];
    let smtp_cx = call::child(tracer, &cx, "smtp send".to_owned(), SpanKind::Client, smtp);
    tokio::time::sleep(log_normal(&mut rng, Duration::from_millis(40), 0.6)).await;
    smtp_cx.span().end();
    cx.span().end();
}
