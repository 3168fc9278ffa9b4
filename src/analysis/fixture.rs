//! Test fixtures: an indented text tree of spans, parsed into the collector's span model.
//!
//! One line per span, children indented two spaces under their parent:
//!
//! ```text
//! auth: POST /login 0..400 server http.request.method=POST http.route=/login cpu.time_ns=15000000
//!   SELECT tenants 10..30 client db.system=postgresql db.statement="SELECT * FROM tenants WHERE id = 1"
//! ```
//!
//! `service:` is optional (a span inherits its parent's service, a root defaults to `svc`); times
//! are milliseconds from the trace start (fractions and negative values allowed, for clock skew);
//! the kind word follows the times; then `key=value` attributes, quoted when they hold spaces.
//! Unquoted integers become integer attributes. A few keys steer the fixture instead of becoming
//! attributes: `id=N` (span id, default: the line number), `parent=N` (parent id, overriding the
//! indentation; `parent=none` for a root), `version=V`, `scope=NAME` (the instrumentation scope)
//! and `status=error`.
//!
//! This is the text the unit tests, the store conformance suite (`tests/it/store.rs`) and other
//! integration tests write traces in.
//!
//! Invariant: for tests only; it panics on a malformed fixture, which is a bug in the test. The
//! renderings below (`render_*`) exist in test builds of this crate only.

use std::sync::Arc;

#[cfg(test)]
use collector::category::Category;
use collector::category::classify;
use collector::model::{
    AttrValue, KeyValue, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};
use collector::otlp::normalize::semantics;

#[cfg(test)]
use super::{Anomaly, RequestAnalysis, gap};

/// Nanoseconds added to every fixture time, so that skewed children may start "before zero".
const BASE_NS: i64 = 1_000_000_000_000;

/// The trace id every fixture span gets.
pub fn trace_id() -> TraceId {
    TraceId([7; 16])
}

/// A span id from a small number, the way fixtures name spans.
pub fn span_id(n: u64) -> SpanId {
    SpanId(n.to_be_bytes())
}

/// The fixture number of a span id, for rendering results compactly.
#[cfg(test)]
pub(crate) fn span_no(id: SpanId) -> u64 {
    u64::from_be_bytes(id.0)
}

/// Builds one span from already-decided parts; the parser and property tests share it.
#[allow(clippy::too_many_arguments)]
pub fn make_span(
    id: u64,
    parent: Option<u64>,
    service: &str,
    version: Option<&str>,
    name: &str,
    kind: SpanKind,
    start_ns: u64,
    duration_ns: u64,
    attributes: Vec<KeyValue>,
    error: bool,
) -> Span {
    let sem = semantics(&attributes);
    let category = classify(kind, &sem, &attributes);
    Span {
        trace_id: trace_id(),
        span_id: span_id(id),
        parent_span_id: parent.map(span_id),
        resource: Arc::new(Resource {
            service_name: service.to_owned(),
            service_version: version.map(str::to_owned),
            service_instance_id: None,
            attributes: Vec::new(),
        }),
        scope: Arc::new(Scope::default()),
        name: name.to_owned(),
        kind,
        start_unix_ns: start_ns,
        duration_ns,
        status: Status {
            code: if error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
            message: String::new(),
        },
        attributes,
        n_events: 0,
        links: Vec::new(),
        semantics: sem,
        category,
    }
}

/// Splits a line on whitespace, keeping `"quoted values"` (with the quotes) in one token.
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                current.push(ch);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn parse_kind(word: &str) -> SpanKind {
    match word {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "internal" => SpanKind::Internal,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "unspecified" => SpanKind::Unspecified,
        other => panic!("unknown span kind {other:?}"),
    }
}

fn ms_to_ns(text: &str) -> i64 {
    let ms: f64 = text.parse().unwrap_or_else(|_| panic!("bad time {text:?}"));
    (ms * 1_000_000.0).round() as i64
}

