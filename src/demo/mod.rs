//! The built-in demo workload: three instrumented services that send real OTLP to Bottleneck,
//! modelled on the SAML login service of the seed talk.
//!
//! - `auth` (OTLP/HTTP): `POST /login` (ten queries with a duplicate and an N+1 loop, a cache get,
//!   the IdP round trip, SAML signing), `GET /report` (CPU-bound), `GET /health` (trivial);
//!   redeployed as 1.1 after `regress_after`, with a hidden 300 ms round trip in `/login`;
//! - `idp` (OTLP/gRPC): `POST /saml/assert`, joined to the login's trace by `traceparent`;
//! - `mailer` (OTLP/HTTP): consumes the `emails` queue some logins publish to.
//!
//! Each service has its own SDK tracer provider and batch processor (`telemetry`), spans are
//! recorded with the real `opentelemetry` API around real waits (`tokio::time::sleep`) and real
//! CPU work (`cpu`), and every random choice comes from `WorkloadConfig::seed`.
//!
//! `auth` and `mailer` measure CPU time with the `cputime` crate: each request runs as a task
//! wrapped with `with_cpu_time`, and their providers' processor gives every span `cpu.time_ns`,
//! the CPU time of the request's task while the span was open, children included. `idp` measures
//! nothing and sends no `cpu.time_ns` at all, so every page shows both cases side by side: CPU
//! and wait for `auth` and `mailer`, untraced self time for `idp`.
//!
//! Invariant: nothing is lost at the end or in the redeploy. The workload stops accepting
//! arrivals, waits for every request (and email) in flight, and only then flushes and shuts down
//! the providers, off the runtime's threads.

mod auth;
mod call;
mod cpu;
mod idp;
mod latency;
mod mailer;
mod report;
mod service;
pub mod telemetry;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cputime::CpuTimeExt as _;
use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

pub use auth::{POLICY_RULES_PER_LOGIN, REGRESSED_VERSION};
pub use report::{EndpointCount, WorkloadReport};

use self::auth::Peers;
use self::service::Deployment;
use self::telemetry::{CpuTime, ExportStats, Identity, Transport};

/// What the workload sends, where, and for how long.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Base URL of the OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318`; spans are posted to
    /// `/v1/traces` under it. `auth` and `mailer` export here.
    pub otlp_http_endpoint: String,
    /// URL of the OTLP/gRPC receiver, e.g. `http://127.0.0.1:4317`. `idp` exports here.
    pub otlp_grpc_endpoint: String,
    /// Logins per second; the other endpoints arrive in proportion (see [`REPORTS_PER_LOGIN`],
    /// [`HEALTH_CHECKS_PER_LOGIN`]).
    pub rate_per_sec: f64,
    /// Seeds every choice: arrivals, endpoints, latencies, injected errors.
    pub seed: u64,
    /// When `auth` is redeployed as 1.1, counted from the start.
    pub regress_after: Duration,
    /// How long to send; `None` runs until `shutdown` resolves.
    pub duration: Option<Duration>,
}

/// `GET /report` requests per login.
pub const REPORTS_PER_LOGIN: f64 = 0.2;
/// `GET /health` requests per login.
pub const HEALTH_CHECKS_PER_LOGIN: f64 = 0.5;
/// Database queries of one successful `auth` login: two tenant lookups (the duplicate), the user,
/// the user's policies, and the N+1 loop over policy rules.
pub const QUERIES_PER_LOGIN: u32 = 4 + POLICY_RULES_PER_LOGIN;

/// Requests in flight at most. A login takes ~0.3 s (0.6 s after the regression), so this allows
/// several hundred logins per second; beyond it arrivals are shed and counted rather than
/// queued, which would distort the arrival process.
const MAX_IN_FLIGHT: usize = 512;

