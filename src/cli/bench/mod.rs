//! `bottleneck bench`: a load generator against a fresh server process on this machine.
//!
//! It starts `bottleneck serve` as a child on a temporary SQLite file (or a scratch PostgreSQL
//! database), sends pre-built, distinct payloads of realistic web-request traces over concurrent
//! keep-alive connections (OTLP/HTTP protobuf or JSON, or OTLP/gRPC; gzip-compressed by the
//! client with `--gzip`), as fast as the server answers or at a fixed `--rate`, then waits until the server
//! has committed (and analysed) everything it acknowledged. It reports spans/s stored, export
//! latency, the server's CPU (cores used, CPU-seconds per million spans) and the load generator's,
//! peak RSS, bytes per stored span, and the server's RSS, open files, threads and tokio tasks
//! sampled every `--sample-every`. With `--limit` it first measures this machine's raw limit
//! (see [`limit`]) and shows each rate as a share of it. With `--hostile` the run is a soak:
//! hostile inputs, idle connections and heavy reads beside the load, judged at the end
//! (see [`soak`]).
//!
//! Invariant: a figure counts what the store holds, not what was answered 200.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::cli::Outcome;
use crate::config::DatabaseUrl;
use crate::store::Store;
use crate::store::scratch::ScratchDatabase;

mod api;
mod heavy_read;
mod histogram;
mod hostile;
mod idle;
mod limit;
mod pacing;
mod payload;
mod process;
mod refusal;
mod report;
mod sample;
mod send;
mod soak;
mod trace_page;
mod visibility;

