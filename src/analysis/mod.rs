//! The analysis: where one request's time goes, what could be fixed, and how requests add up.
//!
//! - `request`: which spans are requests, and their endpoint names (ids templated into `{id}`);
//! - `critical_path`: attribution of every instant of a request to one span and its category;
//! - `key_name`: the longest names handed on (they are the store's keys), and how they are cut;
//! - `gap`: stretches of self time no span explains, placed between the operations around them;
//! - `sql`: statement normalization (literals to `?`), the key of operations and N+1 detection;
//! - `span_tree`: the spans of a trace indexed once (duplicates, orphans and cycles repaired);
//! - `operation`: operation names (normalized statement, called host, span name) and their sums;
//! - `location`: where in the code a span was made (`code.*` attributes);
//! - `findings`: duplicate and N+1 queries, sequential I/O, slow queries, CPU hot spots, waits,
//!   untraced time;
//! - `aggregate`: mergeable per-endpoint rollups, the latency sketch, and endpoint summaries;
//! - `compare`: one endpoint between two selections: deltas, confidence, what explains them.
//!
//! Invariant: pure. No async, no IO, no sqlx or axum types, no `Result`: odd input (orphans,
//! clock skew, cycles) comes back as [`Anomaly`] values beside the output. Nothing here recurses
//! without bound, and nothing here is serializable (the API has its own DTOs).

pub mod aggregate;
pub mod compare;
pub mod critical_path;
pub mod findings;
pub mod gap;
pub mod key_name;
pub mod location;
pub mod operation;
pub mod request;
pub mod span_tree;
pub mod sql;

pub mod fixture;

use std::collections::HashSet;

use collector::category::Category;
use collector::model::{Span, SpanId, TraceId};

/// Nanoseconds per category, indexed by [`Category::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Breakdown(pub [u64; Category::COUNT]);

impl Breakdown {
    /// Time in one category.
    pub fn get(&self, category: Category) -> u64 {
        self.0[category.index()]
    }

    /// Adds time to one category.
    pub fn add(&mut self, category: Category, ns: u64) {
        self.0[category.index()] += ns;
    }

    /// The sum over all categories; for a request's critical-path breakdown, its duration.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// I/O time: db, cache, network and messaging.
    pub fn io(&self) -> u64 {
        Category::ALL
            .iter()
            .filter(|c| c.is_io())
            .map(|c| self.get(*c))
            .sum()
    }
}

/// Calls and total time (critical or not) of one category within a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CategoryTotal {
    /// Spans of this category.
    pub calls: u32,
    /// Their summed durations, overlapping or not.
    pub total_ns: u64,
}

/// One operation (a normalized statement, a called endpoint, a span name) within a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationStat {
    /// The category of the spans.
    pub category: Category,
    /// The normalized statement (`SELECT * FROM users WHERE id = ?`) or span name.
    pub name: String,
    /// Executions in this request.
    pub calls: u32,
    /// Summed durations.
    pub total_ns: u64,
    /// Time of these spans on the request's critical path.
    pub critical_ns: u64,
}

/// What kind of problem a finding is; `as_str` gives the API name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    /// The same statement with the same parameters more than once in one request.
    DuplicateQuery,
    /// The same statement shape many times with different parameters: a loop issuing queries.
    NPlusOne,
    /// I/O calls one after another on the critical path that could have run together.
    SequentialIo,
    /// A statement slow in absolute terms.
    SlowQuery,
    /// In-process work dominating the critical path.
    CpuHotspot,
    /// A large share of self time that was not on a CPU.
    UninstrumentedWait,
    /// A long stretch of self time nobody measured: not known to be CPU or I/O.
    UntracedTime,
}

