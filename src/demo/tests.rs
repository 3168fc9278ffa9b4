//! The workload against a loopback collector: the real OTLP receivers of the `collector` crate on
//! 127.0.0.1:0, HTTP and gRPC each feeding its own sink, so a test can tell which transport a
//! span came by.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collector::category::Category;
use collector::model::{Span, SpanId, SpanKind};
use collector::otlp::body::{BodyLimits, Intake};
use collector::sink::{ExportReceiver, IngestStats, SpanSink};
use tokio::net::TcpListener;

use super::*;

type Received = Arc<Mutex<Vec<Span>>>;

struct Loopback {
    http_base: String,
    grpc_url: String,
    http_spans: Received,
    grpc_spans: Received,
}

/// Keeps every exported span and acknowledges it, as the store writer would after its commit.
fn keep(mut exports: ExportReceiver) -> Received {
    let received = Received::default();
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        while let Some(export) = exports.recv().await {
            let spans = collector::block::decode(&export.block.data).expect("blocks decode");
            kept.lock()
                .expect("no panics while holding the lock")
                .extend(spans);
            let _ = export.reply.send(Ok(()));
        }
    });
    received
}

async fn loopback() -> Loopback {
    let stats = Arc::new(IngestStats::default());
    let (http_sink, http_exports) = SpanSink::channel(64, Arc::clone(&stats));
    let (grpc_sink, grpc_exports) = SpanSink::channel(64, stats);
    let intake = Intake::new(
        BodyLimits {
            max_wire_bytes: 16 << 20,
            max_decoded_bytes: 64 << 20,
            max_inflation_ratio: 100,
            deadline: Duration::from_secs(60),
            max_pause: Duration::from_secs(30),
        },
        128 << 20,
    );
    let http_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback http");
    let http_base = format!(
        "http://{}",
        http_listener.local_addr().expect("bound address")
    );
    let router = collector::otlp::http::router(http_sink, intake.clone(), Default::default());
    tokio::spawn(async move { axum::serve(http_listener, router).await });
    let grpc_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback grpc");
    let grpc_url = format!(
        "http://{}",
        grpc_listener.local_addr().expect("bound address")
    );
    let grpc = tonic::transport::Server::builder()
        .add_service(collector::otlp::grpc::service(
            grpc_sink,
            intake,
            Default::default(),
        ))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener));
    tokio::spawn(grpc);
    Loopback {
        http_base,
        grpc_url,
        http_spans: keep(http_exports),
        grpc_spans: keep(grpc_exports),
    }
}

fn config(lo: &Loopback) -> WorkloadConfig {
    WorkloadConfig {
        otlp_http_endpoint: lo.http_base.clone(),
        otlp_grpc_endpoint: lo.grpc_url.clone(),
        rate_per_sec: 8.0,
        seed: 42,
        regress_after: Duration::from_millis(1500),
        duration: Some(Duration::from_secs(4)),
    }
}

fn taken(received: &Received) -> Vec<Span> {
    received
        .lock()
        .expect("no panics while holding the lock")
        .clone()
}

fn children(spans: &[Span], parent: SpanId) -> Vec<&Span> {
    let mut out: Vec<&Span> = spans
        .iter()
        .filter(|it| it.parent_span_id == Some(parent))
        .collect();
    out.sort_by_key(|it| it.start_unix_ns);
    out
}

/// Duration minus the union of the children's intervals, clipped to the span.
fn self_ns(span: &Span, spans: &[Span]) -> u64 {
    let (start, end) = (span.start_unix_ns, span.end_unix_ns());
    let (mut covered, mut cursor) = (0, start);
    for child in children(spans, span.span_id) {
        let (from, to) = (
            child.start_unix_ns.max(cursor),
            child.end_unix_ns().min(end),
        );
        if to > from {
            covered += to - from;
            cursor = to;
        }
    }
    span.duration_ns - covered
}

/// The `cpu.time_ns` of `span`'s children in its own service (in its process), those that have it.
fn in_process_children_cpu(span: &Span, spans: &[Span]) -> u64 {
    children(spans, span.span_id)
        .iter()
        .filter(|it| it.resource.service_name == span.resource.service_name)
        .filter_map(|it| it.semantics.cpu_time_ns)
        .sum()
}

/// Every measured span's `cpu.time_ns` covers its in-process children's: the inclusive meaning.
fn assert_inclusive(spans: &[Span]) {
    for span in spans {
        if let Some(cpu_ns) = span.semantics.cpu_time_ns {
            let children = in_process_children_cpu(span, spans);
            assert!(cpu_ns >= children, "{}: {cpu_ns} < {children}", span.name);
        }
    }
}

fn version(span: &Span) -> &str {
    span.resource.service_version.as_deref().unwrap_or_default()
}

