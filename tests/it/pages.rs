//! The HTML pages over real OTLP traffic: each page answers 200 with the names and numbers the
//! API gives, untrusted strings stay text, and the security headers are there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::Value as Json;

use crate::analysis::{Builder, MS, kv, seed_login};
use crate::support::{TestApp, http_client, spawn_app};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub(crate) async fn send(app: &TestApp, export: Vec<u8>) {
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", "application/x-protobuf")
        .body(export)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Sends four seed logins and waits until the API shows them analysed; returns the detail.
pub(crate) async fn seed(app: &TestApp) -> Json {
    let now = now_ns();
    for seed in 1..=4u8 {
        let export = seed_login(seed, now - 60_000 * MS + u64::from(seed) * MS);
        send(app, export.encode_to_vec()).await;
    }
    let url = format!(
        "{}/api/v1/endpoint?service=auth&endpoint=POST%20/login",
        app.ui_url
    );
    app.eventually(Duration::from_secs(20), || async {
        let res = http_client().get(url.clone()).send().await.ok()?;
        let detail: Json = res.json().await.ok()?;
        (detail["requests"].as_u64() == Some(4)).then_some(detail)
    })
    .await
}

pub(crate) struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

pub(crate) async fn get(app: &TestApp, path: &str) -> Page {
    let res = http_client()
        .get(format!("{}{path}", app.ui_url))
        .send()
        .await
        .unwrap();
    Page {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.text().await.unwrap(),
    }
}

/// What askama writes for a text value.
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn assert_html(page: &Page, expected: &[&str]) {
    assert_eq!(page.status, 200, "{}", page.body);
    let content_type = page.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"));
    assert!(!page.body.contains("style="), "inline style on a page");
    assert!(!page.body.contains("<script>"), "inline script on a page");
    for text in expected {
        assert!(
            page.body.contains(text),
            "page lacks {text:?}:\n{}",
            page.body
        );
    }
}

#[tokio::test]
async fn every_page_shows_the_seed_login() {
    let app = spawn_app().await;
    let detail = seed(&app).await;
    let summary = detail["bottleneck"]["summary"].as_str().unwrap();
    let trace_id = detail["slowest_traces"][0]["trace_id"].as_str().unwrap();

    let overview = get(&app, "/").await;
    assert_html(
        &overview,
        &[
            "POST /login",
            "POST /saml/assert",
            ">auth<",
            ">idp<",
            "300 ms",
            &escaped(summary),
            "/endpoint?service=auth&#38;endpoint=POST%20%2Flogin&#38;range=1h",
            "/static/app.css?v=",
            "<option value=\"auth\">auth</option><option value=\"idp\">idp</option>",
        ],
    );
    assert!(!overview.body.contains("OTEL_EXPORTER_OTLP_ENDPOINT"));

    let filtered = get(&app, "/?service=idp&range=6h").await;
    assert_html(
        &filtered,
        &[
            "POST /saml/assert",
            "aria-current=\"true\">6h<",
            "<option value=\"auth\">auth</option><option value=\"idp\" selected>idp</option>",
        ],
    );
    assert!(!filtered.body.contains("POST /login"));

    let endpoint = get(
        &app,
        "/endpoint?service=auth&endpoint=POST%20/login&range=1h",
    )
    .await;
    assert_html(
        &endpoint,
        &[
            "POST /login",
            "300 ms",
            &escaped(summary),
            "N+1 query",
            "Duplicate query",
            "SELECT * FROM policy_rules WHERE policy_id = ?",
            "saves ~50.0 ms / request",
            // No CPU was measured: a range, and the handler's own time is untraced.
            "1.00–1.22×",
            "55.0 ms is untraced",
            "cat-untraced",
            "Slowest 5%",
            "<svg class=\"chart\"",
            &format!("/trace/{trace_id}"),
        ],
    );
    // One version only: no split and no compare link.
    assert!(!endpoint.body.contains("/compare?service="));

    let trace = get(&app, &format!("/trace/{trace_id}")).await;
    assert_html(
        &trace,
        &[
            trace_id,
            "16 spans",
            "saml.sign",
            "×6 SELECT * FROM policy_rules WHERE policy_id = ?",
            "(untraced)",
            "POST /saml/assert",
            "idp",
            "wf-row crit",
            "<details class=\"node\" open>",
            "db.statement",
        ],
    );
    let opened = trace.body.matches("<details").count();
    let closed = trace.body.matches("</details>").count();
    assert_eq!(opened, closed, "unbalanced <details>");

    assert_eq!(get(&app, "/trace/xyz").await.status, 400);
    let missing = get(&app, "/trace/0123456789abcdef0123456789abcdef").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("not found"));
    assert_eq!(
        get(&app, "/endpoint?service=auth&endpoint=GET%20/nothing")
            .await
            .status,
        404
    );
    assert_eq!(get(&app, "/?from=yesterday").await.status, 400);
    app.stop().await;
}

