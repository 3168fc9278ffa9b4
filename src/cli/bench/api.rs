//! `bottleneck bench --api`: the read side with a day of data. Fills a fresh store with the
//! request rows and per-minute rollups that a day of traffic leaves (by default the equivalent of
//! 10 million spans: one million 10-span requests over 20 endpoints), then times the API calls
//! the overview and the endpoint page make, and the page and API call of two 10,001-span traces
//! exported to the server ([`trace_page`]).
//!
//! Invariant: the data goes in through the same `Store` calls the analyzer uses, and the timings
//! come from a real server process over HTTP.

use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{BenchArgs, payload, start_server, trace_page};
use crate::analysis::aggregate::Rollup;
use crate::analysis::{AnalysisConfig, analyze_trace};
use crate::config::DatabaseUrl;
use crate::store::{
    AnalysisCommit, Granularity, RequestRow, RollupChange, RollupKey, Store, minute_of,
};

/// Endpoints in the synthetic day.
const N_ENDPOINTS: usize = 20;

/// Calls timed per API path.
const N_CALLS: usize = 50;

/// Fills `db` with a day of analysed traffic: `n_spans` spans' worth, 10 spans a request.
async fn fill(db: &std::path::Path, n_spans: u64) -> anyhow::Result<()> {
    let store = Store::open(&DatabaseUrl::Sqlite(db.to_owned())).await?;
    let mut rng = SmallRng::seed_from_u64(11);
    let now = crate::time::now_unix_ns();
    let day_start = now - 24 * 3600 * 1_000_000_000;
    let sample = payload(&mut rng, 10, day_start);
    let spans =
        collector::otlp::decode::spans(collector::otlp::decode::protobuf(&sample.encode_to_vec())?)
            .spans;
    let (analyses, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let template = analyses
        .into_iter()
        .next()
        .context("the sample trace has a request")?;
    let mut endpoint_ids = Vec::new();
    for idx in 0..N_ENDPOINTS {
        endpoint_ids.push(
            store
                .intern_endpoint(&format!("svc-{}", idx % 4), &format!("GET /route/{idx}"))
                .await?,
        );
    }
    let n_requests = n_spans / 10;
    let minutes = 24 * 60;
    let per_rollup = (n_requests / (N_ENDPOINTS as u64 * minutes)).max(1);
    let mut commit = AnalysisCommit::default();
    let mut hours: std::collections::BTreeMap<RollupKey, Rollup> = Default::default();
    let first_minute = minute_of(day_start);
    for minute in first_minute..first_minute + minutes as i64 {
        for endpoint_id in &endpoint_ids {
            let mut rollup = Rollup::new();
            for _ in 0..per_rollup {
                let mut request = template.clone();
                request.start_unix_ns =
                    minute as u64 * 60_000_000_000 + rng.random_range(0..60_000_000_000);
                let scale = rng.random_range(0.5..3.0);
                request.duration_ns = (request.duration_ns as f64 * scale) as u64;
                request.breakdown.0 = request.breakdown.0.map(|ns| (ns as f64 * scale) as u64);
                request.trace_id.0[..8].copy_from_slice(&rng.random::<[u8; 8]>());
                rollup.add(&request);
                commit.requests.push(RequestRow {
                    trace_id: request.trace_id,
                    span_id: request.span_id,
                    endpoint_id: *endpoint_id,
                    version: "1.0".into(),
                    start_unix_ns: request.start_unix_ns,
                    duration_ns: request.duration_ns,
                    error: false,
                    breakdown: request.breakdown,
                    n_db_calls: request.n_db_calls,
                    last_block_id: 0,
                    resource_id: 0,
                });
            }
            let key = |granularity: Granularity| RollupKey {
                endpoint_id: *endpoint_id,
                version: "1.0".into(),
                minute: granularity.row_start(minute),
                granularity,
            };
            hours
                .entry(key(Granularity::Hour))
                .or_default()
                .merge(&rollup);
            commit.rollups.push(RollupChange {
                key: key(Granularity::Minute),
                added: rollup,
                removed: Rollup::new(),
            });
        }
        if commit.requests.len() >= 50_000 {
            store.commit_analysis(&std::mem::take(&mut commit)).await?;
        }
    }
    commit
        .rollups
        .extend(hours.into_iter().map(|(key, added)| RollupChange {
            key,
            added,
            removed: Rollup::new(),
        }));
    store.commit_analysis(&commit).await?;
    store.close().await;
    Ok(())
}

/// The p50 and p95 of [`N_CALLS`] calls of `url`, and the bytes of its body.
async fn time_calls(client: &reqwest::Client, url: &str) -> anyhow::Result<(f64, f64, usize)> {
    let mut times = Vec::with_capacity(N_CALLS);
    let mut body_bytes = 0;
    for _ in 0..N_CALLS {
        let started = Instant::now();
        let res = client.get(url).send().await?;
        anyhow::ensure!(res.status().is_success(), "{url} answered {}", res.status());
        body_bytes = res.bytes().await?.len();
        times.push(started.elapsed());
    }
    times.sort_unstable();
    let at = |q: f64| {
        times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_secs_f64() * 1e3
    };
    Ok((at(0.5), at(0.95), body_bytes))
}

/// Runs the API benchmark and prints its table.
pub async fn run(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let db = dir.join("bench-api.db");
    let filled = Instant::now();
    fill(&db, args.api_spans).await?;
    let fill_secs = filled.elapsed().as_secs_f64();
    let server = start_server(
        &db.display().to_string(),
        &dir.join("bench-api.toml"),
        true,
        None,
    )
    .await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    println!(
        "a day of data: {} spans' worth ({} requests) over {N_ENDPOINTS} endpoints, filled in {fill_secs:.0} s; {N_CALLS} calls each\n",
        args.api_spans,
        args.api_spans / 10
    );
    println!("| call | p50 | p95 | body bytes |\n|---|---|---|---|");
    for (name, path) in [
        (
            "GET /api/v1/endpoints?range=24h",
            "/api/v1/endpoints?range=24h".to_owned(),
        ),
        (
            "GET /api/v1/services?range=24h",
            "/api/v1/services?range=24h".to_owned(),
        ),
        (
            "GET /api/v1/endpoint?range=24h (one endpoint)",
            "/api/v1/endpoint?range=24h&service=svc-0&endpoint=GET%20/route/0".to_owned(),
        ),
        (
            "GET /api/v1/traces?range=24h&limit=50",
            "/api/v1/traces?range=24h&limit=50".to_owned(),
        ),
        ("GET / (overview page, 24h)", "/?range=24h".to_owned()),
        (
            "GET /endpoint (page, 24h)",
            "/endpoint?range=24h&service=svc-0&endpoint=GET%20/route/0".to_owned(),
        ),
    ] {
        let (p50, p95, bytes) = time_calls(&client, &format!("{}{path}", server.ui)).await?;
        println!("| {name} | {p50:.1} ms | {p95:.1} ms | {bytes} |");
    }
    trace_page::send_both(&client, &server.otlp_http).await?;
    for shape in [trace_page::Shape::Folding, trace_page::Shape::Distinct] {
        let id = shape.trace_id_hex();
        for (kind, path) in [
            ("trace page", format!("/trace/{id}")),
            ("GET /api/v1/traces/{id}", format!("/api/v1/traces/{id}")),
        ] {
            let (p50, p95, bytes) = time_calls(&client, &format!("{}{path}", server.ui)).await?;
            println!(
                "| {kind}, {} | {p50:.1} ms | {p95:.1} ms | {bytes} |",
                shape.label()
            );
        }
    }
    Ok(())
}
