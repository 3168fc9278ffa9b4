//! `/trace/{trace_id}`: one trace as a waterfall, with each request's breakdown and findings.
//!
//! The waterfall is built iteratively (an explicit stack, no recursion) into a flat list of rows
//! that open and close `<details>` subtrees, so a deep or huge trace costs bounded time and HTML:
//! repeated leaf siblings (same parent, service, name and normalized statement) fold into one
//! row, and at most [`MAX_ROWS`] rows are rendered.
//!
//! Invariant: shows only what `query::trace` returns; layout arithmetic only.

use std::collections::{HashMap, HashSet};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use collector::model::TraceId;

use super::{
    CategoryValue, Chrome, PageError, PageParams, breakdown_array, category_values, encode,
    fmt_calls, fmt_count, fmt_ms,
};
use crate::analysis::gap::gap_place;
use crate::analysis::sql;
use crate::web::AppState;
use crate::web::api::dto::{SpanDto, TraceDto, TraceGapDto};
use crate::web::charts::{self, BarSegment};
use crate::web::error::ApiError;
use crate::web::query;
use crate::web::window::parse_instant;

/// Rows rendered at most. A row is ~1 KB of HTML; 2,000 rows keep a page under ~2 MB and the
/// browser responsive. The full trace stays available from the JSON API.
pub const MAX_ROWS: usize = 2000;
/// Leaf siblings that repeat at least this often fold into one row.
pub const FOLD_MIN_SIBLINGS: usize = 3;
/// Indentation stops growing at this depth (the CSS has a class per level up to it).
const MAX_INDENT: usize = 16;
/// Service colours cycle through this many CSS classes.
const SERVICE_COLORS: usize = 8;
/// A folded row lists at most this many of its spans.
const MAX_FOLD_MEMBERS_LISTED: usize = 50;

/// A bar in a waterfall row, in a viewBox 1000 units wide.
pub struct Bar {
    pub x: String,
    pub width: String,
}

/// One attribute, or one fact about the span.
pub struct Attribute {
    pub key: String,
    pub value: String,
}

/// One member of a folded row.
pub struct FoldMember {
    pub offset: String,
    pub duration: String,
    pub critical: bool,
}

/// One line of the waterfall.
pub struct WaterfallRow {
    /// This row has children: it opens a `<details>` that a later row closes.
    pub opens: bool,
    /// How many open subtrees end after this row.
    pub closes: usize,
    pub indent: usize,
    pub name: String,
    /// The statement or URL, when there is one.
    pub detail: String,
    pub service: String,
    pub service_class: usize,
    pub category: &'static str,
    pub error: bool,
    pub critical: bool,
    pub is_request: bool,
    pub offset: String,
    pub duration: String,
    pub bars: Vec<Bar>,
    pub attributes: Vec<Attribute>,
    /// Spans folded into this row (1 for an ordinary row).
    pub count: usize,
    pub fold_total: String,
    pub fold_critical: String,
    pub fold_critical_count: usize,
    pub members: Vec<FoldMember>,
}

pub struct FindingView {
    pub kind: String,
    pub summary: String,
    pub count: String,
    pub saving: String,
    /// Where in the code, when its spans say.
    pub location: Option<super::LocationView>,
}

pub struct RequestView {
    pub service: String,
    pub endpoint: String,
    pub href: String,
    pub duration: String,
    pub db_calls: String,
    pub segments: Vec<BarSegment>,
    pub values: Vec<CategoryValue>,
    pub findings: Vec<FindingView>,
    pub critical_spans: String,
}

pub struct ServiceChip {
    pub name: String,
    pub class: usize,
}

#[derive(Template, WebTemplate)]
#[template(path = "trace.html")]
pub struct TracePage {
    pub chrome: Chrome,
    pub trace_id: String,
    pub duration: String,
    pub n_spans: String,
    /// "1 request", "2 requests".
    pub n_requests: String,
    pub services: Vec<ServiceChip>,
    pub requests: Vec<RequestView>,
    pub ticks: Vec<String>,
    pub rows: Vec<WaterfallRow>,
    /// Set when rows were cut at [`MAX_ROWS`].
    pub truncated: Option<String>,
    pub n_folded: usize,
    pub json_href: String,
}

fn statement(span: &SpanDto) -> Option<&str> {
    ["db.query.text", "db.statement"]
        .iter()
        .find_map(|key| span.attributes.get(*key))
        .map(String::as_str)
}

