//! The `auth` service, modelled on the SAML login service of the seed talk: `POST /login` is ten
//! database calls (one of them a duplicate, six of them an N+1 loop), a cache get, a ~100 ms
//! round trip to the IdP and ~8 ms of real SAML signing; `GET /report` is CPU-bound rendering;
//! `GET /health` is trivial. Version 1.1 adds the dependency upgrade's hidden round trip: 300 ms
//! of uninstrumented waiting inside the request span, between the policy queries and the IdP
//! call.
//!
//! Every request runs as one task on its own CPU clock (see the module docs of `demo`), so each of
//! its spans gets `cpu.time_ns` from the provider's processor: the CPU time of the request while
//! the span was open, its children's included (the signing span's CPU is also in the login's).
//! The IdP is another process: its handler runs as a task of its own, off the login's clock.
//!
//! Invariant: a request span always ends, with `http.response.status_code`, in the task it started
//! in, so the processor can measure it; nothing here sets `cpu.time_ns` by hand.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use super::call::{self, CallFailed, CodeSite, Naming, Query};
use super::cpu;
use super::latency::log_normal;
use super::report::{Counters, Endpoint};
use super::service::Service;
use super::{idp, mailer};

/// The version whose login carries the hidden round trip.
pub const REGRESSED_VERSION: &str = "1.1";

/// Mean latency of one query: 10 of them are the talk's "200 ms for 10 database calls".
const QUERY_MEAN: Duration = Duration::from_millis(20);
/// Spread of query latencies; 0.5 gives a p99 near three times the median.
const QUERY_SIGMA: f64 = 0.5;
/// Policy rules loaded one by one, each its own query: the N+1 loop.
pub const POLICY_RULES_PER_LOGIN: u32 = 6;
/// One way of the IdP round trip; with the IdP's own work the call takes ~100 ms.
const IDP_ONE_WAY_MEAN: Duration = Duration::from_millis(45);
/// Mean CPU time of SAML signing: the talk's "10 ms to generate SAML response", bounded below.
const SAML_SIGN_MEAN: Duration = Duration::from_millis(8);
/// The hidden round trip of the 1.1 upgrade: a region lookup that crosses an ocean. The floor is
/// the round trip itself; jitter comes on top.
const HIDDEN_ROUND_TRIP: Duration = Duration::from_millis(300);
/// Framework work per request (routing, parsing, serializing): the talk's 0.3 ms.
const FRAMEWORK_CPU: Duration = Duration::from_micros(300);
/// Share of logins that send an email ("new sign-in from ..."), through the `emails` queue.
const EMAIL_SHARE: f64 = 0.3;
/// Injected failures: the database (a statement timeout) and the IdP (a 503), 1% each.
const DB_FAILURE_SHARE: f64 = 0.01;
const IDP_FAILURE_SHARE: f64 = 0.01;

/// Everything a request may call besides its own `auth` deployment.
#[derive(Debug)]
pub struct Peers {
    /// The identity provider.
    pub idp: std::sync::Arc<Service>,
    /// The email consumer.
    pub mailer: std::sync::Arc<Service>,
    /// Request counters.
    pub counters: std::sync::Arc<Counters>,
}

/// `POST /login`. `in_flight` is cloned into the email delivery this login may start, so the
/// workload waits for it before flushing.
pub async fn login(
    auth: &Service,
    peers: &Peers,
    rng: &mut SmallRng,
    in_flight: &mpsc::Sender<()>,
) {
    let roll: f64 = rng.random();
    let failure = if roll < DB_FAILURE_SHARE {
        Some(Failure::Database)
    } else if roll < DB_FAILURE_SHARE + IDP_FAILURE_SHARE {
        Some(Failure::Idp)
    } else {
        None
    };
    peers.counters.count(Endpoint::Login, failure.is_some());
    let tracer = &auth.tracer;
    let cx = call::child(
        tracer,
        &Context::new(),
        Endpoint::Login.name().to_owned(),
        SpanKind::Server,
        server_attributes("POST", "/login"),
    );
    cpu::burn(FRAMEWORK_CPU, 1);
    let outcome = login_steps(auth, peers, &cx, rng, failure, in_flight).await;
    finish(&cx, outcome);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Database,
    Idp,
}

