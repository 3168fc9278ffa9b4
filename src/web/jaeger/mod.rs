//! The Jaeger HTTP query API (`/api/services`, `/api/operations`, `/api/traces`), the API
//! Jaeger UI and Grafana's Jaeger data source read, so both can browse Bottleneck's traces.
//! Services and operations are the services and endpoints Bottleneck found requests of; a
//! search finds traces through their requests; every span carries the verdict as tags.
//!
//! Invariant: answers and errors in Jaeger's shapes and status codes (`{"data": ..., "errors":
//! [{"code", "msg"}]}`); reads only through `Store`, bounded as `search` says.

pub mod model;
pub mod params;
pub mod search;
pub mod verdict;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tracing::error;

use self::model::{Answer, ErrorJson, OperationJson};
use super::AppState;
use crate::store::StoreError;
use crate::time::now_unix_ns;

/// The Jaeger API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/services", get(services_list))
        .route(
            "/api/services/{service}/operations",
            get(service_operations_list),
        )
        .route("/api/operations", get(operations_list))
        .route("/api/traces", get(traces_search))
        .route("/api/traces/{trace_id}", get(trace_get))
}

/// What a Jaeger handler can fail with, answered as Jaeger answers it.
#[derive(Debug)]
pub enum JaegerError {
    /// A malformed parameter: 400.
    BadRequest(String),
    /// An unknown trace: 404.
    NotFound(String),
    /// Anything else: 500, the detail only in the log.
    Internal(StoreError),
}

impl From<StoreError> for JaegerError {
    fn from(err: StoreError) -> Self {
        JaegerError::Internal(err)
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            JaegerError::BadRequest(msg) => (StatusCode::BAD_REQUEST, msg),
            JaegerError::NotFound(msg) => (StatusCode::NOT_FOUND, msg),
            JaegerError::Internal(err) => {
                error!(error = %err, "jaeger api request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        };
        let mut answer = Answer::new((), 0);
        answer.errors = Some(vec![ErrorJson {
            code: Some(status.as_u16()),
            msg,
            trace_id: None,
        }]);
        (status, Json(answer)).into_response()
    }
}

fn answer<T: Serialize>(answer: Answer<T>) -> Response {
    Json(answer).into_response()
}

/// `GET /api/services`.
pub async fn services_list(State(state): State<AppState>) -> Result<Response, JaegerError> {
    let services = search::services(&state.store).await?;
    let total = services.len();
    Ok(answer(Answer::new(services, total)))
}

/// `GET /api/services/{service}/operations`: names only, every kind.
pub async fn service_operations_list(
    State(state): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, JaegerError> {
    let operations = search::operations(&state.store, &service).await?;
    let total = operations.len();
    Ok(answer(Answer::new(operations, total)))
}

/// `GET /api/operations?service=&spanKind=`. Operations are endpoints, entered through server or
/// consumer spans; the kind of each is not stored, so it is given as the kind asked for, and
/// `client`, `producer` and `internal` have none.
pub async fn operations_list(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, JaegerError> {
    let Some(service) = params::first(&pairs, "service") else {
        return Err(JaegerError::BadRequest(
            "parameter 'service' is required".to_owned(),
        ));
    };
    let span_kind = params::first(&pairs, "spanKind").unwrap_or_default();
    let operations: Vec<OperationJson> = match span_kind {
        "" | "server" | "consumer" => search::operations(&state.store, service)
            .await?
            .into_iter()
            .map(|name| OperationJson {
                name,
                span_kind: span_kind.to_owned(),
            })
            .collect(),
        "client" | "producer" | "internal" => Vec::new(),
        other => {
            return Err(JaegerError::BadRequest(format!(
                "unsupported span kind {other:?}"
            )));
        }
    };
    let total = operations.len();
    Ok(answer(Answer::new(operations, total)))
}

/// `GET /api/traces`: a search, or the traces named by `traceID` parameters.
pub async fn traces_search(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, JaegerError> {
    let search = params::search(&pairs, now_unix_ns()).map_err(JaegerError::BadRequest)?;
    if search.trace_ids.is_empty() {
        let time = search::TIME.min(state.reads.timeout / 2);
        let found = search::find(&state.store, &search, &state.analysis, time).await?;
        let mut traces = Answer::new(found.traces, 0);
        traces.warnings = found.cut.map(|cut| vec![cut]);
        return Ok(answer(traces));
    }
    let mut traces = Vec::new();
    let mut missing = Vec::new();
    for trace_id in &search.trace_ids {
        match search::trace(&state.store, *trace_id, &state.analysis).await? {
            Some(trace) => traces.push(trace),
            None => missing.push(ErrorJson {
                code: None,
                msg: "trace not found".to_owned(),
                trace_id: Some(trace_id.to_hex()),
            }),
        }
    }
    let mut found = Answer::new(traces, 0);
    found.errors = (!missing.is_empty()).then_some(missing);
    Ok(answer(found))
}

/// `GET /api/traces/{traceID}`. `start` and `end` (Grafana sends them to narrow the lookup) are
/// checked but not needed: the trace index finds a trace by id alone.
pub async fn trace_get(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, JaegerError> {
    let trace_id = params::trace_id(&trace_id).map_err(JaegerError::BadRequest)?;
    params::window(&pairs, now_unix_ns()).map_err(JaegerError::BadRequest)?;
    match search::trace(&state.store, trace_id, &state.analysis).await? {
        Some(trace) => Ok(answer(Answer::new(vec![trace], 0))),
        None => Err(JaegerError::NotFound("trace not found".to_owned())),
    }
}
