//! Several instances on one PostgreSQL database: any instance takes any span of any trace, every
//! request is analysed and counted once, and when one instance is killed the others carry on with
//! nothing acknowledged lost.

use std::process::Command;
use std::time::Duration;

use bottleneck::store::{Store, Window};
use collector::model::TraceId;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::alerts::{BUDGET, MS, Receiver, now_ns, send, slow, state, with_config, write_config};
use crate::analysis::get_json;
use crate::crash::start_server_with;
use crate::ingest::login_request;
use crate::pages::get;
use crate::support::{TestApp, TestDatabase, http_client, spawn_app_on};

/// Traces sent; each is one request (a SERVER span) with one query below it.
const N_TRACES: usize = 240;

fn trace_id(idx: usize) -> Vec<u8> {
    let mut id = vec![0x5c; 16];
    id[..8].copy_from_slice(&(idx as u64).to_be_bytes());
    id
}

/// The two halves of trace `idx`: the request span and its query, in separate exports.
fn halves(idx: usize) -> [ExportTraceServiceRequest; 2] {
    let mut request = login_request(7);
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        span.trace_id = trace_id(idx);
    }
    let mut query = request.clone();
    request.resource_spans[0].scope_spans[0].spans.truncate(1);
    query.resource_spans[0].scope_spans[0].spans.remove(0);
    [request, query]
}

