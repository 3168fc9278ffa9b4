//! `/endpoint?service=..&endpoint=..`: one endpoint in depth: headline numbers, the breakdown and
//! latency over time, the distribution, the slow tail beside the median, operations, findings,
//! example traces and the split per version.
//!
//! Invariant: shows only what `query::endpoint_detail` returns.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};

use super::alerts::{AlertBadge, endpoint_badges};
use super::{
    CategoryValue, Chrome, PageError, PageParams, RegressionRow, breakdown_array, category_values,
    encode, fmt_calls, fmt_count, fmt_ms, fmt_pct, fmt_rate, regression_rows,
};
use crate::web::AppState;
use crate::web::api::dto::{EndpointDetailDto, EndpointSummaryDto, GapDto, TraceSummaryDto};
use crate::web::charts::{self, BarSegment, BreakdownPoint, HistogramBar, LatencyPoint};
use crate::web::error::ApiError;
use crate::web::query;

/// A row of the slowest-5%-beside-the-median comparison.
pub struct TailRow {
    pub label: &'static str,
    pub total: String,
    pub segments: Vec<BarSegment>,
    pub values: Vec<CategoryValue>,
}

pub struct OperationRow {
    pub category: &'static str,
    pub name: String,
    pub calls: String,
    pub calls_sort: f64,
    pub mean: String,
    pub mean_sort: f64,
    pub critical: String,
    pub critical_sort: f64,
}

pub struct FindingRow {
    pub rank: usize,
    pub kind: String,
    pub name: String,
    pub count: String,
    pub saving: String,
    pub share: String,
    pub summary: String,
    /// Where in the code, when its spans say.
    pub location: Option<super::LocationView>,
}

/// Where untraced (or measured but unexplained) self time sits.
pub struct GapRow {
    pub category: &'static str,
    pub place: String,
    pub mean: String,
    pub mean_sort: f64,
    pub share: String,
    pub split: String,
}

/// The category a gap is mostly in.
fn dominant_gap_category(gap: &GapDto) -> &'static str {
    [
        ("untraced", gap.untraced_ms),
        ("wait", gap.wait_ms),
        ("cpu", gap.cpu_ms),
    ]
    .into_iter()
    .fold(("untraced", f64::MIN), |best, this| {
        if this.1 > best.1 { this } else { best }
    })
    .0
}

/// What a gap's time is, in words: untraced, or measured on and off the CPU.
fn gap_split(gap: &GapDto) -> String {
    let mut parts = Vec::new();
    for (label, ms) in [
        ("on CPU", gap.cpu_ms),
        ("off CPU", gap.wait_ms),
        ("not measured", gap.untraced_ms),
    ] {
        if ms > 0.0 {
            parts.push(format!("{} {label}", fmt_ms(ms)));
        }
    }
    parts.join(", ")
}

pub struct TraceLink {
    pub href: String,
    pub trace_id: String,
    pub short_id: String,
    pub start: String,
    pub duration: String,
    pub version: String,
    pub error: bool,
    pub segments: Vec<BarSegment>,
}

pub struct VersionRow {
    pub version: String,
    pub requests: String,
    pub mean: String,
    pub p50: String,
    pub p95: String,
    pub segments: Vec<BarSegment>,
}

#[derive(Template, WebTemplate)]
#[template(path = "endpoint.html")]
pub struct EndpointPage {
    pub chrome: Chrome,
    pub service: String,
    pub service_href: String,
    pub endpoint: String,
    pub folded: bool,
    pub requests: String,
    pub rate: String,
    pub errors: String,
    pub error_pct: String,
    pub has_errors: bool,
    pub mean: String,
    pub p50: String,
    pub p90: String,
    pub p95: String,
    pub p99: String,
    pub db_calls: String,
    pub bottleneck_category: &'static str,
    pub bottleneck: String,
    pub speedup: String,
    pub speedup_sentence: String,
    pub segments: Vec<BarSegment>,
    pub breakdown: Vec<CategoryValue>,
    pub breakdown_chart: String,
    pub percentile_chart: String,
    pub histogram_chart: String,
    pub tail: Vec<TailRow>,
    pub operations: Vec<OperationRow>,
    pub findings: Vec<FindingRow>,
    pub gaps: Vec<GapRow>,
    pub slowest: Vec<TraceLink>,
    pub typical: Option<TraceLink>,
    pub versions: Vec<VersionRow>,
    pub compare_href: Option<String>,
    /// Its budgets and SLOs, from the alert evaluation.
    pub alerts: Vec<AlertBadge>,
    /// Regressions of this endpoint detected in the window, newest first.
    pub regressions: Vec<RegressionRow>,
}

