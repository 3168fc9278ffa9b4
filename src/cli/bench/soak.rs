//! `bench --hostile`: the soak of issue #31. Beside the normal load, for the whole run, the
//! server gets a trickle of hostile inputs ([`hostile`]), idle HTTP/2 connections to both OTLP
//! listeners ([`idle`]) and clients looping over the heaviest reads ([`heavy_read`]); it checks
//! an ingest token, so that wrong tokens are among the inputs. The run is then judged by the
//! issue's acceptance: nothing acknowledged lost, RSS flat within ±10% after the first minute,
//! normal exports never refused for longer than the overload policy says, every hostile input
//! refused, no heavy read answered with a 5xx other than 503.
//!
//! Invariant: the verdicts only read figures measured elsewhere; the run fails (non-zero exit)
//! only on what cannot depend on the machine's speed: a hostile input taken, an input or read
//! left unanswered or answered with a server error, or acknowledged spans missing. RSS and the
//! refusal stretch are reported as met or not.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::hostile::{self, Inputs, Kind, Tally};
use super::idle::{self, Listener};
use super::report::{Measured, thousands};
use super::sample::{self, Growth};
use super::trace_page::{self, Shape};
use super::{Server, heavy_read, payload};
use crate::listener::settings::ConnectionConfig;

/// The ingest token the soak's server checks; the normal load and the probes send it.
pub(super) const TOKEN: &str = "bench-soak-token";

/// How far the means of the two halves of RSS samples may differ for RSS to count as flat.
const FLAT_PERCENT: f64 = 10.0;

/// What a soak set up before sending starts.
pub(super) struct Prepared {
    inputs: Arc<Inputs>,
    otlp_http: String,
    otlp_grpc: String,
    ui: String,
    /// Spans of the big trace, acknowledged.
    big_trace_spans: u64,
}

/// Builds the hostile inputs and exports the big trace whose page the readers load.
pub(super) async fn prepare(server: &Server) -> anyhow::Result<Prepared> {
    let (http_url, grpc_url) = (server.otlp_http.clone(), server.otlp_grpc.clone());
    let inputs = tokio::task::spawn_blocking(move || Inputs::build(&http_url, &grpc_url, TOKEN))
        .await
        .context("building the hostile inputs")??;
    let now_ns = crate::time::now_unix_ns();
    let trace = trace_page::export(Shape::Folding, now_ns);
    let big_trace_spans = collector::otlp::check::accept(&trace)
        .map(|accepted| accepted.n_spans)
        .context("the big trace is a valid export")?;
    let client = reqwest::Client::new();
    let response = payload::http_export(&client, &server.otlp_http, trace)
        .bearer_auth(TOKEN)
        .send()
        .await
        .context("exporting the big trace")?;
    anyhow::ensure!(
        response.status().is_success(),
        "the big trace was answered {}",
        response.status()
    );
    Ok(Prepared {
        inputs: Arc::new(inputs),
        otlp_http: server.otlp_http.clone(),
        otlp_grpc: server.otlp_grpc.clone(),
        ui: server.ui.clone(),
        big_trace_spans,
    })
}

/// The soak's tasks while the load runs.
pub(super) struct Running {
    hostile: JoinHandle<Tally>,
    idle: Vec<(Listener, JoinHandle<idle::Figures>)>,
    reads: JoinHandle<anyhow::Result<heavy_read::Figures>>,
    big_trace_spans: u64,
    idle_per_listener: usize,
}

impl Prepared {
    /// Starts everything until `deadline`, with `idle_per_listener` idle connections on each
    /// OTLP listener.
    pub(super) fn launch(self, idle_per_listener: usize, deadline: Instant) -> Running {
        let calls = heavy_read::calls(&Shape::Folding.trace_id_hex());
        Running {
            hostile: tokio::spawn(hostile::run(self.inputs, deadline)),
            idle: [
                (Listener::OtlpHttp, self.otlp_http),
                (Listener::OtlpGrpc, self.otlp_grpc),
            ]
            .into_iter()
            .map(|(listener, url)| {
                let task = idle::hold(listener, url, idle_per_listener, deadline);
                (listener, tokio::spawn(task))
            })
            .collect(),
            reads: tokio::spawn(heavy_read::run(self.ui, calls, deadline)),
            big_trace_spans: self.big_trace_spans,
            idle_per_listener,
        }
    }
}

