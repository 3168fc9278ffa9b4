//! `bottleneck bench`: a load generator against a fresh server process on this machine.
//!
//! It starts `bottleneck serve` as a child on a temporary SQLite file, sends pre-built, distinct
//! payloads of realistic web-request traces over concurrent keep-alive connections (OTLP/HTTP
//! protobuf or JSON, or OTLP/gRPC), then waits until the server has committed everything it
//! acknowledged, and reports spans/s stored, export latency, the server's peak RSS and the bytes
//! per stored span.
//!
//! Invariant: a figure counts what the store holds, not what was answered 200.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::cli::Outcome;
use crate::config::DatabaseUrl;
use crate::store::Store;
use crate::store::scratch::ScratchDatabase;

mod api;
mod payload;

pub use payload::payload_for_benchmarks;
use payload::{Body, payload, stamp_request};

/// The wire format to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies.
    Http,
    /// OTLP/HTTP with JSON bodies.
    Json,
    /// OTLP/gRPC.
    Grpc,
}

/// Options of `bottleneck bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// How long to send.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Spans per export request (10 spans make one traced web request).
    #[arg(long, default_value_t = 1000)]
    pub spans_per_export: usize,
    /// Wire format.
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// Benchmark the read API over a day of stored data instead of ingest.
    #[arg(long)]
    pub api: bool,
    /// With --api: spans' worth of data in the day (10 spans a request).
    #[arg(long, default_value_t = 10_000_000)]
    pub api_spans: u64,
    /// Run the server with analysis on, off, or both one after the other for a side-by-side table.
    #[arg(long, value_enum, default_value_t = AnalysisMode::On)]
    pub analysis: AnalysisMode,
    /// A `postgres://` URL: each run gets a fresh database created on that server (and dropped
    /// afterwards). Without it, each run gets a fresh SQLite file in a temp dir.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Server processes sharing the database (PostgreSQL only); the connections are spread over
    /// them, as a load balancer in front would.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
}

/// Where one run's servers keep their data.
enum BenchDatabase {
    Sqlite(PathBuf),
    Postgres(ScratchDatabase),
}

impl BenchDatabase {
    fn cli_url(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(scratch) => scratch.url.clone(),
        }
    }

    async fn disk_bytes(&self) -> u64 {
        match self {
            Self::Sqlite(path) => ["", "-wal"]
                .iter()
                .map(|suffix| {
                    std::fs::metadata(format!("{}{suffix}", path.display())).map_or(0, |m| m.len())
                })
                .sum(),
            Self::Postgres(scratch) => {
                match Store::open(&DatabaseUrl::Postgres(scratch.url.clone())).await {
                    Ok(store) => {
                        let bytes = store.disk_bytes().await.unwrap_or(0);
                        store.close().await;
                        bytes
                    }
                    Err(_) => 0,
                }
            }
        }
    }
}

/// Whether the server under test analyses what it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AnalysisMode {
    /// Analysis on, as in production: the figures count spans stored and analysed.
    On,
    /// Ingest and storage only.
    Off,
    /// Off, then on, in one run.
    Both,
}

/// Distinct payloads built before the run, so the client spends its time sending, not encoding.
const N_PAYLOADS: usize = 256;


fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Server {
    child: Child,
    ui: String,
    otlp_http: String,
    otlp_grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(
    db: &str,
    config: &std::path::Path,
    analysis: bool,
) -> anyhow::Result<Server> {
    let (ui, http, grpc) = (free_port()?, free_port()?, free_port()?);
    std::fs::write(config, format!("[analysis]\nenabled = {analysis}\n"))
        .with_context(|| format!("writing {}", config.display()))?;
    let child = Command::new(std::env::current_exe().context("finding this executable")?)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args([
            "--listen",
            &format!("127.0.0.1:{ui}"),
            "--otlp-http",
            &format!("127.0.0.1:{http}"),
        ])
        .args([
            "--otlp-grpc",
            &format!("127.0.0.1:{grpc}"),
            "--database-url",
        ])
        .arg(db)
        .env("BOTTLENECK_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting the server")?;
    let server = Server {
        child,
        ui: format!("http://127.0.0.1:{ui}"),
        otlp_http: format!("http://127.0.0.1:{http}"),
        otlp_grpc: format!("http://127.0.0.1:{grpc}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("{}/readyz", server.ui))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the server did not become ready")
}

/// What one run measured.
struct Measured {
    analysis: bool,
    wire_bytes: u64,
    accepted: u64,
    refused: u64,
    send_secs: f64,
    stored: f64,
    stored_secs: f64,
    analysed_requests: f64,
    analysed_secs: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    peak_rss: u64,
    disk_bytes: u64,
}

/// Runs the benchmark and prints a report.
pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile_dir()?;
    if args.api {
        let result = api::run(&args, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return result.map(|()| Outcome::Ok);
    }
    let modes: &[bool] = match args.analysis {
        AnalysisMode::On => &[true],
        AnalysisMode::Off => &[false],
        AnalysisMode::Both => &[false, true],
    };
    if args.instances > 1 && args.database_url.is_none() {
        bail!("several instances share a PostgreSQL database: pass --database-url postgres://...");
    }
    let mut results = Vec::new();
    for &analysis in modes {
        let name = if analysis { "analysis" } else { "ingest" };
        let db = match &args.database_url {
            Some(url) => BenchDatabase::Postgres(
                ScratchDatabase::create(url)
                    .await
                    .context("creating a database for the run")?,
            ),
            None => BenchDatabase::Sqlite(dir.join(format!("bench-{name}.db"))),
        };
        let config = dir.join(format!("bench-{name}.toml"));
        let measured = run_once(&args, &db, &config, analysis).await;
        if let BenchDatabase::Postgres(scratch) = &db {
            let _ = scratch.drop_now().await;
        }
        results.push(measured?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    print_report(&args, &results);
    Ok(Outcome::Ok)
}

async fn run_once(
    args: &BenchArgs,
    db: &BenchDatabase,
    config: &std::path::Path,
    analysis: bool,
) -> anyhow::Result<Measured> {
    let mut servers = Vec::new();
    for _ in 0..args.instances.max(1) {
        servers.push(start_server(&db.cli_url(), config, analysis).await?);
    }
    let server_pids: Vec<u32> = servers.iter().map(|server| server.child.id()).collect();
    let rss = || -> u64 {
        server_pids
            .iter()
            .map(|pid| rss_bytes(*pid).unwrap_or(0))
            .sum()
    };

    let mut rng = SmallRng::seed_from_u64(7);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let requests: Vec<ExportTraceServiceRequest> = (0..N_PAYLOADS)
        .map(|_| payload(&mut rng, args.spans_per_export, now - 120_000_000_000))
        .collect();
    let bodies: Arc<Vec<Body>> = Arc::new(match args.protocol {
        Protocol::Http | Protocol::Grpc => requests.iter().map(Body::protobuf).collect(),
        Protocol::Json => requests.iter().map(Body::json).collect(),
    });
    let wire_bytes: u64 =
        bodies.iter().map(|b| b.bytes.len() as u64).sum::<u64>() / N_PAYLOADS as u64;
    let sequence = Arc::new(AtomicU64::new(1));
    let requests = Arc::new(requests);

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.connections {
        let (stop, accepted, refused) = (
            Arc::clone(&stop),
            Arc::clone(&accepted),
            Arc::clone(&refused),
        );
        let (bodies, requests, sequence) = (
            Arc::clone(&bodies),
            Arc::clone(&requests),
            Arc::clone(&sequence),
        );
        let server = &servers[worker % servers.len()];
        let (protocol, http_url, grpc_url) = (
            args.protocol,
            server.otlp_http.clone(),
            server.otlp_grpc.clone(),
        );
        let n_spans = args.spans_per_export as u64;
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let http = reqwest::Client::new();
            let mut grpc = match protocol {
                Protocol::Grpc => Some(TraceServiceClient::connect(grpc_url).await?),
                _ => None,
            };
            let content_type = if protocol == Protocol::Json {
                "application/json"
            } else {
                "application/x-protobuf"
            };
            let mut idx = worker;
            while !stop.load(Relaxed) {
                let seq = sequence.fetch_add(1, Relaxed);
                let sent = Instant::now();
                let ok = match &mut grpc {
                    Some(client) => client
                        .export(stamp_request(&requests[idx % N_PAYLOADS], seq))
                        .await
                        .is_ok(),
                    None => http
                        .post(format!("{http_url}/v1/traces"))
                        .header("content-type", content_type)
                        .body(bodies[idx % N_PAYLOADS].stamped(protocol, seq))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                };
                latencies.push(sent.elapsed());
                let counter = if ok { &accepted } else { &refused };
                counter.fetch_add(n_spans, Relaxed);
                if !ok {
                    // Refused: the server asked for a retry later; do as an exporter would.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                idx += 7;
            }
            anyhow::Ok(latencies)
        });
    }
    let mut peak_rss = 0;
    while started.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak_rss = peak_rss.max(rss());
    }
    stop.store(true, Relaxed);
    let send_secs = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    while let Some(result) = workers.join_next().await {
        latencies.extend(result??);
    }
    latencies.sort_unstable();
    let accepted = accepted.load(Relaxed);
    // Stored means committed, and analysed means the requests are in the store: read the server's
    // own counts until it has caught up with everything acknowledged (10 spans make a request).
    let client = reqwest::Client::new();
    let (mut stored, mut analysed_requests) = (0.0, 0.0);
    let (mut stored_secs, mut analysed_secs) = (None, None);
    let expected_requests = (accepted / 10) as f64;
    for _ in 0..1200 {
        // Every instance counts what it committed and analysed: the sums are the totals.
        (stored, analysed_requests) = (0.0, 0.0);
        for server in &servers {
            let metrics = client
                .get(format!("{}/metrics", server.ui))
                .send()
                .await?
                .text()
                .await?;
            stored += metric(&metrics, "bottleneck_spans_committed_total").unwrap_or(0.0);
            analysed_requests +=
                metric(&metrics, "bottleneck_requests_analysed_total").unwrap_or(0.0);
        }
        peak_rss = peak_rss.max(rss());
        if stored_secs.is_none() && stored as u64 >= accepted {
            stored_secs = Some(started.elapsed().as_secs_f64());
        }
        if analysed_secs.is_none() && (!analysis || analysed_requests >= expected_requests) {
            analysed_secs = Some(started.elapsed().as_secs_f64());
        }
        if stored_secs.is_some() && analysed_secs.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(servers);
    let disk_bytes = db.disk_bytes().await;
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let caught_up = started.elapsed().as_secs_f64();
    Ok(Measured {
        analysis,
        wire_bytes,
        accepted,
        refused: refused.load(Relaxed),
        send_secs,
        stored,
        stored_secs: stored_secs.unwrap_or(caught_up),
        analysed_requests,
        analysed_secs: analysed_secs.unwrap_or(caught_up),
        latency_p50_ms: quantile(0.5),
        latency_p99_ms: quantile(0.99),
        peak_rss,
        disk_bytes,
    })
}

fn print_report(args: &BenchArgs, results: &[Measured]) {
    let columns: Vec<String> = results
        .iter()
        .map(|m| {
            if m.analysis {
                "analysis on".to_owned()
            } else {
                "analysis off".to_owned()
            }
        })
        .collect();
    println!(
        "{}, {} instance(s), {:?}, {} connections, {} spans per export ({} B on the wire), {} s of sending\n",
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.instances.max(1),
        args.protocol,
        args.connections,
        args.spans_per_export,
        results.first().map_or(0, |m| m.wire_bytes),
        args.duration.as_secs()
    );
    println!("| figure | {} |", columns.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    let row = |name: &str, value: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = results.iter().map(value).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("spans acknowledged per second", &|m| {
        format!("{:.0}", m.accepted as f64 / m.send_secs)
    });
    row("spans refused (told to retry)", &|m| {
        format!("{}", m.refused)
    });
    row("spans stored", &|m| format!("{:.0}", m.stored));
    row(
        "spans stored per second (until the last is committed)",
        &|m| format!("{:.0}", m.stored / m.stored_secs),
    );
    row("catch-up after sending stopped", &|m| {
        format!(
            "{:.1} s",
            (m.stored_secs.max(m.analysed_secs) - m.send_secs).max(0.0)
        )
    });
    row("requests analysed", &|m| {
        format!("{:.0}", m.analysed_requests)
    });
    row("spans stored and analysed per second", &|m| {
        if m.analysis {
            format!(
                "{:.0}",
                m.stored.min(m.analysed_requests * 10.0) / m.analysed_secs
            )
        } else {
            "-".to_owned()
        }
    });
    row("export latency p50 / p99", &|m| {
        format!("{:.1} / {:.1} ms", m.latency_p50_ms, m.latency_p99_ms)
    });
    row("server peak RSS (all instances)", &|m| {
        format!("{:.0} MiB", m.peak_rss as f64 / 1_048_576.0)
    });
    row("bytes on disk per stored span", &|m| {
        format!("{:.1}", m.disk_bytes as f64 / m.stored.max(1.0))
    });
    if let [off, on] = results {
        println!(
            "\nanalysis on / off, spans stored per second: {:.2}",
            (on.stored / on.analysed_secs.max(on.stored_secs)) / (off.stored / off.stored_secs)
        );
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bottleneck-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