/// Regression events the endpoint page lists.
const REGRESSIONS_SHOWN: usize = 10;

/// What `speedup_if_cpu_free` means for this endpoint, in words: Amdahl's law on measured CPU,
/// and where untraced time makes it a range, the range; never advice to profile CPU that
/// nobody measured.
fn speedup_sentence(summary: &EndpointSummaryDto) -> String {
    let (mean_ms, cpu_ms, io_ms) = (summary.mean_ms, summary.cpu_ms, summary.io_ms);
    let untraced_ms = summary.breakdown_ms.get("untraced").copied().unwrap_or(0.0);
    let speedup = summary.speedup_if_cpu_free;
    let rest = (mean_ms - cpu_ms).max(0.0);
    let measured = if cpu_ms > 0.0 {
        format!(
            "Measured CPU work is {} of the {} mean. If it cost nothing, a request would take \
             {}: {speedup:.2}× faster (Amdahl's law).",
            fmt_ms(cpu_ms),
            fmt_ms(mean_ms),
            fmt_ms(rest),
        )
    } else {
        "No CPU time was measured for this endpoint (no `cpu.time_ns` on its spans).".to_owned()
    };
    let untraced = if untraced_ms > 0.0 {
        format!(
            " {} is untraced: self time no span covers and nobody measured, so it may be CPU or \
             I/O. Were it all CPU and free, a request would be at most {:.2}× faster; add spans \
             there, or measure CPU, to know which.",
            fmt_ms(untraced_ms),
            summary.speedup_if_cpu_free_max
        )
    } else {
        String::new()
    };
    let advice = if speedup < 1.25 && summary.speedup_if_cpu_free_max < 1.25 {
        format!(
            " The rest is I/O ({}) and waiting, so faster code alone cannot fix this endpoint: \
             cut calls and round trips first.",
            fmt_ms(io_ms)
        )
    } else if speedup >= 2.0 {
        " Most of the time is measured on the CPU: profile the code first.".to_owned()
    } else if untraced_ms > 0.0 {
        String::new()
    } else {
        " CPU and I/O both matter here.".to_owned()
    };
    measured + &untraced + &advice
}

/// The speedup headline: one figure, or the honest range where untraced time could be CPU.
fn speedup_figure(summary: &EndpointSummaryDto) -> String {
    if summary.speedup_if_cpu_free_max > summary.speedup_if_cpu_free + 0.005 {
        format!(
            "{:.2}–{:.2}×",
            summary.speedup_if_cpu_free, summary.speedup_if_cpu_free_max
        )
    } else {
        format!("{:.2}×", summary.speedup_if_cpu_free)
    }
}

fn finding_kind(kind: &str) -> String {
    match kind {
        "duplicate_query" => "Duplicate query",
        "n_plus_one" => "N+1 query",
        "sequential_io" => "Sequential I/O",
        "slow_query" => "Slow query",
        "cpu_hotspot" => "CPU hot spot",
        "uninstrumented_wait" => "Uninstrumented wait",
        "untraced_time" => "Untraced time",
        other => other,
    }
    .to_owned()
}

/// `2024-05-01T14:05:30.123Z` as `05-01 14:05:30`.
fn short_start(start: &str) -> String {
    match (start.get(5..10), start.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}"),
        _ => start.to_owned(),
    }
}

fn trace_link(trace: &TraceSummaryDto) -> TraceLink {
    TraceLink {
        href: format!("/trace/{}", encode(&trace.trace_id)),
        short_id: trace.trace_id.chars().take(12).collect(),
        trace_id: trace.trace_id.clone(),
        start: short_start(&trace.start),
        duration: fmt_ms(trace.duration_ms),
        version: trace.version.clone(),
        error: trace.error,
        segments: charts::bar_segments(&breakdown_array(&trace.breakdown_ms), 0.0),
    }
}