fn detail_of(span: &SpanDto) -> String {
    statement(span)
        .or_else(|| span.attributes.get("url.full").map(String::as_str))
        .or_else(|| span.attributes.get("http.url").map(String::as_str))
        .or_else(|| {
            span.attributes
                .get("messaging.destination.name")
                .map(String::as_str)
        })
        .unwrap_or_default()
        .to_owned()
}

/// What makes siblings "the same" for folding.
fn fold_key(span: &SpanDto) -> (String, String, String) {
    (
        span.service.clone(),
        span.name.clone(),
        statement(span).map(sql::normalize).unwrap_or_default(),
    )
}

/// A waterfall entry before layout: one span, several folded siblings, or a gap of its parent's
/// self time (request and gap positions in the trace's requests).
enum Item {
    Span(usize),
    Fold(Vec<usize>),
    Gap(usize, usize),
}

/// A parent's items in start order: its children's (see [`items`]) and its gaps, each at its
/// place among them.
fn items_with_gaps(
    children: &[usize],
    spans: &[SpanDto],
    has_children: &[bool],
    gaps: &[(usize, usize)],
    trace: &TraceDto,
) -> Vec<Item> {
    let mut out = items(children, spans, has_children);
    if gaps.is_empty() {
        return out;
    }
    let offset = |item: &Item| match item {
        Item::Span(idx) => spans[*idx].offset_ms,
        Item::Fold(members) => spans[members[0]].offset_ms,
        Item::Gap(request, gap) => trace.requests[*request].gaps[*gap].offset_ms,
    };
    out.extend(gaps.iter().map(|(request, gap)| Item::Gap(*request, *gap)));
    out.sort_by(|a, b| offset(a).total_cmp(&offset(b)));
    out
}

/// Groups a parent's children (sorted by start) into items: repeated leaves fold together at
/// the position of their first member.
fn items(children: &[usize], spans: &[SpanDto], has_children: &[bool]) -> Vec<Item> {
    let mut groups: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
    for idx in children {
        if !has_children[*idx] {
            groups.entry(fold_key(&spans[*idx])).or_default().push(*idx);
        }
    }
    let mut out = Vec::new();
    for idx in children {
        if has_children[*idx] {
            out.push(Item::Span(*idx));
            continue;
        }
        let key = fold_key(&spans[*idx]);
        match groups.get(&key) {
            Some(members) if members.len() >= FOLD_MIN_SIBLINGS => {
                if members[0] == *idx {
                    out.push(Item::Fold(members.clone()));
                }
            }
            _ => out.push(Item::Span(*idx)),
        }
    }
    out
}

fn bar(span: &SpanDto, total_ms: f64) -> Bar {
    bar_at(span.offset_ms, span.duration_ms, total_ms)
}

fn bar_at(offset_ms: f64, duration_ms: f64, total_ms: f64) -> Bar {
    let scale = if total_ms > 0.0 {
        1000.0 / total_ms
    } else {
        0.0
    };
    let x = (offset_ms * scale).clamp(0.0, 1000.0);
    let width = (duration_ms * scale).clamp(0.0, 1000.0 - x).max(2.0);
    Bar {
        x: format!("{x:.1}"),
        width: format!("{width:.1}"),
    }
}

fn attributes_of(span: &SpanDto) -> Vec<Attribute> {
    let mut out = vec![
        Attribute {
            key: "span.kind".into(),
            value: span.kind.to_owned(),
        },
        Attribute {
            key: "status".into(),
            value: if span.status_message.is_empty() {
                span.status.to_owned()
            } else {
                format!("{}: {}", span.status, span.status_message)
            },
        },
        Attribute {
            key: "span_id".into(),
            value: span.span_id.clone(),
        },
        Attribute {
            key: "start".into(),
            value: span.start.clone(),
        },
    ];
    if !span.version.is_empty() {
        out.push(Attribute {
            key: "service.version".into(),
            value: span.version.clone(),
        });
    }
    out.extend(span.attributes.iter().map(|(key, value)| Attribute {
        key: key.clone(),
        value: value.clone(),
    }));
    out
}