async fn export(url: &str, body: &ExportTraceServiceRequest) -> bool {
    http_client()
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body.encode_to_vec())
        .send()
        .await
        .is_ok_and(|res| res.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_analysis_and_survive_a_kill() {
    let db = TestDatabase::postgres().await;
    let url = db.cli_url();
    // The operator's way: migrate once, then start the instances.
    let migrated = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .args(["migrate", "--database-url", &url])
        .env("BOTTLENECK_LOG", "warn")
        .output()
        .expect("migrate runs");
    assert!(migrated.status.success(), "{migrated:?}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bottleneck.toml");
    // A short grace period and lease keep the test quick; the split halves of a trace still
    // arrive well within the grace period.
    std::fs::write(
        &config,
        "[analysis]\ngrace_period = \"500ms\"\nclaim_lease = \"3s\"\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let mut servers: Vec<_> = (0..3)
        .map(|_| start_server_with(&url, &["--config", &config], None))
        .collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|server| server.otlp_http_url.clone())
        .collect();

    let mut alive = [true; 3];
    for idx in 0..N_TRACES {
        if idx == N_TRACES / 3 {
            // SIGKILL the third instance mid-run, as a crash would.
            servers[2].child.kill().expect("SIGKILL");
            servers[2].child.wait().unwrap();
            alive[2] = false;
        }
        let [request, query] = halves(idx);
        // The request to one instance, its query to the next: no instance sees the whole trace.
        for (part, body) in [(0, &request), (1, &query)] {
            let mut target = (idx + part) % 3;
            // An export the dead instance cannot take goes to a live one, as a load balancer's
            // retry would send it; every half is acknowledged by some instance.
            let mut acknowledged = false;
            for _ in 0..3 {
                if alive[target] && export(&urls[target], body).await {
                    acknowledged = true;
                    break;
                }
                target = (target + 1) % 3;
            }
            assert!(acknowledged, "trace {idx} part {part} acknowledged");
        }
    }

    let store = Store::open(&db.url).await.unwrap();
    let everything = Window {
        from_unix_ns: 0,
        to_unix_ns: u64::MAX / 2,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let requests = store.stats().await.unwrap().n_requests;
        let pending = store.pending_traces().await.unwrap();
        if requests as usize == N_TRACES && pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{requests} requests analysed, {pending} traces pending"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each request once, with both halves of its trace.
    let rows = store
        .requests(everything, None, 0, N_TRACES as i64 * 2)
        .await
        .unwrap();
    assert_eq!(rows.len(), N_TRACES);
    assert!(
        rows.iter().all(|row| row.n_db_calls == 1),
        "every request was analysed with its query, whichever instance got which half"
    );
    for idx in 0..N_TRACES {
        let id = TraceId(trace_id(idx).try_into().unwrap());
        assert_eq!(store.trace_requests(id).await.unwrap().len(), 1);
    }
    // Counted once in the rollups: minute rows and hourly rows each add up to the requests sent.
    let minutes: u64 = store
        .minute_rollups(everything, None)
        .await
        .unwrap()
        .iter()
        .map(|(_, rollup)| rollup.requests)
        .sum();
    assert_eq!(minutes, N_TRACES as u64, "minute rollups");
    let hours: u64 = store
        .rollups(
            Window {
                from_unix_ns: 0,
                to_unix_ns: 4_000_000_000_000_000_000,
            },
            None,
        )
        .await
        .unwrap()
        .iter()
        .filter(|(key, _)| key.granularity == bottleneck::store::Granularity::Hour)
        .map(|(_, rollup)| rollup.requests)
        .sum();
    assert_eq!(hours, N_TRACES as u64, "hourly rollups");
    store.close().await;
    for server in servers.drain(..2) {
        server.kill();
    }
}

/// Two instances on one database evaluate alerts: the one holding the alerts role does, so a
/// transition is recorded and delivered once, not once per instance.
#[tokio::test]
async fn two_instances_deliver_each_alert_once() {
    let db = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::spawn(0).await;
    let config = write_config(
        dir.path(),
        &format!("{BUDGET}\n[[webhook]]\nurl = \"{}\"\n", hook.url),
    );
    let first = spawn_instance(&db, config.clone()).await;
    let second = spawn_instance(&db, config).await;
    // Slow logins through both instances: the budget breaks.
    send(&first, slow(1..=5, now_ns() - 2_000 * MS)).await;
    send(&second, slow(6..=10, now_ns() - 2_000 * MS)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hook.bodies().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no alert delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Many evaluation intervals (200 ms) later, still one delivery and one transition.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["status"], "firing");
    let transitions = first.store.alert_transitions(10).await.unwrap();
    assert_eq!(transitions.len(), 1, "{transitions:?}");
    first.stop().await;
    second.stop().await;
}

/// An instance on `db` with the alert rules of `config`.
async fn spawn_instance(db: &TestDatabase, config: std::path::PathBuf) -> TestApp {
    let url = db.url.clone();
    spawn_app_on(&db.path, move |c: &mut bottleneck::config::Config| {
        with_config(config)(c);
        c.database_url = url;
    })
    .await
}

/// The login budget's alert as `app` serves it in `/api/v1/alerts`.
async fn login_budget(app: &TestApp) -> Option<serde_json::Value> {
    let body = get_json(format!("{}/api/v1/alerts", app.ui_url)).await?;
    body["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["endpoint"] == "POST /login" && a["kind"] == "budget")
        .cloned()
}

/// Two instances behind a load balancer answer alike: only the holder of the alerts role
/// evaluates, and both serve what it stored, so the broken login budget shows as firing on the
/// API, `/alerts` and the overview's Budget column whichever instance answers.
#[tokio::test]
async fn every_instance_serves_the_same_alerts() {
    let db = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), BUDGET);
    let instances = [
        spawn_instance(&db, config.clone()).await,
        spawn_instance(&db, config).await,
    ];
    send(&instances[0], slow(1..=5, now_ns() - 2_000 * MS)).await;
    send(&instances[1], slow(6..=10, now_ns() - 2_000 * MS)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let firing = 'firing: loop {
        for app in &instances {
            if let Some(alert) = login_budget(app).await
                && state(&alert) == "firing"
            {
                break 'firing alert;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no instance fires");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A load balancer's view: requests alternate between the instances, and each answer shows
    // the same alert in the same state since the same moment.
    for round in 0..8 {
        let app = &instances[round % 2];
        let alert = login_budget(app).await;
        let alert =
            alert.unwrap_or_else(|| panic!("no login alert through instance {}", round % 2));
        assert_eq!(
            (&alert["rule"], state(&alert), &alert["since"]),
            (&firing["rule"], "firing", &firing["since"]),
            "instance {}",
            round % 2
        );
        let alerts_page = get(app, "/alerts").await.body;
        assert!(
            alerts_page.contains("panel alert state-firing") && alerts_page.contains("POST /login"),
            "instance {}: {alerts_page}",
            round % 2
        );
        let overview = get(app, "/").await.body;
        assert!(
            overview.contains("state-badge state-firing"),
            "instance {}: {overview}",
            round % 2
        );
    }
    let [first, second] = instances;
    first.stop().await;
    second.stop().await;
}