fn parse_times(token: &str) -> Option<(i64, i64)> {
    let (start, end) = token.split_once("..")?;
    let ok = |t: &str| !t.is_empty() && t.parse::<f64>().is_ok();
    (ok(start) && ok(end)).then(|| (ms_to_ns(start), ms_to_ns(end)))
}

/// Parses a fixture into spans, in line order.
///
/// # Panics
///
/// On a malformed fixture: a bug in the test that wrote it.
pub fn parse(fixture: &str) -> Vec<Span> {
    // (indent, id, service) of the open ancestors of the current line.
    let mut ancestors: Vec<(usize, u64, String)> = Vec::new();
    let mut spans = Vec::new();
    let mut line_no = 0u64;
    for line in fixture.lines() {
        if line.trim().is_empty() {
            continue;
        }
        line_no += 1;
        let indent = line.len() - line.trim_start().len();
        while ancestors
            .last()
            .is_some_and(|(level, _, _)| *level >= indent)
        {
            ancestors.pop();
        }
        let toks = tokens(line.trim());
        let time_pos = toks
            .iter()
            .position(|t| parse_times(t).is_some())
            .unwrap_or_else(|| panic!("no start..end on line {line:?}"));
        let mut name_toks = &toks[..time_pos];
        let mut service = ancestors.last().map(|(_, _, s)| s.clone());
        if let Some(first) = name_toks.first()
            && let Some(svc) = first.strip_suffix(':')
        {
            service = Some(svc.to_owned());
            name_toks = &name_toks[1..];
        }
        let service = service.unwrap_or_else(|| "svc".to_owned());
        let name = name_toks.join(" ");
        let (start, end) = parse_times(&toks[time_pos]).expect("checked above");
        let kind = parse_kind(
            toks.get(time_pos + 1)
                .map(String::as_str)
                .unwrap_or("internal"),
        );
        let mut id = line_no;
        let mut parent = ancestors.last().map(|(_, id, _)| *id);
        let mut version = None;
        let mut scope = None;
        let mut error = false;
        let mut attributes = Vec::new();
        for tok in &toks[(time_pos + 2).min(toks.len())..] {
            let (key, raw) = tok
                .split_once('=')
                .unwrap_or_else(|| panic!("bad attribute {tok:?}"));
            let quoted = raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"');
            let text = if quoted { &raw[1..raw.len() - 1] } else { raw };
            match key {
                "id" => id = text.parse().expect("numeric id"),
                "parent" => {
                    parent = if text == "none" {
                        None
                    } else {
                        Some(text.parse().expect("numeric parent"))
                    }
                }
                "version" => version = Some(text.to_owned()),
                "scope" => scope = Some(text.to_owned()),
                "status" => error = text == "error",
                _ => {
                    let value = match text.parse::<i64>() {
                        Ok(n) if !quoted => AttrValue::Int(n),
                        _ => AttrValue::Str(text.to_owned()),
                    };
                    attributes.push(KeyValue {
                        key: key.to_owned(),
                        value,
                    });
                }
            }
        }
        let start_ns = (BASE_NS + start).max(0) as u64;
        let duration_ns = (end - start).max(0) as u64;
        let mut span = make_span(
            id,
            parent,
            &service,
            version.as_deref(),
            &name,
            kind,
            start_ns,
            duration_ns,
            attributes,
            error,
        );
        if let Some(name) = scope {
            span.scope = Arc::new(Scope {
                name,
                version: String::new(),
            });
        }
        spans.push(span);
        ancestors.push((indent, id, service));
    }
    spans
}

/// Formats nanoseconds as fixture milliseconds: `12`, `12.5`, `0.001`.
#[cfg(test)]
pub(crate) fn ms(ns: u64) -> String {
    let whole = ns / 1_000_000;
    let frac = ns % 1_000_000;
    if frac == 0 {
        format!("{whole}")
    } else {
        let text = format!("{whole}.{frac:06}");
        text.trim_end_matches('0').to_owned()
    }
}

