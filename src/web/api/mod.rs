//! JSON API v1 handlers: parse parameters, read the views of `crate::read`, answer them as the
//! DTOs `present` maps them to.
//!
//! Invariant: no computation of its own; bad parameters are 400 with a message, unknown ids 404.

pub mod dto;
pub mod present;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use collector::model::TraceId;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::{selector, units, window};
use crate::read;
use crate::read::compare::{CompareAnswer, CompareMissing};

/// The window and filter parameters every aggregate call takes.
#[derive(Debug, Default, Deserialize)]
pub struct WindowParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub range: Option<String>,
    pub service: Option<String>,
    pub endpoint: Option<String>,
    pub min_ms: Option<String>,
    pub limit: Option<String>,
    /// Comparison selectors (see `web::selector`).
    pub baseline: Option<String>,
    pub candidate: Option<String>,
    /// Regression feed cursor: events with a larger id.
    pub after: Option<String>,
}

impl WindowParams {
    pub fn window(&self) -> Result<crate::store::Window, ApiError> {
        window::parse(
            self.from.as_deref(),
            self.to.as_deref(),
            self.range.as_deref(),
        )
    }

    pub fn service(&self) -> Option<&str> {
        self.service.as_deref().filter(|s| !s.is_empty())
    }

    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref().filter(|s| !s.is_empty())
    }
}

fn number<T: std::str::FromStr>(
    value: Option<&str>,
    name: &str,
    default: T,
) -> Result<T, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("`{name}` must be a number, got {text:?}"))),
    }
}

pub async fn services_list(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let view = read::endpoints::services(&state.store, params.window()?).await?;
    Ok(Json(present::services_dto(view)).into_response())
}

pub async fn endpoints_list(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let view = read::endpoints::endpoints(&state.store, params.window()?, params.service()).await?;
    Ok(Json(present::endpoints_dto(&view)).into_response())
}

pub async fn endpoint_get(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let window = params.window()?;
    let (Some(service), Some(endpoint)) = (params.service(), params.endpoint()) else {
        return Err(ApiError::BadRequest(
            "`service` and `endpoint` are required".into(),
        ));
    };
    match read::endpoint::endpoint_detail(&state.store, window, service, endpoint).await? {
        Some(detail) => Ok(Json(present::endpoint_detail_dto(&detail)).into_response()),
        None => Err(ApiError::NotFound(format!(
            "no requests of {service} {endpoint} in this window"
        ))),
    }
}

pub async fn traces_list(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let window = params.window()?;
    let min_ms = number(params.min_ms.as_deref(), "min_ms", 0.0)?;
    let limit: i64 = number(params.limit.as_deref(), "limit", 50)?;
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "`limit` must be between 1 and 1000".into(),
        ));
    }
    let view = read::endpoint::requests(
        &state.store,
        window,
        params.service(),
        params.endpoint(),
        units::ns_from_ms(min_ms),
        limit,
    )
    .await?;
    Ok(Json(present::traces_dto(&view)).into_response())
}

pub async fn trace_get(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let trace_id = TraceId::parse_hex(&trace_id)
        .map_err(|e| ApiError::BadRequest(format!("trace id must be 32 hex digits: {e}")))?;
    match read::trace::trace(&state.store, trace_id, &state.analysis).await? {
        Some(trace) => Ok(Json(present::trace_dto(&trace)).into_response()),
        None => Err(ApiError::NotFound(format!("trace {trace_id} not found"))),
    }
}

pub async fn alerts_list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let view = read::alerts::alerts(&state.store).await?;
    let interval_s = state.alerts.rules().settings.interval.as_secs_f64();
    Ok(Json(present::alerts_dto(view, interval_s)).into_response())
}

pub async fn deliveries_list(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let limit: i64 = number(params.limit.as_deref(), "limit", 100)?;
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "`limit` must be between 1 and 1000".into(),
        ));
    }
    let records = read::alerts::deliveries(&state.store, limit).await?;
    Ok(Json(present::deliveries_dto(records)).into_response())
}

/// Re-reads the config file's budgets, SLOs and webhooks; a file that does not parse is a 400
/// naming the line, and the rules in force stay.
pub async fn reload_post(State(state): State<AppState>) -> Result<Response, ApiError> {
    let handle = state.alerts.clone();
    let summary = tokio::task::spawn_blocking(move || handle.reload())
        .await
        .map_err(|err| ApiError::Internal(err.into()))?
        .map_err(|err| ApiError::BadRequest(format!("{err:#}")))?;
    Ok(Json(dto::ReloadDto {
        reloaded: true,
        budgets: summary.budgets,
        slos: summary.slos,
        webhooks: summary.webhooks,
    })
    .into_response())
}

pub async fn compare_get(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let window = params.window()?;
    let Some(service) = params.service() else {
        return Err(ApiError::BadRequest("`service` is required".into()));
    };
    let (Some(baseline), Some(candidate)) = (
        params.baseline.as_deref().filter(|s| !s.is_empty()),
        params.candidate.as_deref().filter(|s| !s.is_empty()),
    ) else {
        return Err(ApiError::BadRequest(
            "`baseline` and `candidate` are required, e.g. baseline=version:1.0&candidate=version:1.1"
                .into(),
        ));
    };
    let baseline = selector::parse(baseline)?;
    let candidate = selector::parse(candidate)?;
    let answer = read::compare::compare(
        &state.store,
        window,
        service,
        params.endpoint(),
        &baseline,
        &candidate,
        &state.regression_thresholds,
        &state.reads,
    )
    .await?;
    let what = match params.endpoint() {
        Some(endpoint) => format!("{service} {endpoint}"),
        None => service.to_owned(),
    };
    match answer {
        Ok(CompareAnswer::Endpoint(view)) => Ok(Json(present::compare_dto(&view)).into_response()),
        Ok(CompareAnswer::Service(view)) => {
            Ok(Json(present::service_compare_dto(&view)).into_response())
        }
        Err(CompareMissing::Unknown) => Err(ApiError::NotFound(format!("no endpoint {what}"))),
        Err(CompareMissing::NoData(side)) => Err(ApiError::NotFound(format!(
            "no requests of {what} match the {side} selector in this window"
        ))),
    }
}

pub async fn versions_list(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let window = params.window()?;
    let Some(service) = params.service() else {
        return Err(ApiError::BadRequest("`service` is required".into()));
    };
    let view = read::endpoints::versions(&state.store, window, service, params.endpoint()).await?;
    Ok(Json(present::versions_dto(view)).into_response())
}

pub async fn regressions_list(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let after: i64 = number(params.after.as_deref(), "after", 0)?;
    let limit: i64 = number(params.limit.as_deref(), "limit", 100)?;
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "`limit` must be between 1 and 1000".into(),
        ));
    }
    let records =
        read::regressions::regressions(&state.store, after, limit, params.service()).await?;
    Ok(Json(present::regressions_dto(records)).into_response())
}

pub async fn openapi_get() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}