impl FindingKind {
    /// Every kind, in API order.
    pub const ALL: [FindingKind; 7] = [
        FindingKind::DuplicateQuery,
        FindingKind::NPlusOne,
        FindingKind::SequentialIo,
        FindingKind::SlowQuery,
        FindingKind::CpuHotspot,
        FindingKind::UninstrumentedWait,
        FindingKind::UntracedTime,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateQuery => "duplicate_query",
            Self::NPlusOne => "n_plus_one",
            Self::SequentialIo => "sequential_io",
            Self::SlowQuery => "slow_query",
            Self::CpuHotspot => "cpu_hotspot",
            Self::UninstrumentedWait => "uninstrumented_wait",
            Self::UntracedTime => "untraced_time",
        }
    }

    /// Parses an API name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One problem found in one request, with the time fixing it would save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// The statement (normalized) or span name it is about.
    pub name: String,
    /// Executions in the request of the statement concerned (a query run 3 times: 3).
    pub count: u32,
    /// Critical-path time the fix would save in this request.
    pub potential_saving_ns: u64,
    /// The spans involved, so the trace view can highlight them.
    pub span_ids: Vec<SpanId>,
    /// The most frequent code location of those spans, when they carry `code.*` attributes.
    pub location: Option<location::CodeLocation>,
}

/// Something odd about the input that the analysis worked around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// A child starting before or ending after its parent (clock skew); it was clamped.
    ChildOutsideParent { span_id: SpanId },
    /// A span whose parent is not in the trace.
    OrphanSpan { span_id: SpanId },
    /// Parent links that form a cycle; the cycle was cut.
    ParentCycle { span_id: SpanId },
    /// Two spans with the same id; the later one was ignored.
    DuplicateSpanId { span_id: SpanId },
}

/// Thresholds of the analysis; `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// Repetitions of one statement shape that make an N+1 finding.
    pub n_plus_one_min_calls: u32,
    /// Smallest saving (ns) for which a sequential I/O finding is reported.
    pub min_saving_ns: u64,
    /// A statement at least this slow (ns) is a slow query.
    pub slow_query_ns: u64,
    /// Share of the request's duration that in-process work on one span must reach to be a hot spot.
    pub cpu_hotspot_share: f64,
    /// Share of the request's duration in `wait` that makes an uninstrumented-wait finding.
    pub wait_share: f64,
    /// Share of the request's duration that one gap of untraced time must reach to be a finding.
    pub untraced_share: f64,
    /// Self time at least this long (ns) between or around spans is a gap with a place.
    pub gap_min_ns: u64,
    /// Findings saving less than this (ns per request) are noise and not reported.
    pub noise_floor_ns: u64,
    /// Findings saving less than this share of the request (of the endpoint's mean, once
    /// aggregated) are noise and not reported.
    pub noise_floor_share: f64,
}

/// The analysis of one request: one SERVER span (or a root of another kind) and the subtree of its
/// own service below it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestAnalysis {
    /// The trace.
    pub trace_id: TraceId,
    /// The request span.
    pub span_id: SpanId,
    /// `service.name` of the request span.
    pub service: String,
    /// `service.version`, empty when not sent.
    pub version: String,
    /// The endpoint name, ids templated (`GET /users/{id}`); the per-service cap is applied later.
    pub endpoint: String,
    /// Start of the request span.
    pub start_unix_ns: u64,
    /// Duration of the request span.
    pub duration_ns: u64,
    /// Whether the request failed.
    pub error: bool,
    /// Critical-path attribution; sums exactly to `duration_ns`.
    pub breakdown: Breakdown,
    /// Calls and total time per category, critical or not, indexed by [`Category::index`].
    pub totals: [CategoryTotal; Category::COUNT],
    /// Database calls of the request's own service.
    pub n_db_calls: u32,
    /// Sum of I/O time over critical-path I/O time (1.0: all I/O sequential).
    pub io_parallelism: f64,
    /// The spans on the critical path, from the request span down, in time order.
    pub critical_path: Vec<SpanId>,
    /// Per-operation statistics.
    pub operations: Vec<OperationStat>,
    /// Problems found, largest saving first.
    pub findings: Vec<Finding>,
    /// Self time no span explains, placed between its neighbours, in time order.
    pub gaps: Vec<gap::Gap>,
    /// Spans that ended after their parent, which did not wait for them (fire-and-forget work):
    /// counted, never on the critical path.
    pub detached: Vec<SpanId>,
}

