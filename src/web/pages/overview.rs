//! `/`: every endpoint of every service in the window, most total time first, with its breakdown
//! and bottleneck; or, with no traffic, how to send some.
//!
//! Invariant: shows only what `read::endpoints` returns (the service
//! choices of an unfiltered page are the services of its endpoints, which is the same list).

use std::collections::BTreeSet;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};

use super::alerts::{BudgetBadge, budget_badges};
use super::{
    Chrome, PageError, PageParams, RegressionRow, encode, endpoint_href, fmt_calls, fmt_count,
    fmt_ms, fmt_pct, fmt_rate, regression_rows,
};
use crate::read;
use crate::web::AppState;
use crate::web::charts::{BarSegment, bar_segments};
use crate::web::units::{ms, ms_per_category, round2};

/// One endpoint's row. `*_sort` values are raw numbers for the table sorter.
pub struct OverviewRow {
    pub service: String,
    pub service_href: String,
    pub endpoint: String,
    pub href: String,
    pub folded: bool,
    pub requests: String,
    pub requests_sort: u64,
    pub rate: String,
    pub rate_sort: f64,
    pub error_pct: String,
    pub error_sort: f64,
    pub has_errors: bool,
    pub p50: String,
    pub p50_sort: f64,
    pub p95: String,
    pub p95_sort: f64,
    pub p99: String,
    pub p99_sort: f64,
    pub segments: Vec<BarSegment>,
    pub mean: String,
    pub db_calls: String,
    pub db_calls_sort: f64,
    pub bottleneck_category: &'static str,
    pub bottleneck: String,
    pub total_sort: f64,
    /// The worst state of its budgets and SLOs; none without any.
    pub budget: Option<BudgetBadge>,
    /// For the sorter: 3 firing, 2 pending, 1 resolved, 0 ok, -1 no budget.
    pub budget_sort: i8,
}

/// A choice of the service filter.
pub struct ServiceOption {
    pub name: String,
    pub selected: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub rows: Vec<OverviewRow>,
    pub services: Vec<ServiceOption>,
    /// The service filter, if any.
    pub service: Option<String>,
    /// Services whose endpoints past the cap were folded into `other`.
    pub capped_services: Vec<String>,
    pub total_requests: String,
    pub n_endpoints: usize,
    /// Whether any endpoint has a budget or SLO (the column shows only then).
    pub any_budget: bool,
    /// The newest regressions detected in the window, newest first.
    pub regressions: Vec<RegressionRow>,
}

/// Regressions the overview's banner lists.
const REGRESSIONS_SHOWN: usize = 5;

/// `GET /`.
pub async fn overview_get(
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
) -> Result<OverviewPage, PageError> {
    let window = params.window()?;
    let endpoints = read::endpoints::endpoints(&state.store, window, params.service()).await?;
    // Unfiltered, the endpoints list names every service with traffic in the window, so the
    // rollups are not read a second time for the filter's choices.
    let service_names: BTreeSet<String> = match params.service() {
        None => endpoints
            .endpoints
            .iter()
            .map(|e| e.endpoint.service.clone())
            .collect(),
        Some(_) => read::endpoints::services(&state.store, window)
            .await?
            .services
            .into_iter()
            .map(|s| s.name)
            .collect(),
    };
    let alerts = read::alerts::alerts(&state.store).await?;
    let mut badges = budget_badges(&alerts);
    let regressions = read::regressions::recent_regressions(
        &state.store,
        window,
        params.service(),
        None,
        REGRESSIONS_SHOWN,
    )
    .await?;
    let window_query = params.window_query();
    let service = params.service().map(str::to_owned);
    let keep = service
        .iter()
        .map(|s| ("service", s.clone()))
        .collect::<Vec<_>>();
    let chrome = Chrome::new("overview", "/", &params, Some(window), keep);
    let total_requests = endpoints.endpoints.iter().map(|e| e.stats.requests).sum();
    let rows: Vec<OverviewRow> = endpoints
        .endpoints
        .iter()
        .map(|summary| {
            let e = &summary.stats;
            let (service, endpoint) = (&summary.endpoint.service, &summary.endpoint.endpoint);
            let error_share = if e.requests > 0 {
                e.errors as f64 / e.requests as f64
            } else {
                0.0
            };
            let rate_per_sec = summary.rate_per_sec();
            let db_calls = round2(e.db_calls_per_request);
            let budget = badges.remove(&(service.clone(), endpoint.clone()));
            OverviewRow {
                budget_sort: budget.as_ref().map_or(-1, |b| match b.state {
                    "firing" => 3,
                    "pending" => 2,
                    "resolved" => 1,
                    _ => 0,
                }),
                budget,
                service: service.clone(),
                service_href: format!("/?service={}&{window_query}", encode(service)),
                endpoint: endpoint.clone(),
                href: endpoint_href(service, endpoint, &window_query),
                folded: summary.folded(),
                requests: fmt_count(e.requests),
                requests_sort: e.requests,
                rate: fmt_rate(rate_per_sec),
                rate_sort: rate_per_sec,
                error_pct: fmt_pct(error_share),
                error_sort: error_share,
                has_errors: e.errors > 0,
                p50: fmt_ms(ms(e.p50_ns)),
                p50_sort: ms(e.p50_ns),
                p95: fmt_ms(ms(e.p95_ns)),
                p95_sort: ms(e.p95_ns),
                p99: fmt_ms(ms(e.p99_ns)),
                p99_sort: ms(e.p99_ns),
                segments: bar_segments(&ms_per_category(e.breakdown_mean_ns), 0.0),
                mean: fmt_ms(ms(e.mean_ns)),
                db_calls: fmt_calls(db_calls),
                db_calls_sort: db_calls,
                bottleneck_category: e.bottleneck.as_str(),
                bottleneck: e.bottleneck_summary.clone(),
                total_sort: ms(summary.total_ns()),
            }
        })
        .collect();
    Ok(OverviewPage {
        any_budget: rows.iter().any(|r| r.budget.is_some()),
        regressions: regression_rows(&regressions, &window_query),
        chrome,
        n_endpoints: rows.len(),
        rows,
        services: service_names
            .into_iter()
            .map(|name| ServiceOption {
                selected: service.as_deref() == Some(name.as_str()),
                name,
            })
            .collect(),
        service,
        capped_services: endpoints.capped_services,
        total_requests: fmt_count(total_requests),
    })
}
