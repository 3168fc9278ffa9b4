//! The pages in a real browser: Debian's headless chromium driven through chromedriver over the
//! W3C WebDriver protocol, against the real server filled through OTLP. Each page must load with
//! no console error (a CSP violation is one), show the expected names and numbers, link on
//! (overview → endpoint → trace), and leave a screenshot in `target/test-artifacts/` (or
//! `$BOTTLENECK_ARTIFACTS`).
//!
//! The WebDriver client is the dozen JSON calls below over the reqwest client the crate already
//! has: a WebDriver crate would bring its own HTTP and TLS stack into the build for them.
//!
//! Without chromium and chromedriver the test says "skipped" and passes, unless
//! `BOTTLENECK_BROWSER_TESTS=1` (as in CI), where their absence fails it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::pages::seed;
use crate::support::{http_client, spawn_app};

const CHROMIUM: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver"];
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("BOTTLENECK_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts"));
    std::fs::create_dir_all(&dir).expect("the artifacts directory can be created");
    dir
}

/// Standard base64, as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A chromedriver process, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Session {
    base: String,
}

impl Session {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> Json {
        let url = format!("{}{path}", self.base);
        let mut req = http_client().request(method, &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = res.status();
        let body: Json = res.json().await.expect("webdriver answers json");
        assert!(status.is_success(), "{url}: {status} {body}");
        body["value"].clone()
    }

