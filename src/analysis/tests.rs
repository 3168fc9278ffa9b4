//! Whole-trace tests: the seed login request end to end, and properties over random trees.

use collector::model::{AttrValue, KeyValue, SpanKind};
use expect_test::{Expect, expect};
use proptest::prelude::*;

use super::{AnalysisConfig, analyze_trace, fixture};

/// Renders everything about every request, then the anomalies.
#[track_caller]
fn check(fixture_text: &str, expect: Expect) {
    let spans = fixture::parse(fixture_text);
    let (requests, anomalies) = analyze_trace(&spans, &AnalysisConfig::default());
    let mut out = String::new();
    for req in &requests {
        out.push_str(&fixture::render_request(req));
        out.push_str(&format!(
            "  version {:?} start {}\n",
            req.version, req.start_unix_ns
        ));
        out.push_str(&fixture::render_details(req));
        out.push_str(&fixture::render_findings(req));
    }
    out.push_str(&fixture::render_anomalies(&anomalies));
    expect.assert_eq(&out);
}

/// The login of the demo: tenant and user lookups, ten policy queries (a duplicate and an N+1
/// loop), a session cache read, a call to the identity provider, and signing the SAML answer.
pub(crate) const SEED_LOGIN: &str = r#"
auth: POST /login 0..400 server http.request.method=POST http.route=/login cpu.time_ns=15000000 version=1.4.2
  SELECT tenants 5..15 client db.system=postgresql db.statement="SELECT * FROM tenants WHERE host = 'acme.example'"
  SELECT users 15..35 client db.system=postgresql db.statement="SELECT id, password_hash FROM users WHERE tenant_id = 1 AND email = 'ann@acme.example'"
  SELECT policy_sets 40..60 client db.system=postgresql db.statement="SELECT * FROM policy_sets WHERE tenant_id = 1"
  SELECT policy_sets 60..80 client db.system=postgresql db.statement="SELECT * FROM policy_sets WHERE tenant_id = 1"
  SELECT policies 80..90 client db.system=postgresql db.statement="SELECT * FROM policies WHERE id = $1" db.query.parameter.0=11
  SELECT policies 90..100 client db.system=postgresql db.statement="SELECT * FROM policies WHERE id = $1" db.query.parameter.0=12
  SELECT policies 100..110 client db.system=postgresql db.statement="SELECT * FROM policies WHERE id = $1" db.query.parameter.0=13
  SELECT policies 110..120 client db.system=postgresql db.statement="SELECT * FROM policies WHERE id = $1" db.query.parameter.0=14
  SELECT policies 120..130 client db.system=postgresql db.statement="SELECT * FROM policies WHERE id = $1" db.query.parameter.0=15
  SELECT policies 130..140 client db.system=postgresql db.statement="SELECT * FROM policies WHERE id = $1" db.query.parameter.0=16
  SELECT policies 140..150 client db.system=postgresql db.statement="SELECT * FROM policies WHERE id = $1" db.query.parameter.0=17
  SELECT policies 150..160 client db.system=postgresql db.statement="SELECT * FROM policies WHERE id = $1" db.query.parameter.0=18
  GET session 165..170 client db.system=redis db.statement="GET session:ann"
  POST /saml 180..350 client http.request.method=POST server.address=idp.example
    idp: POST /saml 185..345 server http.request.method=POST http.route=/saml
      SELECT keys 190..200 client db.system=postgresql db.statement="SELECT key FROM signing_keys WHERE kid = 'k1'"
  saml.sign 355..365 internal cpu.time_ns=9000000
"#;

