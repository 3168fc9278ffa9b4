//! Version comparison end to end: two versions of a service with known differences, sent over
//! OTLP, compared through `/api/v1/compare`, and the regression finder's events.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bottleneck::regress;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value as Json;

use crate::analysis::{Builder, MS, kv, kv_int};
use crate::support::{TestApp, http_client, spawn_app_with};

/// Requests per endpoint and version.
pub(crate) const PER_VERSION: u64 = 24;

pub(crate) const ENDPOINTS: [&str; 6] = [
    "POST /login",
    "GET /policies",
    "GET /report",
    "POST /signup",
    "GET /health",
    "GET /status",
];

/// One request of `endpoint` in `version`, `jitter_ms` longer in its own CPU work.
fn request(
    trace: u32,
    base: u64,
    endpoint: &str,
    version: &str,
    jitter_ms: u64,
    host: &str,
) -> ExportTraceServiceRequest {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&trace.to_be_bytes());
    id[15] = 1;
    let mut b = Builder::new(id, base, Some(version));
    b.resource = vec![kv("host.name", host), kv("deployment.environment", "prod")];
    let new = version == "1.1";
    let (method, route) = endpoint.split_once(' ').expect("METHOD /route");
    let db = |statement: String| {
        vec![
            kv("db.system", "postgresql"),
            kv("db.statement", &statement),
        ]
    };
    // Every endpoint starts with `10 + jitter` ms of its own CPU work.
    let mut t = 10 + jitter_ms;
    // Self time that is not on a CPU (a hidden wait), by endpoint and version.
    let mut wait = 0;
    let mut children: Vec<(
        String,
        u64,
        u64,
        Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    )> = Vec::new();
    match endpoint {
        // 1.1 hides a 300 ms wait in the handler.
        "POST /login" if new => wait = 300,
        // 10 queries per request become 12.
        "GET /policies" => {
            for k in 0..if new { 12 } else { 10 } {
                children.push((
                    "SELECT policies".into(),
                    t,
                    t + 5,
                    db(format!("SELECT * FROM policies WHERE id = {k}")),
                ));
                t += 5;
            }
        }
        // The report query gets three times slower.
        "GET /report" => {
            let query_ms = if new { 60 } else { 20 };
            children.push((
                "SELECT report".into(),
                t,
                t + query_ms,
                db("SELECT * FROM orders WHERE day = '2024-05-01'".into()),
            ));
            t += query_ms;
        }
        // 1.1 calls a new host, the mailer, during signup.
        "POST /signup" => {
            children.push((
                "INSERT users".into(),
                t,
                t + 5,
                db("INSERT INTO users (email) VALUES ('a@b.c')".into()),
            ));
            t += 5;
            if new {
                children.push((
                    "POST".into(),
                    t,
                    t + 50,
                    vec![
                        kv("http.request.method", "POST"),
                        kv("server.address", "mail.example"),
                    ],
                ));
                t += 50;
            }
        }
        // 1.1 drops 40 ms of CPU work.
        "GET /health" if !new => t += 40,
        _ => {}
    }
    let end = t + wait + 5;
    let own_cpu_ms = end
        - wait
        - children
            .iter()
            .map(|(_, from, to, _)| to - from)
            .sum::<u64>();
    let root = b.span(
        "shop",
        None,
        endpoint,
        2,
        0,
        end,
        vec![
            kv("http.request.method", method),
            kv("http.route", route),
            kv_int("cpu.time_ns", (own_cpu_ms * MS) as i64),
        ],
    );
    for (name, from, to, attrs) in children {
        b.span("shop", Some(root), &name, 3, from, to, attrs);
    }
    b.request()
}

async fn get(url: String) -> (u16, Json) {
    let res = http_client().get(url).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Json::Null))
}

