//! Comparisons of generated logins: each test changes one thing between the sides.

use expect_test::{Expect, expect};

use super::*;
use crate::analysis::{AnalysisConfig, analyze_trace, fixture};

/// What a generated login does.
#[derive(Clone, Copy)]
struct Login {
    /// Self time of the request span that is not on a CPU.
    wait_ms: u64,
    /// Policy queries, one after another.
    queries: u64,
    /// Duration of each.
    query_ms: u64,
    /// A call to the mail service after the queries.
    mail_call: bool,
}

const BASE: Login = Login {
    wait_ms: 0,
    queries: 10,
    query_ms: 5,
    mail_call: false,
};

/// One login; `jitter_ms` lengthens its in-process work so the sides have a variance.
fn login(p: Login, jitter_ms: u64) -> String {
    let mut t = 10 + jitter_ms;
    let mut children = String::new();
    children.push_str(&format!(
        "  SELECT users {t}..{} client db.system=postgresql db.statement=\"SELECT * FROM users WHERE id = 1\"\n",
        t + 3
    ));
    t += 3;
    for k in 0..p.queries {
        children.push_str(&format!(
            "  SELECT policies {t}..{} client db.system=postgresql db.statement=\"SELECT * FROM policies WHERE id = {k}\"\n",
            t + p.query_ms
        ));
        t += p.query_ms;
    }
    if p.mail_call {
        children.push_str(&format!(
            "  POST {t}..{} client http.request.method=POST server.address=mail.example\n",
            t + 30
        ));
        t += 30;
    }
    let end = t + p.wait_ms + 5;
    // The span's own CPU time: its self time less the wait.
    let cpu_ns = (10 + jitter_ms + 5) * 1_000_000;
    format!(
        "auth: POST /login 0..{end} server http.request.method=POST http.route=/login cpu.time_ns={cpu_ns}\n{children}"
    )
}

fn rollup(p: Login, n: u64) -> Rollup {
    let mut rollup = Rollup::new();
    for i in 0..n {
        let (requests, _) = analyze_trace(
            &fixture::parse(&login(p, i % 5)),
            &AnalysisConfig::default(),
        );
        rollup.add(&requests[0]);
    }
    rollup
}

fn ms(ns: f64) -> String {
    format!("{:.1}", ns / 1_000_000.0)
}

#[track_caller]
fn check(baseline: Login, candidate: Login, expect: Expect) {
    let comparison = compare(
        &rollup(baseline, 20),
        &rollup(candidate, 20),
        "POST /login",
        "1.1",
    )
    .expect("both sides have requests");
    let thresholds = Thresholds::default();
    let mut out = format!(
        "{} mean {} p50 {} p95 {} ci {} significant {}\n",
        verdict(&comparison, &thresholds).as_str(),
        ms(comparison.mean_delta_ns()),
        ms(comparison.p50_delta_ns()),
        ms(comparison.p95_delta_ns()),
        comparison
            .mean_delta_ci
            .map_or("none".to_owned(), |ci| format!(
                "{}..{}",
                ms(ci.low_ns),
                ms(ci.high_ns)
            )),
        comparison.significant(),
    );
    if let Some(found) = regression(&comparison, &thresholds) {
        out.push_str(&format!(
            "regression {} {} -> {}\n",
            found.metric.as_str(),
            ms(found.baseline_ns),
            ms(found.candidate_ns)
        ));
    }
    let categories: Vec<String> = Category::ALL
        .iter()
        .filter(|c| comparison.category_delta_ns[c.index()].abs() >= 0.05e6)
        .map(|c| {
            format!(
                "{} {}",
                c.as_str(),
                ms(comparison.category_delta_ns[c.index()])
            )
        })
        .collect();
    out.push_str(&format!("categories: {}\n", categories.join(", ")));
    for change in &comparison.top_changes {
        out.push_str(&format!(
            "change {} {:?} {}: {}\n",
            change.category.as_str(),
            change.name,
            ms(change.delta_ns),
            change.summary
        ));
    }
    for op in &comparison.operations {
        if op.kind != OperationChangeKind::Changed || op.critical_delta_ns.abs() >= 0.05e6 {
            out.push_str(&format!(
                "op {} {} {:?} calls {:.1} -> {:.1} mean {} -> {} critical {}\n",
                op.kind.as_str(),
                op.category.as_str(),
                op.name,
                op.baseline_calls_per_request,
                op.candidate_calls_per_request,
                ms(op.baseline_mean_ns),
                ms(op.candidate_mean_ns),
                ms(op.critical_delta_ns)
            ));
        }
    }
    out.push_str(&comparison.summary);
    out.push('\n');
    expect.assert_eq(&out);
}

