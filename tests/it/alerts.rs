//! Budgets and SLOs end to end: traffic over OTLP drives alerts to firing and back to resolved,
//! a webhook receiver on loopback records what is delivered, a restart keeps the state, and
//! `bottleneck check` answers with the right exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json as AxumJson;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use bottleneck::config::Config;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value as Json;

use crate::analysis::{fast_login, get_json, seed_login};
use crate::support::{TestApp, http_client, spawn_app_on, spawn_app_with};

pub(crate) const MS: u64 = 1_000_000;
const LIMIT: Duration = Duration::from_secs(30);

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A webhook receiver: records every body, answers 500 to the first `fail_first` calls.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    bodies: Arc<Mutex<Vec<Json>>>,
}

impl Receiver {
    pub(crate) async fn spawn(fail_first: usize) -> Receiver {
        #[derive(Clone)]
        struct Shared {
            bodies: Arc<Mutex<Vec<Json>>>,
            failures_left: Arc<AtomicUsize>,
        }
        async fn hook(State(shared): State<Shared>, AxumJson(body): AxumJson<Json>) -> StatusCode {
            let failing = shared
                .failures_left
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            shared.bodies.lock().unwrap().push(body);
            StatusCode::OK
        }
        let shared = Shared {
            bodies: Arc::default(),
            failures_left: Arc::new(AtomicUsize::new(fail_first)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver {
            url,
            bodies: shared.bodies,
        }
    }

    pub(crate) fn bodies_len(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    pub(crate) fn bodies(&self) -> Vec<Json> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Writes a config file and returns the adjustment that puts it in force for `spawn_app_*`.
pub(crate) fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("bottleneck.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn with_config(path: PathBuf) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        config.alerts.rules =
            bottleneck::config::read_alert_rules(&path).expect("test config is valid");
        config.alerts.config_file = Some(path);
    }
}

/// Sends the requests as one OTLP/HTTP export.
pub(crate) async fn send(app: &TestApp, requests: Vec<ExportTraceServiceRequest>) {
    let export = ExportTraceServiceRequest {
        resource_spans: requests
            .into_iter()
            .flat_map(|r| r.resource_spans)
            .collect(),
    };
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", "application/x-protobuf")
        .body(export.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

pub(crate) fn slow(
    seeds: std::ops::RangeInclusive<u8>,
    base: u64,
) -> Vec<ExportTraceServiceRequest> {
    seeds.map(|seed| seed_login(seed, base)).collect()
}

pub(crate) fn fast(
    seeds: std::ops::RangeInclusive<u8>,
    base: u64,
) -> Vec<ExportTraceServiceRequest> {
    seeds.map(|seed| fast_login(seed, base)).collect()
}

/// The alert of `rule` on auth's login once `accept` holds for it.
pub(crate) async fn alert_when(
    app: &TestApp,
    rule_prefix: &str,
    accept: impl Fn(&Json) -> bool,
) -> Json {
    let url = format!("{}/api/v1/alerts", app.ui_url);
    app.eventually(LIMIT, || async {
        let body = get_json(url.clone()).await?;
        body["alerts"]
            .as_array()?
            .iter()
            .find(|a| {
                a["endpoint"] == "POST /login"
                    && a["rule"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with(rule_prefix)
                    && accept(a)
            })
            .cloned()
    })
    .await
}

pub(crate) fn state(alert: &Json) -> &str {
    alert["state"].as_str().unwrap_or_default()
}

async fn received(app: &TestApp, receiver: &Receiver, n: usize) -> Vec<Json> {
    app.eventually(LIMIT, || async {
        let bodies = receiver.bodies();
        (bodies.len() >= n).then_some(bodies)
    })
    .await
}

pub(crate) const BUDGET: &str = r#"
[alerts]
interval = "200ms"
retry_initial = "100ms"

[[budget]]
service = "auth"
endpoint = "POST /*"
p50_ms = 200
min_requests = 5
"#;

#[tokio::test]
async fn budget_fires_names_what_moved_notifies_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let json_hook = Receiver::spawn(1).await;
    let am_hook = Receiver::spawn(0).await;
    let config = write_config(
        dir.path(),
        &format!(
            "{BUDGET}\n[[webhook]]\nurl = \"{}\"\n\n[[webhook]]\nurl = \"{}\"\nformat = \"alertmanager\"\n",
            json_hook.url, am_hook.url
        ),
    );
    let app = spawn_app_with(with_config(config)).await;

    // Quick logins half an hour ago, then slow ones now: the alert says db moved.
    send(&app, fast(1..=10, now_ns() - 1_800_000 * MS)).await;
    send(&app, slow(1..=10, now_ns() - 2_000 * MS)).await;
    let firing = alert_when(&app, "budget", |a| state(a) == "firing").await;
    assert_eq!(firing["service"], "auth");
    assert_eq!(firing["metric"], "p50_ms");
    assert_eq!(firing["budget"], 200.0);
    assert_eq!(firing["window"], "5m");
    assert_eq!(firing["kind"], "budget");
    let observed = firing["observed"].as_f64().unwrap();
    assert!((observed - 300.0).abs() < 10.0, "{observed}");
    let summary = firing["summary"].as_str().unwrap();
    assert!(summary.contains("> 200 ms budget; db +"), "{summary}");
    assert!(summary.contains("more queries per request"), "{summary}");
    assert!(firing["since"].as_str().unwrap().ends_with('Z'));
    assert_eq!(firing["history"][0]["to"], "firing");

    // The JSON receiver failed once: the retry delivered it, and both attempts are visible.
    let bodies = received(&app, &json_hook, 1).await;
    assert_eq!(bodies[0]["status"], "firing");
    assert_eq!(bodies[0]["alert"]["endpoint"], "POST /login");
    assert_eq!(bodies[0]["alert"]["summary"], firing["summary"]);
    let url = format!("{}/api/v1/alerts/deliveries", app.ui_url);
    let attempts = app
        .eventually(LIMIT, || async {
            let body = get_json(url.clone()).await?;
            let delivery = body["deliveries"]
                .as_array()?
                .iter()
                .find(|d| d["format"] == "json" && d["status"] == "delivered")?
                .clone();
            Some(delivery["attempts"].as_array()?.clone())
        })
        .await;
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "delivered"]);
    assert_eq!(attempts[0]["http_status"], 500);
    let am = received(&app, &am_hook, 1).await;
    assert_eq!(am[0]["version"], "4");
    assert_eq!(am[0]["status"], "firing");
    assert_eq!(am[0]["alerts"][0]["labels"]["alertname"], "LatencyBudget");
    assert_eq!(am[0]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    // Enough quick logins bring the median back under budget: resolved, and notified once more.
    send(&app, fast(101..=130, now_ns() - 1_000 * MS)).await;
    let resolved = alert_when(&app, "budget", |a| state(a) == "resolved").await;
    let history: Vec<&str> = resolved["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["resolved", "firing"]);
    let bodies = received(&app, &json_hook, 2).await;
    assert_eq!(bodies[1]["status"], "resolved");
    let am = received(&app, &am_hook, 2).await;
    assert_eq!(am[1]["status"], "resolved");
    assert_ne!(am[1]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        am[1]["alerts"][0]["startsAt"],
        am[0]["alerts"][0]["startsAt"]
    );
    assert_eq!(json_hook.bodies().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn burn_rate_pages_on_a_fast_burn_and_not_on_a_slow_one() {
    let dir = tempfile::tempdir().unwrap();
    // A third of the logins take 300 ms. Against 99% under 200 ms that burns the error budget
    // 33× too fast; against 50% it burns at 0.67×.
    let config = write_config(
        dir.path(),
        r#"
[alerts]
interval = "200ms"

[[slo]]
service = "auth"
endpoint = "POST /login"
objective = 0.99
threshold_ms = 200
min_requests = 5

[[slo]]
service = "auth"
endpoint = "POST /login"
objective = 0.5
threshold_ms = 200
min_requests = 5
"#,
    );
    let app = spawn_app_with(with_config(config)).await;
    send(&app, slow(1..=10, now_ns() - 2_000 * MS)).await;
    send(&app, fast(1..=20, now_ns() - 2_000 * MS)).await;
    let fast_burn = alert_when(&app, "slo auth POST /login 0.99 ", |a| {
        a["requests"] == 30 && state(a) == "firing"
    })
    .await;
    assert_eq!(fast_burn["kind"], "slo");
    assert_eq!(fast_burn["metric"], "burn_rate");
    assert_eq!(fast_burn["window"], "1h");
    assert_eq!(fast_burn["budget"], 14.4);
    let burn = fast_burn["observed"].as_f64().unwrap();
    assert!((burn - 33.3).abs() < 1.0, "{burn}");
    assert_eq!(fast_burn["burn"][0]["severity"], "page");
    assert_eq!(fast_burn["burn"][0]["firing"], true);
    assert!(
        fast_burn["summary"]
            .as_str()
            .unwrap()
            .starts_with("page: error budget burning")
    );
    let slow_burn = alert_when(&app, "slo auth POST /login 0.5 ", |a| a["requests"] == 30).await;
    assert_eq!(state(&slow_burn), "ok");
    let burn = slow_burn["observed"].as_f64().unwrap();
    assert!((burn - 0.667).abs() < 0.05, "{burn}");
    assert!(slow_burn["history"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_the_state_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::spawn(0).await;
    let config = write_config(
        dir.path(),
        &format!("{BUDGET}\n[[webhook]]\nurl = \"{}\"\n", hook.url),
    );
    let db_path = dir.path().join("bottleneck.db");
    let first = spawn_app_on(&db_path, with_config(config.clone())).await;
    send(&first, slow(1..=10, now_ns() - 2_000 * MS)).await;
    let firing = alert_when(&first, "budget", |a| state(a) == "firing").await;
    received(&first, &hook, 1).await;
    first.stop().await;

    let second = spawn_app_on(&db_path, with_config(config)).await;
    // Several evaluations by the new process: still the same firing alert, nothing re-sent.
    let url = format!("{}/api/v1/alerts", second.ui_url);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let at = second
            .eventually(LIMIT, || async {
                let body = get_json(url.clone()).await?;
                let at = body["evaluated_at"].as_str()?.to_owned();
                (!seen.contains(&at)).then_some(at)
            })
            .await;
        seen.push(at);
    }
    let after = alert_when(&second, "budget", |_| true).await;
    assert_eq!(state(&after), "firing");
    assert_eq!(after["since"], firing["since"]);
    assert_eq!(hook.bodies().len(), 1);

    send(&second, fast(101..=130, now_ns() - 1_000 * MS)).await;
    alert_when(&second, "budget", |a| state(a) == "resolved").await;
    let bodies = received(&second, &hook, 2).await;
    let statuses: Vec<&str> = bodies
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["firing", "resolved"]);
    second.stop().await;
}

#[tokio::test]
async fn a_webhook_that_redirects_is_not_followed() {
    // The receiver answers 307 towards a second receiver: following it would send the alert
    // (and a secret in its URL) to a place nobody configured.
    let target = Receiver::spawn(0).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirecting = format!("http://{}/hook", listener.local_addr().unwrap());
    let location = target.url.clone();
    let router = axum::Router::new().route(
        "/hook",
        post(move || async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{BUDGET}\n[[webhook]]\nurl = \"{redirecting}\"\n"),
    );
    let app = spawn_app_with(with_config(config)).await;
    send(&app, slow(1..=10, now_ns() - 2_000 * MS)).await;
    alert_when(&app, "budget", |a| state(a) == "firing").await;
    let url = format!("{}/api/v1/alerts/deliveries", app.ui_url);
    let delivery = app
        .eventually(LIMIT, || async {
            let body = get_json(url.clone()).await?;
            body["deliveries"]
                .as_array()?
                .iter()
                .find(|d| d["status"] == "failed")
                .cloned()
        })
        .await;
    // Given up at once: a redirect is the receiver's configuration, retrying will not change it.
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{delivery}");
    assert_eq!(attempts[0]["http_status"], 307);
    assert_eq!(target.bodies_len(), 0);
    app.stop().await;
}

/// Runs the real binary.
async fn bottleneck(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bottleneck"))
            .args(&args)
            .env("BOTTLENECK_LOG", "warn")
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn check_exits_0_when_budgets_hold_1_when_broken_2_when_it_cannot_tell() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|_| {}).await;
    send(&app, slow(1..=10, now_ns() - 2_000 * MS)).await;
    let url = format!("{}/api/v1/endpoints?service=auth", app.ui_url);
    app.eventually(LIMIT, || async {
        let body = get_json(url.clone()).await?;
        (body["endpoints"][0]["requests"] == 10).then_some(())
    })
    .await;
    let budget = |name: &str, limit: u32| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[[budget]]\nservice = \"auth\"\nendpoint = \"POST /login\"\np95_ms = {limit}\nmin_requests = 5\n\n[[budget]]\nservice = \"auth\"\nendpoint = \"*\"\ndb_calls_per_request = 20\nmin_requests = 5\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let holds = budget("holds.toml", 1000);
    let broken = budget("broken.toml", 200);

    let out = bottleneck(args(&["check", "--url", &app.ui_url, "--config", &holds])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("VERDICT"), "{stdout}");
    assert!(stdout.contains("all 2 budget checks hold"), "{stdout}");

    let out = bottleneck(args(&[
        "check",
        "--url",
        &app.ui_url,
        "--config",
        &broken,
        "--window",
        "10m",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("OVER BUDGET"), "{stdout}");
    assert!(stdout.contains("1 of 2 budget checks broken"), "{stdout}");

    let db = app.cli_database_url();
    let out = bottleneck(args(&["check", "--database-url", &db, "--config", &broken])).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = bottleneck(args(&[
        "check",
        "--url",
        "http://127.0.0.1:1",
        "--config",
        &holds,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[budget]]\nservice = \"auth\"\nendpoint = \"POST /login\"\n",
    )
    .unwrap();
    let bad = bad.display().to_string();
    let out = bottleneck(args(&["check", "--url", &app.ui_url, "--config", &bad])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
    assert!(stderr.contains("names no metric"), "{stderr}");

    let out = bottleneck(args(&["check", "--config", &holds])).await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
    app.stop().await;
}

#[tokio::test]
async fn reload_keeps_the_old_rules_when_the_new_file_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), BUDGET);
    let app = spawn_app_with(with_config(config.clone())).await;
    send(&app, slow(1..=10, now_ns() - 2_000 * MS)).await;
    alert_when(&app, "budget", |a| state(a) == "firing").await;

    std::fs::write(&config, format!("{BUDGET}\n[[budget]]\nservice = 1\n")).unwrap();
    let res = http_client()
        .post(format!("{}/api/v1/reload", app.ui_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Json = res.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("line 13"), "{error}");
    let still = alert_when(&app, "budget", |_| true).await;
    assert_eq!(still["budget"], 200.0);

    std::fs::write(&config, BUDGET.replace("p50_ms = 200", "p50_ms = 1000")).unwrap();
    let out = bottleneck(args(&["reload", "--url", &app.ui_url])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 budgets"));
    let relaxed = alert_when(&app, "budget", |a| a["budget"] == 1000.0).await;
    // The same rule with a new limit: the firing alert resolves rather than vanishing.
    assert_eq!(state(&relaxed), "resolved");
    let url = format!("{}/api/v1/alerts", app.ui_url);
    let alerts = get_json(url).await.unwrap();
    assert_eq!(
        alerts["alerts"].as_array().unwrap().len(),
        1,
        "the old rule is gone: {alerts}"
    );
    app.stop().await;
}

/// A `serve` process: its UI address, and its log lines as they come.
struct Server {
    child: std::process::Child,
    ui_url: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn spawn(dir: &Path, config: &Path) -> Server {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bottleneck"))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--database-url")
            .arg(dir.join("serve.db"))
            .args(["--listen", "127.0.0.1:0"])
            .args(["--otlp-http", "127.0.0.1:0"])
            .args(["--otlp-grpc", "127.0.0.1:0"])
            .env("BOTTLENECK_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(strip_ansi(&line)).is_err() {
                    return;
                }
            }
        });
        let mut server = Server {
            child,
            ui_url: String::new(),
            log,
        };
        let listening = server.wait_for_log("bottleneck listening");
        let addr = listening
            .split_whitespace()
            .find_map(|field| field.strip_prefix("ui="))
            .expect("the log names the UI address");
        server.ui_url = format!("http://{addr}");
        server
    }

    /// The next log line containing `text`.
    fn wait_for_log(&mut self, text: &str) -> String {
        loop {
            let line = self
                .log
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("no log line with {text:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill only sends a signal to the child this test started.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    async fn interval_s(&self) -> Option<f64> {
        get_json(format!("{}/api/v1/alerts", self.ui_url))
            .await?
            .get("interval_s")?
            .as_f64()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_keeps_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[alerts]\ninterval = \"10s\"\n");
    let mut server = tokio::task::block_in_place(|| Server::spawn(dir.path(), &config));
    assert_eq!(server.interval_s().await, Some(10.0));

    std::fs::write(&config, "[alerts]\ninterval = \"7s\"\n").unwrap();
    server.signal(libc::SIGHUP);
    tokio::task::block_in_place(|| server.wait_for_log("alert rules reloaded"));
    assert_eq!(server.interval_s().await, Some(7.0));

    std::fs::write(&config, "[alerts]\n\ninterval = \"soon\"\n").unwrap();
    server.signal(libc::SIGHUP);
    let failed = tokio::task::block_in_place(|| server.wait_for_log("reload failed"));
    // The error names the table's line and the bad value.
    assert!(failed.contains("line 1"), "{failed}");
    assert!(
        failed.contains("interval \\\"soon\\\" is not a duration"),
        "{failed}"
    );
    assert_eq!(server.interval_s().await, Some(7.0));

    server.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| server.child.wait().unwrap());
    assert!(status.success(), "{status}");
}
