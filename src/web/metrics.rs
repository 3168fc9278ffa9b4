//! `/metrics` in the Prometheus text format: the collector's own figures, the analysis counters,
//! what the store holds, and per-endpoint requests, latency histograms and breakdown sums.
//!
//! Invariant: label values that come from telemetry (service and endpoint names) are escaped.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use collector::category::Category;

use super::AppState;
use crate::pipeline::analyze::{EndpointCounters, LATENCY_BUCKETS};
use crate::pipeline::delay::DELAY_BUCKETS;

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The series of one histogram: cumulative buckets from per-bucket `counts` (the last one +Inf),
/// then the sum and the count. `labels` is empty or ends with a comma.
fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) {
    let mut cumulative = 0;
    for (le, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
    }
    cumulative += counts[bounds.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
    let labels = match labels.trim_end_matches(',') {
        "" => String::new(),
        labels => format!("{{{labels}}}"),
    };
    let _ = writeln!(out, "{name}_sum{labels} {sum}");
    let _ = writeln!(out, "{name}_count{labels} {cumulative}");
}

/// Renders every metric.
pub async fn render(state: &AppState) -> String {
    let mut out = String::new();
    state.ingest.write_prometheus(state.queue_depth(), &mut out);
    let analysis = &state.analysis_stats;
    let counters = [
        (
            "bottleneck_traces_analysed_total",
            "Traces analysed.",
            analysis.traces.load(Relaxed),
        ),
        (
            "bottleneck_requests_analysed_total",
            "Requests analysed, re-analyses included.",
            analysis.requests.load(Relaxed),
        ),
        (
            "bottleneck_traces_reanalysed_total",
            "Traces re-analysed after late spans.",
            analysis.reanalysed_traces.load(Relaxed),
        ),
        (
            "bottleneck_analysis_anomalies_total",
            "Odd input the analysis worked around.",
            analysis.anomalies.load(Relaxed),
        ),
        (
            "bottleneck_analysis_commit_failures_total",
            "Analysis commits that failed.",
            analysis.failed_commits.load(Relaxed),
        ),
        (
            "bottleneck_requests_without_resource_total",
            "Requests stored without their resource because the resource cap was reached.",
            analysis.requests_without_resource.load(Relaxed),
        ),
        (
            "bottleneck_hot_trace_skips_total",
            "Late arrivals of traces past the cap of stored blocks per trace, stored but not analysed again.",
            analysis.hot_trace_skips.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let name = "bottleneck_analysis_delay_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Seconds from a trace's spans committed to its analysis committed, the grace period included.\n# TYPE {name} histogram"
    );
    let (counts, sum) = analysis.delay.snapshot();
    write_histogram(&mut out, name, "", &DELAY_BUCKETS, &counts, sum);
    // Tasks of the runtime serving this request, which runs every task of the server: a count
    // that only grows under a steady load is a leak.
    let name = "bottleneck_runtime_alive_tasks";
    let _ = writeln!(
        out,
        "# HELP {name} Tokio tasks alive in the server's runtime.\n# TYPE {name} gauge\n{name} {}",
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    );
    // While span commits fail the store is not asked: the scrape that reports the outage
    // (`bottleneck_store_up 0`) is answered at once instead of waiting for the store to time out.
    let stored = if state.ingest.store_down() {
        None
    } else {
        state.store.stats().await.ok()
    };
    if let Some(stats) = stored {
        let name = "bottleneck_stored_spans";
        let _ = writeln!(
            out,
            "# HELP {name} Spans in the store.\n# TYPE {name} gauge\n{name} {}",
            stats.n_spans
        );
    }
    // Flattened and sorted, so the exposition is stable from one scrape to the next.
    let endpoints: std::collections::BTreeMap<(String, String), EndpointCounters> = analysis
        .endpoints
        .lock()
        .expect("no panics while holding the counters lock")
        .iter()
        .flat_map(|(service, per_service)| {
            per_service
                .iter()
                .map(|(endpoint, counters)| ((service.clone(), endpoint.clone()), counters.clone()))
        })
        .collect();
    let name = "bottleneck_endpoint_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Request latency per endpoint.\n# TYPE {name} histogram"
    );
    for ((service, endpoint), counters) in &endpoints {
        let labels = format!(
            "service=\"{}\",endpoint=\"{}\",",
            label(service),
            label(endpoint)
        );
        write_histogram(
            &mut out,
            name,
            &labels,
            &LATENCY_BUCKETS,
            &counters.latency_buckets,
            counters.duration_sum_ns as f64 / 1e9,
        );
    }
    let name = "bottleneck_endpoint_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} Failed requests per endpoint.\n# TYPE {name} counter"
    );
    for ((service, endpoint), counters) in &endpoints {
        let _ = writeln!(
            out,
            "{name}{{service=\"{}\",endpoint=\"{}\"}} {}",
            label(service),
            label(endpoint),
            counters.errors
        );
    }
    let name = "bottleneck_endpoint_breakdown_seconds_total";
    let _ = writeln!(
        out,
        "# HELP {name} Critical-path time per endpoint and category.\n# TYPE {name} counter"
    );
    for ((service, endpoint), counters) in &endpoints {
        for category in Category::ALL {
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",endpoint=\"{}\",category=\"{}\"}} {}",
                label(service),
                label(endpoint),
                category.as_str(),
                counters.breakdown_sum_ns[category.index()] as f64 / 1e9
            );
        }
    }
    out
}
