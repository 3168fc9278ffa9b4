//! The parameters of the Jaeger query API, read as Jaeger's query service reads them: Go
//! durations (`1.2s`, `100ms`, `500us`), times in microseconds since the epoch, tags as a JSON
//! object (`tags={"http.status_code":"500"}`) or as repeated `tag=key:value`.
//!
//! Invariant: pure parsing; a malformed value is an error naming the parameter, never a default.

use std::collections::BTreeMap;

use collector::model::TraceId;

use crate::store::Window;

/// Traces a search returns when it names no `limit`: the Jaeger UI's and Grafana's default.
pub const DEFAULT_LIMIT: usize = 20;

/// The most traces one search returns: each is read whole from its blocks, so the limit bounds
/// the work of a search. Larger limits are lowered to it.
pub const MAX_LIMIT: usize = 200;

/// The window a search without `start` or `lookback` covers, ending now: the Jaeger UI's
/// default lookback.
const DEFAULT_LOOKBACK_NS: u64 = 3_600 * 1_000_000_000;

const NS_PER_US: u64 = 1_000;

/// A trace search, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// `service`: required unless trace ids are given.
    pub service: String,
    /// `operation`: the endpoint, all when `None`.
    pub operation: Option<String>,
    /// Every tag a span must carry, by key, the value as text.
    pub tags: BTreeMap<String, String>,
    /// `minDuration`, 0 when not given.
    pub min_duration_ns: u64,
    /// `maxDuration`, unbounded when not given.
    pub max_duration_ns: u64,
    /// `start` to `end` (or `lookback` before `end`).
    pub window: Window,
    /// Traces wanted, at most [`MAX_LIMIT`].
    pub limit: usize,
    /// `traceID`: look these traces up instead of searching.
    pub trace_ids: Vec<TraceId>,
}

/// The first value of a parameter, as Go's `FormValue` takes it; empty counts as absent.
pub fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Parses `GET /api/traces` parameters at `now_unix_ns`.
pub fn search(pairs: &[(String, String)], now_unix_ns: u64) -> Result<Search, String> {
    let mut trace_ids = Vec::new();
    for (_, id) in pairs.iter().filter(|(k, _)| k == "traceID") {
        trace_ids.push(trace_id(id).map_err(|err| format!("cannot parse traceID param: {err}"))?);
    }
    let service = first(pairs, "service").unwrap_or_default().to_owned();
    if service.is_empty() && trace_ids.is_empty() {
        return Err("parameter 'service' is required".to_owned());
    }
    let min_duration_ns = match first(pairs, "minDuration") {
        Some(text) => {
            go_duration(text).map_err(|err| format!("cannot parse minDuration: {err}"))?
        }
        None => 0,
    };
    let max_duration_ns = match first(pairs, "maxDuration") {
        Some(text) => {
            go_duration(text).map_err(|err| format!("cannot parse maxDuration: {err}"))?
        }
        None => u64::MAX,
    };
    if max_duration_ns < min_duration_ns {
        return Err("'maxDuration' should be greater than 'minDuration'".to_owned());
    }
    let limit = match first(pairs, "limit") {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<i64>() {
            Ok(0) => DEFAULT_LIMIT,
            Ok(n) if n > 0 => usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
            _ => {
                return Err(format!(
                    "cannot parse limit: {text:?} is not a positive integer"
                ));
            }
        },
    };
    Ok(Search {
        service,
        operation: first(pairs, "operation").map(str::to_owned),
        tags: tags(pairs)?,
        min_duration_ns,
        max_duration_ns,
        window: window(pairs, now_unix_ns)?,
        limit,
        trace_ids,
    })
}

/// `start` and `end` in microseconds since the epoch; without `start`, `lookback` (a duration,
/// also in days as the Jaeger UI writes them, `2d`; `custom` means start and end say it) before
/// `end`, else an hour.
pub fn window(pairs: &[(String, String)], now_unix_ns: u64) -> Result<Window, String> {
    let end = match first(pairs, "end") {
        Some(text) => micros(text).map_err(|err| format!("cannot parse end: {err}"))?,
        None => now_unix_ns,
    };
    let start = match (first(pairs, "start"), first(pairs, "lookback")) {
        (Some(text), _) => micros(text).map_err(|err| format!("cannot parse start: {err}"))?,
        (None, Some(lookback)) if lookback != "custom" => {
            end.saturating_sub(lookback_ns(lookback)?)
        }
        _ => end.saturating_sub(DEFAULT_LOOKBACK_NS),
    };
    if start > end {
        return Err("'start' should not be after 'end'".to_owned());
    }
    // `end` is inclusive in Jaeger; the store's windows end before their last instant.
    Ok(Window {
        from_unix_ns: start,
        to_unix_ns: end.saturating_add(1),
    })
}

fn lookback_ns(text: &str) -> Result<u64, String> {
    let days = text
        .strip_suffix('d')
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| n.saturating_mul(86_400 * 1_000_000_000));
    match days {
        Some(ns) => Ok(ns),
        None => go_duration(text).map_err(|err| format!("cannot parse lookback: {err}")),
    }
}

