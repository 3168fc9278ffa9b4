//! The web edge: the JSON API v1, `/metrics`, health checks, and the HTML pages.
//!
//! Invariant: the API and the pages read only through the read model (`crate::read`), the Jaeger
//! API and `/metrics` only through `Store`; the only place in `src/` that knows HTTP status codes,
//! JSON and HTML.

pub mod api;
pub mod assets;
pub mod auth;
pub mod charts;
pub mod error;
pub mod host;
pub mod jaeger;
pub mod metrics;
pub mod pages;
pub mod read_limits;
pub mod selector;
pub mod units;
pub mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use collector::sink::{IngestStats, SpanSink};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::alert::AlertHandle;
use crate::analysis::AnalysisConfig;
use crate::analysis::compare::Thresholds;
use crate::pipeline::analyze::AnalysisStats;
use crate::store::Store;

/// What every handler may read.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The collector's counters.
    pub ingest: Arc<IngestStats>,
    /// The ingest queue, for its depth.
    pub sink: Option<SpanSink>,
    /// The analysis counters.
    pub analysis_stats: Arc<AnalysisStats>,
    /// Thresholds, to re-analyse a trace for its page.
    pub analysis: Arc<AnalysisConfig>,
    /// What counts as slower or faster in a comparison (the regression finder's thresholds).
    pub regression_thresholds: Thresholds,
    /// Alert rules (reloadable) and the last evaluation.
    pub alerts: AlertHandle,
    /// False until every listener is bound and the pipeline runs; false again while stopping.
    pub ready: Arc<AtomicBool>,
    /// What one page or API call may cost.
    pub reads: read_limits::ReadLimits,
}

impl AppState {
    fn queue_depth(&self) -> usize {
        self.sink.as_ref().map_or(0, SpanSink::queue_depth)
    }
}

/// No inline script, no inline style, no third-party anything: every asset is ours and embedded.
/// The pages position bars with SVG presentation attributes (`x`, `width`) and colour them with
/// classes, and plotters writes presentation attributes only, so `style-src 'self'` needs no
/// exception.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The UI and API router.
pub fn router(state: AppState) -> Router {
    // Every route that reads the store runs within the read timeout; probes, metrics and
    // assets answer without it.
    let reads = Router::new()
        .route("/api/v1/services", get(api::services_list))
        .route("/api/v1/endpoints", get(api::endpoints_list))
        .route("/api/v1/endpoint", get(api::endpoint_get))
        .route("/api/v1/traces", get(api::traces_list))
        .route("/api/v1/traces/{trace_id}", get(api::trace_get))
        .route("/api/v1/alerts", get(api::alerts_list))
        .route("/api/v1/compare", get(api::compare_get))
        .route("/api/v1/regressions", get(api::regressions_list))
        .route("/api/v1/versions", get(api::versions_list))
        .route("/api/v1/alerts/deliveries", get(api::deliveries_list))
        .route("/api/v1/reload", post(api::reload_post))
        .route("/api/v1/openapi.json", get(api::openapi_get))
        .merge(jaeger::routes())
        .route("/", get(pages::overview::overview_get))
        .route("/endpoint", get(pages::endpoint::endpoint_get))
        .route("/trace/{trace_id}", get(pages::trace::trace_get))
        .route("/compare", get(pages::compare::compare_get))
        .route("/alerts", get(pages::alerts::alerts_get))
        .route_layer(axum::middleware::from_fn_with_state(
            state.reads.timeout,
            read_limits::within_timeout,
        ));
    Router::new()
        .merge(reads)
        .route("/static/{file}", get(assets::asset_get))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_get))
        .fallback(not_found)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

/// Unknown paths: JSON under `/api`, as every API error is; a page everywhere else.
async fn not_found(uri: axum::http::Uri) -> Response {
    let message = format!("no page at {}", uri.path());
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        error::ApiError::NotFound(message).into_response()
    } else {
        pages::PageError(error::ApiError::NotFound(message)).into_response()
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Relaxed) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_get(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state).await,
    )
        .into_response()
}
