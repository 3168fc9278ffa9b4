//! Findings point at the code: spans with `code.*` attributes, exported by the OpenTelemetry SDK's
//! own OTLP exporter, give each finding its most frequent location in the API (endpoint and
//! trace) and on the endpoint and trace pages, escaped; a span without a file is placed by its
//! stack trace's first application frame, or by its function alone.

use std::time::{Duration, SystemTime};

use bottleneck::demo::telemetry;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use serde_json::{Value, json};

use crate::analysis::get_json;
use crate::pages::get;
use crate::support::{TestApp, install_crypto, shop_exporter, spawn_app};

/// Executions of the policy loader's query per login: an N+1.
const RULES_PER_LOGIN: u32 = 6;

/// Exports `logins` requests of `shop`'s `POST {route}`, each loading its rules one query at a
/// time, the queries of the `n`th carrying `code(n)`.
async fn export_logins(
    app: &TestApp,
    route: &str,
    logins: u32,
    code: impl Fn(u32) -> Vec<KeyValue>,
) {
    // The exporter's HTTP client needs the process's TLS provider, even for plain HTTP.
    install_crypto();
    let (provider, stats) = shop_exporter("1.0", &app.otlp_http_url);
    let tracer = telemetry::tracer(&provider);
    let ms = Duration::from_millis;
    let base = SystemTime::now() - Duration::from_secs(60);
    for n in 0..logins {
        let start = base + ms(u64::from(n) * 100);
        let login = tracer
            .span_builder(format!("POST {route}"))
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("http.response.status_code", 200),
            ])
            .start(&tracer);
        let cx = Context::new().with_span(login);
        let mut at = start + ms(1);
        for rule in 0..RULES_PER_LOGIN {
            let mut attributes = vec![
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new(
                    "db.query.text",
                    format!("SELECT * FROM policy_rules WHERE id = {rule}"),
                ),
            ];
            attributes.extend(code(n));
            let mut query = tracer
                .span_builder("SELECT policy_rules")
                .with_kind(SpanKind::Client)
                .with_start_time(at)
                .with_attributes(attributes)
                .start_with_context(&tracer, &cx);
            at += ms(3);
            query.end_with_timestamp(at);
        }
        cx.span().end_with_timestamp(at + ms(1));
    }
    telemetry::shutdown(provider, "shop")
        .await
        .expect("every span is exported");
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

fn n_plus_one(findings: &Value) -> &Value {
    findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "n_plus_one")
        .unwrap_or_else(|| panic!("an N+1 in {findings}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_shows_its_most_frequent_code_location_in_the_api_and_the_pages() {
    let app = spawn_app().await;
    // One login in four loads its rules from a second place, which must not win.
    export_logins(&app, "/login", 8, |n| {
        let line: i64 = if n % 4 == 3 { 120 } else { 88 };
        vec![
            KeyValue::new("code.file.path", "app/policies.py"),
            KeyValue::new("code.line.number", line),
            KeyValue::new("code.function.name", "load_rules<all>"),
        ]
    })
    .await;
    let detail = analysed(&app, "/login", 8).await;
    let expected = json!({"file": "app/policies.py", "line": 88, "function": "load_rules<all>"});
    assert_eq!(
        n_plus_one(&detail["findings"])["location"],
        expected,
        "six logins of eight name line 88"
    );

    let trace_id = detail["slowest_traces"][0]["trace_id"].as_str().unwrap();
    let trace = get_json(format!("{}/api/v1/traces/{trace_id}", app.ui_url))
        .await
        .expect("the trace");
    let location = &n_plus_one(&trace["requests"][0]["findings"])["location"];
    assert_eq!(location["file"], "app/policies.py");
    assert!(
        location["line"] == 88 || location["line"] == 120,
        "{location}"
    );

    let shown = "app/policies.py:88 in load_rules&#60;all&#62;";
    let page = get(
        &app,
        "/endpoint?service=shop&endpoint=POST%20/login&range=1h",
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(shown), "{}", page.body);
    assert!(!page.body.contains("load_rules<all>"), "escaped");
    let page = get(&app, &format!("/trace/{trace_id}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("app/policies.py:") && page.body.contains("in load_rules&#60;all&#62;"),
        "{}",
        page.body
    );
    app.stop().await;
}

/// The API's detail of `shop`'s `POST {route}` once its `logins` requests are analysed.
async fn analysed(app: &TestApp, route: &str, logins: u64) -> Value {
    let url = format!(
        "{}/api/v1/endpoint?service=shop&endpoint=POST%20{route}",
        app.ui_url
    );
    app.eventually(Duration::from_secs(20), || async {
        get_json(url.clone())
            .await
            .filter(|d| d["requests"].as_u64() == Some(logins))
    })
    .await
}

/// The N+1 of `shop`'s `POST {route}` once its `logins` requests are analysed: in the API and
/// on the endpoint page.
async fn n_plus_one_of(app: &TestApp, route: &str, logins: u64) -> (Value, String) {
    let detail = analysed(app, route, logins).await;
    let page = get(
        app,
        &format!("/endpoint?service=shop&endpoint=POST%20{route}&range=1h"),
    )
    .await;
    assert_eq!(page.status, 200);
    (
        n_plus_one(&detail["findings"])["location"].clone(),
        page.body,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_without_a_file_names_its_stack_frame_or_its_function() {
    let app = spawn_app().await;
    // Node's `Error.stack` as a span processor records it: the tracer's and the driver's
    // frames first.
    let stack = "Error\n    \
        at Span.end (/app/node_modules/@opentelemetry/sdk-trace-base/build/src/Span.js:210:23)\n    \
        at Client.query (/app/node_modules/pg/lib/client.js:585:25)\n    \
        at process.processTicksAndRejections (node:internal/process/task_queues:95:5)\n    \
        at async loadRules (/app/src/policies.js:88:13)\n    \
        at async login (/app/src/login.js:12:3)\n";
    export_logins(&app, "/signup", 4, |_| {
        vec![KeyValue::new("code.stacktrace", stack)]
    })
    .await;
    export_logins(&app, "/reset", 4, |_| {
        vec![
            KeyValue::new("code.function", "load_rules"),
            KeyValue::new("code.namespace", "app.policies"),
            KeyValue::new("code.lineno", 88),
        ]
    })
    .await;

    let (location, page) = n_plus_one_of(&app, "/signup", 4).await;
    assert_eq!(
        location,
        json!({"file": "/app/src/policies.js", "line": 88, "function": "loadRules"})
    );
    assert!(
        page.contains("at <code>/app/src/policies.js:88 in loadRules</code>"),
        "{page}"
    );

    let (location, page) = n_plus_one_of(&app, "/reset", 4).await;
    assert_eq!(
        location,
        json!({"file": null, "line": null, "function": "app.policies.load_rules"}),
        "a line without its file is left out"
    );
    assert!(
        page.contains("in <code>app.policies.load_rules</code>"),
        "{page}"
    );
    app.stop().await;
}