fn build(detail: &EndpointDetailDto, chrome: Chrome, window_query: &str) -> EndpointPage {
    let summary = &detail.summary;
    let breakdown_points: Vec<BreakdownPoint> = detail
        .timeseries
        .iter()
        .map(|p| BreakdownPoint {
            t_ms: p.t,
            ms: breakdown_array(&p.breakdown_ms),
        })
        .collect();
    let latency_points: Vec<LatencyPoint> = detail
        .timeseries
        .iter()
        .map(|p| LatencyPoint {
            t_ms: p.t,
            p50_ms: p.p50_ms,
            p95_ms: p.p95_ms,
            p99_ms: p.p99_ms,
        })
        .collect();
    let bars: Vec<HistogramBar> = detail
        .latency_histogram
        .iter()
        .map(|b| HistogramBar {
            from_ms: b.from_ms,
            to_ms: b.to_ms,
            requests: b.requests,
        })
        .collect();
    let tail_sets = [
        ("Around the median", &detail.tail_breakdown_ms.p50),
        ("Slowest 5%", &detail.tail_breakdown_ms.slowest_5pct),
    ];
    let tail_max = tail_sets
        .iter()
        .map(|(_, b)| breakdown_array(b).iter().sum::<f64>())
        .fold(0.0f64, f64::max);
    let tail = tail_sets
        .iter()
        .map(|(label, breakdown)| {
            let values = breakdown_array(breakdown);
            TailRow {
                label,
                total: fmt_ms(values.iter().sum()),
                segments: charts::bar_segments(&values, tail_max),
                values: category_values(breakdown),
            }
        })
        .collect();
    let mut findings: Vec<_> = detail.findings.iter().collect();
    findings.sort_by(|a, b| b.potential_saving_ms.total_cmp(&a.potential_saving_ms));
    let versions: Vec<VersionRow> = detail
        .versions
        .iter()
        .map(|v| VersionRow {
            version: if v.version.is_empty() {
                "(none)".to_owned()
            } else {
                v.version.clone()
            },
            requests: fmt_count(v.requests),
            mean: fmt_ms(v.mean_ms),
            p50: fmt_ms(v.p50_ms),
            p95: fmt_ms(v.p95_ms),
            segments: charts::bar_segments(&breakdown_array(&v.breakdown_ms), 0.0),
        })
        .collect();
    let compare_href = match detail.versions.as_slice() {
        [.., baseline, candidate] if detail.versions.len() >= 2 => Some(format!(
            "/compare?service={}&endpoint={}&baseline={}&candidate={}&{window_query}",
            encode(&summary.service),
            encode(&summary.endpoint),
            encode(&format!("version:{}", baseline.version)),
            encode(&format!("version:{}", candidate.version)),
        )),
        _ => None,
    };
    EndpointPage {
        chrome,
        service: summary.service.clone(),
        service_href: format!("/?service={}&{window_query}", encode(&summary.service)),
        endpoint: summary.endpoint.clone(),
        folded: summary.folded,
        requests: fmt_count(summary.requests),
        rate: fmt_rate(summary.rate_per_sec),
        errors: fmt_count(summary.errors),
        error_pct: fmt_pct(if summary.requests > 0 {
            summary.errors as f64 / summary.requests as f64
        } else {
            0.0
        }),
        has_errors: summary.errors > 0,
        mean: fmt_ms(summary.mean_ms),
        p50: fmt_ms(summary.p50_ms),
        p90: fmt_ms(summary.p90_ms),
        p95: fmt_ms(summary.p95_ms),
        p99: fmt_ms(summary.p99_ms),
        db_calls: fmt_calls(summary.db_calls_per_request),
        bottleneck_category: summary.bottleneck.category,
        bottleneck: summary.bottleneck.summary.clone(),
        speedup: speedup_figure(summary),
        speedup_sentence: speedup_sentence(summary),
        segments: charts::bar_segments(&breakdown_array(&summary.breakdown_ms), 0.0),
        breakdown: category_values(&summary.breakdown_ms),
        breakdown_chart: charts::breakdown_area_chart(&breakdown_points),
        percentile_chart: charts::percentile_chart(&latency_points),
        histogram_chart: charts::latency_histogram(&bars),
        tail,
        operations: detail
            .operations
            .iter()
            .map(|op| OperationRow {
                category: op.category,
                name: op.name.clone(),
                calls: fmt_calls(op.calls_per_request),
                calls_sort: op.calls_per_request,
                mean: fmt_ms(op.mean_ms),
                mean_sort: op.mean_ms,
                critical: fmt_ms(op.critical_ms_per_request),
                critical_sort: op.critical_ms_per_request,
            })
            .collect(),
        findings: findings
            .iter()
            .enumerate()
            .map(|(idx, f)| FindingRow {
                rank: idx + 1,
                kind: finding_kind(f.kind),
                name: f.name.clone(),
                count: fmt_calls(f.count_per_request),
                saving: fmt_ms(f.potential_saving_ms),
                share: fmt_pct(f.request_share),
                summary: f.summary.clone(),
                location: f.location.as_ref().map(super::fmt_location),
            })
            .collect(),
        gaps: detail
            .gaps
            .iter()
            .map(|gap| GapRow {
                category: dominant_gap_category(gap),
                place: gap.place.clone(),
                mean: fmt_ms(gap.mean_ms),
                mean_sort: gap.mean_ms,
                share: fmt_pct(gap.request_share),
                split: gap_split(gap),
            })
            .collect(),
        slowest: detail.slowest_traces.iter().map(trace_link).collect(),
        typical: detail.typical_trace.as_ref().map(trace_link),
        versions,
        compare_href,
        alerts: Vec::new(),
        regressions: Vec::new(),
    }
}

