//! The regression finder end to end: versions of a service sent over OTLP in phases, a pass of
//! the finder after each phase (the task's own interval is an hour, so only these passes run),
//! and the events as `/api/v1/regressions` and the alert webhooks give them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bottleneck::config::RegressionConfig;
use bottleneck::regress;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value as Json;

use crate::alerts::{MS, Receiver, now_ns, send, with_config, write_config};
use crate::analysis::{Builder, kv};
use crate::support::{TestApp, TestDatabase, http_client, spawn_app_on, spawn_app_with};

const SERVICE: &str = "shop";
const MIN_REQUESTS: u64 = 20;

/// The finder's settings in these tests: a pass runs when a test calls it.
fn finder() -> RegressionConfig {
    RegressionConfig {
        interval: Duration::from_secs(3600),
        min_requests: MIN_REQUESTS,
        lookback: Duration::from_secs(3600),
        thresholds: Default::default(),
    }
}

fn with_finder(config: &mut bottleneck::config::Config) {
    config.regression = finder();
}

/// `count` durations spread evenly over `from_ms..=from_ms + 20`.
fn spread(count: u64, from_ms: u64) -> Vec<u64> {
    (0..count).map(|i| from_ms + i % 21).collect()
}

/// Like the baseline: 20 to 40 ms.
fn fast(count: u64) -> Vec<u64> {
    spread(count, 20)
}

/// 300 ms slower.
fn slow(count: u64) -> Vec<u64> {
    spread(count, 320)
}

/// One request of `endpoint` in `version`, `duration_ms` long.
fn request(
    trace: u32,
    start_unix_ns: u64,
    endpoint: &str,
    version: &str,
    duration_ms: u64,
) -> ExportTraceServiceRequest {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&trace.to_be_bytes());
    id[15] = 2;
    let mut b = Builder::new(id, start_unix_ns, Some(version));
    let (method, route) = endpoint.split_once(' ').expect("METHOD /route");
    b.span(
        SERVICE,
        None,
        endpoint,
        2,
        0,
        duration_ms,
        vec![kv("http.request.method", method), kv("http.route", route)],
    );
    b.request()
}

/// Sends phases of traffic and waits until each is analysed.
struct Traffic {
    next_trace: u32,
    sent: HashMap<(String, String), u64>,
}

impl Traffic {
    fn new() -> Self {
        Traffic {
            next_trace: 0,
            sent: HashMap::new(),
        }
    }

    /// Requests of `endpoint` in `version` that started `minutes_ago`, one every 100 ms.
    async fn send(
        &mut self,
        app: &TestApp,
        endpoint: &str,
        version: &str,
        minutes_ago: u64,
        durations_ms: &[u64],
    ) {
        let start = now_ns() - minutes_ago * 60_000 * MS;
        let mut requests = Vec::new();
        for (i, duration_ms) in durations_ms.iter().enumerate() {
            self.next_trace += 1;
            let at = start + i as u64 * 100 * MS;
            requests.push(request(
                self.next_trace,
                at,
                endpoint,
                version,
                *duration_ms,
            ));
        }
        send(app, requests).await;
        let total = self
            .sent
            .entry((endpoint.to_owned(), version.to_owned()))
            .or_default();
        *total += durations_ms.len() as u64;
        let expected = *total;
        let url = format!(
            "{}/api/v1/versions?service={SERVICE}&endpoint={}",
            app.ui_url,
            endpoint.replace(' ', "%20")
        );
        app.eventually(Duration::from_secs(30), || async {
            let body = get(&url).await;
            let analysed = body["versions"]
                .as_array()?
                .iter()
                .find(|v| v["version"] == version)?["requests"]
                .as_u64()?;
            (analysed == expected).then_some(())
        })
        .await;
    }
}

async fn get(url: &str) -> Json {
    let res = http_client().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    res.json().await.unwrap()
}

/// One pass of the finder now; whether it raised or resolved anything.
async fn pass(app: &TestApp) -> bool {
    !regress::find(&app.store, &finder(), now_ns())
        .await
        .expect("the pass runs")
        .is_empty()
}

