//! `/endpoint?service=..&endpoint=..`: one endpoint in depth: headline numbers, the breakdown and
//! latency over time, the distribution, the slow tail beside the median, operations, findings,
//! example traces and the split per version.
//!
//! Invariant: shows only what `read::endpoint::endpoint_detail` returns, rounded as the API
//! rounds it.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use collector::category::Category;

use super::alerts::{AlertBadge, endpoint_badges};
use super::{
    CategoryValue, Chrome, PageError, PageParams, RegressionRow, category_values, encode,
    fmt_calls, fmt_count, fmt_ms, fmt_pct, fmt_rate, regression_rows,
};
use crate::analysis::FindingKind;
use crate::analysis::aggregate::GapStats;
use crate::read;
use crate::read::endpoint::{EndpointDetail, RequestSummary};
use crate::read::endpoints::EndpointSummary;
use crate::time::rfc3339;
use crate::web::AppState;
use crate::web::charts::{self, BarSegment, BreakdownPoint, HistogramBar, LatencyPoint};
use crate::web::error::ApiError;
use crate::web::units::{ms, ms_of, ms_per_category, round2, round3};

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

/// The category a gap is mostly in, by its figures as shown.
fn dominant_gap_category(gap: &GapStats) -> &'static str {
    let shown = |category: Category| ms(gap.mean_ns[category.index()]);
    [
        ("untraced", shown(Category::Untraced)),
        ("wait", shown(Category::Wait)),
        ("cpu", shown(Category::Cpu)),
    ]
    .into_iter()
    .fold(("untraced", f64::MIN), |best, this| {
        if this.1 > best.1 { this } else { best }
    })
    .0
}