/// Sends both versions; returns the instant (unix ns) the timestamps are relative to.
pub(crate) async fn send_both_versions(app: &TestApp) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut trace = 0u32;
    for (version, start) in [
        ("1.0", now - 40 * 60_000 * MS),
        ("1.1", now - 20 * 60_000 * MS),
    ] {
        let mut export = ExportTraceServiceRequest::default();
        for n in 0..PER_VERSION {
            for endpoint in ENDPOINTS {
                trace += 1;
                let host = if n % 2 == 0 { "web-1" } else { "web-2" };
                let one = request(
                    trace,
                    start + u64::from(trace) * 1_000 * MS,
                    endpoint,
                    version,
                    n % 4,
                    host,
                );
                export.resource_spans.extend(one.resource_spans);
            }
        }
        let res = http_client()
            .post(format!("{}/v1/traces", app.otlp_http_url))
            .header("content-type", "application/x-protobuf")
            .body(export.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    now
}

fn change<'a>(comparison: &'a Json, category: &str, name: &str) -> &'a Json {
    comparison["top_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == category && c["name"] == name)
        .unwrap_or_else(|| panic!("no {category} {name} in {:#}", comparison["top_changes"]))
}

fn near(value: &Json, expected: f64, tolerance: f64) {
    let value = value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"));
    assert!(
        (value - expected).abs() <= tolerance,
        "{value} vs {expected} ± {tolerance}"
    );
}