async fn events(app: &TestApp) -> Vec<Json> {
    let body = get(&format!("{}/api/v1/regressions", app.ui_url)).await;
    body["regressions"].as_array().unwrap().clone()
}

/// The login's endpoint page, which lists its regressions.
async fn login_page(app: &TestApp) -> String {
    let url = format!(
        "{}/endpoint?service={SERVICE}&endpoint=POST%20%2Flogin",
        app.ui_url
    );
    let res = http_client().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

#[tokio::test]
async fn a_regression_that_develops_after_the_first_evaluation_is_raised_then() {
    let app = spawn_app_with(with_finder).await;
    let mut traffic = Traffic::new();
    traffic
        .send(&app, "POST /login", "1.0", 40, &fast(60))
        .await;
    traffic
        .send(&app, "POST /login", "1.1", 20, &fast(30))
        .await;
    // Past the warm-up and no slower: evaluated, nothing raised.
    assert!(!pass(&app).await);
    assert!(events(&app).await.is_empty());

    // Then 1.1 gets slow: three quarters of its requests now take 300 ms more.
    traffic
        .send(&app, "POST /login", "1.1", 10, &slow(90))
        .await;
    pass(&app).await;
    let events = events(&app).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["endpoint"], "POST /login");
    assert_eq!(
        (&event["baseline"], &event["candidate"]),
        (&Json::from("1.0"), &Json::from("1.1"))
    );
    assert_eq!(event["metric"], "p50");
    assert_eq!(event["state"], "open");
    assert!(event["resolved_at"].is_null());
    assert_eq!(event["candidate_requests"], 120);
    // Raised on the intervals: the candidate's lower bound above the baseline's upper one.
    let baseline_high = event["baseline_ci_ms"]["high"].as_f64().unwrap();
    let candidate_low = event["candidate_ci_ms"]["low"].as_f64().unwrap();
    assert!(baseline_high < 41.0 && candidate_low > 320.0, "{event:#}");
    assert!(
        event["summary"].as_str().unwrap().contains("95% intervals"),
        "{event:#}"
    );
    // Nothing new to look at: the next pass changes nothing.
    assert!(!pass(&app).await);
    app.stop().await;
}

#[tokio::test]
async fn a_noisy_or_small_candidate_raises_nothing() {
    let app = spawn_app_with(with_finder).await;
    let mut traffic = Traffic::new();
    // Too few requests to bound a p95: two outliers among 25 make it 200 ms.
    let mut few = fast(23);
    few.extend([200, 200]);
    traffic.send(&app, "GET /few", "1.0", 40, &fast(60)).await;
    traffic.send(&app, "GET /few", "1.1", 20, &few).await;
    // Enough requests, but 6% outliers move the p95 only within its interval.
    let mut noisy = fast(188);
    noisy.extend([100; 12]);
    traffic
        .send(&app, "GET /noisy", "1.0", 40, &fast(200))
        .await;
    traffic.send(&app, "GET /noisy", "1.1", 20, &noisy).await;
    for (endpoint, min_p95_delta_ms) in [("GET%20/few", 150.0), ("GET%20/noisy", 55.0)] {
        // The p95 estimates did move by more than both thresholds.
        let comparison = get(&format!(
            "{}/api/v1/compare?service={SERVICE}&endpoint={endpoint}&baseline=version:1.0&candidate=version:1.1",
            app.ui_url
        ))
        .await;
        let p95_delta = comparison["delta_ms"]["p95"].as_f64().unwrap();
        assert!(p95_delta > min_p95_delta_ms, "{endpoint}: {comparison:#}");
    }
    pass(&app).await;
    let events = events(&app).await;
    assert!(events.is_empty(), "{events:#?}");
    app.stop().await;
}

/// The app on `db`, with the webhook of `rules`.
async fn start(db: &TestDatabase, rules: &Path) -> TestApp {
    let (url, rules) = (db.url.clone(), rules.to_owned());
    spawn_app_on(&db.path, move |config| {
        config.database_url = url;
        with_config(rules)(config);
        with_finder(config);
    })
    .await
}

