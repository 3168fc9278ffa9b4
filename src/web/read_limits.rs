//! What one page or API call may cost the store: a time limit on every read, and for the reads
//! that load request rows (selections by resource attribute) a longest window and a row cap.
//! Aggregates come from rollups and are bounded by retention; single request rows are not.
//!
//! Invariant: a read past a limit is answered with an error that says what to narrow (API: the
//! usual `{"error": ...}`; pages: the error page), never with a partial answer.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::pages::PageError;
use crate::store::{StoreError, Window};
use crate::time::duration_text;

/// A page or API call still running after this is answered 503: long enough for a day of
/// rollups on a loaded machine, short enough that nobody waits on a read that will not end.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest window of request rows one selection reads: a week is what `[retention] spans`
/// keeps by default, so a longer window would only read the same rows.
pub const DEFAULT_MAX_REQUEST_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// Request rows one selection may load: about 150 bytes each, so at most some 30 MB per read.
pub const DEFAULT_MAX_REQUEST_ROWS: usize = 200_000;

/// `[reads]` in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadLimits {
    /// Time a page or API call may take; past it, 503 and the reads are dropped.
    #[serde(deserialize_with = "duration_text")]
    pub timeout: Duration,
    /// Longest window of a selection that reads request rows.
    #[serde(deserialize_with = "duration_text")]
    pub max_request_window: Duration,
    /// Request rows one selection may load.
    pub max_request_rows: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            timeout: DEFAULT_TIMEOUT,
            max_request_window: DEFAULT_MAX_REQUEST_WINDOW,
            max_request_rows: DEFAULT_MAX_REQUEST_ROWS,
        }
    }
}

impl ReadLimits {
    /// Refuses a window of request rows longer than `max_request_window`.
    pub fn check_request_window(&self, window: Window) -> Result<(), StoreError> {
        let length = window.to_unix_ns.saturating_sub(window.from_unix_ns);
        if u128::from(length) > self.max_request_window.as_nanos() {
            return Err(StoreError::ReadTooLarge(format!(
                "a selection by resource attribute reads single requests, at most {} of them; \
                 narrow its window",
                humantime::format_duration(self.max_request_window)
            )));
        }
        Ok(())
    }
}

/// Answers a call still running after `timeout` with 503, as JSON under `/api` and as a page
/// elsewhere; dropping the handler drops its reads (PostgreSQL also stops them itself).
///
/// A call that finishes past its deadline but before the timer wheel's next tick (1 ms) is
/// too slow as well: the answer depends on how long the call took, not on when the timer ran.
pub async fn within_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) if tokio::time::Instant::now() <= deadline => response,
        _ => {
            let err = ApiError::TooSlow(format!(
                "this took longer than {}; narrow the window or the selection",
                humantime::format_duration(timeout)
            ));
            if api {
                err.into_response()
            } else {
                PageError(err).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_the_file_and_the_window_check() {
        let limits: ReadLimits =
            toml::from_str("timeout = \"2s\"\nmax_request_window = \"1h\"").unwrap();
        assert_eq!(limits.timeout, Duration::from_secs(2));
        assert_eq!(limits.max_request_rows, DEFAULT_MAX_REQUEST_ROWS);
        let hour = Window {
            from_unix_ns: 0,
            to_unix_ns: 3_600_000_000_000,
        };
        assert!(limits.check_request_window(hour).is_ok());
        let longer = Window {
            to_unix_ns: hour.to_unix_ns + 1,
            ..hour
        };
        let err = limits.check_request_window(longer).unwrap_err();
        assert!(err.to_string().contains("narrow its window"), "{err}");
        assert!(toml::from_str::<ReadLimits>("timeout = \"soon\"").is_err());
    }
}