/// What the soak's own clients measured.
pub(super) struct Figures {
    pub(super) hostile: Tally,
    pub(super) idle: Vec<(Listener, idle::Figures)>,
    pub(super) idle_per_listener: usize,
    pub(super) reads: heavy_read::Figures,
    pub(super) big_trace_spans: u64,
}

impl Running {
    /// Waits for the hostile inputs still in flight to be answered, and collects the figures.
    pub(super) async fn finish(self) -> anyhow::Result<Figures> {
        let mut idle = Vec::new();
        for (listener, task) in self.idle {
            idle.push((listener, task.await?));
        }
        Ok(Figures {
            hostile: self.hostile.await?,
            idle,
            idle_per_listener: self.idle_per_listener,
            reads: self.reads.await??,
            big_trace_spans: self.big_trace_spans,
        })
    }
}

/// Acknowledged spans the store does not hold: the normal load's, the big trace's and one per
/// probe (every probe in `visible` was acknowledged).
fn missing_spans(measured: &Measured, soak: &Figures) -> u64 {
    let acknowledged = measured.accepted + soak.big_trace_spans + measured.visible.len() as u64;
    acknowledged.saturating_sub(measured.stored as u64)
}

/// Whether RSS after the warm-up counts as flat: the means of its halves within ±10%.
fn flat(growth: &Growth) -> bool {
    growth.half_means_percent().abs() <= FLAT_PERCENT
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn ms(duration: Option<Duration>) -> String {
    duration.map_or("-".to_owned(), |d| {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    })
}

/// What failed the run: empty when every check that does not depend on timing held.
pub(super) fn failures(measured: &Measured) -> Vec<String> {
    let Some(soak) = &measured.soak else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    if soak.hostile.accepted() > 0 {
        failures.push(format!(
            "{} hostile inputs were accepted",
            soak.hostile.accepted()
        ));
    }
    if soak.hostile.unanswered() > 0 {
        failures.push(format!(
            "{} hostile inputs got no answer",
            soak.hostile.unanswered()
        ));
    }
    let failed_reads: u64 = soak.reads.iter().map(|(_, call)| call.failed()).sum();
    if failed_reads > 0 {
        failures.push(format!(
            "{failed_reads} heavy reads got a server error other than 503 or no answer"
        ));
    }
    let missing = missing_spans(measured, soak);
    if missing > 0 {
        failures.push(format!("{missing} acknowledged spans are not stored"));
    }
    failures
}

/// The soak's section of the report, after the samples of the same run.
pub(super) fn print(measured: &Measured) {
    let Some(soak) = &measured.soak else {
        return;
    };
    let connections = ConnectionConfig::default();
    println!(
        "\nsoak, analysis {} (--hostile): one hostile input every {} ms, {} idle HTTP/2 \
         connections per OTLP listener, {} clients over the heavy reads; the server checks an \
         ingest token\n",
        if measured.analysis { "on" } else { "off" },
        hostile::EVERY.as_millis(),
        soak.idle_per_listener,
        heavy_read::READERS,
    );
    println!("| hostile input | sent | answers |\n|---|---|---|");
    for kind in Kind::ALL {
        let replies = soak.hostile.replies.get(&kind);
        let sent: u64 = replies.map_or(0, |replies| replies.values().sum());
        let answers = replies.map_or("-".to_owned(), |replies| {
            replies
                .iter()
                .map(|(reply, n)| format!("{} ×{n}", reply.label()))
                .collect::<Vec<_>>()
                .join(", ")
        });
        println!("| {} | {sent} | {answers} |", kind.label());
    }
    println!(
        "\n| idle connections (one request without a token, then nothing) | opened | closed by \
         the server | idle until closed, min / median / max | open at the end | failed |\n\
         |---|---|---|---|---|---|"
    );
    for (listener, figures) in &soak.idle {
        let closed = &figures.closed_after;
        let spread = match (closed.first(), closed.get(closed.len() / 2), closed.last()) {
            (Some(min), Some(median), Some(max)) => {
                format!("{} / {} / {}", secs(*min), secs(*median), secs(*max))
            }
            _ => "-".to_owned(),
        };
        println!(
            "| {} | {} | {} | {spread} | {} | {} |",
            listener.label(),
            figures.opened,
            closed.len(),
            figures.open_at_end,
            figures.failed
        );
    }
    println!(
        "the server's idle timeout: {} (default)",
        secs(connections.idle_timeout)
    );
    println!("\n| heavy read | answers | p50 | p95 |\n|---|---|---|---|");
    for (name, call) in &soak.reads {
        println!(
            "| {name} | {} | {} | {} |",
            call.statuses(),
            ms(call.quantile(0.5)),
            ms(call.quantile(0.95))
        );
    }
    print_acceptance(measured, soak);
}

fn print_acceptance(measured: &Measured, soak: &Figures) {
    let refusals = &measured.refusals;
    println!("\nissue #31's soak acceptance:");
    println!(
        "- nothing acknowledged lost: {} acknowledged spans not stored ({} of the load, {} of the \
         big trace, {} probes; {} stored): {}",
        thousands(missing_spans(measured, soak) as f64),
        thousands(measured.accepted as f64),
        thousands(soak.big_trace_spans as f64),
        measured.visible.len(),
        thousands(measured.stored),
        met(missing_spans(measured, soak) == 0)
    );
    let rss = match sample::rss_growth(&measured.samples, sample::WARM_UP) {
        Some(growth) if growth.from >= sample::WARM_UP => format!(
            "means of the halves {} and {} MiB ({:+.1}%), {}-{} MiB from {} s to {} s: {}",
            growth.half_means_bytes.0 >> 20,
            growth.half_means_bytes.1 >> 20,
            growth.half_means_percent(),
            growth.min_bytes >> 20,
            growth.max_bytes >> 20,
            growth.from.as_secs(),
            growth.to.as_secs(),
            met(flat(&growth))
        ),
        _ => "fewer than two samples after the first minute: not judged".to_owned(),
    };
    println!("- RSS flat within ±{FLAT_PERCENT:.0}% after the first minute: {rss}");
    let stretch = refusals
        .longest
        .as_ref()
        .map_or("none".to_owned(), |stretch| {
            format!(
                "{} from {} ({} refusals{}; the longest Retry-After asked: {})",
                secs(stretch.length()),
                secs(stretch.from),
                stretch.n_refused,
                if stretch.ongoing {
                    ", none acknowledged after it"
                } else {
                    ""
                },
                secs(stretch.retry_after)
            )
        });
    println!(
        "- normal exports refused: {} as busy (429/RESOURCE_EXHAUSTED), {} as unavailable \
         (503/UNAVAILABLE), {} otherwise; longest stretch from a refusal to the next \
         acknowledged export: {stretch}: {}",
        thousands(refusals.n_too_busy as f64),
        thousands(refusals.n_unavailable as f64),
        thousands(refusals.n_other as f64),
        met(refusals.within_policy())
    );
    println!(
        "- every hostile input refused: {} sent, {} accepted, {} unanswered: {}",
        soak.hostile.sent(),
        soak.hostile.accepted(),
        soak.hostile.unanswered(),
        met(soak.hostile.accepted() == 0 && soak.hostile.unanswered() == 0)
    );
    let failed_reads: u64 = soak.reads.iter().map(|(_, call)| call.failed()).sum();
    let n_reads: u64 = soak
        .reads
        .iter()
        .map(|(_, call)| call.by_status.values().sum::<u64>())
        .sum();
    println!(
        "- heavy reads answered without a server error other than 503: {n_reads} reads, \
         {failed_reads} failed: {}",
        met(failed_reads == 0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn growth(first_mib: u64, second_mib: u64) -> Growth {
        Growth {
            from: Duration::from_secs(60),
            to: Duration::from_secs(600),
            percent: 0.0,
            min_bytes: first_mib << 20,
            max_bytes: second_mib << 20,
            half_means_bytes: (first_mib << 20, second_mib << 20),
        }
    }

    #[test]
    fn rss_is_flat_when_the_halves_differ_by_ten_percent_at_most() {
        assert!(flat(&growth(200, 220)));
        assert!(flat(&growth(200, 180)));
        assert!(!flat(&growth(200, 221)));
        assert!(!flat(&growth(200, 179)));
    }
}