/// The waterfall rows, their count cut at `max_rows`, and how many spans were left out.
fn waterfall(
    trace: &TraceDto,
    critical: &HashSet<&str>,
    detached: &HashSet<&str>,
    requests: &HashSet<&str>,
    service_class: &HashMap<&str, usize>,
    max_rows: usize,
) -> (Vec<WaterfallRow>, usize, usize) {
    let spans = &trace.spans;
    let by_id: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(idx, s)| (s.span_id.as_str(), idx))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (idx, span) in spans.iter().enumerate() {
        match span
            .parent_span_id
            .as_deref()
            .and_then(|p| by_id.get(p))
            .filter(|p| **p != idx)
        {
            Some(parent) => children[*parent].push(idx),
            None => roots.push(idx),
        }
    }
    let by_start = |a: &usize, b: &usize| {
        spans[*a]
            .offset_ms
            .total_cmp(&spans[*b].offset_ms)
            .then(a.cmp(b))
    };
    roots.sort_by(by_start);
    for list in &mut children {
        list.sort_by(by_start);
    }
    // Gaps of each span's self time, shown as rows among its children.
    let mut gaps: Vec<Vec<(usize, usize)>> = vec![Vec::new(); spans.len()];
    for (request_idx, request) in trace.requests.iter().enumerate() {
        for (gap_idx, gap) in request.gaps.iter().enumerate() {
            if let Some(span_idx) = by_id.get(gap.span_id.as_str()) {
                gaps[*span_idx].push((request_idx, gap_idx));
            }
        }
    }
    let has_children: Vec<bool> = children
        .iter()
        .zip(&gaps)
        .map(|(c, g)| !c.is_empty() || !g.is_empty())
        .collect();
    let total_ms = trace.duration_ms;

    let mut rows: Vec<WaterfallRow> = Vec::new();
    let mut n_folded = 0;
    let mut shown = 0usize;
    // Depths of the rows whose `<details>` is still open.
    let mut open: Vec<usize> = Vec::new();
    let mut stack: Vec<(Item, usize)> = items(&roots, spans, &has_children)
        .into_iter()
        .rev()
        .map(|item| (item, 0))
        .collect();
    // Ids already laid out: a cycle in parent links must not loop forever.
    let mut seen = vec![false; spans.len()];
    while let Some((item, depth)) = stack.pop() {
        if rows.len() >= max_rows {
            break;
        }
        while open.last().is_some_and(|d| *d >= depth) {
            open.pop();
            if let Some(last) = rows.last_mut() {
                last.closes += 1;
            }
        }
        match item {
            Item::Span(idx) => {
                if seen[idx] {
                    continue;
                }
                seen[idx] = true;
                shown += 1;
                let span = &spans[idx];
                let opens = has_children[idx];
                let is_detached = detached.contains(span.span_id.as_str());
                let mut attributes = attributes_of(span);
                let queued = queue_time_ms(span, &by_id, spans);
                if let Some(queued) = queued {
                    attributes.insert(
                        0,
                        Attribute {
                            key: "queue time".into(),
                            value: format!(
                                "{} between the message's publish and the start of its \
                                 processing",
                                fmt_ms(queued)
                            ),
                        },
                    );
                }
                if is_detached {
                    attributes.insert(
                        0,
                        Attribute {
                            key: "detached".into(),
                            value: "ended after its parent, which did not wait for it: \
                                    never on the critical path"
                                .into(),
                        },
                    );
                }
                rows.push(WaterfallRow {
                    opens,
                    closes: 0,
                    indent: depth.min(MAX_INDENT),
                    name: match (is_detached, queued) {
                        (true, _) => format!("{} (detached)", span.name),
                        (false, Some(queued)) => {
                            format!("{} (queued {})", span.name, fmt_ms(queued))
                        }
                        (false, None) => span.name.clone(),
                    },
                    detail: detail_of(span),
                    service: span.service.clone(),
                    service_class: service_class
                        .get(span.service.as_str())
                        .copied()
                        .unwrap_or(0),
                    category: span.category,
                    error: span.status == "error",
                    critical: critical.contains(span.span_id.as_str()),
                    is_request: requests.contains(span.span_id.as_str()),
                    offset: fmt_ms(span.offset_ms),
                    duration: fmt_ms(span.duration_ms),
                    bars: vec![bar(span, total_ms)],
                    attributes,
                    count: 1,
                    fold_total: String::new(),
                    fold_critical: String::new(),
                    fold_critical_count: 0,
                    members: Vec::new(),
                });
                if opens {
                    open.push(depth);
                    for child in
                        items_with_gaps(&children[idx], spans, &has_children, &gaps[idx], trace)
                            .into_iter()
                            .rev()
                    {
                        stack.push((child, depth + 1));
                    }
                }
            }
            Item::Gap(request_idx, gap_idx) => {
                let gap = &trace.requests[request_idx].gaps[gap_idx];
                let owner = by_id.get(gap.span_id.as_str()).map(|idx| &spans[*idx]);
                let service = owner.map(|span| span.service.clone()).unwrap_or_default();
                rows.push(gap_row(gap, owner, service, service_class, depth, total_ms));
            }
            Item::Fold(members) => {
                for idx in &members {
                    seen[*idx] = true;
                }
                shown += members.len();
                n_folded += 1;
                let first = &spans[members[0]];
                let on_path: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|idx| critical.contains(spans[*idx].span_id.as_str()))
                    .collect();
                let total: f64 = members.iter().map(|idx| spans[*idx].duration_ms).sum();
                let critical_ms: f64 = on_path.iter().map(|idx| spans[*idx].duration_ms).sum();
                let label = statement(first)
                    .map(sql::normalize)
                    .unwrap_or_else(|| first.name.clone());
                let mut attributes = attributes_of(first);
                attributes.insert(
                    0,
                    Attribute {
                        key: "folded".into(),
                        value: format!("{} sibling spans; attributes of the first", members.len()),
                    },
                );
                rows.push(WaterfallRow {
                    opens: false,
                    closes: 0,
                    indent: depth.min(MAX_INDENT),
                    name: format!("×{} {}", members.len(), label),
                    detail: String::new(),
                    service: first.service.clone(),
                    service_class: service_class
                        .get(first.service.as_str())
                        .copied()
                        .unwrap_or(0),
                    category: first.category,
                    error: members.iter().any(|idx| spans[*idx].status == "error"),
                    critical: !on_path.is_empty(),
                    is_request: false,
                    offset: fmt_ms(first.offset_ms),
                    duration: fmt_ms(total),
                    bars: members
                        .iter()
                        .map(|idx| bar(&spans[*idx], total_ms))
                        .collect(),
                    attributes,
                    count: members.len(),
                    fold_total: fmt_ms(total),
                    fold_critical: fmt_ms(critical_ms),
                    fold_critical_count: on_path.len(),
                    members: members
                        .iter()
                        .take(MAX_FOLD_MEMBERS_LISTED)
                        .map(|idx| FoldMember {
                            offset: fmt_ms(spans[*idx].offset_ms),
                            duration: fmt_ms(spans[*idx].duration_ms),
                            critical: critical.contains(spans[*idx].span_id.as_str()),
                        })
                        .collect(),
                });
            }
        }
    }
    if let Some(last) = rows.last_mut() {
        last.closes += open.len();
    }
    (rows, spans.len().saturating_sub(shown), n_folded)
}