/// What a gap's time is, in words: untraced, or measured on and off the CPU.
fn gap_split(gap: &GapStats) -> String {
    let mut parts = Vec::new();
    for (label, category) in [
        ("on CPU", Category::Cpu),
        ("off CPU", Category::Wait),
        ("not measured", Category::Untraced),
    ] {
        let shown = ms(gap.mean_ns[category.index()]);
        if shown > 0.0 {
            parts.push(format!("{} {label}", fmt_ms(shown)));
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

/// The figures the speedup is told from, as the API shows them.
struct Speedup {
    mean_ms: f64,
    cpu_ms: f64,
    io_ms: f64,
    untraced_ms: f64,
    speedup: f64,
    speedup_max: f64,
}

impl Speedup {
    fn of(summary: &EndpointSummary) -> Self {
        let stats = &summary.stats;
        Self {
            mean_ms: ms(stats.mean_ns),
            cpu_ms: ms(stats.cpu_ns),
            io_ms: ms(stats.io_ns),
            untraced_ms: ms(stats.breakdown_mean_ns[Category::Untraced.index()]),
            speedup: round3(stats.speedup_if_cpu_free),
            speedup_max: round3(stats.speedup_if_cpu_free_max),
        }
    }
}

/// What `speedup_if_cpu_free` means for this endpoint, in words: Amdahl's law on measured CPU,
/// and where untraced time makes it a range, the range; never advice to profile CPU that
/// nobody measured.
fn speedup_sentence(figures: &Speedup) -> String {
    let (mean_ms, cpu_ms, io_ms) = (figures.mean_ms, figures.cpu_ms, figures.io_ms);
    let untraced_ms = figures.untraced_ms;
    let speedup = figures.speedup;
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
            figures.speedup_max
        )
    } else {
        String::new()
    };
    let advice = if speedup < 1.25 && figures.speedup_max < 1.25 {
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
fn speedup_figure(figures: &Speedup) -> String {
    if figures.speedup_max > figures.speedup + 0.005 {
        format!("{:.2}–{:.2}×", figures.speedup, figures.speedup_max)
    } else {
        format!("{:.2}×", figures.speedup)
    }
}

fn finding_kind(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::DuplicateQuery => "Duplicate query",
        FindingKind::NPlusOne => "N+1 query",
        FindingKind::SequentialIo => "Sequential I/O",
        FindingKind::SlowQuery => "Slow query",
        FindingKind::CpuHotspot => "CPU hot spot",
        FindingKind::UninstrumentedWait => "Uninstrumented wait",
        FindingKind::UntracedTime => "Untraced time",
    }
}

/// `2024-05-01T14:05:30.123Z` as `05-01 14:05:30`.
fn short_start(start: &str) -> String {
    match (start.get(5..10), start.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}"),
        _ => start.to_owned(),
    }
}

fn trace_link(summary: &RequestSummary) -> TraceLink {
    let request = &summary.request;
    let trace_id = request.trace_id.to_hex();
    TraceLink {
        href: format!("/trace/{}", encode(&trace_id)),
        short_id: trace_id.chars().take(12).collect(),
        trace_id,
        start: short_start(&rfc3339(request.start_unix_ns)),
        duration: fmt_ms(ms_of(request.duration_ns)),
        version: request.version.clone(),
        error: request.error,
        segments: charts::bar_segments(
            &ms_per_category(request.breakdown.0.map(|ns| ns as f64)),
            0.0,
        ),
    }
}

fn build(detail: &EndpointDetail, chrome: Chrome, window_query: &str) -> EndpointPage {
    let summary = &detail.summary;
    let stats = &summary.stats;
    let (service, endpoint) = (&summary.endpoint.service, &summary.endpoint.endpoint);
    let breakdown_points: Vec<BreakdownPoint> = detail
        .timeseries
        .iter()
        .map(|p| BreakdownPoint {
            t_ms: (p.minute * 60_000) as f64,
            ms: ms_per_category(p.stats.breakdown_mean_ns),
        })
        .collect();
    let latency_points: Vec<LatencyPoint> = detail
        .timeseries
        .iter()
        .map(|p| LatencyPoint {
            t_ms: (p.minute * 60_000) as f64,
            p50_ms: ms(p.stats.p50_ns),
            p95_ms: ms(p.stats.p95_ns),
            p99_ms: ms(p.stats.p99_ns),
        })
        .collect();
    let bars: Vec<HistogramBar> = detail
        .latency_histogram
        .iter()
        .map(|b| HistogramBar {
            from_ms: ms(b.from_ns),
            to_ms: ms(b.to_ns),
            requests: b.requests,
        })
        .collect();
    let tail_sets = [
        ("Around the median", ms_per_category(detail.tail.median_ns)),
        ("Slowest 5%", ms_per_category(detail.tail.slowest_5pct_ns)),
    ];
    let tail_max = tail_sets
        .iter()
        .map(|(_, values)| values.iter().sum::<f64>())
        .fold(0.0f64, f64::max);
    let tail = tail_sets
        .iter()
        .map(|(label, values)| TailRow {
            label,
            total: fmt_ms(values.iter().sum()),
            segments: charts::bar_segments(values, tail_max),
            values: category_values(*values),
        })
        .collect();
    let mut findings: Vec<_> = detail.findings.iter().collect();
    findings.sort_by(|a, b| ms(b.potential_saving_ns).total_cmp(&ms(a.potential_saving_ns)));
    let versions: Vec<VersionRow> = detail
        .versions
        .iter()
        .map(|v| VersionRow {
            version: if v.version.is_empty() {
                "(none)".to_owned()
            } else {
                v.version.clone()
            },
            requests: fmt_count(v.stats.requests),
            mean: fmt_ms(ms(v.stats.mean_ns)),
            p50: fmt_ms(ms(v.stats.p50_ns)),
            p95: fmt_ms(ms(v.stats.p95_ns)),
            segments: charts::bar_segments(&ms_per_category(v.stats.breakdown_mean_ns), 0.0),
        })
        .collect();
    let compare_href = match detail.versions.as_slice() {
        [.., baseline, candidate] if detail.versions.len() >= 2 => Some(format!(
            "/compare?service={}&endpoint={}&baseline={}&candidate={}&{window_query}",
            encode(service),
            encode(endpoint),
            encode(&format!("version:{}", baseline.version)),
            encode(&format!("version:{}", candidate.version)),
        )),
        _ => None,
    };
    let breakdown = ms_per_category(stats.breakdown_mean_ns);
    let speedup = Speedup::of(summary);
    EndpointPage {
        chrome,
        service: service.clone(),
        service_href: format!("/?service={}&{window_query}", encode(service)),
        endpoint: endpoint.clone(),
        folded: summary.folded(),
        requests: fmt_count(stats.requests),
        rate: fmt_rate(summary.rate_per_sec()),
        errors: fmt_count(stats.errors),
        error_pct: fmt_pct(if stats.requests > 0 {
            stats.errors as f64 / stats.requests as f64
        } else {
            0.0
        }),
        has_errors: stats.errors > 0,
        mean: fmt_ms(ms(stats.mean_ns)),
        p50: fmt_ms(ms(stats.p50_ns)),
        p90: fmt_ms(ms(stats.p90_ns)),
        p95: fmt_ms(ms(stats.p95_ns)),
        p99: fmt_ms(ms(stats.p99_ns)),
        db_calls: fmt_calls(round2(stats.db_calls_per_request)),
        bottleneck_category: stats.bottleneck.as_str(),
        bottleneck: stats.bottleneck_summary.clone(),
        speedup: speedup_figure(&speedup),
        speedup_sentence: speedup_sentence(&speedup),
        segments: charts::bar_segments(&breakdown, 0.0),
        breakdown: category_values(breakdown),
        breakdown_chart: charts::breakdown_area_chart(&breakdown_points),
        percentile_chart: charts::percentile_chart(&latency_points),
        histogram_chart: charts::latency_histogram(&bars),
        tail,
        operations: detail
            .operations
            .iter()
            .map(|op| OperationRow {
                category: op.category.as_str(),
                name: op.name.clone(),
                calls: fmt_calls(round2(op.calls_per_request)),
                calls_sort: round2(op.calls_per_request),
                mean: fmt_ms(ms(op.mean_ns)),
                mean_sort: ms(op.mean_ns),
                critical: fmt_ms(ms(op.critical_ns_per_request)),
                critical_sort: ms(op.critical_ns_per_request),
            })
            .collect(),
        findings: findings
            .iter()
            .enumerate()
            .map(|(idx, f)| FindingRow {
                rank: idx + 1,
                kind: finding_kind(f.kind).to_owned(),
                name: f.name.clone(),
                count: fmt_calls(round2(f.count_per_request)),
                saving: fmt_ms(ms(f.potential_saving_ns)),
                share: fmt_pct(round3(f.request_share)),
                summary: f.summary.clone(),
                location: f.location.as_ref().map(super::fmt_location),
            })
            .collect(),
        gaps: detail
            .gaps
            .iter()
            .map(|gap| GapRow {
                category: dominant_gap_category(gap),
                place: gap.place.describe(),
                mean: fmt_ms(ms(gap.total_mean_ns())),
                mean_sort: ms(gap.total_mean_ns()),
                share: fmt_pct(round3(gap.request_share)),
                split: gap_split(gap),
            })
            .collect(),
        slowest: detail.slowest.iter().map(trace_link).collect(),
        typical: detail.typical.as_ref().map(trace_link),
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
    let detail = read::endpoint::endpoint_detail(&state.store, window, service, endpoint)
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
    let alerts = read::alerts::alerts(&state.store).await?;
    let regressions = read::regressions::recent_regressions(
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
        let summary = |cpu: f64, untraced: f64, speedup: f64, max: f64| Speedup {
            mean_ms: 300.0,
            cpu_ms: cpu,
            io_ms: 245.0,
            untraced_ms: untraced,
            speedup: round3(speedup),
            speedup_max: round3(max),
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
