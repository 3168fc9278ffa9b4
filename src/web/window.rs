//! Time windows from query parameters: `from` and `to` as RFC 3339 or unix milliseconds,
//! or a `range` such as `15m`, `1h`, `24h`, `7d` ending now. The default is the last hour.
//!
//! Invariant: a parsed window is never empty or inverted.

use std::time::{Duration, UNIX_EPOCH};

use crate::store::Window;
use crate::time::now_unix_ns;
use crate::web::error::ApiError;

/// The default window: the last hour.
pub const DEFAULT_RANGE: Duration = Duration::from_secs(3600);

/// Parses one instant: unix milliseconds, or RFC 3339.
pub fn parse_instant(text: &str) -> Result<u64, ApiError> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<f64>()
        && ms.is_finite()
        && ms >= 0.0
    {
        return Ok((ms * 1e6) as u64);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{text:?} is neither unix milliseconds nor an RFC 3339 time"
            ))
        })
}

/// Parses a range such as `15m`, `6h` or `7d`.
pub fn parse_range(text: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "range {text:?} is not a duration such as 15m, 1h or 7d"
            ))
        })
}

/// Builds the window from the optional parameters.
pub fn parse(
    from: Option<&str>,
    to: Option<&str>,
    range: Option<&str>,
) -> Result<Window, ApiError> {
    let to_unix_ns = match to.filter(|t| !t.is_empty()) {
        Some(text) => parse_instant(text)?,
        None => now_unix_ns(),
    };
    let from_unix_ns = match (
        from.filter(|f| !f.is_empty()),
        range.filter(|r| !r.is_empty()),
    ) {
        (Some(text), _) => parse_instant(text)?,
        (None, Some(range)) => to_unix_ns.saturating_sub(parse_range(range)?.as_nanos() as u64),
        (None, None) => to_unix_ns.saturating_sub(DEFAULT_RANGE.as_nanos() as u64),
    };
    if from_unix_ns >= to_unix_ns {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    Ok(Window {
        from_unix_ns,
        to_unix_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_in_both_forms() {
        assert_eq!(parse_instant("1000").unwrap(), 1_000_000_000);
        assert_eq!(
            parse_instant("1970-01-01T00:00:01Z").unwrap(),
            1_000_000_000
        );
        assert!(parse_instant("yesterday").is_err());
    }

    #[test]
    fn ranges_end_at_to() {
        let window = parse(None, Some("3600000"), Some("15m")).unwrap();
        assert_eq!(window.to_unix_ns - window.from_unix_ns, 900 * 1_000_000_000);
        assert!(parse(Some("2000"), Some("1000"), None).is_err());
        assert!(parse(None, None, Some("0s")).is_err());
    }
}