/// `db 20 cpu 5`: the non-zero categories of a breakdown, in milliseconds.
#[cfg(test)]
pub(crate) fn render_categories(values: [u64; Category::COUNT]) -> String {
    let parts: Vec<String> = Category::ALL
        .iter()
        .filter(|c| values[c.index()] > 0)
        .map(|c| format!("{} {}", c.as_str(), ms(values[c.index()])))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

/// A request's header, breakdown and critical path.
#[cfg(test)]
pub(crate) fn render_request(req: &RequestAnalysis) -> String {
    let path: Vec<String> = req
        .critical_path
        .iter()
        .map(|id| span_no(*id).to_string())
        .collect();
    format!(
        "#{} {}: {} {}ms{} | {} | path {}\n",
        span_no(req.span_id),
        req.service,
        req.endpoint,
        ms(req.duration_ns),
        if req.error { " error" } else { "" },
        render_categories(req.breakdown.0),
        path.join(" ")
    )
}

/// Counts, totals and operations of a request.
#[cfg(test)]
pub(crate) fn render_details(req: &RequestAnalysis) -> String {
    let mut out = format!(
        "  db_calls {} io_parallelism {:.2}\n",
        req.n_db_calls, req.io_parallelism
    );
    let totals: Vec<String> = Category::ALL
        .iter()
        .filter(|c| req.totals[c.index()].calls > 0)
        .map(|c| {
            let t = req.totals[c.index()];
            format!("{} {}x/{}", c.as_str(), t.calls, ms(t.total_ns))
        })
        .collect();
    out.push_str(&format!("  totals {}\n", totals.join(" ")));
    for op in &req.operations {
        let name = match gap::parse_gap_operation(&op.name) {
            Some((after, before)) => format!("gap {}", gap::gap_place(after, before)),
            None => op.name.clone(),
        };
        out.push_str(&format!(
            "  op {} {:?} calls {} total {} critical {}\n",
            op.category.as_str(),
            name,
            op.calls,
            ms(op.total_ns),
            ms(op.critical_ns)
        ));
    }
    out
}

/// A request's findings.
#[cfg(test)]
pub(crate) fn render_findings(req: &RequestAnalysis) -> String {
    let mut out = String::new();
    for f in &req.findings {
        let spans: Vec<String> = f
            .span_ids
            .iter()
            .map(|id| span_no(*id).to_string())
            .collect();
        out.push_str(&format!(
            "  {} {:?} x{} saves {} [{}]\n",
            f.kind.as_str(),
            f.name,
            f.count,
            ms(f.potential_saving_ns),
            spans.join(" ")
        ));
    }
    out
}

/// A request's gaps, one per line.
#[cfg(test)]
pub(crate) fn render_gaps(req: &RequestAnalysis) -> String {
    let mut out = String::new();
    for g in &req.gaps {
        let cpu = g
            .cpu_ns
            .map_or(String::new(), |ns| format!(" cpu {}", ms(ns)));
        out.push_str(&format!(
            "  gap {} at {} for {}{cpu} in [{}]\n",
            gap::gap_place(g.after.as_deref(), g.before.as_deref()),
            ms(g.start_unix_ns - req.start_unix_ns),
            ms(g.duration_ns),
            span_no(g.span_id)
        ));
    }
    out
}

/// Anomalies, one per line.
#[cfg(test)]
pub(crate) fn render_anomalies(anomalies: &[Anomaly]) -> String {
    anomalies
        .iter()
        .map(|a| {
            let (what, id) = match a {
                Anomaly::ChildOutsideParent { span_id } => ("child outside parent", span_id),
                Anomaly::OrphanSpan { span_id } => ("orphan", span_id),
                Anomaly::ParentCycle { span_id } => ("cycle cut", span_id),
                Anomaly::DuplicateSpanId { span_id } => ("duplicate id", span_id),
            };
            format!("anomaly: {what} #{}\n", span_no(*id))
        })
        .collect()
}