impl Default for AnalysisConfig {
    /// Defaults at least as sensitive as the published detectors they are modelled on, so that
    /// whatever Sentry or Django Debug Toolbar would flag, Bottleneck flags too.
    fn default() -> Self {
        Self {
            // Sentry's N+1 DB query detector flags a repeated span description from five spans on
            // ("usually five spans"); Django Debug Toolbar merely highlights "similar" queries
            // from two, which is a hint rather than a finding.
            n_plus_one_min_calls: 5,
            // Sentry reports consecutive DB queries from 100 ms of time saved; running calls
            // together is a change to the code's structure, worth it from a millisecond.
            min_saving_ns: 1_000_000,
            // Sentry's slow DB query detector: a span of at least 500 ms.
            slow_query_ns: 500_000_000,
            // No published detector; a quarter of the request in one span's own CPU work is
            // worth a profile.
            cpu_hotspot_share: 0.25,
            // No published detector; a quarter of the request off the CPU in self time means
            // uninstrumented I/O, sleeping or a blocked loop that deserves spans.
            wait_share: 0.25,
            // As for waits: a quarter of the request in one stretch nobody measured.
            untraced_share: 0.25,
            // Glue code between two awaits takes well under a millisecond; a millisecond of
            // self time between two spans is something done there.
            gap_min_ns: 1_000_000,
            // A saving under a millisecond, or under 2% of the request, is not what to fix
            // first: a clean health check has no findings.
            noise_floor_ns: 1_000_000,
            noise_floor_share: 0.02,
        }
    }
}

/// Whether the analysis reads the span attribute `key` itself, beyond the span's semantics and
/// category (which every decoder derives, from the attributes `normalize::is_read` names):
/// spans decoded with only those and these attributes analyse the same.
pub fn reads_attribute(key: &[u8]) -> bool {
    findings::is_read(key) || location::is_read(key)
}

/// Analyses every request in a trace's spans.
pub fn analyze_trace(
    spans: &[Span],
    config: &AnalysisConfig,
) -> (Vec<RequestAnalysis>, Vec<Anomaly>) {
    let tree = span_tree::build(spans);
    let mut anomalies = tree.anomalies.clone();
    let orphans: HashSet<SpanId, foldhash::fast::RandomState> = anomalies
        .iter()
        .filter_map(|anomaly| match anomaly {
            Anomaly::OrphanSpan { span_id } => Some(*span_id),
            _ => None,
        })
        .collect();
    let mut requests = Vec::new();
    for idx in 0..tree.len() {
        let span = tree.spans[idx];
        let parent = if tree.parent[idx].is_some() {
            request::Parent::InTrace
        } else if orphans.contains(&span.span_id) {
            request::Parent::Missing
        } else {
            // A root, or cut out of a cycle of parent links (which makes it one).
            request::Parent::None
        };
        if request::is_request(span, parent) && !inside_own_server_span(&tree, idx) {
            let (analysis, found) = analyze_request(&tree, idx, config);
            requests.push(analysis);
            anomalies.extend(found);
        }
    }
    (requests, anomalies)
}

/// Whether a SERVER span sits inside another SERVER span of its own process (Node's http span
/// around Next.js', a servlet's around DispatcherServlet's): one request, not two.
fn inside_own_server_span(tree: &span_tree::SpanTree<'_>, idx: usize) -> bool {
    let span = tree.spans[idx];
    if span.kind != collector::model::SpanKind::Server {
        return false;
    }
    let mut up = tree.parent[idx];
    // The same process's ancestors only; a span seen twice means a cycle, already cut.
    for _ in 0..tree.len() {
        let Some(ancestor) = up else {
            return false;
        };
        let ancestor_span = tree.spans[ancestor];
        if !request::same_process(span, ancestor_span) {
            return false;
        }
        if ancestor_span.kind == collector::model::SpanKind::Server {
            return true;
        }
        up = tree.parent[ancestor];
    }
    false
}

