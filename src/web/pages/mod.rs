//! The HTML pages: one module per page, each with one askama template struct of display-ready
//! strings, built from the read model's views (the values the JSON API gives, rounded by
//! `web::units` as the API rounds them).
//!
//! Invariant: no store access and no numbers of their own beyond formatting and layout; every
//! untrusted string reaches HTML through askama's escaping. Pages work without JavaScript.

pub mod alerts;
pub mod compare;
pub mod endpoint;
pub mod error;
pub mod overview;
pub mod trace;

use collector::category::Category;
use serde::Deserialize;

use super::api::present::regression_state;
use super::assets;
use super::error::ApiError;
use super::units::{ms, ms_of};
use crate::analysis::location::CodeLocation;
use crate::store::{RegressionRecord, Window};
use crate::time::rfc3339;

pub use error::PageError;

/// The window and filter parameters of every page, named as the API names them.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct PageParams {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub service: Option<String>,
    pub endpoint: Option<String>,
}

/// The ranges the window picker offers.
const RANGES: [&str; 5] = ["15m", "1h", "6h", "24h", "7d"];
/// The picker's default, the API's default window.
const DEFAULT_RANGE: &str = "1h";

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A `datetime-local` input sends `2024-05-01T10:00` without seconds; the API wants them.
fn with_seconds(value: &str) -> String {
    if value.len() == 16 && value.as_bytes().get(10) == Some(&b'T') {
        format!("{value}:00")
    } else {
        value.to_owned()
    }
}

impl PageParams {
    pub fn service(&self) -> Option<&str> {
        non_empty(&self.service)
    }

    pub fn endpoint(&self) -> Option<&str> {
        non_empty(&self.endpoint)
    }

    fn from(&self) -> Option<String> {
        non_empty(&self.from).map(with_seconds)
    }

    fn to(&self) -> Option<String> {
        non_empty(&self.to).map(with_seconds)
    }

    fn range(&self) -> &str {
        non_empty(&self.range).unwrap_or(DEFAULT_RANGE)
    }

    fn is_custom(&self) -> bool {
        self.from().is_some()
    }

    /// The window, parsed exactly as the API parses it.
    pub fn window(&self) -> Result<Window, ApiError> {
        let (from, to) = (self.from(), self.to());
        super::window::parse(from.as_deref(), to.as_deref(), Some(self.range()))
    }

