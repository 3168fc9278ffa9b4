//! `/trace/{trace_id}`: one trace as a waterfall, with each request's breakdown and findings.
//!
//! The waterfall is built iteratively (an explicit stack, no recursion) into a flat list of rows
//! that open and close `<details>` subtrees, so a deep or huge trace costs bounded time and HTML:
//! repeated leaf siblings (same parent, service, name and normalized statement) fold into one
//! row, and at most [`MAX_ROWS`] rows are rendered.
//!
//! The span tree is the view's (`read::trace`): rows follow its positions, ids are never looked
//! up again.
//!
//! Invariant: shows only what `read::trace::trace` returns, rounded as the API rounds it; layout
//! arithmetic only.

use std::collections::{BTreeMap, HashMap, HashSet};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use collector::category::Category;
use collector::model::{SpanId, SpanKind, StatusCode, TraceId};

use super::{
    CategoryValue, Chrome, PageError, PageParams, category_values, encode, fmt_calls, fmt_count,
    fmt_ms,
};
use crate::analysis::FindingKind;
use crate::analysis::gap::{Gap, gap_place};
use crate::analysis::sql;
use crate::read;
use crate::read::trace::{TraceSpan, TraceView, finding_sentence, gap_category};
use crate::time::rfc3339;
use crate::web::AppState;
use crate::web::charts::{self, BarSegment};
use crate::web::error::ApiError;
use crate::web::units::{ms_of, ms_per_category};

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

/// A span's figures and attributes as the page shows them (and the API gives them).
struct Shown<'a> {
    traced: &'a TraceSpan,
    offset_ms: f64,
    duration_ms: f64,
    /// By key; of a key given twice, the last value.
    attributes: BTreeMap<String, String>,
}

impl<'a> Shown<'a> {
    fn of(trace: &TraceView, traced: &'a TraceSpan) -> Self {
        let span = &traced.span;
        Self {
            traced,
            offset_ms: ms_of(trace.offset_ns(span.start_unix_ns)),
            duration_ms: ms_of(span.duration_ns),
            attributes: span
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.to_string()))
                .collect(),
        }
    }

    fn service(&self) -> &'a str {
        &self.traced.span.resource.service_name
    }

    fn name(&self) -> &'a str {
        &self.traced.span.name
    }

    fn is_error(&self) -> bool {
        self.traced.span.status.code == StatusCode::Error
    }
}

fn statement<'s>(span: &'s Shown) -> Option<&'s str> {
    ["db.query.text", "db.statement"]
        .iter()
        .find_map(|key| span.attributes.get(*key))
        .map(String::as_str)
}