fn ok_logins<'a>(spans: &'a [Span], version_wanted: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|it| it.name == "POST /login" && it.kind == SpanKind::Server && !it.is_error())
        .filter(|it| version(it) == version_wanted)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_sends_the_login_story_over_both_transports() {
    let lo = loopback().await;
    let run = run(config(&lo), std::future::pending());
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded")
        .expect("workload runs");
    let http = taken(&lo.http_spans);
    let grpc = taken(&lo.grpc_spans);

    assert!(report.regressed, "{report}");
    assert_eq!(report.spans_failed, 0, "{report}");
    assert!(report.export_errors.is_empty(), "{report}");
    assert_eq!(
        report.spans_exported,
        (http.len() + grpc.len()) as u64,
        "{report}"
    );
    assert!(report.requests_of("auth", "POST /login") >= 10, "{report}");

    // Transports: auth and mailer over HTTP, idp over gRPC.
    let http_services: HashSet<&str> = http
        .iter()
        .map(|it| it.resource.service_name.as_str())
        .collect();
    assert_eq!(http_services, HashSet::from(["auth", "mailer"]));
    assert!(!grpc.is_empty() && grpc.iter().all(|it| it.resource.service_name == "idp"));
    let all: Vec<Span> = http.iter().chain(grpc.iter()).cloned().collect();

    // One login of 1.0, call by call.
    let login = ok_logins(&http, "1.0")[0];
    assert_eq!(login.semantics.http_route.as_deref(), Some("/login"));
    assert_eq!(login.semantics.http_status_code, Some(200));
    assert!(login.semantics.cpu_time_ns.is_some());
    let calls = children(&all, login.span_id);
    let queries: Vec<&str> = calls
        .iter()
        .filter(|it| it.category == Category::Db)
        .filter_map(|it| it.semantics.db_statement.as_deref())
        .collect();
    assert_eq!(queries.len(), QUERIES_PER_LOGIN as usize, "{queries:?}");
    let tenants: Vec<&&str> = queries
        .iter()
        .filter(|q| q.starts_with("SELECT * FROM tenants WHERE id = "))
        .collect();
    assert_eq!(tenants.len(), 2);
    assert_eq!(
        tenants[0], tenants[1],
        "the duplicate has identical literals"
    );
    let rules: HashSet<&&str> = queries
        .iter()
        .filter(|q| q.starts_with("SELECT * FROM policy_rules WHERE policy_id = "))
        .collect();
    assert_eq!(
        rules.len(),
        POLICY_RULES_PER_LOGIN as usize,
        "N+1: one distinct literal per rule"
    );
    assert!(
        calls
            .iter()
            .any(|it| it.semantics.db_system.as_deref() == Some("postgresql")
                && it.attributes.iter().any(|kv| kv.key == "db.statement")),
        "old attribute names appear"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|it| it.category == Category::Cache)
            .count(),
        1
    );
    let to_idp: Vec<&&Span> = calls
        .iter()
        .filter(|it| it.category == Category::Network)
        .collect();
    assert_eq!(to_idp.len(), 1);
    assert_eq!(to_idp[0].semantics.server_address.as_deref(), Some("idp"));
    let idp_server = children(&all, to_idp[0].span_id);
    assert_eq!(
        idp_server.len(),
        1,
        "idp's SERVER span is the child of the CLIENT span"
    );
    assert_eq!(
        (idp_server[0].name.as_str(), idp_server[0].kind),
        ("POST /saml/assert", SpanKind::Server)
    );
    assert_eq!(idp_server[0].trace_id, login.trace_id);
    let sign = calls
        .iter()
        .find(|it| it.name == "saml.sign")
        .expect("saml.sign span");
    let sign_cpu = sign
        .semantics
        .cpu_time_ns
        .expect("saml.sign carries cpu.time_ns");
    assert!(sign_cpu >= 5_000_000, "{sign_cpu}");

    // cpu.time_ns includes the children's: the login's covers the signing, its other calls, and
    // its own work between them (the 1 ms password check among it).
    let login_cpu = login.semantics.cpu_time_ns.expect("measured");
    assert!(
        login_cpu >= in_process_children_cpu(login, &all) + 1_000_000,
        "{login_cpu}"
    );
    assert!(login_cpu >= sign_cpu, "{login_cpu} < {sign_cpu}");
    assert_inclusive(&all);
    // idp measures nothing, so every one of its spans comes without cpu.time_ns.
    assert!(grpc.iter().all(|it| it.semantics.cpu_time_ns.is_none()));
    assert!(
        all.iter()
            .flat_map(|it| &it.attributes)
            .all(|kv| !kv.key.starts_with("cputime.")),
        "the processor's markers never leave the process"
    );

    // The regression: 1.1 logins wait at least 300 ms more, off CPU and outside any child span.
    let (v10, v11) = (ok_logins(&http, "1.0"), ok_logins(&http, "1.1"));
    assert!(!v11.is_empty());
    let mean_self = |logins: &[&Span]| {
        logins.iter().map(|it| self_ns(it, &all)).sum::<u64>() / logins.len() as u64
    };
    let min_self_v11 = v11
        .iter()
        .map(|it| self_ns(it, &all))
        .min()
        .expect("non-empty");
    assert!(min_self_v11 >= 300_000_000, "{min_self_v11}");
    assert!(
        mean_self(&v11) >= mean_self(&v10) + 300_000_000,
        "{} vs {}",
        mean_self(&v11),
        mean_self(&v10)
    );
    for login in &v11 {
        assert!(
            login.semantics.cpu_time_ns.expect("measured") < 100_000_000,
            "the hidden wait is not cpu"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_is_cpu_and_mailer_consumes_what_auth_publishes() {
    let lo = loopback().await;
    let config = WorkloadConfig {
        rate_per_sec: 10.0,
        seed: 7,
        regress_after: Duration::from_secs(3600),
        duration: Some(Duration::from_secs(3)),
        ..config(&lo)
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run(config, std::future::pending()))
        .await
        .expect("bounded")
        .expect("workload runs");
    assert!(!report.regressed);
    let http = taken(&lo.http_spans);

    let renders: Vec<&Span> = http
        .iter()
        .filter(|it| it.name == "render.report")
        .collect();
    assert!(!renders.is_empty(), "{report}");
    for render in renders {
        let cpu_ns = render
            .semantics
            .cpu_time_ns
            .expect("render.report carries cpu.time_ns");
        assert!((30_000_000..70_000_000).contains(&cpu_ns), "{cpu_ns}");
    }
    let report_requests: Vec<&Span> = http
        .iter()
        .filter(|it| it.name == "GET /report" && !it.is_error())
        .collect();
    assert!(!report_requests.is_empty(), "{report}");
    for request in report_requests {
        let cpu_ns = request.semantics.cpu_time_ns.expect("measured");
        // The rendering child and 2 ms of serializing after it.
        let children = in_process_children_cpu(request, &http);
        assert!(children >= 30_000_000, "{children}");
        assert!(cpu_ns >= children + 2_000_000, "{cpu_ns} vs {children}");
    }
    assert_inclusive(&http);
    let producers: HashSet<SpanId> = http
        .iter()
        .filter(|it| it.kind == SpanKind::Producer)
        .map(|it| it.span_id)
        .collect();
    let consumers: Vec<&Span> = http
        .iter()
        .filter(|it| it.kind == SpanKind::Consumer)
        .collect();
    assert!(!consumers.is_empty(), "{report}");
    for consumer in consumers {
        assert_eq!(consumer.resource.service_name, "mailer");
        assert_eq!(consumer.category, Category::Messaging);
        // Rendering the template is 2 ms of CPU.
        let cpu_ns = consumer.semantics.cpu_time_ns.expect("measured");
        assert!(cpu_ns >= 2_000_000, "{cpu_ns}");
        assert!(consumer.parent_span_id.is_none());
        assert!(
            consumer
                .links
                .iter()
                .all(|link| producers.contains(&link.span_id))
                && consumer.links.len() == 1
        );
    }
    assert!(http.iter().all(|it| version(it) != "1.1"));
}

#[tokio::test]
async fn a_rate_of_zero_is_refused() {
    let config = WorkloadConfig {
        otlp_http_endpoint: "http://127.0.0.1:9".into(),
        otlp_grpc_endpoint: "http://127.0.0.1:9".into(),
        rate_per_sec: 0.0,
        seed: 1,
        regress_after: Duration::ZERO,
        duration: None,
    };
    let err = run(config, std::future::pending())
        .await
        .expect_err("a zero rate cannot pace arrivals");
    assert!(err.to_string().contains("rate"), "{err}");
}

#[test]
fn arrivals_mix_the_endpoints_in_proportion() {
    let mut arrivals = StdRng::seed_from_u64(42);
    let kinds: Vec<Kind> = (0..17_000).map(|_| next_request(&mut arrivals).0).collect();
    let share = |kind| kinds.iter().filter(|it| **it == kind).count() as f64 / 17_000.0;
    assert!(
        (share(Kind::Login) - 1.0 / 1.7).abs() < 0.02,
        "{}",
        share(Kind::Login)
    );
    assert!(
        (share(Kind::Report) - 0.2 / 1.7).abs() < 0.02,
        "{}",
        share(Kind::Report)
    );
}

#[test]
fn the_workload_can_be_spawned() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let config = WorkloadConfig {
        otlp_http_endpoint: String::new(),
        otlp_grpc_endpoint: String::new(),
        rate_per_sec: 1.0,
        seed: 1,
        regress_after: Duration::ZERO,
        duration: None,
    };
    // Never polled: this only checks, at compile time, that `tokio::spawn(run(..))` works.
    assert_send(&run(config, std::future::pending()));
}