    /// The window as query parameters, for links that keep it: `range=1h` or `from=..&to=..`.
    pub fn window_query(&self) -> String {
        if let Some(from) = self.from() {
            let mut query = format!("from={}", encode(&from));
            if let Some(to) = self.to() {
                query.push_str(&format!("&to={}", encode(&to)));
            }
            query
        } else {
            format!("range={}", encode(self.range()))
        }
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The link to an endpoint's page, keeping the window.
pub fn endpoint_href(service: &str, endpoint: &str, window_query: &str) -> String {
    format!(
        "/endpoint?service={}&endpoint={}&{window_query}",
        encode(service),
        encode(endpoint)
    )
}

/// A regression event, for the overview's banner and the endpoint page.
pub struct RegressionRow {
    pub detected: String,
    pub service: String,
    pub endpoint: String,
    pub endpoint_href: String,
    pub baseline: String,
    pub candidate: String,
    /// `p95 300 ms → 610 ms`.
    pub change: String,
    pub mean_delta: String,
    pub summary: String,
    pub compare_href: String,
    /// `open` or `resolved`: also the badge's class suffix.
    pub state: &'static str,
    /// `resolved 05-14 10:31 UTC: POST /login is back within the thresholds …`; empty while
    /// open.
    pub resolution: String,
}

/// The display form of regression events; links keep the window.
pub fn regression_rows(events: &[RegressionRecord], window_query: &str) -> Vec<RegressionRow> {
    events
        .iter()
        .map(|event| RegressionRow {
            detected: short_time(&rfc3339(event.detected_unix_ns)),
            service: event.service.clone(),
            endpoint: event.endpoint.clone(),
            endpoint_href: endpoint_href(&event.service, &event.endpoint, window_query),
            baseline: event.baseline.clone(),
            candidate: event.candidate.clone(),
            change: format!(
                "{} {} → {}",
                event.metric,
                fmt_ms(ms_of(event.baseline_ns)),
                fmt_ms(ms_of(event.candidate_ns))
            ),
            mean_delta: compare::fmt_delta_ms(ms(event.mean_delta_ns as f64)),
            summary: event.summary.clone(),
            compare_href: compare::compare_href(
                &event.service,
                Some(&event.endpoint),
                &format!("version:{}", event.baseline),
                &format!("version:{}", event.candidate),
                window_query,
            ),
            state: regression_state(event),
            resolution: event
                .resolution
                .as_ref()
                .map(|resolution| {
                    format!(
                        "resolved {} UTC: {}",
                        short_time(&rfc3339(resolution.resolved_unix_ns)),
                        resolution.summary
                    )
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// `05-14 10:31` of an RFC 3339 time.
fn short_time(rfc3339: &str) -> String {
    rfc3339.get(5..16).unwrap_or_default().replace('T', " ")
}

/// One choice of the window picker.
pub struct RangeLink {
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

/// The shared layout's data: asset URLs, the active nav item and the window picker.
pub struct Chrome {
    pub css_url: String,
    pub js_url: String,
    pub favicon_url: String,
    /// `overview`, `endpoint` or `trace`: which nav item is current.
    pub page: &'static str,
    /// The window as query parameters, appended to nav links.
    pub window_query: String,
    /// Whether the page has a window (the trace page has none).
    pub show_picker: bool,
    pub ranges: Vec<RangeLink>,
    pub custom_active: bool,
    /// `datetime-local` values (UTC) of the current window.
    pub from_value: String,
    pub to_value: String,
    /// What the window is, in words: "last 1h" or "2024-05-01 10:00 – 12:00 UTC".
    pub window_label: String,
    /// Parameters the custom-window form must keep (service, endpoint).
    pub keep: Vec<(&'static str, String)>,
}

/// `2024-05-01T10:00:00` in UTC, the form a `datetime-local` input shows.
fn local_value(unix_ns: u64) -> String {
    let text = crate::time::rfc3339(unix_ns);
    text[..19].to_owned()
}

impl Chrome {
    /// The layout for a page at `path` whose own parameters are `keep` (without the window).
    pub fn new(
        page: &'static str,
        path: &str,
        params: &PageParams,
        window: Option<Window>,
        keep: Vec<(&'static str, String)>,
    ) -> Self {
        let own: String = keep
            .iter()
            .map(|(name, value)| format!("{name}={}&", encode(value)))
            .collect();
        let custom_active = params.is_custom();
        let ranges = RANGES
            .iter()
            .map(|range| RangeLink {
                label: range,
                href: format!("{path}?{own}range={range}"),
                active: !custom_active && params.range() == *range,
            })
            .collect();
        let (from_value, to_value) = window.map_or((String::new(), String::new()), |w| {
            (local_value(w.from_unix_ns), local_value(w.to_unix_ns))
        });
        let window_label = if custom_active {
            format!(
                "{} – {} UTC",
                from_value.replace('T', " "),
                to_value.replace('T', " ")
            )
        } else {
            format!("last {}", params.range())
        };
        Chrome {
            css_url: assets::url("app.css"),
            js_url: assets::url("app.js"),
            favicon_url: assets::url("favicon.svg"),
            page,
            window_query: params.window_query(),
            show_picker: window.is_some(),
            ranges,
            custom_active,
            from_value,
            to_value,
            window_label,
            keep,
        }
    }
}

/// `312 ms`, `4.2 ms`, `0.35 ms`, `1.24 s`: a duration for a table cell.
pub fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() || ms <= 0.0 {
        "0 ms".to_owned()
    } else if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// `1,234,567`.
/// Where a finding is in the code, as a page shows it: `at` `app/policies.py:88 in
/// load_rules`, or `in` `load_rules` when its spans name no file.
pub struct LocationView {
    pub preposition: &'static str,
    pub place: String,
}

pub fn fmt_location(location: &CodeLocation) -> LocationView {
    let (preposition, place) = location.phrase();
    LocationView { preposition, place }
}

pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (idx, ch) in digits.chars().enumerate() {
        if idx > 0 && (digits.len() - idx).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `12.5%`, `0.3%`, `0%`.
pub fn fmt_pct(share: f64) -> String {
    let pct = share * 100.0;
    if pct == 0.0 {
        "0%".to_owned()
    } else if pct < 10.0 {
        format!("{pct:.1}%")
    } else {
        format!("{pct:.0}%")
    }
}

/// `42/s`, `1.5/s`, `0.27/s`, `0.4/min`: a request rate.
pub fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 10.0 {
        format!("{per_sec:.0}/s")
    } else if per_sec >= 1.0 {
        format!("{per_sec:.1}/s")
    } else if per_sec >= 0.01 {
        format!("{per_sec:.2}/s")
    } else {
        format!("{:.1}/min", per_sec * 60.0)
    }
}

/// `12`, `12.5`: a per-request count.
pub fn fmt_calls(x: f64) -> String {
    if (x - x.round()).abs() < 0.05 {
        format!("{:.0}", x.round())
    } else {
        format!("{x:.1}")
    }
}

/// One category's value in a legend or table.
pub struct CategoryValue {
    pub category: &'static str,
    pub ms: String,
    pub share: String,
}

/// Every category with time, largest first, from milliseconds in `Category::ALL` order.
pub fn category_values(values: [f64; Category::COUNT]) -> Vec<CategoryValue> {
    let total: f64 = values.iter().sum();
    let mut order: Vec<usize> = (0..6).filter(|idx| values[*idx] > 0.0).collect();
    order.sort_by(|a, b| values[*b].total_cmp(&values[*a]));
    order
        .into_iter()
        .map(|idx| CategoryValue {
            category: Category::ALL[idx].as_str(),
            ms: fmt_ms(values[idx]),
            share: fmt_pct(if total > 0.0 {
                values[idx] / total
            } else {
                0.0
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_cells() {
        assert_eq!(fmt_ms(312.4), "312 ms");
        assert_eq!(fmt_ms(4.25), "4.25 ms");
        assert_eq!(fmt_ms(1240.0), "1.24 s");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_count(12), "12");
        assert_eq!(fmt_pct(0.003), "0.3%");
        assert_eq!(fmt_calls(10.0), "10");
        assert_eq!(fmt_rate(0.27), "0.27/s");
        assert_eq!(fmt_rate(0.001), "0.1/min");
    }

    #[test]
    fn links_keep_the_window_and_encode_values() {
        let params = PageParams {
            range: Some("6h".into()),
            ..Default::default()
        };
        assert_eq!(
            endpoint_href("auth", "POST /login?x=&y", &params.window_query()),
            "/endpoint?service=auth&endpoint=POST%20%2Flogin%3Fx%3D%26y&range=6h"
        );
        let custom = PageParams {
            from: Some("2024-05-01T10:00".into()),
            to: Some("2024-05-01T12:00".into()),
            ..Default::default()
        };
        assert_eq!(
            custom.window_query(),
            "from=2024-05-01T10%3A00%3A00&to=2024-05-01T12%3A00%3A00"
        );
        let window = custom.window().unwrap();
        assert_eq!(
            window.to_unix_ns - window.from_unix_ns,
            7200 * 1_000_000_000
        );
    }
}
