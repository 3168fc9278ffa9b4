//! `/compare?service=..&endpoint=..&baseline=..&candidate=..`: two selections of traffic side by
//! side. For one endpoint: the verdict in one sentence with the confidence interval of the mean
//! delta, the headline numbers, both breakdowns, both latency distributions in one chart, the
//! deltas by category and by operation, and the changes that explain them. Without an endpoint:
//! every endpoint of the service, regressions first, each linking to its own comparison.
//!
//! Invariant: shows only what `query::compare`, `query::versions`, `query::services` and
//! `query::endpoints` return; a bad selector or an empty side is said on the page, with the form.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{
    CategoryValue, Chrome, PageError, PageParams, breakdown_array, category_values, encode,
    endpoint_href, fmt_calls, fmt_count, fmt_ms, fmt_pct,
};
use crate::web::AppState;
use crate::web::api::dto::{CompareDto, EndpointComparisonDto, ServiceCompareDto};
use crate::web::charts::{self, BarSegment, CompareBar};
use crate::web::query::{self, CompareAnswer, CompareMissing};
use crate::web::selector;

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

fn verdict(cmp: &EndpointComparisonDto) -> Verdict {
    let mean_delta = cmp.delta_ms.get("total").copied().unwrap_or(0.0);
    Verdict {
        verdict: cmp.verdict,
        significant: cmp.significant,
        mean_delta: fmt_delta_ms(mean_delta),
        class: match cmp.verdict {
            "slower" => "up",
            "faster" => "down",
            _ => "flat",
        },
        interval: match &cmp.mean_delta_ci_ms {
            Some(ci) => format!(
                "95% CI {} … {}",
                fmt_delta_ms(ci.low),
                fmt_delta_ms(ci.high)
            ),
            None => "no confidence interval (a side has fewer than two requests)".to_owned(),
        },
        regression: cmp.regression.as_ref().map(|r| {
            format!(
                "{} {} → {}",
                r.metric,
                fmt_ms(r.baseline_ms),
                fmt_ms(r.candidate_ms)
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

fn endpoint_view(dto: &CompareDto, window_query: &str) -> EndpointView {
    let cmp = &dto.comparison;
    let (before, after) = (&cmp.baseline, &cmp.candidate);
    let metrics = vec![
        MetricRow {
            name: "requests",
            baseline: fmt_count(before.requests),
            candidate: fmt_count(after.requests),
            delta: String::new(),
            class: "flat",
        },
        metric("mean", before.mean_ms, after.mean_ms, fmt_ms),
        metric("p50", before.p50_ms, after.p50_ms, fmt_ms),
        metric("p95", before.p95_ms, after.p95_ms, fmt_ms),
        metric("p99", before.p99_ms, after.p99_ms, fmt_ms),
        metric(
            "DB calls / request",
            before.db_calls_per_request,
            after.db_calls_per_request,
            fmt_calls,
        ),
        metric(
            "errors",
            error_share(before.requests, before.errors),
            error_share(after.requests, after.errors),
            fmt_pct,
        ),
    ];
    let scale = breakdown_array(&before.breakdown_ms)
        .iter()
        .sum::<f64>()
        .max(breakdown_array(&after.breakdown_ms).iter().sum::<f64>());
    let sides = [
        ("Baseline", &dto.baseline_selector, before),
        ("Candidate", &dto.candidate_selector, after),
    ]
    .into_iter()
    .map(|(role, selector, summary)| {
        let values = breakdown_array(&summary.breakdown_ms);
        SideBar {
            role,
            selector: selector.clone(),
            total: fmt_ms(values.iter().sum()),
            segments: charts::bar_segments(&values, scale),
            values: category_values(&summary.breakdown_ms),
        }
    })
    .collect();
    let categories = collector::category::Category::ALL
        .iter()
        .map(|category| {
            let name = category.as_str();
            let b = before.breakdown_ms.get(name).copied().unwrap_or(0.0);
            let a = after.breakdown_ms.get(name).copied().unwrap_or(0.0);
            let delta = cmp.delta_ms.get(name).copied().unwrap_or(a - b);
            CategoryRow {
                category: name,
                baseline: fmt_ms(b),
                candidate: fmt_ms(a),
                delta: fmt_delta_ms(delta),
                class: delta_class(delta, noise_ms(b)),
            }
        })
        .collect();
    let bars: Vec<CompareBar> = dto
        .latency_histogram
        .iter()
        .map(|b| CompareBar {
            from_ms: b.from_ms,
            to_ms: b.to_ms,
            baseline: b.baseline_requests,
            candidate: b.candidate_requests,
        })
        .collect();
    let mut operations: Vec<OperationRow> = cmp
        .operations
        .iter()
        .map(|op| OperationRow {
            change: op.change,
            category: op.category,
            name: op.name.clone(),
            calls: match op.change {
                "appeared" => format!("new → {}", fmt_calls(op.candidate_calls_per_request)),
                "vanished" => format!("{} → gone", fmt_calls(op.baseline_calls_per_request)),
                _ => format!(
                    "{} → {}",
                    fmt_calls(op.baseline_calls_per_request),
                    fmt_calls(op.candidate_calls_per_request)
                ),
            },
            mean: match op.change {
                "appeared" => fmt_ms(op.candidate_mean_ms),
                "vanished" => fmt_ms(op.baseline_mean_ms),
                _ => format!(
                    "{} → {}",
                    fmt_ms(op.baseline_mean_ms),
                    fmt_ms(op.candidate_mean_ms)
                ),
            },
            critical_delta: fmt_delta_ms(op.critical_delta_ms),
            class: delta_class(op.critical_delta_ms, noise_ms(op.baseline_mean_ms)),
            critical_sort: op.critical_delta_ms,
        })
        .collect();
    operations.sort_by(|a, b| b.critical_sort.abs().total_cmp(&a.critical_sort.abs()));
    EndpointView {
        endpoint: before.endpoint.clone(),
        endpoint_href: endpoint_href(&before.service, &before.endpoint, window_query),
        summary: cmp.summary.clone(),
        verdict: verdict(cmp),
        from_requests: dto.source == "requests",
        metrics,
        sides,
        histogram_chart: charts::compare_histogram(
            &bars,
            &dto.baseline_selector,
            &dto.candidate_selector,
        ),
        categories,
        changes: cmp
            .top_changes
            .iter()
            .map(|change| ChangeRow {
                category: change.category,
                name: change.name.clone(),
                delta: fmt_delta_ms(change.delta_ms),
                class: delta_class(change.delta_ms, 0.05),
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

fn service_view(dto: &ServiceCompareDto, window_query: &str) -> ServiceView {
    let rows: Vec<ServiceRow> = dto
        .endpoints
        .iter()
        .map(|cmp| {
            let (before, after) = (&cmp.baseline, &cmp.candidate);
            let p95_delta = cmp.delta_ms.get("p95").copied().unwrap_or(0.0);
            let scale = before.mean_ms.max(after.mean_ms);
            ServiceRow {
                endpoint: before.endpoint.clone(),
                compare_href: compare_href(
                    &dto.service,
                    Some(&before.endpoint),
                    &dto.baseline_selector,
                    &dto.candidate_selector,
                    window_query,
                ),
                verdict: verdict(cmp),
                requests: format!(
                    "{} → {}",
                    fmt_count(before.requests),
                    fmt_count(after.requests)
                ),
                mean: format!("{} → {}", fmt_ms(before.mean_ms), fmt_ms(after.mean_ms)),
                p95: format!("{} → {}", fmt_ms(before.p95_ms), fmt_ms(after.p95_ms)),
                p95_delta: fmt_delta_ms(p95_delta),
                p95_class: delta_class(p95_delta, noise_ms(before.p95_ms)),
                summary: cmp.summary.clone(),
                segments_before: charts::bar_segments(
                    &breakdown_array(&before.breakdown_ms),
                    scale,
                ),
                segments_after: charts::bar_segments(&breakdown_array(&after.breakdown_ms), scale),
            }
        })
        .collect();
    ServiceView {
        n_slower: dto
            .endpoints
            .iter()
            .filter(|e| e.verdict == "slower")
            .count(),
        rows,
        only_in_baseline: dto.only_in_baseline.clone(),
        only_in_candidate: dto.only_in_candidate.clone(),
        from_requests: dto.source == "requests",
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
    let services = query::services(&state.store, window).await?;
    let (endpoints, versions) = match &service {
        Some(service) => (
            query::endpoints(&state.store, window, Some(service))
                .await?
                .endpoints,
            query::versions(&state.store, window, service, endpoint.as_deref())
                .await?
                .versions,
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
                    let answer = query::compare(
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
                        Ok(CompareAnswer::Endpoint(dto)) => {
                            one = Some(endpoint_view(&dto, &window_query));
                        }
                        Ok(CompareAnswer::Service(dto)) => {
                            all = Some(service_view(&dto, &window_query));
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
                selected: endpoint.as_deref() == Some(e.endpoint.as_str()),
                value: e.endpoint.clone(),
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
                first_seen: v
                    .first_seen
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