#[test]
fn added_wait_is_wait_in_the_endpoint() {
    check(
        BASE,
        Login {
            wait_ms: 300,
            ..BASE
        },
        expect![[r#"
            slower mean 300.0 p50 300.5 p95 300.5 ci 299.1..300.9 significant true
            regression p50 70.1 -> 370.7
            categories: wait 300.0
            change wait "after `SELECT * FROM policies WHERE id = ?`, until the end" 300.0: +300 ms wait in POST /login after `SELECT * FROM policies WHERE id = ?`, until the end, new with 1.1: measured off the CPU, so I/O, a lock or sleeping that has no span; add one there
            op appeared wait "after `SELECT * FROM policies WHERE id = ?`, until the end" calls 0.0 -> 1.0 mean 0.0 -> 288.6 critical 288.6
            op changed cpu "from the start until `SELECT * FROM users WHERE id = ?`" calls 1.0 -> 1.0 mean 12.0 -> 0.6 critical -11.4
            op appeared wait "from the start until `SELECT * FROM users WHERE id = ?`" calls 0.0 -> 1.0 mean 0.0 -> 11.4 critical 11.4
            op changed cpu "after `SELECT * FROM policies WHERE id = ?`, until the end" calls 1.0 -> 1.0 mean 5.0 -> 16.4 critical 11.4
            POST /login is 300 ms slower on average with 1.1 (95% CI +299 ms..+301 ms, 20 vs 20 requests); largest change: +300 ms wait in POST /login after `SELECT * FROM policies WHERE id = ?`, until the end, new with 1.1: measured off the CPU, so I/O, a lock or sleeping that has no span; add one there
        "#]],
    );
}

#[test]
fn added_query_runs_more_often() {
    check(
        BASE,
        Login {
            queries: 12,
            ..BASE
        },
        expect![[r#"
        unchanged mean 10.0 p50 10.2 p95 10.2 ci 9.1..10.9 significant true
        categories: db 10.0
        change db "SELECT * FROM policies WHERE id = ?" 10.0: +10 ms db in POST /login: `SELECT * FROM policies WHERE id = ?` ran 12 times per request instead of 10
        op changed db "SELECT * FROM policies WHERE id = ?" calls 10.0 -> 12.0 mean 5.0 -> 5.0 critical 10.0
        POST /login is 10 ms slower on average with 1.1 (95% CI +9.1 ms..+11 ms, 20 vs 20 requests); largest change: +10 ms db in POST /login: `SELECT * FROM policies WHERE id = ?` ran 12 times per request instead of 10
    "#]],
    );
}

#[test]
fn slower_query_takes_longer_per_call() {
    check(
        BASE,
        Login {
            query_ms: 9,
            ..BASE
        },
        expect![[r#"
        slower mean 40.0 p50 39.9 p95 39.9 ci 39.1..40.9 significant true
        regression p50 70.1 -> 110.1
        categories: db 40.0
        change db "SELECT * FROM policies WHERE id = ?" 40.0: +40 ms db in POST /login: `SELECT * FROM policies WHERE id = ?` took 9.0 ms per call instead of 5.0 ms
        op changed db "SELECT * FROM policies WHERE id = ?" calls 10.0 -> 10.0 mean 5.0 -> 9.0 critical 40.0
        POST /login is 40 ms slower on average with 1.1 (95% CI +39 ms..+41 ms, 20 vs 20 requests); largest change: +40 ms db in POST /login: `SELECT * FROM policies WHERE id = ?` took 9.0 ms per call instead of 5.0 ms
    "#]],
    );
}

#[test]
fn call_to_a_new_host_appears() {
    check(
        BASE,
        Login {
            mail_call: true,
            ..BASE
        },
        expect![[r#"
            slower mean 30.0 p50 30.2 p95 30.2 ci 29.1..30.9 significant true
            regression p50 70.1 -> 100.4
            categories: network 30.0
            change network "POST mail.example" 30.0: +30 ms network in POST /login: `POST mail.example` is new with 1.1 (1 per request, 30 ms each)
            change cpu "after `POST mail.example`, until the end" 5.0: +5.0 ms cpu in POST /login after `POST mail.example`, until the end, new with 1.1: measured on the CPU, in code between the two calls; profile it
            change cpu "after `SELECT * FROM policies WHERE id = ?`, until the end" -5.0: -5.0 ms cpu in POST /login after `SELECT * FROM policies WHERE id = ?`, until the end, gone with 1.1: measured on the CPU, in code between the two calls; profile it
            op appeared network "POST mail.example" calls 0.0 -> 1.0 mean 0.0 -> 30.0 critical 30.0
            op appeared cpu "after `POST mail.example`, until the end" calls 0.0 -> 1.0 mean 0.0 -> 5.0 critical 5.0
            op vanished cpu "after `SELECT * FROM policies WHERE id = ?`, until the end" calls 1.0 -> 0.0 mean 5.0 -> 0.0 critical -5.0
            POST /login is 30 ms slower on average with 1.1 (95% CI +29 ms..+31 ms, 20 vs 20 requests); largest change: +30 ms network in POST /login: `POST mail.example` is new with 1.1 (1 per request, 30 ms each)
        "#]],
    );
}

#[test]
fn faster_endpoint_is_not_a_regression() {
    check(
        Login {
            wait_ms: 100,
            ..BASE
        },
        BASE,
        expect![[r#"
            faster mean -100.0 p50 -100.9 p95 -99.8 ci -100.9..-99.1 significant true
            categories: wait -100.0
            change wait "after `SELECT * FROM policies WHERE id = ?`, until the end" -100.0: -100 ms wait in POST /login after `SELECT * FROM policies WHERE id = ?`, until the end, gone with 1.1: measured off the CPU, so I/O, a lock or sleeping that has no span; add one there
            op vanished wait "after `SELECT * FROM policies WHERE id = ?`, until the end" calls 1.0 -> 0.0 mean 89.8 -> 0.0 critical -89.8
            op changed cpu "from the start until `SELECT * FROM users WHERE id = ?`" calls 1.0 -> 1.0 mean 1.8 -> 12.0 critical 10.2
            op vanished wait "from the start until `SELECT * FROM users WHERE id = ?`" calls 1.0 -> 0.0 mean 10.2 -> 0.0 critical -10.2
            op changed cpu "after `SELECT * FROM policies WHERE id = ?`, until the end" calls 1.0 -> 1.0 mean 15.2 -> 5.0 critical -10.2
            POST /login is 100 ms faster on average with 1.1 (95% CI -101 ms..-99 ms, 20 vs 20 requests); largest change: -100 ms wait in POST /login after `SELECT * FROM policies WHERE id = ?`, until the end, gone with 1.1: measured off the CPU, so I/O, a lock or sleeping that has no span; add one there
        "#]],
    );
}

#[test]
fn unchanged_endpoint_reports_nothing() {
    check(
        BASE,
        BASE,
        expect![[r#"
        unchanged mean 0.0 p50 0.0 p95 0.0 ci -0.9..0.9 significant false
        categories: 
        POST /login: no significant change of the mean with 1.1 (+0.0 ms, 95% CI -0.9 ms..+0.9 ms, 20 vs 20 requests)
    "#]],
    );
}

#[test]
fn few_requests_are_not_sold_as_a_fact() {
    // Two requests a side, one of them an outlier: the interval spans zero.
    let mut baseline = Rollup::new();
    let mut candidate = Rollup::new();
    for (rollup, jitters) in [(&mut baseline, [0, 4]), (&mut candidate, [1, 40])] {
        for jitter in jitters {
            let (requests, _) = analyze_trace(
                &fixture::parse(&login(BASE, jitter)),
                &AnalysisConfig::default(),
            );
            rollup.add(&requests[0]);
        }
    }
    let comparison = compare(&baseline, &candidate, "POST /login", "1.1").unwrap();
    assert!(comparison.mean_delta_ns() > 15e6);
    assert!(!comparison.significant(), "{:?}", comparison.mean_delta_ci);
    assert!(
        comparison.summary.contains("no significant change"),
        "{}",
        comparison.summary
    );
    // One request a side has no variance at all.
    let one = rollup(BASE, 1);
    let comparison = compare(&one, &one, "POST /login", "1.1").unwrap();
    assert_eq!(comparison.mean_delta_ci, None);
    assert!(compare(&Rollup::new(), &one, "POST /login", "1.1").is_none());
}

#[test]
fn rollups_without_squares_give_no_interval() {
    let mut old = rollup(BASE, 20);
    old.duration_sq_sum = 0;
    let comparison = compare(&old, &rollup(BASE, 20), "POST /login", "1.1").unwrap();
    assert_eq!(comparison.mean_delta_ci, None);
}

#[test]
fn t_quantiles_match_the_table_and_approach_the_normal() {
    assert_eq!(t_975(1.0), 12.706);
    assert_eq!(t_975(10.7), 2.228);
    assert!((t_975(31.0) - 2.040).abs() < 0.001, "{}", t_975(31.0));
    assert!((t_975(120.0) - 1.980).abs() < 0.001, "{}", t_975(120.0));
    assert!((t_975(f64::INFINITY) - Z_975).abs() < 1e-6);
    assert_eq!(t_975(0.2), 12.706);
}