/// The endpoint of a request: its own name, or where its span has no route and a SERVER span
/// of the same process inside it has one (a framework's span inside the server's), the most
/// specific: the deepest such span's.
fn request_endpoint(tree: &span_tree::SpanTree<'_>, path: &critical_path::CriticalPath) -> String {
    let span = tree.spans[path.nodes[0].tree_idx];
    if span.semantics.http_route.is_none() {
        let inner = path
            .nodes
            .iter()
            .skip(1)
            .filter(|node| {
                let inner = tree.spans[node.tree_idx];
                inner.kind == collector::model::SpanKind::Server
                    && inner.semantics.http_route.is_some()
            })
            .max_by_key(|node| node.depth);
        if let Some(inner) = inner {
            return request::endpoint_name(tree.spans[inner.tree_idx]);
        }
    }
    request::endpoint_name(span)
}

/// Analyses the request at position `request` of an indexed trace.
pub fn analyze_request(
    tree: &span_tree::SpanTree<'_>,
    request: usize,
    config: &AnalysisConfig,
) -> (RequestAnalysis, Vec<Anomaly>) {
    let span = tree.spans[request];
    let path = critical_path::critical_path(tree, request);
    let mut totals = [CategoryTotal::default(); Category::COUNT];
    let mut n_db_calls = 0u32;
    let mut io_total_ns = 0u64;
    for (node_idx, node) in path.nodes.iter().enumerate() {
        // Spans inside or beside a call they are part of are no calls; a pool checkout waits
        // like one but runs no statement.
        if node.counted_as != node_idx {
            continue;
        }
        if node.category.is_io() && !node.detached {
            io_total_ns = io_total_ns.saturating_add(node.duration_ns());
        }
        if !path.is_call(tree, node_idx) {
            continue;
        }
        let total = &mut totals[node.category.index()];
        total.calls = total.calls.saturating_add(1);
        total.total_ns = total.total_ns.saturating_add(node.duration_ns());
        if node.category == Category::Db {
            n_db_calls = n_db_calls.saturating_add(1);
        }
    }
    let critical_io = path.breakdown.io();
    let io_parallelism = if critical_io == 0 || io_total_ns == 0 {
        1.0
    } else {
        io_total_ns as f64 / critical_io as f64
    };
    let mut names = operation::NodeNames::new(tree, &path);
    let gaps = gap::gaps(tree, &path, &mut names, config.gap_min_ns);
    let analysis = RequestAnalysis {
        trace_id: span.trace_id,
        span_id: span.span_id,
        service: span.resource.service_name.clone(),
        version: span.resource.service_version.clone().unwrap_or_default(),
        endpoint: request_endpoint(tree, &path),
        start_unix_ns: span.start_unix_ns,
        // The clamped duration: equal to the span's unless its end overflowed the clock.
        duration_ns: path.nodes[0].duration_ns(),
        error: span.is_error(),
        breakdown: path.breakdown,
        totals,
        n_db_calls,
        io_parallelism,
        critical_path: path
            .path
            .iter()
            .map(|n| tree.spans[path.nodes[*n].tree_idx].span_id)
            .collect(),
        operations: operation::operations(tree, &path, &gaps, &mut names),
        findings: findings::findings(tree, &path, &gaps, &mut names, config),
        gaps,
        detached: path
            .nodes
            .iter()
            .filter(|node| node.detached)
            .map(|node| tree.spans[node.tree_idx].span_id)
            .collect(),
    };
    (key_names_cut(analysis), path.anomalies)
}

/// The analysis with every name that becomes part of a store key cut to its limit.
fn key_names_cut(mut analysis: RequestAnalysis) -> RequestAnalysis {
    use key_name::{MAX_ENDPOINT_BYTES, MAX_OPERATION_BYTES, MAX_SERVICE_BYTES, cut_in_place};
    cut_in_place(&mut analysis.service, MAX_SERVICE_BYTES);
    cut_in_place(&mut analysis.version, MAX_SERVICE_BYTES);
    cut_in_place(&mut analysis.endpoint, MAX_ENDPOINT_BYTES);
    for op in &mut analysis.operations {
        cut_in_place(&mut op.name, MAX_OPERATION_BYTES);
    }
    for finding in &mut analysis.findings {
        cut_in_place(&mut finding.name, MAX_OPERATION_BYTES);
    }
    analysis
}

#[cfg(test)]
mod tests;