/// `GET /endpoint`.
pub async fn endpoint_get(
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
) -> Result<EndpointPage, PageError> {
    let window = params.window()?;
    let (Some(service), Some(endpoint)) = (params.service(), params.endpoint()) else {
        return Err(ApiError::BadRequest("`service` and `endpoint` are required".into()).into());
    };
    let detail = query::endpoint_detail(&state.store, window, service, endpoint)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no requests of {service} {endpoint} in this window"
            ))
        })?;
    let window_query = params.window_query();
    let keep = vec![
        ("service", service.to_owned()),
        ("endpoint", endpoint.to_owned()),
    ];
    let chrome = Chrome::new("endpoint", "/endpoint", &params, Some(window), keep);
    let alerts = query::alerts(&state.store, &state.alerts).await?;
    let regressions = query::recent_regressions(
        &state.store,
        window,
        Some(service),
        Some(endpoint),
        REGRESSIONS_SHOWN,
    )
    .await?;
    let mut page = build(&detail, chrome, &window_query);
    page.alerts = endpoint_badges(&alerts, service, endpoint);
    page.regressions = regression_rows(&regressions, &window_query);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speedup_in_words() {
        let breakdown = |cpu: f64, untraced: f64| {
            [("db", 245.0), ("cpu", cpu), ("untraced", untraced)]
                .into_iter()
                .collect()
        };
        let summary = |cpu: f64, untraced: f64, speedup: f64, max: f64| EndpointSummaryDto {
            service: "auth".into(),
            endpoint: "POST /login".into(),
            requests: 10,
            errors: 0,
            rate_per_sec: 1.0,
            mean_ms: 300.0,
            p50_ms: 300.0,
            p90_ms: 300.0,
            p95_ms: 300.0,
            p99_ms: 300.0,
            breakdown_ms: breakdown(cpu, untraced),
            io_ms: 245.0,
            cpu_ms: cpu,
            db_calls_per_request: 10.0,
            speedup_if_cpu_free: speedup,
            speedup_if_cpu_free_max: max,
            bottleneck: crate::web::api::dto::BottleneckDto {
                category: "db",
                share: 0.8,
                summary: String::new(),
            },
            total_ms: 3000.0,
            folded: false,
        };
        let measured = summary(55.0, 0.0, 300.0 / 245.0, 300.0 / 245.0);
        let text = speedup_sentence(&measured);
        assert!(
            text.contains("Measured CPU work is 55.0 ms of the 300 ms mean"),
            "{text}"
        );
        assert!(text.contains("1.22× faster"), "{text}");
        assert!(text.contains("faster code alone cannot fix"), "{text}");
        assert_eq!(speedup_figure(&measured), "1.22×");

        let unmeasured = summary(0.0, 55.0, 1.0, 300.0 / 245.0);
        let text = speedup_sentence(&unmeasured);
        assert!(text.contains("No CPU time was measured"), "{text}");
        assert!(text.contains("55.0 ms is untraced"), "{text}");
        assert!(text.contains("at most 1.22× faster"), "{text}");
        assert!(!text.contains("profile"), "{text}");
        assert_eq!(speedup_figure(&unmeasured), "1.00–1.22×");
    }
}
