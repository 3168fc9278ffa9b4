//! `/metrics` in the Prometheus text format: the collector's own figures, the analysis counters,
//! what the store holds, and per-endpoint requests, latency histograms and breakdown sums.
//!
//! Invariant: label values that come from telemetry (service and endpoint names) are escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use collector::category::Category;

use super::AppState;
use crate::histogram::{DELAY_BUCKETS, LATENCY_BUCKETS};
use crate::pipeline::analyze::EndpointCounters;

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
            analysis.folded.resources.load(Relaxed),
        ),
        (
            "bottleneck_clock_skew_clamped_total",
            "Requests that started more than max_clock_skew ahead of their analysis, counted at its time.",
            analysis.clock_skew_clamped.load(Relaxed),
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
    analysis.folded.write_prometheus(&mut out);
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
    write_endpoint_counters(&mut out, &analysis.endpoints);
    out
}

/// The per-endpoint families, in service then endpoint order (stable from one scrape to the
/// next). The counters' lock is taken once per service, which the endpoint cap keeps small,
/// and nothing is copied: the analysis waits for one service's lines at most.
fn write_endpoint_counters(
    out: &mut String,
    endpoints: &Mutex<BTreeMap<String, BTreeMap<String, EndpointCounters>>>,
) {
    let durations_name = "bottleneck_endpoint_request_duration_seconds";
    let errors_name = "bottleneck_endpoint_errors_total";
    let breakdown_name = "bottleneck_endpoint_breakdown_seconds_total";
    let mut durations = format!(
        "# HELP {durations_name} Request latency per endpoint.\n# TYPE {durations_name} histogram\n"
    );
    let mut errors = format!(
        "# HELP {errors_name} Failed requests per endpoint.\n# TYPE {errors_name} counter\n"
    );
    let mut breakdown = format!(
        "# HELP {breakdown_name} Critical-path time per endpoint and category.\n# TYPE {breakdown_name} counter\n"
    );
    let mut after: Option<String> = None;
    loop {
        let endpoints = endpoints
            .lock()
            .expect("no panics while holding the counters lock");
        let next = match &after {
            None => endpoints.iter().next(),
            Some(last) => endpoints
                .range::<str, _>((Bound::Excluded(last.as_str()), Bound::Unbounded))
                .next(),
        };
        let Some((service, per_service)) = next else {
            break;
        };
        let service_label = label(service);
        for (endpoint, counters) in per_service {
            let labels = format!(
                "service=\"{service_label}\",endpoint=\"{}\"",
                label(endpoint)
            );
            write_histogram(
                &mut durations,
                durations_name,
                &format!("{labels},"),
                &LATENCY_BUCKETS,
                &counters.latency_buckets,
                counters.duration_sum_ns as f64 / 1e9,
            );
            let _ = writeln!(errors, "{errors_name}{{{labels}}} {}", counters.errors);
            for category in Category::ALL {
                let _ = writeln!(
                    breakdown,
                    "{breakdown_name}{{{labels},category=\"{}\"}} {}",
                    category.as_str(),
                    counters.breakdown_sum_ns[category.index()] as f64 / 1e9
                );
            }
        }
        after = Some(service.clone());
    }
    out.push_str(&durations);
    out.push_str(&errors);
    out.push_str(&breakdown);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_families_are_whole_and_in_order_across_services() {
        let mut endpoints: BTreeMap<String, BTreeMap<String, EndpointCounters>> = BTreeMap::new();
        for (service, endpoint) in [("b", "GET /2"), ("a", "GET /1"), ("b", "GET /1")] {
            let counters = EndpointCounters {
                requests: 1,
                errors: 1,
                ..Default::default()
            };
            endpoints
                .entry(service.into())
                .or_default()
                .insert(endpoint.into(), counters);
        }
        let mut out = String::new();
        write_endpoint_counters(&mut out, &Mutex::new(endpoints));
        let errors: Vec<&str> = out
            .lines()
            .filter(|line| line.starts_with("bottleneck_endpoint_errors_total{"))
            .collect();
        assert_eq!(
            errors,
            [
                "bottleneck_endpoint_errors_total{service=\"a\",endpoint=\"GET /1\"} 1",
                "bottleneck_endpoint_errors_total{service=\"b\",endpoint=\"GET /1\"} 1",
                "bottleneck_endpoint_errors_total{service=\"b\",endpoint=\"GET /2\"} 1",
            ]
        );
        // Each family's lines follow its own TYPE line, none after the next family's.
        let position = |text: &str| out.find(text).unwrap();
        let last = |text: &str| out.rfind(text).unwrap();
        let errors_type = position("# TYPE bottleneck_endpoint_errors_total");
        let breakdown_type = position("# TYPE bottleneck_endpoint_breakdown_seconds_total");
        assert!(last("bottleneck_endpoint_request_duration_seconds_count{") < errors_type);
        assert!(last("bottleneck_endpoint_errors_total{") < breakdown_type);
        assert_eq!(
            out.matches("bottleneck_endpoint_breakdown_seconds_total{")
                .count(),
            3 * Category::ALL.len()
        );
    }
}
