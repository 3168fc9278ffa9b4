//! `/compare?service=..&endpoint=..&baseline=..&candidate=..`: two selections of traffic side by
//! side. For one endpoint: the verdict in one sentence with the confidence interval of the mean
//! delta, the headline numbers, both breakdowns, both latency distributions in one chart, the
//! deltas by category and by operation, and the changes that explain them. Without an endpoint:
//! every endpoint of the service, regressions first, each linking to its own comparison.
//!
//! Invariant: shows only what `read::compare` and `read::endpoints` return; a bad selector or an
//! empty side is said on the page, with the form.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use collector::category::Category;

use super::{
    CategoryValue, Chrome, PageError, PageParams, category_values, encode, endpoint_href,
    fmt_calls, fmt_count, fmt_ms, fmt_pct,
};
use crate::analysis::compare::{OperationChangeKind, Verdict as Outcome};
use crate::read;
use crate::read::compare::{
    CompareAnswer, CompareMissing, EndpointCompare, EndpointComparison, ServiceCompare, Source,
};
use crate::time::rfc3339;
use crate::web::AppState;
use crate::web::charts::{self, BarSegment, CompareBar};
use crate::web::selector;
use crate::web::units::{ms, ms_per_category, round2};

/// The page's parameters: the window and filters of every page, and the two selectors.
#[derive(Debug, Default, Deserialize)]
pub struct CompareParams {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub service: Option<String>,
    pub endpoint: Option<String>,
    pub baseline: Option<String>,
    pub candidate: Option<String>,
}