    async fn post(&self, path: &str, body: Json) -> Json {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Json {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    async fn url(&self) -> String {
        self.get("/url").await.as_str().unwrap().to_owned()
    }

    async fn script(&self, script: &str) -> Json {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn find(&self, selector: &str) -> String {
        let found = self
            .post(
                "/element",
                json!({ "using": "css selector", "value": selector }),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector}: {found}"))
            .to_owned()
    }

    async fn text(&self, element: &str) -> String {
        self.get(&format!("/element/{element}/text"))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn click(&self, element: &str) {
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// The page's visible text.
    async fn body_text(&self) -> String {
        let body = self.find("body").await;
        self.text(&body).await
    }

    /// Console messages at error level since the last call (chromedriver's log endpoint).
    async fn console_errors(&self) -> Vec<String> {
        let logs = self.post("/se/log", json!({ "type": "browser" })).await;
        logs.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// A screenshot of the whole page, 1280 px wide.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let height = self
            .script("return document.documentElement.scrollHeight")
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 6000);
        self.post(
            "/window/rect",
            json!({ "width": 1280, "height": height + 140 }),
        )
        .await;
        let png = base64_decode(self.get("/screenshot").await.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        self.post("/window/rect", json!({ "width": 1280, "height": 900 }))
            .await;
        path
    }

    async fn wait_for_url(&self, part: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return url;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached {part}: at {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn start_driver(chromedriver: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http_client()
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok();
        if let Some(res) = ready {
            let status: Json = res.json().await.unwrap_or_default();
            if status["value"]["ready"] == true {
                return driver;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn new_session(driver: &Driver, chromium: &Path, profile: &Path) -> Session {
    let capabilities = json!({
        "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}
    });
    let res = http_client()
        .post(format!("{}/session", driver.url))
        .json(&capabilities)
        .send()
        .await
        .expect("chromedriver answers");
    let body: Json = res.json().await.unwrap();
    let id = body["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {body}"))
        .to_owned();
    Session {
        base: format!("{}/session/{id}", driver.url),
    }
}

fn assert_no_errors(page: &str, errors: Vec<String>) {
    assert!(errors.is_empty(), "console errors on {page}: {errors:#?}");
}

#[tokio::test]
async fn pages_work_in_a_real_browser() {
    let required = std::env::var("BOTTLENECK_BROWSER_TESTS").as_deref() == Ok("1");
    let (Some(chromium), Some(chromedriver)) = (find(CHROMIUM), find(CHROMEDRIVER)) else {
        assert!(
            !required,
            "BOTTLENECK_BROWSER_TESTS=1 but chromium or chromedriver is missing \
             (apt-get install chromium chromium-driver)"
        );
        println!("skipped: chromium not found (install chromium and chromium-driver to run it)");
        return;
    };
    let app = spawn_app().await;
    let detail = seed(&app).await;
    let profile = tempfile::tempdir().unwrap();
    let driver = start_driver(&chromedriver).await;
    let session = new_session(&driver, &chromium, profile.path()).await;

    // Overview: names and numbers, no horizontal scroll at 1280 px, sorting works.
    session.goto(&format!("{}/?range=1h", app.ui_url)).await;
    let text = session.body_text().await;
    for expected in ["POST /login", "POST /saml/assert", "auth", "idp", "300 ms"] {
        assert!(text.contains(expected), "overview lacks {expected}: {text}");
    }
    let fits = session
        .script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
        )
        .await;
    assert_eq!(fits, true, "the overview scrolls sideways at 1280 px");
    let p50 = session.find("th[data-key=p50]").await;
    session.click(&p50).await;
    let sorted = session
        .script("return document.querySelector('th[data-key=p50]').getAttribute('aria-sort')")
        .await;
    assert_eq!(sorted, "descending");
    assert_no_errors("overview", session.console_errors().await);
    session.screenshot("overview").await;

    // Overview → endpoint.
    let link = session.find("a.ep-link[href*='POST%20%2Flogin']").await;
    session.click(&link).await;
    session.wait_for_url("/endpoint?service=auth").await;
    let text = session.body_text().await;
    let p95 = format!("{:.0} ms", detail["p95_ms"].as_f64().unwrap());
    for expected in [
        "POST /login",
        "N+1 query",
        "SELECT * FROM policy_rules WHERE policy_id = ?",
        "Slowest 5%",
        p95.as_str(),
    ] {
        assert!(
            text.contains(expected),
            "endpoint page lacks {expected}: {text}"
        );
    }
    let charts = session
        .script("return document.querySelectorAll('svg.chart').length")
        .await;
    assert_eq!(charts, 3);
    assert_no_errors("endpoint", session.console_errors().await);
    session.screenshot("endpoint").await;

    // Endpoint → the slowest trace.
    let trace_id = detail["slowest_traces"][0]["trace_id"].as_str().unwrap();
    let link = session
        .find(&format!(".traces a[href='/trace/{trace_id}']"))
        .await;
    session.click(&link).await;
    session.wait_for_url(&format!("/trace/{trace_id}")).await;
    let text = session.body_text().await;
    for expected in ["saml.sign", "POST /saml/assert", "×6 SELECT", "idp"] {
        assert!(
            text.contains(expected),
            "trace page lacks {expected}: {text}"
        );
    }
    // Attributes open on demand.
    let row = session.find("details.leaf.folded > summary").await;
    session.click(&row).await;
    let text = session.body_text().await;
    assert!(text.contains("6 spans"), "folded row did not open: {text}");
    assert_no_errors("trace", session.console_errors().await);
    session.screenshot("trace").await;

    let _ = session.call(reqwest::Method::DELETE, "", None).await;
    drop(driver);
    app.stop().await;
}

/// Budgets on the comparison's service: the login's p95 breaks its budget once 1.1 adds its
/// hidden wait; the health check holds.
const SHOP_BUDGETS: &str = r#"
[alerts]
interval = "200ms"
retry_initial = "100ms"

[[budget]]
service = "shop"
endpoint = "POST /login"
p95_ms = 200
window = "1h"
min_requests = 5

[[budget]]
service = "shop"
endpoint = "GET /health"
p95_ms = 500
window = "1h"
min_requests = 5
"#;

#[tokio::test]
async fn compare_and_alerts_pages_work_in_a_real_browser() {
    use crate::alerts::{Receiver, state, with_config, write_config};
    use crate::compare::send_both_versions;
    let required = std::env::var("BOTTLENECK_BROWSER_TESTS").as_deref() == Ok("1");
    let (Some(chromium), Some(chromedriver)) = (find(CHROMIUM), find(CHROMEDRIVER)) else {
        assert!(
            !required,
            "BOTTLENECK_BROWSER_TESTS=1 but chromium or chromedriver is missing \
             (apt-get install chromium chromium-driver)"
        );
        println!("skipped: chromium not found (install chromium and chromium-driver to run it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::spawn(1).await;
    let config = write_config(
        dir.path(),
        &format!("{SHOP_BUDGETS}\n[[webhook]]\nurl = \"{}\"\n", hook.url),
    );
    let with_rules = with_config(config);
    let app = crate::support::spawn_app_with(|config| {
        with_rules(config);
        config.regression.interval = Duration::from_millis(100);
        config.regression.min_requests = 20;
    })
    .await;
    send_both_versions(&app).await;
    // The finder raised its events and the login's budget fires.
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
    let url = format!("{}/api/v1/alerts", app.ui_url);
    app.eventually(Duration::from_secs(30), || async {
        let res = http_client().get(url.clone()).send().await.ok()?;
        let body: Json = res.json().await.ok()?;
        body["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["endpoint"] == "POST /login" && state(a) == "firing")
            .then_some(())
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let driver = start_driver(&chromedriver).await;
    let session = new_session(&driver, &chromium, profile.path()).await;

    // Endpoint page → "Compare the last two versions".
    session
        .goto(&format!(
            "{}/endpoint?service=shop&endpoint=POST%20%2Flogin&range=1h",
            app.ui_url
        ))
        .await;
    let text = session.body_text().await;
    assert!(
        text.contains("Regressions detected in this window"),
        "{text}"
    );
    assert_no_errors("endpoint", session.console_errors().await);
    let link = session.find("a.button[href^='/compare?']").await;
    session.click(&link).await;
    session.wait_for_url("/compare?service=shop").await;
    let text = session.body_text().await;
    let text = text.to_lowercase();
    for expected in [
        "slower",
        "significant",
        "latency distribution",
        "change by category",
        "what explains the change",
        "wait",
    ] {
        assert!(
            text.contains(expected),
            "compare page lacks {expected}: {text}"
        );
    }
    let charts = session
        .script("return document.querySelectorAll('svg.chart').length")
        .await;
    assert_eq!(charts, 1);
    let fits = session
        .script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
        )
        .await;
    assert_eq!(fits, true, "the compare page scrolls sideways at 1280 px");
    assert_no_errors("compare", session.console_errors().await);
    session.screenshot("compare").await;

    // Overview: the regression banner links to the comparison.
    session.goto(&format!("{}/?range=1h", app.ui_url)).await;
    let text = session.body_text().await;
    assert!(text.contains("detected in this window"), "{text}");
    let link = session
        .find(".regressions a.button[href*='endpoint=POST%20%2Flogin']")
        .await;
    session.click(&link).await;
    let url = session.wait_for_url("/compare?service=shop").await;
    assert!(url.contains("baseline=version%3A1.0"), "{url}");
    assert!(session.body_text().await.to_lowercase().contains("slower"));
    assert_no_errors("overview → compare", session.console_errors().await);

    // The service-wide comparison.
    session
        .goto(&format!(
            "{}/compare?service=shop&baseline=version:1.0&candidate=version:1.1&range=1h",
            app.ui_url
        ))
        .await;
    let text = session.body_text().await;
    assert!(text.contains("Every endpoint, regressions first"), "{text}");
    assert_no_errors("compare (service)", session.console_errors().await);
    session.screenshot("compare-service").await;

    // Alerts: the firing budget, the one that holds, and the deliveries.
    app.eventually(Duration::from_secs(30), || async {
        (hook.bodies_len() >= 1).then_some(())
    })
    .await;
    session.goto(&format!("{}/alerts", app.ui_url)).await;
    let text = session.body_text().await;
    for expected in [
        "firing",
        "POST /login",
        "GET /health",
        "Webhook deliveries",
        "HTTP 500",
    ] {
        assert!(
            text.contains(expected),
            "alerts page lacks {expected}: {text}"
        );
    }
    assert_no_errors("alerts", session.console_errors().await);
    session.screenshot("alerts").await;

    // A 404 page for an unknown path.
    session.goto(&format!("{}/nowhere", app.ui_url)).await;
    assert!(session.body_text().await.contains("404"));
    let _ = session.console_errors().await;

    let _ = session.call(reqwest::Method::DELETE, "", None).await;
    drop(driver);
    app.stop().await;
}

#[test]
fn base64_round_trip() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("iVBORw=="), b"\x89PNG");
}