#[tokio::test]
async fn versions_compared_and_regressions_found() {
    let app = spawn_app_with(|config| {
        config.regression.interval = Duration::from_millis(100);
        config.regression.min_requests = 20;
    })
    .await;
    let now = send_both_versions(&app).await;
    let base = format!(
        "{}/api/v1/compare?service=shop&baseline=version:1.0&candidate=version:1.1",
        app.ui_url
    );
    // Wait until every request is analysed.
    let all = app
        .eventually(Duration::from_secs(30), || async {
            let (status, body) = get(base.clone()).await;
            let endpoints = body["endpoints"].as_array()?;
            (status == 200
                && endpoints.len() == ENDPOINTS.len()
                && endpoints.iter().all(|e| {
                    e["baseline"]["requests"] == PER_VERSION
                        && e["candidate"]["requests"] == PER_VERSION
                }))
            .then_some(body)
        })
        .await;
    let by_name = |name: &str| {
        all["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["baseline"]["endpoint"] == name)
            .unwrap()
            .clone()
    };

    // The hidden wait: wait in the endpoint's own time, new with 1.1.
    let login = by_name("POST /login");
    assert_eq!(login["verdict"], "slower");
    assert!(login["significant"].as_bool().unwrap());
    near(&login["delta_ms"]["total"], 300.0, 5.0);
    near(&login["delta_ms"]["wait"], 300.0, 1.0);
    // The handler has no span below it, so the wait is placed in the whole request.
    let wait = change(&login, "wait", "with no span in the whole request");
    near(&wait["delta_ms"], 300.0, 1.0);
    assert_eq!(wait["gap"], true);
    assert_eq!(login["top_changes"][0]["category"], "wait");
    near(&login["delta_ms"]["cpu"], 0.0, 1.0);
    let sentence = wait["summary"].as_str().unwrap();
    assert!(
        sentence.contains("measured off the CPU") && sentence.contains("new with 1.1"),
        "{sentence}"
    );

    // 10 queries per request became 12: db, the policies statement, more calls.
    let policies = by_name("GET /policies");
    near(&policies["delta_ms"]["db"], 10.0, 0.5);
    let query = change(&policies, "db", "SELECT * FROM policies WHERE id = ?");
    near(&query["delta_ms"], 10.0, 0.5);
    assert!(
        query["summary"]
            .as_str()
            .unwrap()
            .contains("ran 12 times per request instead of 10"),
        "{query}"
    );
    let op = policies["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "SELECT * FROM policies WHERE id = ?")
        .unwrap();
    assert_eq!(op["baseline_calls_per_request"], 10.0);
    assert_eq!(op["candidate_calls_per_request"], 12.0);
    assert_eq!(
        policies["verdict"], "unchanged",
        "+10 ms is under the threshold"
    );

    // The slower query: same calls, longer each.
    let report = by_name("GET /report");
    assert_eq!(report["verdict"], "slower");
    let query = change(&report, "db", "SELECT * FROM orders WHERE day = ?");
    near(&query["delta_ms"], 40.0, 0.5);
    assert!(
        query["summary"]
            .as_str()
            .unwrap()
            .contains("took 60 ms per call instead of 20 ms")
    );

    // A call to a new host: a network operation that appeared.
    let signup = by_name("POST /signup");
    assert_eq!(signup["verdict"], "slower");
    let call = change(&signup, "network", "POST mail.example");
    near(&call["delta_ms"], 50.0, 0.5);
    assert!(
        call["summary"]
            .as_str()
            .unwrap()
            .contains("is new with 1.1")
    );
    let op = signup["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "POST mail.example")
        .unwrap();
    assert_eq!(op["change"], "appeared");

    // Faster and unchanged endpoints are not regressions; unchanged has nothing to explain.
    let health = by_name("GET /health");
    assert_eq!(health["verdict"], "faster");
    assert!(health["regression"].is_null());
    near(&health["delta_ms"]["cpu"], -40.0, 0.5);
    let status = by_name("GET /status");
    assert_eq!(status["verdict"], "unchanged");
    assert!(status["regression"].is_null());
    assert!(!status["significant"].as_bool().unwrap());
    assert_eq!(status["top_changes"].as_array().unwrap().len(), 0);

    // Sorted by regression: the slower endpoints first, the login (largest) leading.
    assert_eq!(all["endpoints"][0]["baseline"]["endpoint"], "POST /login");
    let verdicts: Vec<&str> = all["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(&verdicts[..3], ["slower"; 3]);

    // One endpoint: the contract's shape.
    let (code, one) = get(format!("{base}&endpoint=POST%20/login")).await;
    assert_eq!(code, 200);
    assert_eq!(one["baseline"]["requests"], PER_VERSION);
    assert_eq!(one["source"], "rollups");
    near(&one["delta_ms"]["total"], 300.0, 5.0);
    assert_eq!(one["top_changes"][0]["category"], "wait");
    assert!(
        one["summary"]
            .as_str()
            .unwrap()
            .contains("slower on average with 1.1")
    );

    // A resource attribute selects request rows: same answer on one host, no operations.
    let (code, host) = get(format!(
        "{}/api/v1/compare?service=shop&endpoint=POST%20/login&baseline=version:1.0,host.name:web-1&candidate=attr:host.name=web-1,version:1.1",
        app.ui_url
    ))
    .await;
    assert_eq!(code, 200, "{host}");
    assert_eq!(host["source"], "requests");
    assert_eq!(host["baseline"]["requests"], PER_VERSION / 2);
    near(&host["delta_ms"]["wait"], 300.0, 1.0);
    assert_eq!(host["top_changes"][0]["category"], "wait");

    // Windows select the same traffic by time: 1.0 ran 40 minutes ago, 1.1 20 minutes ago.
    let minute_ms = 60_000;
    let now_ms = now / MS;
    let (code, windows) = get(format!(
        "{}/api/v1/compare?service=shop&endpoint=POST%20/login&baseline=window:{}..{}&candidate=window:{}..{}",
        app.ui_url,
        now_ms - 41 * minute_ms,
        now_ms - 30 * minute_ms,
        now_ms - 21 * minute_ms,
        now_ms - 10 * minute_ms,
    ))
    .await;
    assert_eq!(code, 200, "{windows}");
    assert_eq!(windows["candidate"]["requests"], PER_VERSION);
    near(&windows["delta_ms"]["wait"], 300.0, 1.0);

    // Bad selectors are 400; a side without data is 404.
    for query in [
        "service=shop&baseline=1.0&candidate=version:1.1",
        "service=shop&baseline=version:1.0",
        "service=shop&baseline=version:1.0&candidate=window:later..sooner",
        "baseline=version:1.0&candidate=version:1.1",
    ] {
        let (code, body) = get(format!("{}/api/v1/compare?{query}", app.ui_url)).await;
        assert_eq!(code, 400, "{query}: {body}");
    }
    for query in [
        "service=shop&baseline=version:1.0&candidate=version:9.9",
        "service=shop&baseline=version:1.0&candidate=host.name:web-9",
        "service=nope&baseline=version:1.0&candidate=version:1.1",
    ] {
        let (code, body) = get(format!("{}/api/v1/compare?{query}", app.ui_url)).await;
        assert_eq!(code, 404, "{query}: {body}");
    }

    // The finder: exactly the three slower endpoints, once each.
    let regressions = format!("{}/api/v1/regressions", app.ui_url);
    app.eventually(Duration::from_secs(30), || async {
        let (_, body) = get(regressions.clone()).await;
        (body["regressions"].as_array()?.len() >= 3).then_some(())
    })
    .await;
    // Evaluate whatever the task has not yet, synchronously; a second pass finds nothing new.
    // `find` keeps no memory between passes: what was evaluated is in the store, so a restarted
    // process does not raise an event again either.
    let config = bottleneck::config::RegressionConfig {
        interval: Duration::from_secs(1),
        min_requests: 20,
        lookback: Duration::from_secs(3600),
        thresholds: Default::default(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    regress::find(&app.store, &config, now).await.unwrap();
    assert!(
        regress::find(&app.store, &config, now)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, body) = get(regressions.clone()).await;
    let mut found: Vec<(String, String)> = body["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["baseline"], "1.0");
            assert_eq!(e["candidate"], "1.1");
            assert_eq!(e["service"], "shop");
            (
                e["endpoint"].as_str().unwrap().to_owned(),
                e["metric"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("GET /report".to_owned(), "p50".to_owned()),
            ("POST /login".to_owned(), "p50".to_owned()),
            ("POST /signup".to_owned(), "p50".to_owned()),
        ]
    );
    let login_event = body["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "POST /login")
        .unwrap();
    assert!(
        login_event["summary"]
            .as_str()
            .unwrap()
            .contains("wait in POST /login"),
        "{login_event}"
    );
    let last = body["regressions"][2]["id"].as_i64().unwrap();
    let (_, after) = get(format!("{regressions}?after={last}")).await;
    assert_eq!(after["regressions"].as_array().unwrap().len(), 0);
    let (_, other) = get(format!("{regressions}?service=idp")).await;
    assert_eq!(other["regressions"].as_array().unwrap().len(), 0);
    let (code, _) = get(format!("{regressions}?limit=0")).await;
    assert_eq!(code, 400);
    app.stop().await;
}

/// A regression event goes out through the alert webhooks, once, in both formats.
#[tokio::test]
async fn regressions_are_sent_through_the_alert_webhooks_once() {
    use crate::alerts::Receiver;
    let json = Receiver::spawn(0).await;
    let alertmanager = Receiver::spawn(0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[alerts]\ninterval = \"200ms\"\nretry_initial = \"100ms\"\n\n\
         [[webhook]]\nurl = \"{}\"\nformat = \"json\"\n\n[[webhook]]\nurl = \"{}\"\nformat = \"alertmanager\"\n",
        json.url, alertmanager.url
    );
    let path = crate::alerts::write_config(dir.path(), &config);
    let put_rules = crate::alerts::with_config(path);
    let app = crate::support::spawn_app_with(move |config| {
        put_rules(config);
        config.regression.interval = Duration::from_millis(100);
        config.regression.min_requests = 20;
    })
    .await;
    send_both_versions(&app).await;
    let bodies = app
        .eventually(Duration::from_secs(30), || async {
            let bodies = json.bodies();
            (bodies.len() >= 3 && alertmanager.bodies_len() >= 3).then_some(bodies)
        })
        .await;
    let text = serde_json::to_string(&bodies).unwrap();
    assert!(text.contains("regression"), "{text}");
    assert!(text.contains("POST /login"), "{text}");
    let manager = serde_json::to_string(&alertmanager.bodies()).unwrap();
    assert!(manager.contains("\"status\":\"firing\""), "{manager}");
    // Nothing is sent twice: a few more evaluations add no bodies.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(json.bodies_len(), bodies.len(), "each event is sent once");
    app.stop().await;
}