impl CompareParams {
    fn page(&self) -> PageParams {
        PageParams {
            range: self.range.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            service: self.service.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

fn trimmed(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `+300 ms`, `−12.0 ms`, `±0 ms`.
pub fn fmt_delta_ms(ms: f64) -> String {
    if ms.abs() < 0.0005 {
        "±0 ms".to_owned()
    } else if ms > 0.0 {
        format!("+{}", fmt_ms(ms))
    } else {
        format!("−{}", fmt_ms(-ms))
    }
}

/// `up` (slower, more), `down` or `flat`: the CSS class of a delta.
pub fn delta_class(delta: f64, noise: f64) -> &'static str {
    if delta > noise {
        "up"
    } else if delta < -noise {
        "down"
    } else {
        "flat"
    }
}

/// A change smaller than this is shown muted, not as better or worse: half a millisecond, or
/// 2% of the baseline value when that is more.
fn noise_ms(baseline_ms: f64) -> f64 {
    (baseline_ms.abs() * 0.02).max(0.5)
}

/// The link to one endpoint's comparison.
pub fn compare_href(
    service: &str,
    endpoint: Option<&str>,
    baseline: &str,
    candidate: &str,
    window_query: &str,
) -> String {
    let endpoint = endpoint
        .map(|e| format!("endpoint={}&", encode(e)))
        .unwrap_or_default();
    format!(
        "/compare?service={}&{endpoint}baseline={}&candidate={}&{window_query}",
        encode(service),
        encode(baseline),
        encode(candidate)
    )
}

pub struct Choice {
    pub value: String,
    pub selected: bool,
}

/// A version seen in the window, for the selector suggestions.
pub struct VersionChip {
    pub version: String,
    /// `version:1.1`; empty for traffic without a version, which no selector names.
    pub selector: String,
    pub requests: String,
    pub first_seen: String,
}

/// A one-click comparison of two consecutive versions.
pub struct VersionPair {
    pub label: String,
    pub href: String,
}

/// A headline metric on both sides.
pub struct MetricRow {
    pub name: &'static str,
    pub baseline: String,
    pub candidate: String,
    pub delta: String,
    pub class: &'static str,
}

/// One side's breakdown bar.
pub struct SideBar {
    pub role: &'static str,
    pub selector: String,
    pub total: String,
    pub segments: Vec<BarSegment>,
    pub values: Vec<CategoryValue>,
}

pub struct CategoryRow {
    pub category: &'static str,
    pub baseline: String,
    pub candidate: String,
    pub delta: String,
    pub class: &'static str,
}

pub struct ChangeRow {
    pub category: &'static str,
    pub name: String,
    pub delta: String,
    pub class: &'static str,
    pub summary: String,
}

pub struct OperationRow {
    pub change: &'static str,
    pub category: &'static str,
    pub name: String,
    pub calls: String,
    pub mean: String,
    pub critical_delta: String,
    pub class: &'static str,
    pub critical_sort: f64,
}

/// The verdict of a comparison in words and classes.
pub struct Verdict {
    pub verdict: &'static str,
    pub significant: bool,
    pub mean_delta: String,
    pub class: &'static str,
    /// `95% CI +290 ms … +310 ms`, or why there is none.
    pub interval: String,
    /// `p95 300 ms → 610 ms`, when the thresholds call it a regression.
    pub regression: Option<String>,
}

fn verdict(compared: &EndpointComparison) -> Verdict {
    let cmp = &compared.comparison;
    Verdict {
        verdict: compared.verdict.as_str(),
        significant: cmp.significant(),
        mean_delta: fmt_delta_ms(ms(cmp.mean_delta_ns())),
        class: match compared.verdict {
            Outcome::Slower => "up",
            Outcome::Faster => "down",
            Outcome::Unchanged => "flat",
        },
        interval: match &cmp.mean_delta_ci {
            Some(ci) => format!(
                "95% CI {} … {}",
                fmt_delta_ms(ms(ci.low_ns)),
                fmt_delta_ms(ms(ci.high_ns))
            ),
            None => "no confidence interval (a side has fewer than two requests)".to_owned(),
        },
        regression: compared.regression.as_ref().map(|r| {
            format!(
                "{} {} → {}",
                r.metric.as_str(),
                fmt_ms(ms(r.baseline_ns)),
                fmt_ms(ms(r.candidate_ns))
            )
        }),
    }
}

/// One endpoint's comparison, display-ready.
pub struct EndpointView {
    pub endpoint: String,
    pub endpoint_href: String,
    pub summary: String,
    pub verdict: Verdict,
    pub from_requests: bool,
    pub metrics: Vec<MetricRow>,
    pub sides: Vec<SideBar>,
    pub histogram_chart: String,
    pub categories: Vec<CategoryRow>,
    pub changes: Vec<ChangeRow>,
    pub operations: Vec<OperationRow>,
}

fn metric(name: &'static str, before: f64, after: f64, fmt: fn(f64) -> String) -> MetricRow {
    let delta = after - before;
    let noise = match name {
        "DB calls / request" => (before.abs() * 0.02).max(0.05),
        "errors" => 0.001,
        _ => noise_ms(before),
    };
    MetricRow {
        name,
        baseline: fmt(before),
        candidate: fmt(after),
        delta: if name.ends_with("/ request") {
            if delta.abs() < 0.05 {
                "±0".to_owned()
            } else {
                format!("{delta:+.1}")
            }
        } else if name == "errors" {
            format!("{:+.1} pts", delta * 100.0)
        } else {
            fmt_delta_ms(delta)
        },
        class: delta_class(delta, noise),
    }
}

fn error_share(requests: u64, errors: u64) -> f64 {
    if requests > 0 {
        errors as f64 / requests as f64
    } else {
        0.0
    }
}

fn endpoint_view(view: &EndpointCompare, window_query: &str) -> EndpointView {
    let compared = &view.comparison;
    let cmp = &compared.comparison;
    let (before, after) = (&compared.baseline.stats, &compared.candidate.stats);
    let endpoint = &compared.baseline.endpoint;
    let metrics = vec![
        MetricRow {
            name: "requests",
            baseline: fmt_count(before.requests),
            candidate: fmt_count(after.requests),
            delta: String::new(),
            class: "flat",
        },
        metric("mean", ms(before.mean_ns), ms(after.mean_ns), fmt_ms),
        metric("p50", ms(before.p50_ns), ms(after.p50_ns), fmt_ms),
        metric("p95", ms(before.p95_ns), ms(after.p95_ns), fmt_ms),
        metric("p99", ms(before.p99_ns), ms(after.p99_ns), fmt_ms),
        metric(
            "DB calls / request",
            round2(before.db_calls_per_request),
            round2(after.db_calls_per_request),
            fmt_calls,
        ),
        metric(
            "errors",
            error_share(before.requests, before.errors),
            error_share(after.requests, after.errors),
            fmt_pct,
        ),
    ];
    let (before_ms, after_ms) = (
        ms_per_category(before.breakdown_mean_ns),
        ms_per_category(after.breakdown_mean_ns),
    );
    let scale = before_ms
        .iter()
        .sum::<f64>()
        .max(after_ms.iter().sum::<f64>());
    let sides = [
        ("Baseline", &view.baseline_selector, before_ms),
        ("Candidate", &view.candidate_selector, after_ms),
    ]
    .into_iter()
    .map(|(role, selector, values)| SideBar {
        role,
        selector: selector.clone(),
        total: fmt_ms(values.iter().sum()),
        segments: charts::bar_segments(&values, scale),
        values: category_values(values),
    })
    .collect();
    let categories = Category::ALL
        .iter()
        .map(|category| {
            let (b, a) = (before_ms[category.index()], after_ms[category.index()]);
            let delta = ms(cmp.category_delta_ns[category.index()]);
            CategoryRow {
                category: category.as_str(),
                baseline: fmt_ms(b),
                candidate: fmt_ms(a),
                delta: fmt_delta_ms(delta),
                class: delta_class(delta, noise_ms(b)),
            }
        })
        .collect();
    let bars: Vec<CompareBar> = view
        .latency_histogram
        .iter()
        .map(|b| CompareBar {
            from_ms: ms(b.from_ns),
            to_ms: ms(b.to_ns),
            baseline: b.baseline_requests,
            candidate: b.candidate_requests,
        })
        .collect();
    let mut operations: Vec<OperationRow> = cmp
        .operations
        .iter()
        .map(|op| {
            let (calls_before, calls_after) = (
                fmt_calls(round2(op.baseline_calls_per_request)),
                fmt_calls(round2(op.candidate_calls_per_request)),
            );
            let (mean_before, mean_after) = (ms(op.baseline_mean_ns), ms(op.candidate_mean_ns));
            let critical_delta = ms(op.critical_delta_ns);
            OperationRow {
                change: op.kind.as_str(),
                category: op.category.as_str(),
                name: op.name.clone(),
                calls: match op.kind {
                    OperationChangeKind::Appeared => format!("new → {calls_after}"),
                    OperationChangeKind::Vanished => format!("{calls_before} → gone"),
                    OperationChangeKind::Changed => format!("{calls_before} → {calls_after}"),
                },
                mean: match op.kind {
                    OperationChangeKind::Appeared => fmt_ms(mean_after),
                    OperationChangeKind::Vanished => fmt_ms(mean_before),
                    OperationChangeKind::Changed => {
                        format!("{} → {}", fmt_ms(mean_before), fmt_ms(mean_after))
                    }
                },
                critical_delta: fmt_delta_ms(critical_delta),
                class: delta_class(critical_delta, noise_ms(mean_before)),
                critical_sort: critical_delta,
            }
        })
        .collect();
    operations.sort_by(|a, b| b.critical_sort.abs().total_cmp(&a.critical_sort.abs()));
    EndpointView {
        endpoint: endpoint.endpoint.clone(),
        endpoint_href: endpoint_href(&endpoint.service, &endpoint.endpoint, window_query),
        summary: cmp.summary.clone(),
        verdict: verdict(compared),
        from_requests: view.source == Source::Requests,
        metrics,
        sides,
        histogram_chart: charts::compare_histogram(
            &bars,
            &view.baseline_selector,
            &view.candidate_selector,
        ),
        categories,
        changes: cmp
            .top_changes
            .iter()
            .map(|change| ChangeRow {
                category: change.category.as_str(),
                name: change.name.clone(),
                delta: fmt_delta_ms(ms(change.delta_ns)),
                class: delta_class(ms(change.delta_ns), 0.05),
                summary: change.summary.clone(),
            })
            .collect(),
        operations,
    }
}

/// One endpoint's row of the service-wide view.
pub struct ServiceRow {
    pub endpoint: String,
    pub compare_href: String,
    pub verdict: Verdict,
    pub requests: String,
    pub mean: String,
    pub p95: String,
    pub p95_delta: String,
    pub p95_class: &'static str,
    pub summary: String,
    pub segments_before: Vec<BarSegment>,
    pub segments_after: Vec<BarSegment>,
}

pub struct ServiceView {
    pub rows: Vec<ServiceRow>,
    pub n_slower: usize,
    pub only_in_baseline: Vec<String>,
    pub only_in_candidate: Vec<String>,
    pub from_requests: bool,
}

fn service_view(view: &ServiceCompare, window_query: &str) -> ServiceView {
    let rows: Vec<ServiceRow> = view
        .endpoints
        .iter()
        .map(|compared| {
            let (before, after) = (&compared.baseline.stats, &compared.candidate.stats);
            let endpoint = &compared.baseline.endpoint.endpoint;
            let p95_delta = ms(compared.comparison.p95_delta_ns());
            let (before_mean, after_mean) = (ms(before.mean_ns), ms(after.mean_ns));
            let (before_p95, after_p95) = (ms(before.p95_ns), ms(after.p95_ns));
            let scale = before_mean.max(after_mean);
            ServiceRow {
                endpoint: endpoint.clone(),
                compare_href: compare_href(
                    &view.service,
                    Some(endpoint),
                    &view.baseline_selector,
                    &view.candidate_selector,
                    window_query,
                ),
                verdict: verdict(compared),
                requests: format!(
                    "{} → {}",
                    fmt_count(before.requests),
                    fmt_count(after.requests)
                ),
                mean: format!("{} → {}", fmt_ms(before_mean), fmt_ms(after_mean)),
                p95: format!("{} → {}", fmt_ms(before_p95), fmt_ms(after_p95)),
                p95_delta: fmt_delta_ms(p95_delta),
                p95_class: delta_class(p95_delta, noise_ms(before_p95)),
                summary: compared.comparison.summary.clone(),
                segments_before: charts::bar_segments(
                    &ms_per_category(before.breakdown_mean_ns),
                    scale,
                ),
                segments_after: charts::bar_segments(
                    &ms_per_category(after.breakdown_mean_ns),
                    scale,
                ),
            }
        })
        .collect();
    ServiceView {
        n_slower: view
            .endpoints
            .iter()
            .filter(|e| e.verdict == Outcome::Slower)
            .count(),
        rows,
        only_in_baseline: view.only_in_baseline.clone(),
        only_in_candidate: view.only_in_candidate.clone(),
        from_requests: view.source == Source::Requests,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "compare.html")]
pub struct ComparePage {
    pub chrome: Chrome,
    pub services: Vec<Choice>,
    pub endpoints: Vec<Choice>,
    pub service: Option<String>,
    pub endpoint: Option<String>,
    pub baseline: String,
    pub candidate: String,
    pub versions: Vec<VersionChip>,
    pub pairs: Vec<VersionPair>,
    /// Why there is no comparison to show (bad selector, empty side, too few versions).
    pub problem: Option<String>,
    pub one: Option<EndpointView>,
    pub all: Option<ServiceView>,
    /// The service-wide comparison of the same selectors, from an endpoint's view.
    pub service_href: Option<String>,
    /// The overview of the service and the endpoint's page, for the breadcrumbs.
    pub service_page_href: String,
    pub endpoint_page_href: String,
}

/// `GET /compare`.
pub async fn compare_get(
    State(state): State<AppState>,
    Query(params): Query<CompareParams>,
) -> Result<Response, PageError> {
    let page_params = params.page();
    let window = page_params.window()?;
    let window_query = page_params.window_query();
    let service = page_params.service().map(str::to_owned);
    let endpoint = page_params.endpoint().map(str::to_owned);
    let services = read::endpoints::services(&state.store, window).await?;
    let (endpoints, versions) = match &service {
        Some(service) => (
            read::endpoints::endpoints(&state.store, window, Some(service))
                .await?
                .endpoints,
            read::endpoints::versions(&state.store, window, service, endpoint.as_deref()).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    // Without selectors, the last two versions seen: "what did the latest deploy change?"
    // (Traffic without a `service.version` cannot be selected by version.)
    let named: Vec<&str> = versions
        .iter()
        .map(|v| v.version.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    let default_side = |back: usize| {
        named
            .len()
            .checked_sub(back)
            .filter(|_| named.len() >= 2)
            .map(|idx| format!("version:{}", named[idx]))
    };
    let baseline = trimmed(&params.baseline).or_else(|| default_side(2));
    let candidate = trimmed(&params.candidate).or_else(|| default_side(1));

    let mut status = StatusCode::OK;
    let mut problem = None;
    let (mut one, mut all) = (None, None);
    match (&service, &baseline, &candidate) {
        (None, _, _) => {}
        (Some(service), Some(baseline_text), Some(candidate_text)) => {
            let parsed = selector::parse(baseline_text)
                .and_then(|b| Ok((b, selector::parse(candidate_text)?)));
            match parsed {
                Err(err) => {
                    status = StatusCode::BAD_REQUEST;
                    problem = Some(err.to_string());
                }
                Ok((baseline_sel, candidate_sel)) => {
                    let answer = read::compare::compare(
                        &state.store,
                        window,
                        service,
                        endpoint.as_deref(),
                        &baseline_sel,
                        &candidate_sel,
                        &state.regression_thresholds,
                        &state.reads,
                    )
                    .await?;
                    let what = match &endpoint {
                        Some(endpoint) => format!("{service} {endpoint}"),
                        None => service.clone(),
                    };
                    match answer {
                        Ok(CompareAnswer::Endpoint(view)) => {
                            one = Some(endpoint_view(&view, &window_query));
                        }
                        Ok(CompareAnswer::Service(view)) => {
                            all = Some(service_view(&view, &window_query));
                        }
                        Err(CompareMissing::Unknown) => {
                            status = StatusCode::NOT_FOUND;
                            problem = Some(format!("no endpoint {what}"));
                        }
                        Err(CompareMissing::NoData(side)) => {
                            status = StatusCode::NOT_FOUND;
                            problem = Some(format!(
                                "no requests of {what} match the {side} selector in this window"
                            ));
                        }
                    }
                }
            }
        }
        (Some(service), _, _) => {
            problem = Some(format!(
                "{service} has fewer than two versions in this window: give both selectors, \
                 e.g. window:FROM..TO or host.name:web-1, or pick a longer window"
            ));
        }
    }

    let mut keep: Vec<(&'static str, String)> = Vec::new();
    for (name, value) in [
        ("service", &service),
        ("endpoint", &endpoint),
        ("baseline", &baseline),
        ("candidate", &candidate),
    ] {
        if let Some(value) = value {
            keep.push((name, value.clone()));
        }
    }
    let chrome = Chrome::new("compare", "/compare", &page_params, Some(window), keep);
    let pairs = match &service {
        Some(service) => named
            .windows(2)
            .map(|pair| VersionPair {
                label: format!("{} → {}", pair[0], pair[1]),
                href: compare_href(
                    service,
                    endpoint.as_deref(),
                    &format!("version:{}", pair[0]),
                    &format!("version:{}", pair[1]),
                    &window_query,
                ),
            })
            .collect(),
        None => Vec::new(),
    };
    let service_href = match (&service, &endpoint, &baseline, &candidate, &one) {
        (Some(service), Some(_), Some(b), Some(c), Some(_)) => {
            Some(compare_href(service, None, b, c, &window_query))
        }
        _ => None,
    };
    let service_page_href = format!(
        "/?service={}&{window_query}",
        encode(service.as_deref().unwrap_or_default())
    );
    let endpoint_page_href = endpoint_href(
        service.as_deref().unwrap_or_default(),
        endpoint.as_deref().unwrap_or_default(),
        &window_query,
    );
    let page = ComparePage {
        chrome,
        service_page_href,
        endpoint_page_href,
        services: services
            .services
            .iter()
            .map(|s| Choice {
                selected: service.as_deref() == Some(s.name.as_str()),
                value: s.name.clone(),
            })
            .collect(),
        endpoints: endpoints
            .iter()
            .map(|e| Choice {
                selected: endpoint.as_deref() == Some(e.endpoint.endpoint.as_str()),
                value: e.endpoint.endpoint.clone(),
            })
            .collect(),
        versions: versions
            .iter()
            .map(|v| VersionChip {
                selector: if v.version.is_empty() {
                    String::new()
                } else {
                    format!("version:{}", v.version)
                },
                version: if v.version.is_empty() {
                    "(none)".to_owned()
                } else {
                    v.version.clone()
                },
                requests: fmt_count(v.requests),
                first_seen: rfc3339(v.first_seen_unix_ns)
                    .get(5..16)
                    .unwrap_or_default()
                    .replace('T', " "),
            })
            .collect(),
        pairs,
        service,
        endpoint,
        baseline: baseline.unwrap_or_default(),
        candidate: candidate.unwrap_or_default(),
        problem,
        one,
        all,
        service_href,
    };
    Ok((status, page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_have_a_sign() {
        assert_eq!(fmt_delta_ms(300.0), "+300 ms");
        assert_eq!(fmt_delta_ms(-12.0), "−12.0 ms");
        assert_eq!(fmt_delta_ms(0.0), "±0 ms");
        assert_eq!(delta_class(5.0, 1.0), "up");
        assert_eq!(delta_class(-5.0, 1.0), "down");
        assert_eq!(delta_class(0.5, 1.0), "flat");
    }
}