#[tokio::test]
async fn an_empty_overview_says_how_to_send_traces() {
    let app = spawn_app().await;
    let page = get(&app, "/").await;
    assert_html(
        &page,
        &[
            "No traces in this window yet",
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318",
            "opentelemetry-instrument",
        ],
    );
    assert!(!page.body.contains("<table class=\"endpoints"));
    app.stop().await;
}

const SCRIPT: &str = "<script>alert(1)</script>&";
const ATTRIBUTE_BREAKER: &str = "\"onmouseover=\"x";

/// A request whose service, span names, route and attributes are all hostile.
fn hostile(seed: u8, base: u64) -> Vec<u8> {
    let mut b = Builder::new([seed; 16], base, None);
    let root = b.span(
        ATTRIBUTE_BREAKER,
        None,
        SCRIPT,
        2,
        0,
        100,
        vec![
            kv("http.request.method", "GET"),
            kv("http.route", &format!("/x{SCRIPT}{ATTRIBUTE_BREAKER}")),
            kv(SCRIPT, ATTRIBUTE_BREAKER),
        ],
    );
    for n in 0..4 {
        b.span(
            ATTRIBUTE_BREAKER,
            Some(root),
            SCRIPT,
            3,
            10 + n * 10,
            18 + n * 10,
            vec![
                kv("db.system", "postgresql"),
                kv(
                    "db.statement",
                    &format!("SELECT '{SCRIPT}' FROM t WHERE a = \"{ATTRIBUTE_BREAKER}\""),
                ),
                kv(ATTRIBUTE_BREAKER, SCRIPT),
            ],
        );
    }
    b.request().encode_to_vec()
}

