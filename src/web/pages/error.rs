//! The HTML answer of a page that failed: the same statuses as the API, as a page.
//!
//! Invariant: internal errors are logged once by `ApiError`; the page shows only "internal error".

use askama::Template;
use askama_web::WebTemplate;
use axum::response::{IntoResponse, Response};

use super::{Chrome, PageParams};
use crate::store::StoreError;
use crate::web::error::ApiError;

/// What a page handler can fail with.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        PageError(err)
    }
}

impl From<StoreError> for PageError {
    fn from(err: StoreError) -> Self {
        PageError(err.into())
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub title: &'static str,
    pub message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match &self.0 {
            ApiError::NotFound(_) => "Not found",
            ApiError::BadRequest(_) => "Bad request",
            ApiError::TooLarge(_) => "Too much to read",
            ApiError::TooSlow(_) => "Took too long",
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "page failed");
                "Internal error"
            }
        };
        let status = self.0.status();
        let page = ErrorPage {
            chrome: Chrome::new("error", "/", &PageParams::default(), None, Vec::new()),
            status: status.as_u16(),
            title,
            message: self.0.to_string(),
        };
        (status, page).into_response()
    }
}