/// Runs the workload until `config.duration` has passed or `shutdown` resolves, then drains and
/// flushes everything. Fails only on a bad configuration or an exporter that cannot be built;
/// spans the collector did not take are counted in the report.
pub async fn run(
    config: WorkloadConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<WorkloadReport> {
    if !(config.rate_per_sec.is_finite() && config.rate_per_sec > 0.0) {
        bail!(
            "demo rate must be a positive number of logins per second, got {}",
            config.rate_per_sec
        );
    }
    // reqwest (under the HTTP exporter) is built without a default TLS provider; an Err only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let mut arrivals = StdRng::seed_from_u64(config.seed);
    let stats = Arc::new(ExportStats::default());
    let counters = Arc::new(report::Counters::default());
    let mut identity = |name, version| Identity {
        name,
        version,
        instance_id: format!("{name}-{version}-{:04x}", arrivals.random::<u16>()),
    };
    let (auth_v1, auth_v11, idp_id, mailer_id) = (
        identity("auth", "1.0"),
        identity("auth", REGRESSED_VERSION),
        identity("idp", "3.4.1"),
        identity("mailer", "0.9.0"),
    );
    let http = config.otlp_http_endpoint.as_str();
    let grpc = config.otlp_grpc_endpoint.as_str();
    let start = |identity: &Identity, transport, endpoint: &str, cpu_time| {
        Deployment::start(identity, transport, endpoint, cpu_time, Arc::clone(&stats))
    };
    let mut auth = start(&auth_v1, Transport::Http, http, CpuTime::Measured)?;
    let idp = start(&idp_id, Transport::Grpc, grpc, CpuTime::Unmeasured)?;
    let mailer = start(&mailer_id, Transport::Http, http, CpuTime::Measured)?;
    let peers = Arc::new(Peers {
        idp: Arc::clone(&idp.service),
        mailer: Arc::clone(&mailer.service),
        counters: Arc::clone(&counters),
    });

    // Every request task holds a clone of this sender; the receiver sees `None` once all are done.
    let (in_flight, mut all_done) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let regress_at = started + config.regress_after;
    let deadline = config.duration.map(|duration| started + duration);
    let total_rate = config.rate_per_sec * (1.0 + REPORTS_PER_LOGIN + HEALTH_CHECKS_PER_LOGIN);
    let mut retiring = Vec::new();
    let mut regressed = false;
    let mut next_arrival = started;
    tokio::pin!(shutdown);
    'arrivals: loop {
        next_arrival += latency::interarrival(&mut arrivals, total_rate);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break 'arrivals,
                () = until(deadline) => break 'arrivals,
                () = tokio::time::sleep_until(regress_at), if !regressed => {
                    regressed = true;
                    let next = start(&auth_v11, Transport::Http, http, CpuTime::Measured)?;
                    retiring.push(tokio::spawn(std::mem::replace(&mut auth, next).retire()));
                }
                () = tokio::time::sleep_until(next_arrival) => break,
            }
        }
        let (kind, request_seed) = next_request(&mut arrivals);
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            counters.shed.fetch_add(1, Relaxed);
            continue;
        };
        let (service, peers, done) = (
            Arc::clone(&auth.service),
            Arc::clone(&peers),
            in_flight.clone(),
        );
        // One task per request, on its own CPU clock, as a server that measures CPU time runs it.
        let request = async move {
            let _permit = permit;
            let mut rng = SmallRng::seed_from_u64(request_seed);
            match kind {
                Kind::Login => auth::login(&service, &peers, &mut rng, &done).await,
                Kind::Report => auth::report(&service, &peers, &mut rng).await,
                Kind::Health => auth::health(&service, &peers).await,
            }
            drop(done);
        };
        tokio::spawn(request.with_cpu_time());
    }

    drop(in_flight);
    while all_done.recv().await.is_some() {}
    drop(peers);
    let mut export_errors = Vec::new();
    for retired in retiring {
        if let Err(err) = retired
            .await
            .context("joining the retired auth 1.0")
            .and_then(|it| it)
        {
            export_errors.push(format!("{err:#}"));
        }
    }
    let (auth_end, idp_end, mailer_end) =
        tokio::join!(auth.retire(), idp.retire(), mailer.retire());
    export_errors.extend(
        [auth_end, idp_end, mailer_end]
            .into_iter()
            .filter_map(|end| end.err().map(|err| format!("{err:#}"))),
    );

    let mut report = WorkloadReport::from_counters(&counters);
    report.regressed = regressed;
    report.spans_exported = stats.exported.load(Relaxed);
    report.spans_failed = stats.failed.load(Relaxed);
    report.export_errors = export_errors;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The `auth` endpoints an arrival can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Login,
    Report,
    Health,
}

/// Which endpoint the next arrival calls, and the seed of its own choices.
fn next_request(arrivals: &mut StdRng) -> (Kind, u64) {
    let pick = arrivals.random::<f64>() * (1.0 + REPORTS_PER_LOGIN + HEALTH_CHECKS_PER_LOGIN);
    let kind = if pick < 1.0 {
        Kind::Login
    } else if pick < 1.0 + REPORTS_PER_LOGIN {
        Kind::Report
    } else {
        Kind::Health
    };
    (kind, arrivals.random())
}

/// Resolves at `deadline`, or never.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