#[tokio::test]
async fn untrusted_strings_are_text_on_every_page() {
    let app = spawn_app().await;
    let now = now_ns();
    for seed in 1..=2u8 {
        send(
            &app,
            hostile(seed, now - 30_000 * MS + u64::from(seed) * MS),
        )
        .await;
    }
    let endpoints: Json = app
        .eventually(Duration::from_secs(20), || async {
            let res = http_client()
                .get(format!("{}/api/v1/endpoints", app.ui_url))
                .send()
                .await
                .ok()?;
            let body: Json = res.json().await.ok()?;
            (body["endpoints"][0]["requests"].as_u64() == Some(2)).then_some(body)
        })
        .await;
    let service = endpoints["endpoints"][0]["service"].as_str().unwrap();
    let endpoint = endpoints["endpoints"][0]["endpoint"].as_str().unwrap();
    assert_eq!(service, ATTRIBUTE_BREAKER);
    assert!(endpoint.contains(SCRIPT), "{endpoint}");
    let traces: Json = http_client()
        .get(format!("{}/api/v1/traces", app.ui_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trace_id = traces["traces"][0]["trace_id"].as_str().unwrap();
    let encode = |text: &str| {
        text.bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    };
    let paths = [
        "/".to_owned(),
        format!("/?service={}", encode(service)),
        format!(
            "/endpoint?service={}&endpoint={}",
            encode(service),
            encode(endpoint)
        ),
        format!("/trace/{trace_id}"),
        format!(
            "/compare?service={}&endpoint={}&baseline=window:{from}..{to}&candidate=window:{from}..{to}",
            encode(service),
            encode(endpoint),
            from = (now - 600_000 * MS) / MS,
            to = (now + 60_000 * MS) / MS,
        ),
        format!(
            "/compare?service={}&baseline=window:{from}..{to}&candidate=window:{from}..{to}",
            encode(service),
            from = (now - 600_000 * MS) / MS,
            to = (now + 60_000 * MS) / MS,
        ),
        format!(
            "/alerts?service={}&endpoint={}",
            encode(service),
            encode(endpoint)
        ),
    ];
    for path in &paths {
        let page = get(&app, path).await;
        assert_html(&page, &[&escaped(SCRIPT), &escaped(ATTRIBUTE_BREAKER)]);
        assert!(!page.body.contains("<script>alert"), "raw script on {path}");
        assert!(
            !page.body.contains("\"onmouseover="),
            "attribute breaks out on {path}"
        );
    }
    // A hostile selector is echoed as text in the page's message.
    let bad = get(
        &app,
        &format!(
            "/compare?service={}&baseline={}&candidate=version:1",
            encode(service),
            encode(SCRIPT)
        ),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains(&escaped(SCRIPT)));
    assert!(!bad.body.contains("<script>alert"));
    // The error page echoes nothing raw either.
    let missing = get(
        &app,
        &format!(
            "/endpoint?service={}&endpoint={}",
            encode(SCRIPT),
            encode(SCRIPT)
        ),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert!(!missing.body.contains("<script>alert"));
    assert!(missing.headers.contains_key("content-security-policy"));
    app.stop().await;
}

/// A trace of `1 + n_batches × (1 + per_batch)` spans: a request, batches below it, and
/// queries below each batch; `distinct` gives every query its own name, so nothing folds.
fn big_trace(
    trace: [u8; 16],
    base: u64,
    n_batches: u32,
    per_batch: u32,
    distinct: bool,
) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let mut next: u32 = 0;
    let mut id = || {
        next += 1;
        let mut bytes = [7u8; 8];
        bytes[..4].copy_from_slice(&next.to_be_bytes());
        bytes.to_vec()
    };
    let span = |id: Vec<u8>,
                parent: Vec<u8>,
                name: String,
                kind: i32,
                from_us: u64,
                to_us: u64,
                attributes| Span {
        trace_id: trace.to_vec(),
        span_id: id,
        parent_span_id: parent,
        name,
        kind,
        start_time_unix_nano: base + from_us * 1000,
        end_time_unix_nano: base + to_us * 1000,
        attributes,
        ..Default::default()
    };
    let root = id();
    let total_us = u64::from(n_batches * per_batch) * 100 + 1000;
    let mut spans = vec![span(
        root.clone(),
        Vec::new(),
        "GET /big".into(),
        2,
        0,
        total_us,
        vec![kv("http.request.method", "GET"), kv("http.route", "/big")],
    )];
    let mut at = 100u64;
    for batch in 0..n_batches {
        let batch_id = id();
        let batch_start = at;
        for query in 0..per_batch {
            let name = if distinct {
                format!("step {batch}.{query}")
            } else {
                "SELECT items".to_owned()
            };
            spans.push(span(
                id(),
                batch_id.clone(),
                name,
                3,
                at,
                at + 90,
                vec![
                    kv("db.system", "postgresql"),
                    kv(
                        "db.statement",
                        &format!("SELECT * FROM items WHERE id = {query}"),
                    ),
                ],
            ));
            at += 100;
        }
        spans.push(span(
            batch_id,
            root.clone(),
            format!("batch {batch}"),
            1,
            batch_start,
            at,
            vec![],
        ));
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bulk")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_ten_thousand_span_trace_stays_usable() {
    let app = spawn_app().await;
    let now = now_ns();
    let folding = [0x51u8; 16];
    let flat = [0x52u8; 16];
    send(&app, big_trace(folding, now - 40_000 * MS, 100, 99, false)).await;
    send(&app, big_trace(flat, now - 30_000 * MS, 10, 999, true)).await;
    app.eventually(Duration::from_secs(30), || async {
        let res = http_client()
            .get(format!("{}/api/v1/traces?service=bulk", app.ui_url))
            .send()
            .await
            .ok()?;
        let body: Json = res.json().await.ok()?;
        (body["traces"].as_array()?.len() == 2).then_some(())
    })
    .await;

    // Repeated siblings fold: 10,001 spans become 201 rows.
    let hex = |id: [u8; 16]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let page = get(&app, &format!("/trace/{}", hex(folding))).await;
    assert_html(
        &page,
        &[
            "10,001 spans",
            "×99 SELECT * FROM items WHERE id = ?",
            "batch 99",
        ],
    );
    assert_eq!(page.body.matches("class=\"wf-row").count(), 1 + 201);
    assert!(!page.body.contains("rows;"), "nothing is cut");

    // Nothing folds: the rows stop at the cap, with a note, and the HTML stays bounded.
    let page = get(&app, &format!("/trace/{}", hex(flat))).await;
    assert_html(
        &page,
        &[
            "10,001 spans",
            "Showing the first 2,000 rows; 8,001 more spans are not drawn.",
        ],
    );
    assert_eq!(page.body.matches("class=\"wf-row").count(), 1 + 2000);
    assert_eq!(
        page.body.matches("<details").count(),
        page.body.matches("</details>").count()
    );
    assert!(page.body.len() < 4 << 20, "{} bytes", page.body.len());
    app.stop().await;
}

/// What the pages write for a query value inside an `href` (askama escapes the `&`).
fn href_query(text: &str) -> String {
    escaped(text)
}

#[tokio::test]
async fn compare_page_and_regression_events_show_what_the_api_gives() {
    use crate::compare::{ENDPOINTS, PER_VERSION, send_both_versions};
    let app = crate::support::spawn_app_with(|config| {
        config.regression.interval = Duration::from_millis(100);
        config.regression.min_requests = 20;
    })
    .await;
    send_both_versions(&app).await;
    let api = format!(
        "{}/api/v1/compare?service=shop&endpoint=POST%20/login&baseline=version:1.0&candidate=version:1.1",
        app.ui_url
    );
    let login: Json = app
        .eventually(Duration::from_secs(30), || async {
            let res = http_client().get(api.clone()).send().await.ok()?;
            let body: Json = res.json().await.ok()?;
            (body["baseline"]["requests"] == PER_VERSION
                && body["candidate"]["requests"] == PER_VERSION)
                .then_some(body)
        })
        .await;
    // The API gives both distributions on shared buckets.
    let buckets = login["latency_histogram"].as_array().unwrap();
    let total = |side: &str| -> u64 {
        buckets
            .iter()
            .map(|b| b[format!("{side}_requests")].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total("baseline"), PER_VERSION);
    assert_eq!(total("candidate"), PER_VERSION);

    let page = get(
        &app,
        "/compare?service=shop&endpoint=POST%20/login&baseline=version:1.0&candidate=version:1.1&range=1h",
    )
    .await;
    let ci = &login["mean_delta_ci_ms"];
    assert_html(
        &page,
        &[
            "slower",
            ">significant<",
            &escaped(login["summary"].as_str().unwrap()),
            &escaped(login["top_changes"][0]["summary"].as_str().unwrap()),
            &format!(
                "95% CI +{} … +{}",
                bottleneck::web::pages::fmt_ms(ci["low"].as_f64().unwrap()),
                bottleneck::web::pages::fmt_ms(ci["high"].as_f64().unwrap())
            ),
            "<svg class=\"chart\"",
            "Latency distribution",
            "Change by category",
            "value=\"version:1.0\"",
            "value=\"version:1.1\"",
            "<option value=\"version:1.0\">",
        ],
    );

    // Service-wide: every endpoint, slower first, each linking to its own comparison.
    let page = get(
        &app,
        "/compare?service=shop&baseline=version:1.0&candidate=version:1.1",
    )
    .await;
    assert_html(
        &page,
        &[
            "Every endpoint, regressions first",
            "3 slower",
            &href_query(
                "/compare?service=shop&endpoint=POST%20%2Flogin&baseline=version%3A1.0&candidate=version%3A1.1&range=1h",
            ),
        ],
    );
    for endpoint in ENDPOINTS {
        assert!(page.body.contains(endpoint), "{endpoint} missing");
    }
    let login_at = page.body.find(">POST /login<").unwrap();
    let status_at = page.body.find(">GET /status<").unwrap();
    assert!(login_at < status_at, "the regression is listed first");

    // The operations of a slower query and a new call.
    let signup = get(
        &app,
        "/compare?service=shop&endpoint=POST%20/signup&baseline=version:1.0&candidate=version:1.1",
    )
    .await;
    assert_html(
        &signup,
        &["POST mail.example", "change-appeared", "new → 1"],
    );
    let policies = get(
        &app,
        "/compare?service=shop&endpoint=GET%20/policies&baseline=version:1.0&candidate=version:1.1",
    )
    .await;
    assert_html(
        &policies,
        &["SELECT * FROM policies WHERE id = ?", "10 → 12"],
    );

    // Without selectors: the last two versions; without a service: the form.
    let defaults = get(&app, "/compare?service=shop&endpoint=POST%20/login").await;
    assert_html(&defaults, &["value=\"version:1.0\"", "slower"]);
    let empty = get(&app, "/compare").await;
    assert_html(&empty, &["Choose a service", ">shop<"]);
    // A bad selector and an empty side are said on the page, with the API's statuses.
    let bad = get(
        &app,
        "/compare?service=shop&baseline=nonsense&candidate=version:1.1",
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("Nothing to compare") && bad.body.contains("nonsense"));
    let none = get(
        &app,
        "/compare?service=shop&baseline=version:9&candidate=version:1.1",
    )
    .await;
    assert_eq!(none.status, 404);
    assert!(none.body.contains("match the baseline selector"));
    let versions: Json = http_client()
        .get(format!("{}/api/v1/versions?service=shop", app.ui_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(versions["versions"][0]["version"], "1.0");
    assert_eq!(versions["versions"][1]["version"], "1.1");
    assert_eq!(versions["versions"][1]["requests"], 6 * PER_VERSION);

    // Regression events: a banner on the overview, a list on the endpoint page, both linking
    // to the comparison of the two versions.
    app.eventually(Duration::from_secs(30), || async {
        let res = http_client()
            .get(format!("{}/api/v1/regressions", app.ui_url))
            .send()
            .await
            .ok()?;
        let body: Json = res.json().await.ok()?;
        (body["regressions"].as_array()?.len() >= 3).then_some(())
    })
    .await;
    let link = href_query(
        "/compare?service=shop&endpoint=POST%20%2Flogin&baseline=version%3A1.0&candidate=version%3A1.1&range=1h",
    );
    let overview = get(&app, "/").await;
    assert_html(
        &overview,
        &["3 detected in this window", &link, "1.0 → 1.1"],
    );
    let endpoint = get(&app, "/endpoint?service=shop&endpoint=POST%20/login").await;
    assert_html(&endpoint, &["Regressions detected in this window", &link]);
    let health = get(&app, "/endpoint?service=shop&endpoint=GET%20/health").await;
    assert!(!health.body.contains("Regressions detected"));
    app.stop().await;
}

#[tokio::test]
async fn alerts_page_and_budget_badges_follow_the_evaluation() {
    use crate::alerts::{
        BUDGET, Receiver, alert_when, fast, now_ns, send, slow, state, with_config, write_config,
    };
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::spawn(1).await;
    let config = write_config(
        dir.path(),
        &format!(
            "{BUDGET}\n[[webhook]]\nurl = \"{}?token=secret-token\"\n",
            hook.url
        ),
    );
    let app = crate::support::spawn_app_with(with_config(config)).await;
    // Before any evaluation: no alerts yet, the page says how to configure them or is empty.
    send(&app, fast(1..=10, now_ns() - 1_800_000 * MS)).await;
    send(&app, slow(1..=10, now_ns() - 2_000 * MS)).await;
    let firing = alert_when(&app, "budget", |a| state(a) == "firing").await;
    let summary = firing["summary"].as_str().unwrap();
    // Wait for the delivery (a retry, then delivered).
    app.eventually(Duration::from_secs(30), || async {
        let res = http_client()
            .get(format!("{}/api/v1/alerts/deliveries", app.ui_url))
            .send()
            .await
            .ok()?;
        let body: Json = res.json().await.ok()?;
        (body["deliveries"][0]["status"] == "delivered").then_some(())
    })
    .await;

    let page = get(&app, "/alerts").await;
    assert_html(
        &page,
        &[
            "state-badge state-firing",
            "POST /login",
            &escaped(summary),
            "200 ms budget",
            "p50 over 5m",
            "History: ",
            "Webhook deliveries",
            "delivery-retry",
            "HTTP 500",
            "delivery-delivered",
        ],
    );
    assert!(
        !page.body.contains("secret-token"),
        "webhook paths are redacted"
    );
    let filtered = get(&app, "/alerts?service=auth&endpoint=POST%20/nothing").await;
    assert_html(&filtered, &["No budget or SLO matches this endpoint"]);

    // The overview's budget column and the endpoint page's badge, from the same evaluation.
    let overview = get(&app, "/").await;
    assert_html(
        &overview,
        &[
            ">Budget<",
            "state-badge state-firing",
            &href_query("/alerts?service=auth&endpoint=POST%20%2Flogin"),
        ],
    );
    let endpoint = get(&app, "/endpoint?service=auth&endpoint=POST%20/login").await;
    assert_html(&endpoint, &["state-badge state-firing", "p50 "]);
    // An endpoint without a budget has a blank cell.
    let saml = get(&app, "/endpoint?service=idp&endpoint=POST%20/saml/assert").await;
    assert!(!saml.body.contains("state-badge"));
    app.stop().await;
}

#[tokio::test]
async fn the_alerts_page_without_rules_says_how_to_add_them() {
    let app = spawn_app().await;
    let page = get(&app, "/alerts").await;
    assert_html(&page, &["No budgets or SLOs are configured", "[[budget]]"]);
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_get_a_page_and_the_api_keeps_json() {
    let app = spawn_app().await;
    let page = get(&app, "/no/such/page?x=<script>").await;
    assert_eq!(page.status, 404);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("404 · Not found") && page.body.contains("/no/such/page"));
    assert!(page.body.contains("Back to the overview"));
    let api = get(&app, "/api/v1/nothing").await;
    assert_eq!(api.status, 404);
    assert!(
        api.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Json = serde_json::from_str(&api.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("/api/v1/nothing"));
    let hostile = get(&app, &format!("/{}", "%3Cscript%3Ealert(1)%3C/script%3E")).await;
    assert_eq!(hostile.status, 404);
    assert!(!hostile.body.contains("<script>alert"));
    app.stop().await;
}