async fn login_steps(
    auth: &Service,
    peers: &Peers,
    cx: &Context,
    rng: &mut SmallRng,
    failure: Option<Failure>,
    in_flight: &mpsc::Sender<()>,
) -> Result<(), CallFailed> {
    let tracer = &auth.tracer;
    let tenant_id = rng.random_range(1..=50_u32);
    let user_id = rng.random_range(1..=5000_u32);
    let session_latency = log_normal(rng, Duration::from_millis(1), 0.5);
    call::cache_get(tracer, cx, &format!("session:{user_id}"), session_latency).await?;
    // The tenant is loaded twice with the same literal: once by the login view and once more by a
    // helper that survived a refactoring, exactly the talk's duplicate. The two copies are
    // recorded by different instrumentations, hence different attribute names.
    let tenant = |naming, code| Query {
        text: format!("SELECT * FROM tenants WHERE id = {tenant_id}"),
        operation: "SELECT",
        table: "tenants",
        params: Vec::new(),
        naming,
        code,
    };
    call::query(
        tracer,
        cx,
        "auth",
        &tenant(
            Naming::Old,
            CodeSite {
                file: "app/views/login.py",
                line: 24,
                function: "login",
            },
        ),
        log_normal(rng, QUERY_MEAN, QUERY_SIGMA),
        None,
    )
    .await?;
    let user = Query {
        text: "SELECT id, tenant_id, password_hash FROM users WHERE email = $1".to_owned(),
        operation: "SELECT",
        table: "users",
        params: vec![format!("user{user_id}@tenant{tenant_id}.example")],
        naming: Naming::Current,
        code: CodeSite {
            file: "app/accounts.py",
            line: 52,
            function: "find_user",
        },
    };
    let timeout = (failure == Some(Failure::Database))
        .then_some("canceling statement due to statement timeout");
    call::query(
        tracer,
        cx,
        "auth",
        &user,
        log_normal(rng, QUERY_MEAN, QUERY_SIGMA),
        timeout,
    )
    .await?;
    // Checking the password hash against the stored one.
    cpu::spend(Duration::from_millis(1), u64::from(user_id)).await;
    call::query(
        tracer,
        cx,
        "auth",
        &tenant(
            Naming::Current,
            CodeSite {
                file: "app/tenants.py",
                line: 17,
                function: "current_tenant",
            },
        ),
        log_normal(rng, QUERY_MEAN, QUERY_SIGMA),
        None,
    )
    .await?;
    let policies = Query {
        text: "SELECT policy_id FROM user_policies WHERE user_id = $1".to_owned(),
        operation: "SELECT",
        table: "user_policies",
        params: vec![user_id.to_string()],
        naming: Naming::Current,
        code: CodeSite {
            file: "app/policies.py",
            line: 61,
            function: "user_policies",
        },
    };
    call::query(
        tracer,
        cx,
        "auth",
        &policies,
        log_normal(rng, QUERY_MEAN, QUERY_SIGMA),
        None,
    )
    .await?;
    let first_policy = rng.random_range(100..900_u32);
    for policy_id in first_policy..first_policy + POLICY_RULES_PER_LOGIN {
        let rules = Query {
            text: format!("SELECT * FROM policy_rules WHERE policy_id = {policy_id}"),
            operation: "SELECT",
            table: "policy_rules",
            params: Vec::new(),
            naming: Naming::Current,
            code: CodeSite {
                file: "app/policies.py",
                line: 88,
                function: "load_rules",
            },
        };
        call::query(
            tracer,
            cx,
            "auth",
            &rules,
            log_normal(rng, QUERY_MEAN, QUERY_SIGMA),
            None,
        )
        .await?;
    }
    if auth.version == REGRESSED_VERSION {
        // The upgraded SDK resolves its region with a request of its own before the IdP call,
        // which no instrumentation sees: the request span just gets longer between the policy
        // queries and the IdP call, and its CPU time does not.
        tokio::time::sleep(HIDDEN_ROUND_TRIP + log_normal(rng, Duration::from_millis(15), 0.5))
            .await;
    }
    call_idp(auth, peers, cx, rng, failure == Some(Failure::Idp)).await?;
    saml_sign(auth, cx, rng).await;
    if rng.random_bool(EMAIL_SHARE) {
        let publish_latency = log_normal(rng, Duration::from_micros(1500), 0.4);
        let message = call::publish(tracer, cx, publish_latency).await;
        let mailer_service = std::sync::Arc::clone(&peers.mailer);
        let counters = std::sync::Arc::clone(&peers.counters);
        let done = in_flight.clone();
        let mailer_seed = rng.random();
        tokio::spawn(async move {
            let _done = done;
            mailer::deliver(&mailer_service, &counters, message, mailer_seed).await;
        });
    }
    cpu::burn(FRAMEWORK_CPU, 2);
    Ok(())
}

