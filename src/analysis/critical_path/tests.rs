//! Critical-path tests: each fixture renders every request's breakdown and path, then anomalies.

use expect_test::{Expect, expect};

use crate::analysis::{AnalysisConfig, analyze_trace, fixture};

#[track_caller]
fn check(fixture_text: &str, expect: Expect) {
    let spans = fixture::parse(fixture_text);
    let (requests, anomalies) = analyze_trace(&spans, &AnalysisConfig::default());
    let mut out = String::new();
    for req in &requests {
        assert_eq!(
            req.breakdown.total(),
            req.duration_ns,
            "breakdown must sum to the duration"
        );
        out.push_str(&fixture::render_request(req));
    }
    out.push_str(&fixture::render_anomalies(&anomalies));
    expect.assert_eq(&out);
}

#[test]
fn sequential_children() {
    check(
        r#"
GET /a 0..100 server
  SELECT 10..40 client db.system=postgresql
  GET 40..90 client http.request.method=GET server.address=b
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 30 network 50 untraced 20 | path 1 2 3
        "#]],
    );
}

#[test]
fn parallel_children_last_finisher_wins() {
    check(
        r#"
GET /a 0..100 server
  GET b 10..80 client http.request.method=GET server.address=b
  GET c 10..50 client http.request.method=GET server.address=c
  SELECT 20..90 client db.system=mysql
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 70 network 10 untraced 20 | path 1 2 4
        "#]],
    );
}

#[test]
fn nested_in_process_spans() {
    check(
        r#"
GET /a 0..100 server
  render 10..90 internal
    SELECT 20..30 client db.system=postgresql
    GET cache 50..60 client db.system=redis
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 10 cache 10 untraced 80 | path 1 2 3 4
        "#]],
    );
}

#[test]
fn overlapping_children_take_what_is_left() {
    check(
        r#"
GET /a 0..100 server
  A 10..60 client db.system=postgresql
  B 50..90 client db.system=redis
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 40 cache 40 untraced 20 | path 1 2 3
        "#]],
    );
}

#[test]
fn children_starting_early_are_clamped_and_those_ending_late_are_detached() {
    check(
        r#"
GET /a 0..100 server
  early -20..30 client db.system=postgresql
  late 80..150 client http.request.method=GET
  outside 200..300 client db.system=redis
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 30 untraced 70 | path 1 2
            anomaly: child outside parent #2
        "#]],
    );
}

#[test]
fn an_orphan_waits_for_its_root() {
    check(
        r#"
GET /a 0..100 server
lost 10..20 internal parent=99
  SELECT 12..18 client db.system=postgresql
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | untraced 100 | path 1
            anomaly: orphan #2
        "#]],
    );
}

