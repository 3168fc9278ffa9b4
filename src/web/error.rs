//! The one error type of the web layer, which is also a response.
//!
//! Invariant: internal errors are logged once with their detail; the body only says
//! "internal error", as `{"error": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::error;

use crate::store::StoreError;

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A parameter was missing or malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The answer would read more than the read limits allow; the message says what to narrow.
    #[error("{0}")]
    TooLarge(String),
    /// The answer took longer than the read timeout.
    #[error("{0}")]
    TooSlow(String),
    /// Anything else; the detail goes to the log, not to the client.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::ReadTooLarge(message) => ApiError::TooLarge(message),
            err => ApiError::Internal(err.into()),
        }
    }
}

impl ApiError {
    /// The status of each kind, for the API and the pages alike.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            // As Prometheus answers a query over its sample limit: well formed, but too much.
            ApiError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooSlow(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            error!(error = format!("{err:#}"), "request failed");
        }
        let status = self.status();
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