/// How long a consumed message waited in its queue: from its producer's span (its end, where
/// the publish ended before the processing began; else its start) to the consumer's start.
fn queue_time_ms(span: &SpanDto, by_id: &HashMap<&str, usize>, spans: &[SpanDto]) -> Option<f64> {
    if span.kind != "consumer" {
        return None;
    }
    let producer = &spans[*by_id.get(span.parent_span_id.as_deref()?)?];
    if producer.kind != "producer" {
        return None;
    }
    let published = producer.offset_ms + producer.duration_ms;
    let from = if published <= span.offset_ms {
        published
    } else {
        producer.offset_ms
    };
    Some((span.offset_ms - from).max(0.0))
}

/// A gap as a waterfall row: where it sits, how long, and what is known of it.
fn gap_row(
    gap: &TraceGapDto,
    owner: Option<&SpanDto>,
    service: String,
    service_class: &HashMap<&str, usize>,
    depth: usize,
    total_ms: f64,
) -> WaterfallRow {
    let what = match gap.cpu_ms {
        Some(cpu_ms) => format!(
            "{} on a CPU and {} off it, measured (cpu.time_ns); no span covers it",
            fmt_ms(cpu_ms),
            fmt_ms((gap.duration_ms - cpu_ms).max(0.0))
        ),
        None => "no span covers it and no CPU was measured: it may be CPU or I/O; add a span \
                 there, or measure CPU, to find out"
            .to_owned(),
    };
    let mut attributes = vec![
        Attribute {
            key: "gap".into(),
            value: what,
        },
        Attribute {
            key: "start".into(),
            value: gap.start.clone(),
        },
    ];
    if let Some(owner) = owner {
        attributes.push(Attribute {
            key: "self time of".into(),
            value: owner.name.clone(),
        });
    }
    let label = match gap.category {
        "untraced" => "untraced",
        "cpu" => "self time on CPU",
        _ => "self time off CPU",
    };
    WaterfallRow {
        opens: false,
        closes: 0,
        indent: depth.min(MAX_INDENT),
        name: format!("({label})"),
        detail: gap_place(gap.after.as_deref(), gap.before.as_deref()),
        service_class: service_class.get(service.as_str()).copied().unwrap_or(0),
        service,
        category: gap.category,
        error: false,
        critical: true,
        is_request: false,
        offset: fmt_ms(gap.offset_ms),
        duration: fmt_ms(gap.duration_ms),
        bars: vec![bar_at(gap.offset_ms, gap.duration_ms, total_ms)],
        attributes,
        count: 1,
        fold_total: String::new(),
        fold_critical: String::new(),
        fold_critical_count: 0,
        members: Vec::new(),
    }
}