use histogram::Histogram;
pub use payload::payload_for_benchmarks;
use payload::{Body, payload};
use report::Measured;
use sample::Sample;

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
    /// Send gzip-compressed exports: HTTP bodies compressed by the client on each send (gzip's
    /// fastest level), gRPC messages compressed by tonic on each send.
    #[arg(long)]
    pub gzip: bool,
    /// Spans per second at a fixed rate, spread evenly over the connections. Without it each
    /// connection sends its next export as soon as the last is answered (closed loop).
    #[arg(long, value_name = "SPANS_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// How often to sample the server's RSS, open files, threads and tokio tasks.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
    /// First measure this machine's raw limit (prost decode alone; decode plus a bare SQLite
    /// insert) for a few seconds, and show the server's rates as a share of it.
    #[arg(long)]
    pub limit: bool,
    /// A soak: beside the load, for the whole run, a trickle of hostile inputs (gzip bombs over
    /// chunked HTTP/1.1 and gRPC, broken protobuf and JSON, bodies too large or stalled, wrong
    /// tokens: the server checks an ingest token), idle HTTP/2 connections to both OTLP
    /// listeners, and clients looping over the heaviest pages and API calls. The report adds
    /// how each was answered and judges the run; it exits non-zero when a hostile input was
    /// accepted or unanswered, a read got a 5xx other than 503, or acknowledged spans are
    /// missing.
    #[arg(long)]
    pub hostile: bool,
    /// With --hostile: idle HTTP/2 connections held on each OTLP listener.
    #[arg(long, default_value_t = 200)]
    pub idle_connections: usize,
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

    /// Bytes the stored data takes. For SQLite, after opening and closing the file once: the
    /// last connection to close checkpoints the write-ahead log into the database, so what is
    /// counted is the data and its indexes, not how far the log had grown under the load's
    /// readers.
    async fn disk_bytes(&self) -> u64 {
        match self {
            Self::Sqlite(path) => {
                if let Ok(store) = Store::open(&DatabaseUrl::Sqlite(path.clone())).await {
                    store.close().await;
                }
                ["", "-wal"]
                    .iter()
                    .map(|suffix| {
                        std::fs::metadata(format!("{}{suffix}", path.display()))
                            .map_or(0, |m| m.len())
                    })
                    .sum()
            }
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

/// How often a probe times export to visible during a run with analysis on.
const PROBE_EVERY: Duration = Duration::from_secs(3);

/// Distinct payloads built before the run, so the client spends its time sending, not encoding.
const N_PAYLOADS: usize = 256;

/// What every run sends, built once before the first.
struct Traffic {
    spans_per_export: usize,
    /// The exports as messages, for the raw limit.
    requests: Vec<ExportTraceServiceRequest>,
    /// When they were built: each send moves their times forward by the time since.
    built_unix_ns: u64,
    /// The exports encoded as sent, over HTTP compressed with `--gzip` (gRPC compresses its own).
    bodies: Vec<Body>,
    /// Average size of a body, uncompressed.
    plain_bytes: u64,
    /// With `--gzip` over HTTP: the average size of a body as sent, and what gzip at its default
    /// level makes of one.
    gzip_bytes: Option<(u64, u64)>,
}

impl Traffic {
    /// Builds the payloads.
    fn build(args: &BenchArgs) -> anyhow::Result<Traffic> {
        let mut rng = SmallRng::seed_from_u64(7);
        let now = crate::time::now_unix_ns();
        let requests: Vec<ExportTraceServiceRequest> = (0..N_PAYLOADS)
            .map(|_| payload(&mut rng, args.spans_per_export, now))
            .collect();
        let mut bodies: Vec<Body> = match args.protocol {
            Protocol::Http | Protocol::Grpc => requests.iter().map(Body::protobuf).collect(),
            Protocol::Json => requests.iter().map(Body::json).collect(),
        };
        let average = |sizes: &mut dyn Iterator<Item = usize>| {
            sizes.map(|size| size as u64).sum::<u64>() / N_PAYLOADS as u64
        };
        let plain_bytes = average(&mut bodies.iter().map(|body| body.bytes.len()));
        let mut gzip_bytes = None;
        if args.gzip && args.protocol != Protocol::Grpc {
            bodies.iter_mut().for_each(Body::compress);
            let sent = average(&mut bodies.iter().map(|body| body.stamped(0, 0).len()));
            let level_6 = payload::gzipped(&bodies[0].bytes, flate2::Compression::default());
            gzip_bytes = Some((sent, level_6.len() as u64));
        }
        Ok(Traffic {
            spans_per_export: args.spans_per_export,
            requests,
            built_unix_ns: now,
            bodies,
            plain_bytes,
            gzip_bytes,
        })
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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

/// Starts `bottleneck serve` on `db`, checking `ingest_token` on OTLP when given.
async fn start_server(
    db: &str,
    config: &std::path::Path,
    analysis: bool,
    ingest_token: Option<&str>,
) -> anyhow::Result<Server> {
    let (ui, http, grpc) = (free_port()?, free_port()?, free_port()?);
    let mut text = format!("[analysis]\nenabled = {analysis}\n");
    if let Some(token) = ingest_token {
        text.push_str(&format!("\n[auth]\ningest_tokens = [\"{token}\"]\n"));
    }
    std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))?;
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

/// Runs the benchmark and prints a report.
pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.api && args.hostile {
        bail!("--hostile soaks the ingest load; it does not go with --api");
    }
    let dir = tempfile_dir()?;
    if args.api {
        let result = api::run(&args, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return result.map(|()| Outcome::Ok);
    }
    let result = run_ingest(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let failures = result?;
    if !failures.is_empty() {
        bail!("the soak failed: {}", failures.join("; "));
    }
    Ok(Outcome::Ok)
}

/// Runs the load and prints the report; returns what failed a soak.
async fn run_ingest(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let modes: &[bool] = match args.analysis {
        AnalysisMode::On => &[true],
        AnalysisMode::Off => &[false],
        AnalysisMode::Both => &[false, true],
    };
    if args.instances > 1 && args.database_url.is_none() {
        bail!("several instances share a PostgreSQL database: pass --database-url postgres://...");
    }
    if args.sample_every.is_zero() {
        bail!("--sample-every must be longer than zero");
    }
    let load_average = std::fs::read_to_string("/proc/loadavg").ok().map(|text| {
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let traffic = {
        let args = args.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Traffic::build(&args))
                .await
                .context("building the payloads")??,
        )
    };
    let limit = if args.limit {
        let (traffic, dir) = (Arc::clone(&traffic), dir.to_owned());
        Some(
            tokio::task::spawn_blocking(move || {
                let bodies: Vec<Vec<u8>> = traffic
                    .requests
                    .iter()
                    .map(|request| request.encode_to_vec())
                    .collect();
                limit::measure(&bodies, &dir)
            })
            .await
            .context("measuring the raw limit")??,
        )
    } else {
        None
    };
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
        let measured = run_once(args, &traffic, &db, &config, analysis).await;
        if let BenchDatabase::Postgres(scratch) = &db {
            let _ = scratch.drop_now().await;
        }
        results.push(measured?);
    }
    report::print(
        args,
        &traffic,
        limit.as_ref(),
        load_average.as_deref(),
        &results,
    );
    Ok(results.iter().flat_map(soak::failures).collect())
}

/// What the servers' `/metrics` say, summed over the instances.
struct Counts {
    stored: f64,
    analysed_requests: f64,
    tasks: Option<f64>,
    analysis_delay: Histogram,
}

async fn scrape(client: &reqwest::Client, servers: &[Server]) -> anyhow::Result<Counts> {
    // Every instance counts what it committed and analysed: the sums are the totals.
    let mut counts = Counts {
        stored: 0.0,
        analysed_requests: 0.0,
        tasks: Some(0.0),
        analysis_delay: Histogram::default(),
    };
    for server in servers {
        let metrics = client
            .get(format!("{}/metrics", server.ui))
            .send()
            .await?
            .text()
            .await?;
        counts.stored += metric(&metrics, "bottleneck_spans_committed_total").unwrap_or(0.0);
        counts.analysed_requests +=
            metric(&metrics, "bottleneck_requests_analysed_total").unwrap_or(0.0);
        counts.tasks = counts
            .tasks
            .zip(metric(&metrics, "bottleneck_runtime_alive_tasks"))
            .map(|(sum, tasks)| sum + tasks);
        counts.analysis_delay.add(&Histogram::parse(
            &metrics,
            "bottleneck_analysis_delay_seconds",
        ));
    }
    Ok(counts)
}

async fn take_sample(
    client: &reqwest::Client,
    servers: &[Server],
    at: Duration,
    catching_up: bool,
) -> Sample {
    let pids: Vec<u32> = servers.iter().map(|server| server.child.id()).collect();
    let mut counts = scrape(client, servers).await.ok();
    let analysis_delay = counts
        .as_mut()
        .map(|counts| std::mem::take(&mut counts.analysis_delay))
        .unwrap_or_default();
    Sample {
        at,
        catching_up,
        spans_stored: counts.as_ref().map(|counts| counts.stored as u64),
        rss_bytes: process::sum(&pids, process::rss_bytes),
        open_fds: process::sum(&pids, process::open_fds),
        threads: process::sum(&pids, process::threads),
        tasks: counts
            .and_then(|counts| counts.tasks)
            .map(|tasks| tasks as u64),
        analysis_delay,
    }
}

async fn run_once(
    args: &BenchArgs,
    traffic: &Arc<Traffic>,
    db: &BenchDatabase,
    config: &std::path::Path,
    analysis: bool,
) -> anyhow::Result<Measured> {
    let token = args.hostile.then_some(soak::TOKEN);
    let mut servers = Vec::new();
    for _ in 0..args.instances.max(1) {
        servers.push(start_server(&db.cli_url(), config, analysis, token).await?);
    }
    let server_pids: Vec<u32> = servers.iter().map(|server| server.child.id()).collect();
    let me = std::process::id();
    let rss = || process::sum(&server_pids, process::rss_bytes).unwrap_or(0);
    // The probes export through this client too: it carries the token the server checks.
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()?;
    let soak = if args.hostile {
        Some(soak::prepare(&servers[0]).await?)
    } else {
        None
    };

    let shared = Arc::new(send::Shared {
        traffic: Arc::clone(traffic),
        sequence: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let server_cpu_start = process::cpu_secs_sum(&server_pids);
    let bench_cpu_start = process::cpu_secs(me);
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.connections {
        let server = &servers[worker % servers.len()];
        let connection = send::Connection {
            protocol: args.protocol,
            gzip: args.gzip,
            http_url: server.otlp_http.clone(),
            grpc_url: server.otlp_grpc.clone(),
            worker,
            started,
            pacing: args.rate.map(|rate| {
                (
                    pacing::Pacing::new(rate, args.spans_per_export, args.connections, worker),
                    deadline,
                )
            }),
            token: token.map(str::to_owned),
        };
        workers.spawn(send::run(connection, Arc::clone(&shared)));
    }
    let soak = soak.map(|prepared| prepared.launch(args.idle_connections, deadline));
    // With analysis on, probes time export to visible while the load runs.
    let probes_stop = Arc::new(AtomicBool::new(false));
    let probes = analysis.then(|| {
        tokio::spawn(visibility::probe(
            client.clone(),
            servers[0].otlp_http.clone(),
            servers[0].ui.clone(),
            PROBE_EVERY,
            Arc::clone(&probes_stop),
        ))
    });
    let mut peak_rss = 0;
    let mut samples = Vec::new();
    let mut next_sample = args.sample_every;
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        peak_rss = peak_rss.max(rss());
        // A sample at the deadline would see connections closing: the one after catch-up ends
        // the curve instead.
        if started.elapsed() >= next_sample && next_sample < args.duration {
            samples.push(take_sample(&client, &servers, started.elapsed(), false).await);
            next_sample += args.sample_every;
        }
    }
    shared.stop.store(true, Relaxed);
    probes_stop.store(true, Relaxed);
    let send_secs = started.elapsed().as_secs_f64();
    let server_cpu_sent = process::cpu_secs_sum(&server_pids);
    let bench_cpu_sent = process::cpu_secs(me);
    let mut latencies = Vec::new();
    let mut answers = Vec::new();
    while let Some(result) = workers.join_next().await {
        let sent = result??;
        latencies.extend(sent.latencies);
        answers.extend(sent.answers);
    }
    latencies.sort_unstable();
    let accepted = shared.accepted.load(Relaxed);
    // Stored means committed, and analysed means the requests are in the store: read the server's
    // own counts until it has caught up with everything acknowledged (10 spans make a request).
    let (mut stored, mut analysed_requests) = (0.0, 0.0);
    let (mut stored_secs, mut analysed_secs) = (None, None);
    let expected_requests = (accepted / 10) as f64;
    for _ in 0..1200 {
        let counts = scrape(&client, &servers).await?;
        (stored, analysed_requests) = (counts.stored, counts.analysed_requests);
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
        if started.elapsed() >= next_sample {
            samples.push(take_sample(&client, &servers, started.elapsed(), true).await);
            next_sample += args.sample_every;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server_cpu_caught_up = process::cpu_secs_sum(&server_pids);
    let probe_times = match probes {
        Some(probes) => probes.await?,
        None => Vec::new(),
    };
    let sorted = |time: fn(&visibility::ProbeTimes) -> Duration| {
        let mut times: Vec<Duration> = probe_times.iter().map(time).collect();
        times.sort_unstable();
        times
    };
    let visible = sorted(|probe| probe.visible);
    let acknowledged = sorted(|probe| probe.acknowledged);
    let soak = match soak {
        Some(running) => Some(running.finish().await?),
        None => None,
    };
    // The state once caught up ends the curve, in place of a sample taken just before it.
    if samples.last().is_some_and(|last: &Sample| {
        last.catching_up && started.elapsed() - last.at < Duration::from_secs(1)
    }) {
        samples.pop();
    }
    samples.push(take_sample(&client, &servers, started.elapsed(), true).await);
    let analysis_delay = samples
        .last()
        .map(|last| last.analysis_delay.clone())
        .unwrap_or_default();
    drop(servers);
    let disk_bytes = db.disk_bytes().await;
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let caught_up = started.elapsed().as_secs_f64();
    let difference = |to: Option<f64>, from: Option<f64>| Some(to? - from?);
    Ok(Measured {
        analysis,
        accepted,
        refused: shared.refused.load(Relaxed),
        send_secs,
        stored,
        stored_secs: stored_secs.unwrap_or(caught_up),
        analysed_requests,
        analysed_secs: analysed_secs.unwrap_or(caught_up),
        latency_p50_ms: quantile(0.5),
        latency_p99_ms: quantile(0.99),
        peak_rss,
        disk_bytes,
        server_cpu_sending: difference(server_cpu_sent, server_cpu_start),
        server_cpu_catch_up: difference(server_cpu_caught_up, server_cpu_sent),
        bench_cpu_sending: difference(bench_cpu_sent, bench_cpu_start),
        samples,
        visible,
        acknowledged,
        analysis_delay,
        refusals: refusal::summarize(answers),
        soak,
    })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bottleneck-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