/// The CLIENT span of the IdP call, the propagation of its context, and the network both ways.
async fn call_idp(
    auth: &Service,
    peers: &Peers,
    cx: &Context,
    rng: &mut SmallRng,
    overloaded: bool,
) -> Result<(), CallFailed> {
    let attributes = vec![
        KeyValue::new("http.request.method", "POST"),
        KeyValue::new("server.address", "idp"),
        KeyValue::new("server.port", 443),
        KeyValue::new("url.full", "https://idp/saml/assert"),
    ];
    let client_cx = call::child(
        &auth.tracer,
        cx,
        "POST".to_owned(),
        SpanKind::Client,
        attributes,
    );
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&client_cx, &mut headers);
    tokio::time::sleep(log_normal(rng, IDP_ONE_WAY_MEAN, 0.3)).await;
    // Another process: a task of its own, so none of its work is on this request's CPU clock.
    let (idp, counters) = (
        std::sync::Arc::clone(&peers.idp),
        std::sync::Arc::clone(&peers.counters),
    );
    let mut idp_rng = SmallRng::seed_from_u64(rng.random());
    let status = tokio::spawn(async move {
        idp::saml_assert(&idp, &counters, &headers, &mut idp_rng, overloaded).await
    })
    .await
    .expect("the idp handler does not panic, and the runtime outlives every request");
    tokio::time::sleep(log_normal(rng, IDP_ONE_WAY_MEAN, 0.3)).await;
    let span = client_cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    let outcome = if status >= 500 {
        span.set_attribute(KeyValue::new("error.type", status.to_string()));
        span.set_status(Status::error("idp unavailable"));
        Err(CallFailed("idp unavailable"))
    } else {
        Ok(())
    };
    span.end();
    outcome
}

/// SAML signing: real CPU work in its own INTERNAL span, whose CPU time is also the login's.
async fn saml_sign(auth: &Service, cx: &Context, rng: &mut SmallRng) {
    let sign_cx = call::child(
        &auth.tracer,
        cx,
        "saml.sign".to_owned(),
        SpanKind::Internal,
        vec![KeyValue::new("saml.algorithm", "rsa-sha256")],
    );
    let target = log_normal(rng, SAML_SIGN_MEAN, 0.2).max(Duration::from_millis(5));
    cpu::spend(target, rng.random()).await;
    sign_cx.span().end();
}

/// `GET /report`: one small query, then CPU-bound rendering (30-60 ms) in `render.report`.
pub async fn report(auth: &Service, peers: &Peers, rng: &mut SmallRng) {
    peers.counters.count(Endpoint::Report, false);
    let tracer = &auth.tracer;
    let cx = call::child(
        tracer,
        &Context::new(),
        Endpoint::Report.name().to_owned(),
        SpanKind::Server,
        server_attributes("GET", "/report"),
    );
    cpu::burn(FRAMEWORK_CPU, 3);
    let events = Query {
        text: "SELECT date_trunc('hour', created_at), count(*) FROM login_events WHERE tenant_id = $1 GROUP BY 1"
            .to_owned(),
        operation: "SELECT",
        table: "login_events",
        params: vec![rng.random_range(1..=50_u32).to_string()],
        naming: Naming::Current,
        code: CodeSite {
            file: "app/reports.py",
            line: 33,
            function: "logins_per_hour",
        },
    };
    let outcome = call::query(
        tracer,
        &cx,
        "auth",
        &events,
        log_normal(rng, Duration::from_millis(4), 0.4),
        None,
    )
    .await;
    if outcome.is_ok() {
        let render_cx = call::child(
            tracer,
            &cx,
            "render.report".to_owned(),
            SpanKind::Internal,
            Vec::new(),
        );
        let target = log_normal(rng, Duration::from_millis(45), 0.2)
            .clamp(Duration::from_millis(30), Duration::from_millis(60));
        cpu::spend(target, rng.random()).await;
        render_cx.span().end();
        // Serializing the rendered rows.
        cpu::spend(Duration::from_millis(2), rng.random()).await;
    }
    finish(&cx, outcome);
}

/// `GET /health`: the framework's own overhead and nothing else.
pub async fn health(auth: &Service, peers: &Peers) {
    peers.counters.count(Endpoint::Health, false);
    let cx = call::child(
        &auth.tracer,
        &Context::new(),
        Endpoint::Health.name().to_owned(),
        SpanKind::Server,
        server_attributes("GET", "/health"),
    );
    cpu::burn(FRAMEWORK_CPU, 4);
    finish(&cx, Ok(()));
}

fn server_attributes(method: &'static str, route: &'static str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.route", route),
        KeyValue::new("url.path", route),
        KeyValue::new("url.scheme", "https"),
        KeyValue::new("server.address", "auth"),
    ]
}

/// Ends a request span with its status code and error status.
fn finish(cx: &Context, outcome: Result<(), CallFailed>) {
    let span = cx.span();
    let status_code: i64 = match outcome {
        Ok(()) => 200,
        Err(CallFailed(message)) => {
            span.set_attribute(KeyValue::new("error.type", "500"));
            span.set_status(Status::error(message));
            500
        }
    };
    span.set_attribute(KeyValue::new("http.response.status_code", status_code));
    span.end();
}