/// The endpoint page of a request, with a window of an hour around it.
fn request_href(service: &str, endpoint: &str, start: &str) -> String {
    let window = match parse_instant(start) {
        Ok(ns) => {
            let ms = ns / 1_000_000;
            format!(
                "from={}&to={}",
                ms.saturating_sub(1_800_000),
                ms.saturating_add(1_800_000)
            )
        }
        Err(_) => "range=24h".to_owned(),
    };
    super::endpoint_href(service, endpoint, &window)
}

fn finding_kind(kind: &str) -> String {
    kind.replace('_', " ")
}

fn build(trace: &TraceDto, chrome: Chrome) -> TracePage {
    let critical: HashSet<&str> = trace
        .requests
        .iter()
        .flat_map(|r| r.critical_path.iter().map(String::as_str))
        .collect();
    let request_ids: HashSet<&str> = trace.requests.iter().map(|r| r.span_id.as_str()).collect();
    let mut service_class: HashMap<&str, usize> = HashMap::new();
    let mut services = Vec::new();
    let mut ordered: Vec<&SpanDto> = trace.spans.iter().collect();
    ordered.sort_by(|a, b| a.offset_ms.total_cmp(&b.offset_ms));
    for span in ordered {
        if !service_class.contains_key(span.service.as_str()) {
            let class = service_class.len() % SERVICE_COLORS;
            service_class.insert(&span.service, class);
            services.push(ServiceChip {
                name: span.service.clone(),
                class,
            });
        }
    }
    let detached: HashSet<&str> = trace
        .requests
        .iter()
        .flat_map(|r| r.detached.iter().map(String::as_str))
        .collect();
    let (rows, hidden, n_folded) = waterfall(
        trace,
        &critical,
        &detached,
        &request_ids,
        &service_class,
        MAX_ROWS,
    );
    let starts: HashMap<&str, &str> = trace
        .spans
        .iter()
        .map(|s| (s.span_id.as_str(), s.start.as_str()))
        .collect();
    let requests = trace
        .requests
        .iter()
        .map(|r| RequestView {
            service: r.service.clone(),
            endpoint: r.endpoint.clone(),
            href: request_href(
                &r.service,
                &r.endpoint,
                starts.get(r.span_id.as_str()).copied().unwrap_or_default(),
            ),
            duration: fmt_ms(r.duration_ms),
            db_calls: fmt_count(u64::from(r.db_calls)),
            segments: charts::bar_segments(&breakdown_array(&r.breakdown_ms), 0.0),
            values: category_values(&r.breakdown_ms),
            findings: r
                .findings
                .iter()
                .map(|f| FindingView {
                    kind: finding_kind(f.kind),
                    summary: f.summary.clone(),
                    count: fmt_calls(f.count_per_request),
                    saving: fmt_ms(f.potential_saving_ms),
                    location: f.location.as_ref().map(super::fmt_location),
                })
                .collect(),
            critical_spans: fmt_count(r.critical_path.len() as u64),
        })
        .collect();
    TracePage {
        chrome,
        trace_id: trace.trace_id.clone(),
        duration: fmt_ms(trace.duration_ms),
        n_spans: fmt_count(trace.spans.len() as u64),
        n_requests: match trace.requests.len() {
            1 => "1 request".to_owned(),
            n => format!("{} requests", fmt_count(n as u64)),
        },
        services,
        requests,
        ticks: (0..=4)
            .map(|q| fmt_ms(trace.duration_ms * f64::from(q) / 4.0))
            .collect(),
        truncated: (hidden > 0).then(|| {
            format!(
                "Showing the first {} rows; {} more spans are not drawn. The JSON API has them all.",
                fmt_count(rows.len() as u64),
                fmt_count(hidden as u64)
            )
        }),
        rows,
        n_folded,
        json_href: format!("/api/v1/traces/{}", encode(&trace.trace_id)),
    }
}