fn detail_of(span: &Shown) -> String {
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
fn fold_key(span: &Shown) -> (String, String, String) {
    (
        span.service().to_owned(),
        span.name().to_owned(),
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
    spans: &[Shown],
    has_children: &[bool],
    gaps: &[(usize, usize)],
    trace: &TraceView,
) -> Vec<Item> {
    let mut out = items(children, spans, has_children);
    if gaps.is_empty() {
        return out;
    }
    let offset = |item: &Item| match item {
        Item::Span(idx) => spans[*idx].offset_ms,
        Item::Fold(members) => spans[members[0]].offset_ms,
        Item::Gap(request, gap) => {
            ms_of(trace.offset_ns(trace.requests[*request].gaps[*gap].start_unix_ns))
        }
    };
    out.extend(gaps.iter().map(|(request, gap)| Item::Gap(*request, *gap)));
    out.sort_by(|a, b| offset(a).total_cmp(&offset(b)));
    out
}

/// Groups a parent's children (sorted by start) into items: repeated leaves fold together at
/// the position of their first member.
fn items(children: &[usize], spans: &[Shown], has_children: &[bool]) -> Vec<Item> {
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

fn bar(span: &Shown, total_ms: f64) -> Bar {
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

fn attributes_of(shown: &Shown) -> Vec<Attribute> {
    let span = &shown.traced.span;
    let status = span.status.code.as_str();
    let mut out = vec![
        Attribute {
            key: "span.kind".into(),
            value: span.kind.as_str().to_owned(),
        },
        Attribute {
            key: "status".into(),
            value: if span.status.message.is_empty() {
                status.to_owned()
            } else {
                format!("{status}: {}", span.status.message)
            },
        },
        Attribute {
            key: "span_id".into(),
            value: span.span_id.to_hex(),
        },
        Attribute {
            key: "start".into(),
            value: rfc3339(span.start_unix_ns),
        },
    ];
    if let Some(version) = span
        .resource
        .service_version
        .as_ref()
        .filter(|v| !v.is_empty())
    {
        out.push(Attribute {
            key: "service.version".into(),
            value: version.clone(),
        });
    }
    out.extend(shown.attributes.iter().map(|(key, value)| Attribute {
        key: key.clone(),
        value: value.clone(),
    }));
    out
}

/// The waterfall rows, their count cut at `max_rows`, and how many spans were left out.
fn waterfall(
    trace: &TraceView,
    critical: &HashSet<SpanId>,
    detached: &HashSet<SpanId>,
    requests: &HashSet<SpanId>,
    service_class: &HashMap<&str, usize>,
    max_rows: usize,
) -> (Vec<WaterfallRow>, usize, usize) {
    let spans: Vec<Shown> = trace
        .spans
        .iter()
        .map(|traced| Shown::of(trace, traced))
        .collect();
    let spans = spans.as_slice();
    let id_of = |idx: usize| spans[idx].traced.span.span_id;
    let mut roots = trace.roots.clone();
    let mut children = trace.children.clone();
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
            if let Some(span_idx) = trace.position(gap.span_id) {
                gaps[span_idx].push((request_idx, gap_idx));
            }
        }
    }
    let has_children: Vec<bool> = children
        .iter()
        .zip(&gaps)
        .map(|(c, g)| !c.is_empty() || !g.is_empty())
        .collect();
    let total_ms = ms_of(trace.duration_ns());

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
                let is_detached = detached.contains(&id_of(idx));
                let mut attributes = attributes_of(span);
                let queued = queue_time_ms(span, spans);
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
                        (true, _) => format!("{} (detached)", span.name()),
                        (false, Some(queued)) => {
                            format!("{} (queued {})", span.name(), fmt_ms(queued))
                        }
                        (false, None) => span.name().to_owned(),
                    },
                    detail: detail_of(span),
                    service: span.service().to_owned(),
                    service_class: service_class.get(span.service()).copied().unwrap_or(0),
                    category: span.traced.category.as_str(),
                    error: span.is_error(),
                    critical: critical.contains(&id_of(idx)),
                    is_request: requests.contains(&id_of(idx)),
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
                let owner = trace.position(gap.span_id).map(|idx| &spans[idx]);
                rows.push(gap_row(trace, gap, owner, service_class, depth, total_ms));
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
                    .filter(|idx| critical.contains(&id_of(*idx)))
                    .collect();
                let total: f64 = members.iter().map(|idx| spans[*idx].duration_ms).sum();
                let critical_ms: f64 = on_path.iter().map(|idx| spans[*idx].duration_ms).sum();
                let label = statement(first)
                    .map(sql::normalize)
                    .unwrap_or_else(|| first.name().to_owned());
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
                    service: first.service().to_owned(),
                    service_class: service_class.get(first.service()).copied().unwrap_or(0),
                    category: first.traced.category.as_str(),
                    error: members.iter().any(|idx| spans[*idx].is_error()),
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
                            critical: critical.contains(&id_of(*idx)),
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
fn queue_time_ms(span: &Shown, spans: &[Shown]) -> Option<f64> {
    if span.traced.span.kind != SpanKind::Consumer {
        return None;
    }
    let producer = &spans[span.traced.parent?];
    if producer.traced.span.kind != SpanKind::Producer {
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
    trace: &TraceView,
    gap: &Gap,
    owner: Option<&Shown>,
    service_class: &HashMap<&str, usize>,
    depth: usize,
    total_ms: f64,
) -> WaterfallRow {
    let offset_ms = ms_of(trace.offset_ns(gap.start_unix_ns));
    let duration_ms = ms_of(gap.duration_ns);
    let what = match gap.cpu_ns.map(ms_of) {
        Some(cpu_ms) => format!(
            "{} on a CPU and {} off it, measured (cpu.time_ns); no span covers it",
            fmt_ms(cpu_ms),
            fmt_ms((duration_ms - cpu_ms).max(0.0))
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
            value: rfc3339(gap.start_unix_ns),
        },
    ];
    if let Some(owner) = owner {
        attributes.push(Attribute {
            key: "self time of".into(),
            value: owner.name().to_owned(),
        });
    }
    let category = gap_category(gap);
    let label = match category {
        Category::Untraced => "untraced",
        Category::Cpu => "self time on CPU",
        _ => "self time off CPU",
    };
    let service = owner.map(|span| span.service()).unwrap_or_default();
    WaterfallRow {
        opens: false,
        closes: 0,
        indent: depth.min(MAX_INDENT),
        name: format!("({label})"),
        detail: gap_place(gap.after.as_deref(), gap.before.as_deref()),
        service_class: service_class.get(service).copied().unwrap_or(0),
        service: service.to_owned(),
        category: category.as_str(),
        error: false,
        critical: true,
        is_request: false,
        offset: fmt_ms(offset_ms),
        duration: fmt_ms(duration_ms),
        bars: vec![bar_at(offset_ms, duration_ms, total_ms)],
        attributes,
        count: 1,
        fold_total: String::new(),
        fold_critical: String::new(),
        fold_critical_count: 0,
        members: Vec::new(),
    }
}

/// The endpoint page of a request, with a window of an hour around it.
fn request_href(service: &str, endpoint: &str, start_unix_ns: Option<u64>) -> String {
    let window = match start_unix_ns {
        Some(ns) => {
            // To the millisecond, as the RFC 3339 start the API gives it.
            let ms = ns / 1_000_000;
            format!(
                "from={}&to={}",
                ms.saturating_sub(1_800_000),
                ms.saturating_add(1_800_000)
            )
        }
        None => "range=24h".to_owned(),
    };
    super::endpoint_href(service, endpoint, &window)
}

fn finding_kind(kind: FindingKind) -> String {
    kind.as_str().replace('_', " ")
}

fn build(trace: &TraceView, chrome: Chrome) -> TracePage {
    let critical: HashSet<SpanId> = trace
        .requests
        .iter()
        .flat_map(|r| r.critical_path.iter().copied())
        .collect();
    let request_ids: HashSet<SpanId> = trace.requests.iter().map(|r| r.span_id).collect();
    let mut service_class: HashMap<&str, usize> = HashMap::new();
    let mut services = Vec::new();
    let mut ordered: Vec<&TraceSpan> = trace.spans.iter().collect();
    let offset_ms = |traced: &TraceSpan| ms_of(trace.offset_ns(traced.span.start_unix_ns));
    ordered.sort_by(|a, b| offset_ms(a).total_cmp(&offset_ms(b)));
    for traced in ordered {
        let service = traced.span.resource.service_name.as_str();
        if !service_class.contains_key(service) {
            let class = service_class.len() % SERVICE_COLORS;
            service_class.insert(service, class);
            services.push(ServiceChip {
                name: service.to_owned(),
                class,
            });
        }
    }
    let detached: HashSet<SpanId> = trace
        .requests
        .iter()
        .flat_map(|r| r.detached.iter().copied())
        .collect();
    let (rows, hidden, n_folded) = waterfall(
        trace,
        &critical,
        &detached,
        &request_ids,
        &service_class,
        MAX_ROWS,
    );
    let requests = trace
        .requests
        .iter()
        .map(|r| {
            let breakdown = ms_per_category(r.breakdown.0.map(|ns| ns as f64));
            RequestView {
                service: r.service.clone(),
                endpoint: r.endpoint.clone(),
                href: request_href(
                    &r.service,
                    &r.endpoint,
                    trace
                        .position(r.span_id)
                        .map(|idx| trace.spans[idx].span.start_unix_ns),
                ),
                duration: fmt_ms(ms_of(r.duration_ns)),
                db_calls: fmt_count(u64::from(r.n_db_calls)),
                segments: charts::bar_segments(&breakdown, 0.0),
                values: category_values(breakdown),
                findings: r
                    .findings
                    .iter()
                    .map(|f| FindingView {
                        kind: finding_kind(f.kind),
                        summary: finding_sentence(f),
                        count: fmt_calls(f64::from(f.count)),
                        saving: fmt_ms(ms_of(f.potential_saving_ns)),
                        location: f.location.as_ref().map(super::fmt_location),
                    })
                    .collect(),
                critical_spans: fmt_count(r.critical_path.len() as u64),
            }
        })
        .collect();
    let duration_ms = ms_of(trace.duration_ns());
    let trace_id = trace.trace_id.to_hex();
    TracePage {
        chrome,
        duration: fmt_ms(duration_ms),
        n_spans: fmt_count(trace.spans.len() as u64),
        n_requests: match trace.requests.len() {
            1 => "1 request".to_owned(),
            n => format!("{} requests", fmt_count(n as u64)),
        },
        services,
        requests,
        ticks: (0..=4)
            .map(|q| fmt_ms(duration_ms * f64::from(q) / 4.0))
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
        json_href: format!("/api/v1/traces/{}", encode(&trace_id)),
        trace_id,
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
    let trace = read::trace::trace(&state.store, parsed, &state.analysis)
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
    use collector::model::{AttrValue, KeyValue};

    use super::*;
    use crate::analysis::fixture::make_span;

    /// Where the test trace starts.
    const START_NS: u64 = 1_714_557_600_000_000_000;

    struct TestSpan {
        id: u64,
        parent: Option<u64>,
        name: String,
        kind: SpanKind,
        offset_ms: f64,
        duration_ms: f64,
        attributes: Vec<KeyValue>,
    }

    fn span(id: usize, parent: Option<usize>, name: &str, offset: f64, duration: f64) -> TestSpan {
        TestSpan {
            id: id as u64,
            parent: parent.map(|p| p as u64),
            name: name.to_owned(),
            kind: SpanKind::Internal,
            offset_ms: offset,
            duration_ms: duration,
            attributes: Vec::new(),
        }
    }

    fn trace(spans: Vec<TestSpan>) -> TraceView {
        let spans = spans
            .into_iter()
            .map(|s| {
                make_span(
                    s.id,
                    s.parent,
                    "auth",
                    None,
                    &s.name,
                    s.kind,
                    START_NS + (s.offset_ms * 1e6) as u64,
                    (s.duration_ms * 1e6) as u64,
                    s.attributes,
                    false,
                )
            })
            .collect();
        TraceView::new(TraceId([0; 16]), spans, Vec::new())
    }

    fn rows(trace: &TraceView, max: usize) -> (Vec<WaterfallRow>, usize, usize) {
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
        producer.kind = SpanKind::Producer;
        let mut consumer = span(3, Some(2), "orders process", 40.0, 20.0);
        consumer.kind = SpanKind::Consumer;
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
            query.attributes.push(KeyValue {
                key: "db.statement".into(),
                value: AttrValue::Str(format!("SELECT * FROM users WHERE id = {n}")),
            });
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
        let spans: Vec<TestSpan> = (0..20_000)
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