fn micros(text: &str) -> Result<u64, String> {
    let us: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not microseconds since the epoch"))?;
    Ok(us.saturating_mul(NS_PER_US))
}

/// `tags` (JSON objects of strings) and `tag` (`key:value`) parameters, merged.
fn tags(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (key, value) in pairs {
        match key.as_str() {
            "tag" => {
                let (tag, tag_value) = value.split_once(':').ok_or_else(|| {
                    format!("malformed 'tag' parameter, expecting key:value, received: {value}")
                })?;
                out.insert(tag.to_owned(), tag_value.to_owned());
            }
            "tags" if !value.is_empty() => {
                let map: BTreeMap<String, String> = serde_json::from_str(value).map_err(|err| {
                    format!("malformed 'tags' parameter, cannot unmarshal JSON: {err}")
                })?;
                out.extend(map);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A trace id as Jaeger writes it: up to 32 hex digits, leading zeros optional.
pub fn trace_id(text: &str) -> Result<TraceId, String> {
    if text.is_empty() || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a trace id of up to 32 hex digits"));
    }
    let padded = format!("{text:0>32}");
    TraceId::parse_hex(&padded).map_err(|err| err.to_string())
}

/// A Go duration (`time.ParseDuration`): a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), like `1h30m` or `1.5s`; `0`
/// alone. Negative durations select nothing, so they are refused.
pub fn go_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {text:?}");
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {text:?}"))?;
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3_600e9,
            unit => return Err(format!("unknown unit {unit:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        assert_eq!(go_duration("1.2s"), Ok(1_200_000_000));
        assert_eq!(go_duration("100ms"), Ok(100_000_000));
        assert_eq!(go_duration("500us"), Ok(500_000));
        assert_eq!(go_duration("500µs"), Ok(500_000));
        assert_eq!(go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(go_duration("0"), Ok(0));
        assert_eq!(go_duration(".5ms"), Ok(500_000));
        for bad in ["", "5", "ms", "1d", "-1s", "1..2s", "1s2"] {
            assert!(go_duration(bad).is_err(), "{bad} is no Go duration");
        }
    }

    #[test]
    fn trace_ids_may_drop_leading_zeros() {
        let full = trace_id("00000000000000000123456789abcdef").unwrap();
        assert_eq!(trace_id("123456789abcdef").unwrap(), full);
        assert!(trace_id("xyz").is_err());
        assert!(trace_id(&"1".repeat(33)).is_err());
    }

    #[test]
    fn a_grafana_search_parses_and_bad_values_are_named() {
        let query = pairs(&[
            ("service", "auth"),
            ("operation", "POST /login"),
            ("tags", r#"{"http.route":"/login","error":"true"}"#),
            ("tag", "db.system:postgresql"),
            ("minDuration", "100ms"),
            ("maxDuration", "1.5s"),
            ("limit", "5000"),
            ("start", "1700000000000000"),
            ("end", "1700003600000000"),
            ("lookback", "custom"),
        ]);
        let search = search(&query, 0).unwrap();
        assert_eq!(search.operation.as_deref(), Some("POST /login"));
        assert_eq!(search.tags.len(), 3);
        assert_eq!(search.tags["db.system"], "postgresql");
        assert_eq!(
            (search.min_duration_ns, search.max_duration_ns),
            (100_000_000, 1_500_000_000)
        );
        assert_eq!(search.limit, MAX_LIMIT);
        assert_eq!(search.window.from_unix_ns, 1_700_000_000_000_000_000);
        assert_eq!(search.window.to_unix_ns, 1_700_003_600_000_000_001);

        let error = |query: &[(&str, &str)]| super::search(&pairs(query), 0).unwrap_err();
        assert_eq!(error(&[]), "parameter 'service' is required");
        assert!(error(&[("service", "a"), ("minDuration", "1x")]).contains("minDuration"));
        assert!(error(&[("service", "a"), ("tags", "{")]).contains("'tags'"));
        assert!(error(&[("service", "a"), ("tag", "novalue")]).contains("'tag'"));
        assert!(error(&[("service", "a"), ("limit", "-1")]).contains("limit"));
        assert!(error(&[("service", "a"), ("start", "2"), ("end", "1")]).contains("start"));
        assert!(
            error(&[
                ("service", "a"),
                ("minDuration", "2s"),
                ("maxDuration", "1s")
            ])
            .contains("maxDuration")
        );
    }

    #[test]
    fn lookback_before_end_else_an_hour() {
        let now = 10 * 86_400 * 1_000_000_000;
        let window = |query: &[(&str, &str)]| super::window(&pairs(query), now).unwrap();
        assert_eq!(window(&[]).from_unix_ns, now - DEFAULT_LOOKBACK_NS);
        assert_eq!(
            window(&[("lookback", "2d")]).from_unix_ns,
            now - 2 * 86_400 * 1_000_000_000
        );
        assert_eq!(
            window(&[("lookback", "15m")]).from_unix_ns,
            now - 900 * 1_000_000_000
        );
    }
}