#[test]
fn cross_service_call_is_caller_network() {
    check(
        r#"
auth: POST /login 0..400 server http.request.method=POST http.route=/login
  POST /saml 200..300 client http.request.method=POST server.address=idp
    idp: POST /saml 210..290 server http.request.method=POST http.route=/saml
      SELECT keys 220..250 client db.system=postgresql
      sign 250..285 internal
"#,
        expect![[r#"
            #1 auth: POST /login 400ms | network 100 untraced 300 | path 1 2
            #3 idp: POST /saml 80ms | db 30 untraced 50 | path 3 4 5
        "#]],
    );
}

#[test]
fn callee_without_client_span_still_counts_as_network() {
    check(
        r#"
a: job 0..100 internal
  b: POST /x 20..70 server
"#,
        expect![[r#"
            #1 a: job 100ms | network 50 untraced 50 | path 1
            #2 b: POST /x 50ms | untraced 50 | path 2
        "#]],
    );
}

#[test]
fn cpu_time_splits_self_time_into_cpu_and_wait() {
    // Root self time: 100 - 20 (query) - 30 (render) = 50, of which own cpu = 40 - 10 = 30, so
    // wait = 20 of 50. Render: self 30, cpu 10 of it, wait 20.
    check(
        r#"
GET /a 0..100 server cpu.time_ns=40000000
  SELECT 10..30 client db.system=postgresql
  render 50..80 internal cpu.time_ns=10000000
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 20 cpu 40 wait 40 | path 1 2 3
        "#]],
    );
}

#[test]
fn consumer_root_self_time_is_cpu() {
    check(
        r#"
worker: orders process 0..50 consumer messaging.system=kafka
  SELECT 10..20 client db.system=postgresql
  publish 30..40 producer messaging.system=kafka
"#,
        expect![[r#"
            #1 worker: orders process 50ms | db 10 messaging 10 untraced 30 | path 1 2 3
        "#]],
    );
}

#[test]
fn duplicate_ids_keep_the_first() {
    check(
        r#"
GET /a 0..100 server
  SELECT 10..20 client db.system=postgresql
  SELECT again 30..60 client db.system=postgresql id=2
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 10 untraced 90 | path 1 2
            anomaly: duplicate id #2
        "#]],
    );
}

#[test]
fn parent_cycles_are_cut() {
    check(
        r#"
loop a 0..10 internal id=1 parent=3
loop b 1..9 internal id=2 parent=1
loop c 2..8 internal id=3 parent=2
self 0..5 internal id=4 parent=4
"#,
        expect![[r#"
            #2 svc: loop b 8ms | untraced 8 | path 2 3
            #4 svc: self 5ms | untraced 5 | path 4
            anomaly: cycle cut #2
            anomaly: cycle cut #4
        "#]],
    );
}

/// Builds a fixture of a chain `depth` spans deep, each 1 ms inside its parent's end.
fn chain(depth: u64) -> String {
    let mut text = format!("deep 0..{} server id=1\n", depth * 2);
    for n in 2..=depth {
        text.push_str(&format!(
            "step {}..{} internal id={n} parent={}\n",
            n - 1,
            2 * depth - n + 1,
            n - 1
        ));
    }
    text
}

#[test]
fn deep_chain_of_100_000_spans() {
    let spans = fixture::parse(&chain(100_000));
    let (requests, anomalies) = analyze_trace(&spans, &AnalysisConfig::default());
    assert_eq!(requests.len(), 1);
    assert!(anomalies.is_empty());
    let req = &requests[0];
    assert_eq!(req.breakdown.total(), req.duration_ns);
    assert_eq!(req.critical_path.len(), 100_000);
    expect!["#1 svc: deep 200000ms | untraced 200000 | path 1 2 3 4 5 6 7"].assert_eq(
        &fixture::render_request(req)
            .chars()
            .take(60)
            .collect::<String>(),
    );
}

#[test]
fn wide_trace_of_10_000_spans() {
    let mut text = String::from("GET /wide 0..10000 server\n");
    for n in 0..9_999u64 {
        text.push_str(&format!(
            "  SELECT {n} {}..{} client db.system=postgresql db.statement=\"SELECT {n}\"\n",
            n,
            n + 1
        ));
    }
    let spans = fixture::parse(&text);
    let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let req = &requests[0];
    assert_eq!(req.breakdown.total(), req.duration_ns);
    expect!["db 9999 untraced 1"].assert_eq(&fixture::render_categories(req.breakdown.0));
}

#[test]
fn cpu_time_includes_children_and_splits_only_measured_self_time() {
    // The request's 50 ms of CPU include render's 20; the unmeasured query is taken to wait.
    // Self time: request 50 ms (30 cpu, 20 wait), render 30 ms (20 cpu, 10 wait).
    check(
        r#"
GET /a 0..100 server cpu.time_ns=50000000
  render 10..40 internal cpu.time_ns=20000000
  SELECT 50..70 client db.system=postgresql
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 20 cpu 50 wait 30 | path 1 2 3
        "#]],
    );
    // Without a measurement the same self time is untraced, never cpu.
    check(
        r#"
GET /a 0..100 server
  render 10..40 internal
  SELECT 50..70 client db.system=postgresql
"#,
        expect![[r#"
            #1 svc: GET /a 100ms | db 20 untraced 80 | path 1 2 3
        "#]],
    );
}

#[test]
fn another_services_skewed_clock_is_clamped_not_detached() {
    // Another host's clock: its request is clamped into the caller's call, as before.
    check(
        r#"
auth: POST /login 0..100 server
  POST idp 10..90 client http.request.method=POST server.address=idp
    idp: POST /saml 20..95 server
"#,
        expect![[r#"
            #1 auth: POST /login 100ms | network 80 untraced 20 | path 1 2
            #3 idp: POST /saml 75ms | untraced 75 | path 3
            anomaly: child outside parent #3
        "#]],
    );
}

#[test]
fn a_consumer_is_its_own_request_and_its_producer_never_waits_for_it() {
    // Celery: the worker shares the web's service name, its CONSUMER span is a child of the
    // web request's PRODUCER span, and it runs after the response.
    check(
        r#"
shop: POST /ship 0..50 server http.route=/ship
  apply_async 10..15 producer messaging.system=rabbitmq
    run/ship_order 40..140 consumer messaging.system=rabbitmq
      UPDATE 60..80 client db.system=postgresql db.statement="UPDATE orders SET shipped = true WHERE id = 7"
"#,
        expect![[r#"
            #1 shop: POST /ship 50ms | messaging 5 untraced 45 | path 1 2
            #3 shop: run/ship_order 100ms | db 20 untraced 80 | path 3 4
        "#]],
    );
}

#[test]
fn roots_that_are_calls_are_not_requests() {
    // Start-up statements, a pool's connection and a DNS lookup: nobody asked for them.
    check(
        r#"
CREATE 0..5 client db.system=postgresql db.statement="CREATE TABLE t (id int)"
pg-pool.connect 10..12 client db.system=postgresql parent=none
dns.lookup 20..21 client parent=none
nightly 30..90 internal parent=none
  SELECT 40..60 client db.system=postgresql db.statement="SELECT 1"
"#,
        expect![[r#"
            #4 svc: nightly 60ms | db 20 untraced 40 | path 4 5
        "#]],
    );
}

#[test]
fn two_server_spans_of_one_process_are_one_request_named_by_the_inner_route() {
    // Node's http SERVER span around Next.js' SERVER span: one request, the framework's route,
    // and the inner span's time is the request's own, not network.
    check(
        r#"
web: GET 0..100 server http.request.method=GET url.path=/blog/42
  GET /blog/[slug] 5..95 server http.request.method=GET http.route=/blog/[slug]
    SELECT 10..40 client db.system=postgresql db.statement="SELECT * FROM posts WHERE slug = $1"
"#,
        expect![[r#"
            #1 web: GET /blog/[slug] 100ms | db 30 untraced 70 | path 1 2 3
        "#]],
    );
}
