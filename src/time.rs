//! Clocks and the text forms of time: now in unix nanoseconds, RFC 3339 as the API and webhooks
//! write it, and durations as the config file writes them (`"60s"`, `"7d"`, milliseconds).
//!
//! Invariant: the one wall clock outside the pipeline's claims; a clock before the epoch reads
//! as 0 rather than failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Nanoseconds since the epoch, now.
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(unix_ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_ns)).to_string()
}

/// A duration written as text in a config file (`"60s"`, `"7d"`), for `deserialize_with`; the
/// parser's error then names the line.
pub fn duration_text<'de, D: serde::Deserializer<'de>>(text: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(text)?;
    humantime::parse_duration(&text).map_err(|err| {
        serde::de::Error::custom(format!("{text:?} is not a duration (e.g. \"60s\"): {err}"))
    })
}

/// Milliseconds as the config file writes them (fractions allowed, negatives read as zero), for
/// `deserialize_with` into nanoseconds.
pub fn ms_as_ns<'de, D: serde::Deserializer<'de>>(ms: D) -> Result<u64, D::Error> {
    Ok((f64::deserialize(ms)? * 1e6).max(0.0) as u64)
}