/// `GET /trace/{trace_id}`.
pub async fn trace_get(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<TracePage, PageError> {
    let parsed = TraceId::parse_hex(&trace_id)
        .map_err(|e| ApiError::BadRequest(format!("trace id must be 32 hex digits: {e}")))?;
    let trace = query::trace(&state.store, parsed, &state.analysis)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("trace {parsed} not found")))?;
    let chrome = Chrome::new("trace", "/", &params, None, Vec::new());
    // Laying out a large trace is CPU work: keep it off the async workers.
    let page = tokio::task::spawn_blocking(move || build(&trace, chrome))
        .await
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("trace page failed: {err}")))?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn span(id: usize, parent: Option<usize>, name: &str, offset: f64, duration: f64) -> SpanDto {
        SpanDto {
            span_id: format!("{id:016x}"),
            parent_span_id: parent.map(|p| format!("{p:016x}")),
            service: "auth".into(),
            version: String::new(),
            name: name.into(),
            kind: "internal",
            start: "2024-05-01T10:00:00.000Z".into(),
            offset_ms: offset,
            duration_ms: duration,
            category: "cpu",
            attributes: BTreeMap::new(),
            resource: BTreeMap::new(),
            status: "unset",
            status_message: String::new(),
            events: 0,
        }
    }

    fn trace(spans: Vec<SpanDto>) -> TraceDto {
        TraceDto {
            trace_id: "0".repeat(32),
            duration_ms: 100.0,
            spans,
            requests: Vec::new(),
        }
    }

    fn rows(trace: &TraceDto, max: usize) -> (Vec<WaterfallRow>, usize, usize) {
        waterfall(
            trace,
            &HashSet::new(),
            &HashSet::new(),
            &HashSet::new(),
            &HashMap::new(),
            max,
        )
    }

    #[test]
    fn a_consumer_row_says_how_long_its_message_was_queued() {
        let mut producer = span(2, Some(1), "publish orders", 10.0, 5.0);
        producer.kind = "producer";
        let mut consumer = span(3, Some(2), "orders process", 40.0, 20.0);
        consumer.kind = "consumer";
        let trace = trace(vec![
            span(1, None, "POST /order", 0.0, 30.0),
            producer,
            consumer,
        ]);
        let (rows, _, _) = rows(&trace, 100);
        let row = rows
            .iter()
            .find(|row| row.name.starts_with("orders process"))
            .expect("the consumer's row");
        assert_eq!(row.name, "orders process (queued 25.0 ms)");
        assert_eq!(row.attributes[0].key, "queue time");
    }

    #[test]
    fn repeated_leaves_fold_and_subtrees_close() {
        let mut spans = vec![span(1, None, "GET /", 0.0, 100.0)];
        for n in 0..12 {
            let mut query = span(10 + n, Some(1), "SELECT users", 1.0 + n as f64, 1.0);
            query.attributes.insert(
                "db.statement".into(),
                format!("SELECT * FROM users WHERE id = {n}"),
            );
            spans.push(query);
        }
        spans.push(span(2, Some(1), "render", 50.0, 10.0));
        spans.push(span(3, Some(2), "template", 51.0, 5.0));
        let (rows, hidden, folded) = rows(&trace(spans), 100);
        assert_eq!(hidden, 0);
        assert_eq!(folded, 1);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "GET /",
                "×12 SELECT * FROM users WHERE id = ?",
                "render",
                "template"
            ]
        );
        assert!(rows[0].opens && rows[2].opens);
        // `template` ends both open subtrees.
        assert_eq!(rows.iter().map(|r| r.closes).sum::<usize>(), 2);
        assert_eq!(rows[3].closes, 2);
        assert_eq!(rows[1].bars.len(), 12);
    }

    #[test]
    fn a_huge_deep_trace_is_bounded_without_recursion() {
        // A chain 20,000 deep: recursion would overflow the stack.
        let spans: Vec<SpanDto> = (0..20_000)
            .map(|n| span(n + 1, (n > 0).then_some(n), &format!("step {n}"), 0.0, 1.0))
            .collect();
        let (rows, hidden, _) = rows(&trace(spans), MAX_ROWS);
        assert_eq!(rows.len(), MAX_ROWS);
        assert_eq!(hidden, 20_000 - MAX_ROWS);
        let opened = rows.iter().filter(|r| r.opens).count();
        assert_eq!(rows.iter().map(|r| r.closes).sum::<usize>(), opened);
        assert_eq!(rows.last().map(|r| r.indent), Some(MAX_INDENT));
    }
}
