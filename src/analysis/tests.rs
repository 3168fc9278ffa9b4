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
              sequential_io "2 sequential calls: SELECT * FROM tenants WHERE host = ?, SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?" x2 saves 10 [2 3]
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
        prop_assert!(!requests.is_empty());
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
