//! Kill -9 during ingest: every span whose export was answered 200 is in the store afterwards.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bottleneck::config::DatabaseUrl;
use bottleneck::store::{Store, Window};
use collector::model::TraceId;
use prost::Message;

use crate::ingest::login_request;
use crate::support::http_client;

/// A running binary: the child, its OTLP/HTTP and UI URLs, and its log so far.
pub(crate) struct Server {
    pub(crate) child: std::process::Child,
    pub(crate) otlp_http_url: String,
    pub(crate) ui_url: String,
    log: Arc<Mutex<Vec<String>>>,
}

/// SIGKILL, also when a test fails: a server left running would hold the test's output open.
/// A failing test shows the server's log.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            for line in self.log.lock().map(|log| log.clone()).unwrap_or_default() {
                eprintln!("server: {line}");
            }
        }
    }
}

impl Server {
    pub(crate) fn kill(self) {
        drop(self);
    }

    fn log_contains(&self, text: &str) -> bool {
        self.log_count(text) > 0
    }

    /// How many lines of the log so far contain `text`.
    pub(crate) fn log_count(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }
}

fn address_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(key).nth(1)?.split_whitespace().next()
}

/// Starts the real binary on free ports with `extra` arguments, and reads its addresses from the
/// log line it prints once every listener is bound. `prepare` runs in the child before `exec`.
pub(crate) fn start_server_with(
    db: impl AsRef<std::ffi::OsStr>,
    extra: &[&str],
    prepare: Option<fn() -> std::io::Result<()>>,
) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bottleneck"));
    command.arg("serve");
    for flag in ["--listen", "--otlp-http", "--otlp-grpc"] {
        if !extra.contains(&flag) {
            command.args([flag, "127.0.0.1:0"]);
        }
    }
    command
        .args(extra)
        .arg("--database-url")
        .arg(db)
        .env("BOTTLENECK_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(prepare) = prepare {
        // SAFETY: `prepare` only makes async-signal-safe calls (setrlimit, signal).
        unsafe {
            command.pre_exec(prepare);
        }
    }
    let mut child = command.spawn().expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (otlp_http, ui) = loop {
        let line = lines
            .next()
            .expect("the server logs its addresses")
            .expect("readable log");
        log.lock().unwrap().push(line.clone());
        if let (Some(otlp_http), Some(ui)) = (
            address_after(&line, "otlp_http="),
            address_after(&line, " ui="),
        ) {
            break (otlp_http.to_owned(), ui.to_owned());
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Server {
        child,
        otlp_http_url: format!("http://{otlp_http}"),
        ui_url: format!("http://{ui}"),
        log,
    }
}

/// Starts the real binary and returns it with its OTLP/HTTP URL.
fn start_server(db: &std::path::Path) -> Server {
    start_server_with(db, &[], None)
}

#[tokio::test]
async fn acknowledged_spans_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let server = start_server(&db);
    let url = server.otlp_http_url.clone();
    let client = http_client();
    let mut acknowledged = HashSet::new();
    // Concurrent exporters, so the kill lands while exports are in flight.
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4u8 {
        let client = client.clone();
        let url = url.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for seq in 0..200u8 {
                let seed = worker.wrapping_mul(61).wrapping_add(seq) | 1;
                let mut request = login_request(seed);
                for span in &mut request.resource_spans[0].scope_spans[0].spans {
                    span.trace_id =
                        [worker + 1, seq, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7].to_vec();
                }
                let res = client
                    .post(format!("{url}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await;
                match res {
                    Ok(res) if res.status() == 200 => acked.push([worker + 1, seq]),
                    _ => break,
                }
            }
            acked
        });
    }
    // Let some exports through, then kill without warning.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.kill();
    while let Some(acked) = tasks.join_next().await {
        acknowledged.extend(acked.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "some exports were acknowledged before the kill"
    );

    let store = Store::open(&DatabaseUrl::Sqlite(db.clone())).await.unwrap();
    for [worker, seq] in &acknowledged {
        let trace_id = TraceId([*worker, *seq, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
        let spans = store.trace(trace_id).await.unwrap();
        assert_eq!(
            spans.map(|s| s.len()),
            Some(2),
            "acknowledged trace {trace_id} lost"
        );
    }
    store.close().await;

    // And the restarted server takes data again on the same file.
    let server = start_server(&db);
    let res = http_client()
        .post(format!("{}/v1/traces", server.otlp_http_url))
        .header("content-type", "application/x-protobuf")
        .body(login_request(99).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.kill();
}

/// The trace id of export `seq` of exporter `worker`.
fn trace_of(worker: u8, seq: u16) -> [u8; 16] {
    let [hi, lo] = seq.to_be_bytes();
    [worker, hi, lo, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]
}

/// Exports login traces from 4 concurrent exporters (numbered from `first_worker`) until the
/// server stops answering (or each has sent `per_worker`); returns the acknowledged trace ids.
async fn sustained_ingest(url: &str, first_worker: u8, per_worker: u16) -> HashSet<[u8; 16]> {
    let client = http_client();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in first_worker..first_worker + 4 {
        let client = client.clone();
        let url = url.to_owned();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for seq in 0..per_worker {
                let mut request = login_request(worker);
                for span in &mut request.resource_spans[0].scope_spans[0].spans {
                    span.trace_id = trace_of(worker, seq).to_vec();
                }
                let res = client
                    .post(format!("{url}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await;
                match res {
                    Ok(res) if res.status() == 200 => acked.push(trace_of(worker, seq)),
                    _ => break,
                }
            }
            acked
        });
    }
    let mut acknowledged = HashSet::new();
    while let Some(acked) = tasks.join_next().await {
        acknowledged.extend(acked.unwrap());
    }
    acknowledged
}

const ALL_TIME: Window = Window {
    from_unix_ns: 1_600_000_000_000_000_000,
    to_unix_ns: 1_800_000_000_000_000_000,
};

#[tokio::test]
async fn sigkill_during_sustained_ingest_then_restart_counts_every_request_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = dir.path().join("bottleneck.toml");
    // The fixtures are dated 2023: keep them from the retention that runs at every start.
    std::fs::write(&config, "[analysis]\ngrace_period = \"100ms\"\n\n[retention]\nspans = \"3650d\"\nrollups = \"3650d\"\n").unwrap();
    let config = config.display().to_string();
    let mut acknowledged = HashSet::new();
    // Two kills in a row, each in the middle of sustained ingest with analysis running.
    for round in 0..2u8 {
        let server = start_server_with(&db, &["--config", &config], None);
        let url = server.otlp_http_url.clone();
        let ingest =
            tokio::spawn(async move { sustained_ingest(&url, 1 + 4 * round, 10_000).await });
        tokio::time::sleep(Duration::from_millis(700 + 300 * u64::from(round))).await;
        server.kill();
        let acked = ingest.await.unwrap();
        assert!(!acked.is_empty(), "round {round}: nothing was acknowledged");
        acknowledged.extend(acked);
    }
    // A restart analyses whatever was stored but not yet analysed.
    let server = start_server_with(&db, &["--config", &config], None);
    let store = Store::open(&DatabaseUrl::Sqlite(db.clone())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let requests = loop {
        let requests = store.requests(ALL_TIME, None, 0, 1_000_000).await.unwrap();
        let analysed: HashSet<[u8; 16]> = requests.iter().map(|r| r.trace_id.0).collect();
        if acknowledged.iter().all(|trace| analysed.contains(trace)) {
            break requests;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} acknowledged traces analysed",
            acknowledged
                .iter()
                .filter(|t| analysed.contains(*t))
                .count(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for trace in &acknowledged {
        let spans = store.trace(TraceId(*trace)).await.unwrap();
        assert_eq!(
            spans.map(|s| s.len()),
            Some(2),
            "trace {trace:?}: spans lost or doubled"
        );
    }
    // Every stored trace is one request, counted once in the rows and once in the rollups.
    let traces: HashSet<[u8; 16]> = requests.iter().map(|r| r.trace_id.0).collect();
    assert_eq!(traces.len(), requests.len(), "a request row appears twice");
    let rollups = store.rollups(ALL_TIME, None).await.unwrap();
    let counted: u64 = rollups.iter().map(|(_, rollup)| rollup.requests).sum();
    assert_eq!(
        counted,
        requests.len() as u64,
        "rollups disagree with request rows"
    );
    eprintln!(
        "2 SIGKILLs: {} exports acknowledged, {} requests stored and counted once",
        acknowledged.len(),
        requests.len()
    );
    store.close().await;
    server.kill();
}

/// Each write beyond `DISK_LIMIT_BYTES` fails with EFBIG, as on a full disk; SIGXFSZ, which would
/// kill the process, is ignored so the write returns the error instead. The migrations of a new
/// store alone write about 2 MiB of log before it takes its first export.
const DISK_LIMIT_BYTES: u64 = 4 << 20;

fn small_disk() -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: DISK_LIMIT_BYTES,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls on the child's own limits and signal disposition.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    Ok(())
}

/// A bulky export: 20 spans each carrying 8 KiB of incompressible text.
fn bulky_request(
    seq: u16,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let mut request = login_request(3);
    let template = request.resource_spans[0].scope_spans[0].spans[1].clone();
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    let mut state = u64::from(seq) * 7919 + 1;
    for idx in 0..20u8 {
        let mut span = template.clone();
        span.span_id = vec![idx + 3, 3, 3, 3, 3, 3, 3, 3];
        let noise: String = (0..8192)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + ((state >> 33) % 26) as u8)
            })
            .collect();
        span.attributes.push(crate::ingest::kv("noise", &noise));
        spans.push(span);
    }
    for span in spans.iter_mut() {
        span.trace_id = trace_of(77, seq).to_vec();
    }
    request
}

#[tokio::test]
async fn a_full_disk_is_503_and_ingest_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("full.db");
    let server = start_server_with(&db, &[], Some(small_disk));
    let client = http_client();
    let export = |seq: u16| {
        client
            .post(format!("{}/v1/traces", server.otlp_http_url))
            .header("content-type", "application/x-protobuf")
            .body(bulky_request(seq).encode_to_vec())
            .send()
    };
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for seq in 0..2_000u16 {
        let res = export(seq).await.unwrap();
        match res.status().as_u16() {
            200 => acknowledged.push(seq),
            503 => {
                assert_eq!(res.headers()["retry-after"], "5");
                refused = Some(seq);
                break;
            }
            other => panic!("export {seq} answered {other}"),
        }
    }
    let refused = refused.expect("the disk filled up");
    assert!(!acknowledged.is_empty());
    assert_eq!(
        server.log_count("store unavailable: committing span blocks failed"),
        1
    );
    let metrics = || async {
        let url = format!("{}/metrics", server.ui_url);
        client.get(url).send().await.unwrap().text().await.unwrap()
    };
    let during = metrics().await;
    assert!(
        !during.contains("bottleneck_spans_rejected_total{reason=\"store_unavailable\"} 0"),
        "{during}"
    );
    assert!(during.contains("\nbottleneck_store_up 0\n"), "{during}");
    assert!(during.contains("\nbottleneck_commit_failures_total 1\n"));
    // Space returns: the refused export is retried and taken.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: raises the limit of our own child process.
    let raised = unsafe {
        libc::prlimit(
            server.child.id() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(raised, 0, "{}", std::io::Error::last_os_error());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = export(refused).await.unwrap();
        if res.status() == 200 {
            acknowledged.push(refused);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery: {}",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for seq in refused + 1..refused + 5 {
        assert_eq!(export(seq).await.unwrap().status(), 200);
        acknowledged.push(seq);
    }
    assert!(server.log_contains("store available again"));
    assert!(metrics().await.contains("\nbottleneck_store_up 1\n"));
    // The analysis commits again too: after SQLITE_FULL, SQLite may roll a transaction back on
    // its own, and a connection that still counted it open refused every later BEGIN.
    let store = Store::open(&DatabaseUrl::Sqlite(db.clone())).await.unwrap();
    let last = TraceId(trace_of(77, refused + 4));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.trace_requests(last).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an export taken after the disk had room again was never analysed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await;
    server.kill();
    let store = Store::open(&DatabaseUrl::Sqlite(db)).await.unwrap();
    for seq in &acknowledged {
        let spans = store.trace(TraceId(trace_of(77, *seq))).await.unwrap();
        assert_eq!(
            spans.map(|s| s.len()),
            Some(22),
            "acknowledged export {seq} lost"
        );
    }
    eprintln!(
        "disk full after {} exports; {} acknowledged, all found",
        refused,
        acknowledged.len()
    );
    store.close().await;
}

#[test]
fn listening_beyond_loopback_without_tokens_needs_insecure() {
    let output = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--otlp-grpc",
            "127.0.0.1:0",
        ])
        .args(["--database-url", "sqlite::memory:"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");
    assert!(stderr.contains("UI"), "{stderr}");
}

#[test]
fn a_start_up_error_does_not_show_the_database_password() {
    // An sslmode PostgreSQL does not know: the URL is refused before any connection.
    let url = "postgres://app:hunter2-secret@127.0.0.1:1/traces?sslmode=sometimes";
    for command in ["serve", "migrate"] {
        let output = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
            .arg(command)
            .args(["--database-url", url])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("postgres://app:***@127.0.0.1:1/traces"),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[tokio::test]
async fn tokens_beyond_loopback_without_tls_start_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokens.toml");
    std::fs::write(&config, "[auth]\nread_tokens = [\"r\"]\n").unwrap();
    let server = start_server_with(
        dir.path().join("tokens.db"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        None,
    );
    assert!(server.log_contains("tokens travel in clear text"));
    assert!(server.log_contains("listeners=\"UI\""));
    server.kill();
    // On loopback, or with TLS, nothing to warn about.
    let server = start_server_with(
        dir.path().join("tokens.db"),
        &["--config", config.to_str().unwrap()],
        None,
    );
    assert!(!server.log_contains("clear text"));
    server.kill();
}

#[tokio::test]
async fn insecure_starts_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("insecure.db");
    let server = start_server_with(&db, &["--insecure", "--listen", "0.0.0.0:0"], None);
    assert!(server.log_contains("--insecure"));
    server.kill();
}