#[test]
fn a_fire_and_forget_child_is_counted_but_never_on_the_critical_path() {
    // The publish is acknowledged after the response, and a background task outlives the
    // request: the request did not wait for either, so their overlap is its own time.
    check(
        r#"
GET /order 0..100 server http.route=/order
  SELECT 10..30 client db.system=postgresql db.statement="SELECT * FROM orders WHERE id = 1"
  publish orders 80..130 producer messaging.system=rabbitmq
  POST audit 90..400 client http.request.method=POST server.address=audit
"#,
        expect![[r##"
            #1 svc: GET /order 100ms | db 20 untraced 80 | path 1 2
              version "" start 1000000000000
              db_calls 1 io_parallelism 1.00
              totals db 1x/20 network 1x/10 messaging 1x/20 untraced 1x/100
              op untraced "gap after `SELECT * FROM orders WHERE id = ?`, until the end" calls 1 total 70 critical 70
              op db "SELECT * FROM orders WHERE id = ?" calls 1 total 20 critical 20
              op untraced "gap from the start until `SELECT * FROM orders WHERE id = ?`" calls 1 total 10 critical 10
              op untraced "GET /order" calls 1 total 100 critical 0
              op messaging "publish orders" calls 1 total 20 critical 0
              op network "POST audit" calls 1 total 10 critical 0
              untraced_time "after `SELECT * FROM orders WHERE id = ?`, until the end" x1 saves 70 [1]
        "##]],
    );
}

#[test]
fn the_connection_of_a_call_not_waited_for_is_not_waited_for_either() {
    // Node's fetch connects in the handler's context: `tcp.connect` and `dns.lookup` are the
    // fetch's siblings. The handler answers without awaiting the fetch, and the connection is
    // set up before the answer is written: it is part of the fetch (one network call) and, as
    // the fetch, off the critical path.
    check(
        r#"
POST /orders/:id/notify 0..10 server http.route=/orders/:id/notify
  INSERT 1..2.5 client db.system=postgresql db.statement="INSERT INTO notes VALUES ($1)"
  POST 4..159 client http.request.method=POST server.address=localhost
  tcp.connect 5..8.5 internal server.address=127.0.0.1
  dns.lookup 5..6 client
"#,
        expect![[r##"
            #1 svc: POST /orders/:id/notify 10ms | db 1.5 untraced 8.5 | path 1 2
              version "" start 1000000000000
              db_calls 1 io_parallelism 1.00
              totals db 1x/1.5 network 1x/6 untraced 1x/10
              op untraced "gap after `INSERT INTO notes VALUES (...)`, until the end" calls 1 total 7.5 critical 7.5
              op db "INSERT INTO notes VALUES (...)" calls 1 total 1.5 critical 1.5
              op untraced "gap from the start until `INSERT INTO notes VALUES (...)`" calls 1 total 1 critical 1
              op untraced "POST /orders/:id/notify" calls 1 total 10 critical 0
              op network "POST localhost" calls 1 total 6 critical 0
              untraced_time "after `INSERT INTO notes VALUES (...)`, until the end" x1 saves 7.5 [1]
        "##]],
    );
}

#[test]
fn one_statement_with_two_spans_is_one_database_call() {
    // An ORM's span beside its driver's (SQLAlchemy and psycopg2), a driver's under an ORM's
    // (knex over pg), a pool checkout and a DNS lookup under an HTTP call: two database calls
    // and one network call.
    check(
        r#"
GET /user 0..100 server http.route=/user
  connect 0..5 client db.system=postgresql scope=sqlalchemy
  SELECT 5..25 client db.system=postgresql db.statement="SELECT * FROM users WHERE id = %(pk_1)s" scope=sqlalchemy
  SELECT 6..24 client db.system=postgresql db.statement="SELECT * FROM users WHERE id = %(pk_1)s" scope=psycopg2
  select 30..50 client db.system=postgresql db.statement="select * from roles where id = $1" scope=knex
    pg.query 31..49 client db.system=postgresql db.statement="select * from roles where id = $1" scope=pg
  GET 60..90 client http.request.method=GET server.address=api
    dns.lookup 60..62 internal
"#,
        expect![[r##"
            #1 svc: GET /user 100ms | db 45 network 30 untraced 25 | path 1 2 3 5 6 7 8
              version "" start 1000000000000
              db_calls 2 io_parallelism 1.00
              totals db 2x/40 network 1x/30 untraced 1x/100
              op network "GET api" calls 1 total 30 critical 30
              op db "SELECT * FROM users WHERE id = ?" calls 1 total 20 critical 20
              op db "select * from roles where id = ?" calls 1 total 20 critical 20
              op untraced "gap after `GET api`, until the end" calls 1 total 10 critical 10
              op untraced "gap between `select * from roles where id = ?` and `GET api`" calls 1 total 10 critical 10
              op db "connect" calls 1 total 5 critical 5
              op untraced "gap between `SELECT * FROM users WHERE id = ?` and `select * from roles where id = ?`" calls 1 total 5 critical 5
              op untraced "GET /user" calls 1 total 100 critical 0
        "##]],
    );
}

#[test]
fn quick_loads_of_one_instrumentation_are_never_twins() {
    // Node's SDK stamps starts in whole milliseconds: six quick loads seem to nest, but they are
    // six calls of one instrumentation, an N+1.
    check(
        r#"
GET /feed 0..50 server http.route=/feed
  q 10..10.4 client db.system=postgresql db.statement="SELECT * FROM posts WHERE id = $1" scope=pg
  q 10..10.7 client db.system=postgresql db.statement="SELECT * FROM posts WHERE id = $1" scope=pg
  q 10..10.9 client db.system=postgresql db.statement="SELECT * FROM posts WHERE id = $1" scope=pg
  q 11..11.3 client db.system=postgresql db.statement="SELECT * FROM posts WHERE id = $1" scope=pg
  q 11..11.6 client db.system=postgresql db.statement="SELECT * FROM posts WHERE id = $1" scope=pg
  q 11..11.8 client db.system=postgresql db.statement="SELECT * FROM posts WHERE id = $1" scope=pg
"#,
        expect![[r##"
            #1 svc: GET /feed 50ms | db 1.7 untraced 48.3 | path 1 4 7
              version "" start 1000000000000
              db_calls 6 io_parallelism 2.18
              totals db 6x/3.7 untraced 1x/50
              op untraced "gap after `SELECT * FROM posts WHERE id = ?`, until the end" calls 1 total 38.2 critical 38.2
              op untraced "gap from the start until `SELECT * FROM posts WHERE id = ?`" calls 1 total 10 critical 10
              op db "SELECT * FROM posts WHERE id = ?" calls 6 total 3.7 critical 1.7
              op untraced "GET /feed" calls 1 total 50 critical 0.1
              untraced_time "after `SELECT * FROM posts WHERE id = ?`, until the end" x1 saves 38.2 [1]
              n_plus_one "SELECT * FROM posts WHERE id = ?" x6 saves 0.8 [2 3 4 5 6 7]
        "##]],
    );
}

#[test]
fn seed_login() {
    check(
        SEED_LOGIN,
        expect![[r##"
            #1 auth: POST /login 400ms | db 150 cache 5 network 170 cpu 15 wait 60 | path 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 18
              version "1.4.2" start 1000000000000
              db_calls 12 io_parallelism 1.00
              totals db 12x/150 cache 1x/5 network 1x/170 cpu 2x/410
              op network "POST idp.example" calls 1 total 170 critical 170
              op db "SELECT * FROM policies WHERE id = ?" calls 8 total 80 critical 80
              op db "SELECT * FROM policy_sets WHERE tenant_id = ?" calls 2 total 40 critical 40
              op wait "gap after `saml.sign`, until the end" calls 1 total 31.769231 critical 31.769231
              op db "SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?" calls 1 total 20 critical 20
              op db "SELECT * FROM tenants WHERE host = ?" calls 1 total 10 critical 10
              op wait "gap between `GET session:ann` and `POST idp.example`" calls 1 total 9.076924 critical 9.076924
              op cpu "saml.sign" calls 1 total 10 critical 9
              op cache "GET session:ann" calls 1 total 5 critical 5
              op wait "gap from the start until `SELECT * FROM tenants WHERE host = ?`" calls 1 total 4.538462 critical 4.538462
              op wait "gap between `POST idp.example` and `saml.sign`" calls 1 total 4.538462 critical 4.538462
              op wait "gap between `SELECT * FROM policies WHERE id = ?` and `GET session:ann`" calls 1 total 4.538462 critical 4.538462
              op wait "gap between `SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?` and `SELECT * FROM policy_sets WHERE tenant_id = ?`" calls 1 total 4.538462 critical 4.538462
              op cpu "gap after `saml.sign`, until the end" calls 1 total 3.230769 critical 3.230769
              op wait "saml.sign" calls 1 total 1 critical 1
              op cpu "gap between `GET session:ann` and `POST idp.example`" calls 1 total 0.923076 critical 0.923076
              op cpu "gap from the start until `SELECT * FROM tenants WHERE host = ?`" calls 1 total 0.461538 critical 0.461538
              op cpu "gap between `POST idp.example` and `saml.sign`" calls 1 total 0.461538 critical 0.461538
              op cpu "gap between `SELECT * FROM policies WHERE id = ?` and `GET session:ann`" calls 1 total 0.461538 critical 0.461538
              op cpu "gap between `SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?` and `SELECT * FROM policy_sets WHERE tenant_id = ?`" calls 1 total 0.461538 critical 0.461538
              op cpu "POST /login" calls 1 total 400 critical 0.000003
              n_plus_one "SELECT * FROM policies WHERE id = ?" x8 saves 70 [6 7 8 9 10 11 12 13]
              duplicate_query "SELECT * FROM policy_sets WHERE tenant_id = ?" x2 saves 20 [4 5]
              sequential_io "sequential calls: SELECT * FROM tenants WHERE host = ?, SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?" x2 saves 10 [2 3]
            #16 idp: POST /saml 160ms | db 10 untraced 150 | path 16 17
              version "" start 1000185000000
              db_calls 1 io_parallelism 1.00
              totals db 1x/10 untraced 1x/160
              op untraced "gap after `SELECT key FROM signing_keys WHERE kid = ?`, until the end" calls 1 total 145 critical 145
              op db "SELECT key FROM signing_keys WHERE kid = ?" calls 1 total 10 critical 10
              op untraced "gap from the start until `SELECT key FROM signing_keys WHERE kid = ?`" calls 1 total 5 critical 5
              op untraced "POST /saml" calls 1 total 160 critical 0
              untraced_time "after `SELECT key FROM signing_keys WHERE kid = ?`, until the end" x1 saves 145 [16]
        "##]],
    );
}

/// One random span: parent (any position, so cycles and orphans happen), service, kind, times.
fn arb_span() -> impl Strategy<Value = (Option<u64>, bool, u8, u64, u64, Option<u64>, u8)> {
    (
        proptest::option::of(0u64..40),
        any::<bool>(),
        0u8..6,
        0u64..1_000,
        0u64..1_000,
        proptest::option::of(0u64..2_000),
        0u8..4,
    )
}

proptest! {
    #[test]
    fn breakdowns_sum_to_durations(raw in proptest::collection::vec(arb_span(), 1..30)) {
        let n = raw.len() as u64;
        let spans: Vec<_> = raw
            .iter()
            .enumerate()
            .map(|(idx, (parent, other_service, kind, start, dur, cpu, attr))| {
                let kind = [
                    SpanKind::Server,
                    SpanKind::Client,
                    SpanKind::Internal,
                    SpanKind::Consumer,
                    SpanKind::Producer,
                    SpanKind::Unspecified,
                ][usize::from(*kind)];
                let mut attributes = Vec::new();
                if let Some(cpu) = cpu {
                    attributes.push(KeyValue { key: "cpu.time_ns".into(), value: AttrValue::Int(*cpu as i64 * 1_000) });
                }
                match attr {
                    0 => attributes.push(KeyValue { key: "db.system".into(), value: AttrValue::Str("postgresql".into()) }),
                    1 => attributes.push(KeyValue { key: "db.system".into(), value: AttrValue::Str("redis".into()) }),
                    _ => {}
                }
                attributes.push(KeyValue {
                    key: "db.statement".into(),
                    value: AttrValue::Str(format!("SELECT * FROM t WHERE id = {}", idx % 3)),
                });
                // Ids repeat now and then (`idx % (n + 1)` never, `parent` past n: orphans).
                let id = if idx > 0 && *start % 17 == 0 { idx as u64 } else { idx as u64 + 1 };
                fixture::make_span(
                    id,
                    parent.map(|p| p % (n + 3) + 1),
                    if *other_service { "b" } else { "a" },
                    None,
                    "op",
                    kind,
                    // Now and then a span at the very end of the clock, whose end saturates.
                    if start % 11 == 0 { u64::MAX - start * 1_000 } else { start * 1_000 },
                    dur * 1_000,
                    attributes,
                    false,
                )
            })
            .collect();
        let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
        // A trace of calls alone (start-up statements) has no request; one with a SERVER span
        // (the first of its id: later ones are dropped) has.
        let mut ids = std::collections::HashSet::new();
        let kept_server = spans.iter().filter(|s| ids.insert(s.span_id)).any(|s| s.kind == SpanKind::Server);
        prop_assert!(!kept_server || !requests.is_empty());
        for req in &requests {
            prop_assert_eq!(req.breakdown.total(), req.duration_ns);
            let critical: u64 = req.operations.iter().map(|op| op.critical_ns).sum();
            prop_assert_eq!(critical, req.duration_ns);
            for finding in &req.findings {
                prop_assert!(finding.potential_saving_ns <= req.duration_ns);
            }
        }
    }
}