#[tokio::test]
async fn a_regression_that_goes_away_is_resolved_and_raised_again_only_when_it_comes_back() {
    let hook = Receiver::spawn(0).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = write_config(
        dir.path(),
        &format!(
            "[alerts]\ninterval = \"200ms\"\nretry_initial = \"100ms\"\n\n\
             [[webhook]]\nurl = \"{}\"\nformat = \"json\"\n",
            hook.url
        ),
    );
    let db = TestDatabase::fresh().await;
    let hook = &hook;
    let sent = |count: usize| async move {
        let bodies = hook.bodies();
        assert!(bodies.len() <= count, "{bodies:#?}");
        (bodies.len() == count).then_some(bodies)
    };
    let app = start(&db, &rules).await;
    let mut traffic = Traffic::new();
    traffic
        .send(&app, "POST /login", "1.0", 40, &fast(200))
        .await;
    // 1.1 starts slow: raised on its first evaluation, and sent.
    traffic
        .send(&app, "POST /login", "1.1", 30, &slow(20))
        .await;
    assert!(pass(&app).await);
    let raised = events(&app).await;
    assert_eq!(raised.len(), 1, "{raised:#?}");
    assert_eq!(
        (&raised[0]["metric"], &raised[0]["state"]),
        (&Json::from("p50"), &Json::from("open"))
    );
    let first_id = raised[0]["id"].as_i64().unwrap();
    let bodies = app.eventually(Duration::from_secs(30), || sent(1)).await;
    assert_eq!(bodies[0]["status"], "firing");

    // A restart repeats nothing: the event, its check and the sender's cursor are stored.
    app.stop().await;
    let app = start(&db, &rules).await;
    assert!(!pass(&app).await);
    assert_eq!(events(&app).await.len(), 1);

    // Then it is fast again: under 5% of its requests are slow, so neither p50 nor p95 is.
    traffic
        .send(&app, "POST /login", "1.1", 20, &fast(400))
        .await;
    assert!(pass(&app).await);
    let resolved = events(&app).await;
    assert_eq!(resolved.len(), 1, "{resolved:#?}");
    let event = &resolved[0];
    assert_eq!(event["state"], "resolved", "{event:#}");
    assert!(event["resolved_at"].is_string(), "{event:#}");
    let resolved_ms = event["resolved_candidate_ms"].as_f64().unwrap();
    assert!(resolved_ms < 41.0, "{event:#}");
    assert!(
        event["resolved_summary"]
            .as_str()
            .unwrap()
            .contains("back within the thresholds"),
        "{event:#}"
    );
    let page = login_page(&app).await;
    assert!(
        page.contains("state-badge state-resolved") && page.contains("back within the thresholds"),
        "{page}"
    );
    assert!(!page.contains("state-badge state-open"), "{page}");
    let bodies = app.eventually(Duration::from_secs(30), || sent(2)).await;
    assert_eq!(bodies[1]["status"], "resolved");
    assert_eq!(bodies[1]["alert"]["metric"], "p50_ms", "matches the raise");
    assert_eq!(
        bodies[1]["alert"]["rule"], bodies[0]["alert"]["rule"],
        "{bodies:#?}"
    );

    // Resolved stays resolved while the candidate stays fast.
    assert!(!pass(&app).await);

    // It comes back in the tail: a new event, on the p95.
    traffic
        .send(&app, "POST /login", "1.1", 10, &slow(110))
        .await;
    assert!(pass(&app).await);
    let all = events(&app).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0]["state"], "resolved");
    assert!(all[1]["id"].as_i64().unwrap() > first_id);
    assert_eq!(
        (&all[1]["metric"], &all[1]["state"]),
        (&Json::from("p95"), &Json::from("open"))
    );
    assert!(
        login_page(&app).await.contains("state-badge state-open"),
        "the new event is listed open"
    );
    let bodies = app.eventually(Duration::from_secs(30), || sent(3)).await;
    assert_eq!(bodies[2]["status"], "firing");
    // Each raise and resolution is sent once.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(hook.bodies_len(), 3);
    app.stop().await;
}
