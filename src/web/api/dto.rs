//! The JSON shapes of API v1, field for field as the contract names them (fields may be added,
//! never renamed). Times are milliseconds as floats; timestamps RFC 3339. `bottleneck analyze
//! --format json` prints the same shapes (`CaptureReportDto` around them).
//!
//! Invariant: the only `Serialize` types of the crate besides SARIF's (`cli/analyze/sarif.rs`);
//! built from analysis and store values by the query functions, never the other way round.

use std::collections::BTreeMap;

use serde::Serialize;

/// Milliseconds per category: db, cache, network, messaging, cpu, wait, untraced.
pub type BreakdownMs = BTreeMap<&'static str, f64>;

#[derive(Debug, Clone, Serialize)]
pub struct ServiceDto {
    pub name: String,
    pub endpoints: u64,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicesDto {
    pub services: Vec<ServiceDto>,
    /// RFC 3339: when the oldest stored span arrived, i.e. how far back traces go after
    /// retention; `null` for an empty store.
    pub data_since: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BottleneckDto {
    pub category: &'static str,
    pub share: f64,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummaryDto {
    pub service: String,
    pub endpoint: String,
    pub requests: u64,
    pub errors: u64,
    /// Requests per second over the window.
    pub rate_per_sec: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub breakdown_ms: BreakdownMs,
    pub io_ms: f64,
    pub cpu_ms: f64,
    pub db_calls_per_request: f64,
    /// Amdahl on measured CPU only (`cpu.time_ns`).
    pub speedup_if_cpu_free: f64,
    /// The same if all untraced time were CPU too: the top of the honest range.
    pub speedup_if_cpu_free_max: f64,
    pub bottleneck: BottleneckDto,
    /// Total time spent in the window (requests × mean), the overview's sort key.
    pub total_ms: f64,
    /// True for the `other` endpoint that holds everything past the per-service endpoint cap.
    pub folded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointsDto {
    pub endpoints: Vec<EndpointSummaryDto>,
    /// Services whose endpoints exceeded the cap; their excess is counted under `other`.
    pub capped_services: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimeseriesPointDto {
    /// Bucket start, unix milliseconds.
    pub t: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub breakdown_ms: BreakdownMs,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationDto {
    pub category: &'static str,
    pub name: String,
    /// Whether the operation is a gap (self time no span explains), placed by `after`/`before`.
    pub gap: bool,
    pub after: Option<String>,
    pub before: Option<String>,
    pub calls_per_request: f64,
    pub mean_ms: f64,
    pub critical_ms_per_request: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingDto {
    pub kind: &'static str,
    pub name: String,
    pub count_per_request: f64,
    pub potential_saving_ms: f64,
    pub summary: String,
    /// Share of requests that show it.
    pub request_share: f64,
    /// Where in the code it is: the location most of its requests name (`code.*` attributes);
    /// null when its spans carry none.
    pub location: Option<CodeLocationDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceSummaryDto {
    pub trace_id: String,
    pub span_id: String,
    pub service: String,
    pub endpoint: String,
    pub version: String,
    pub start: String,
    pub duration_ms: f64,
    pub breakdown_ms: BreakdownMs,
    pub error: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TailBreakdownDto {
    pub p50: BreakdownMs,
    pub slowest_5pct: BreakdownMs,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionSplitDto {
    pub version: String,
    pub requests: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub breakdown_ms: BreakdownMs,
}

/// An endpoint's gap: self time between the same two operations, per request of the endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct GapDto {
    /// The operation that ended last before it; null at the request's start.
    pub after: Option<String>,
    /// The operation that started first after it; null at the request's end.
    pub before: Option<String>,
    /// "between `A` and `B`".
    pub place: String,
    /// Mean time per request of the endpoint.
    pub mean_ms: f64,
    /// Share of requests that had it.
    pub request_share: f64,
    /// Of `mean_ms`: measured on a CPU, measured off it, and not measured.
    pub cpu_ms: f64,
    pub wait_ms: f64,
    pub untraced_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyBucketDto {
    /// Lower bound of the bucket.
    pub from_ms: f64,
    /// Upper bound of the bucket.
    pub to_ms: f64,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointDetailDto {
    #[serde(flatten)]
    pub summary: EndpointSummaryDto,
    pub timeseries: Vec<TimeseriesPointDto>,
    pub operations: Vec<OperationDto>,
    pub tail_breakdown_ms: TailBreakdownDto,
    pub findings: Vec<FindingDto>,
    /// Where untraced (or measured but unexplained) self time sits, most time first.
    pub gaps: Vec<GapDto>,
    pub slowest_traces: Vec<TraceSummaryDto>,
    /// The request closest to the median duration.
    pub typical_trace: Option<TraceSummaryDto>,
    pub versions: Vec<VersionSplitDto>,
    pub latency_histogram: Vec<LatencyBucketDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TracesDto {
    pub traces: Vec<TraceSummaryDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpanDto {
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub service: String,
    pub version: String,
    pub name: String,
    pub kind: &'static str,
    pub start: String,
    /// Offset from the trace's first span, for waterfalls.
    pub offset_ms: f64,
    pub duration_ms: f64,
    pub category: &'static str,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    pub status: &'static str,
    pub status_message: String,
    pub events: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestFindingDto {
    pub kind: &'static str,
    pub name: String,
    pub count_per_request: f64,
    pub potential_saving_ms: f64,
    pub summary: String,
    pub span_ids: Vec<String>,
    /// The most frequent code location of its spans (`code.*` attributes); null without one.
    pub location: Option<CodeLocationDto>,
}

/// A stretch of a request's critical path that only an in-process span's self time covers.
#[derive(Debug, Clone, Serialize)]
pub struct TraceGapDto {
    /// The in-process span whose self time it is.
    pub span_id: String,
    /// The operation that ended last before it; null at the request's start.
    pub after: Option<String>,
    /// The operation that started first after it; null at the request's end.
    pub before: Option<String>,
    pub start: String,
    /// Start, from the trace's first span.
    pub offset_ms: f64,
    pub duration_ms: f64,
    /// The part measured on a CPU; null where the span measured no CPU (then it is untraced).
    pub cpu_ms: Option<f64>,
    /// `untraced`, or `cpu`/`wait` by whichever is larger where CPU was measured.
    pub category: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceRequestDto {
    pub span_id: String,
    pub service: String,
    pub endpoint: String,
    pub duration_ms: f64,
    pub breakdown_ms: BreakdownMs,
    pub db_calls: u32,
    pub findings: Vec<RequestFindingDto>,
    pub critical_path: Vec<String>,
    pub gaps: Vec<TraceGapDto>,
    /// Spans that ended after their parent: work the request did not wait for (fire-and-forget),
    /// counted but never on its critical path.
    pub detached: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceDto {
    pub trace_id: String,
    pub duration_ms: f64,
    pub spans: Vec<SpanDto>,
    pub requests: Vec<TraceRequestDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntervalMs {
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeDto {
    pub category: &'static str,
    pub name: String,
    pub delta_ms: f64,
    pub summary: String,
    /// Whether the change is a gap: self time no span explains, placed by `after`/`before`.
    pub gap: bool,
    /// For a gap, the operation that ended last before it (null at the request's start).
    pub after: Option<String>,
    /// For a gap, the operation that started first after it (null at the request's end).
    pub before: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationChangeDto {
    pub category: &'static str,
    pub name: String,
    /// Whether the operation is a gap, placed by `after`/`before`.
    pub gap: bool,
    pub after: Option<String>,
    pub before: Option<String>,
    /// `appeared`, `vanished` or `changed`.
    pub change: &'static str,
    pub baseline_calls_per_request: f64,
    pub candidate_calls_per_request: f64,
    pub baseline_mean_ms: f64,
    pub candidate_mean_ms: f64,
    /// Change of its critical-path time per request.
    pub critical_delta_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegressionDto {
    /// `p50` or `p95`.
    pub metric: &'static str,
    pub baseline_ms: f64,
    pub candidate_ms: f64,
}

/// One endpoint compared between two selections.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointComparisonDto {
    pub baseline: EndpointSummaryDto,
    pub candidate: EndpointSummaryDto,
    /// `total` (the mean), `p50`, `p95`, `p99`, then one entry per category.
    pub delta_ms: BTreeMap<&'static str, f64>,
    /// 95% confidence interval of the mean delta (Welch); null when a side has under two
    /// requests or its rollups predate sums of squares.
    pub mean_delta_ci_ms: Option<IntervalMs>,
    /// The interval excludes zero.
    pub significant: bool,
    /// `slower`, `faster` or `unchanged` by the regression thresholds (p50 or p95).
    pub verdict: &'static str,
    pub regression: Option<RegressionDto>,
    pub top_changes: Vec<ChangeDto>,
    pub operations: Vec<OperationChangeDto>,
    pub summary: String,
}

/// One bucket of the two latency distributions of a comparison, on shared bounds.
#[derive(Debug, Clone, Serialize)]
pub struct CompareBucketDto {
    pub from_ms: f64,
    pub to_ms: f64,
    pub baseline_requests: u64,
    pub candidate_requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareDto {
    pub baseline_selector: String,
    pub candidate_selector: String,
    /// `rollups`, or `requests` when a side selects by resource attribute (no operations then).
    pub source: &'static str,
    /// Both latency distributions on the same log-spaced buckets (from the sketches, so within
    /// their 1% resolution).
    pub latency_histogram: Vec<CompareBucketDto>,
    #[serde(flatten)]
    pub comparison: EndpointComparisonDto,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceCompareDto {
    pub service: String,
    pub baseline_selector: String,
    pub candidate_selector: String,
    pub source: &'static str,
    /// Endpoints with traffic on both sides, slower first (regressions, then by mean delta).
    pub endpoints: Vec<EndpointComparisonDto>,
    pub only_in_baseline: Vec<String>,
    pub only_in_candidate: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegressionEventDto {
    pub id: i64,
    pub detected_at: String,
    pub service: String,
    pub endpoint: String,
    pub baseline: String,
    pub candidate: String,
    pub metric: String,
    pub baseline_ms: f64,
    pub candidate_ms: f64,
    pub baseline_requests: u64,
    pub candidate_requests: u64,
    pub mean_delta_ms: f64,
    pub mean_delta_ci_ms: Option<IntervalMs>,
    /// 95% confidence interval of the metric in the baseline: the event was raised because the
    /// candidate's lower bound exceeded this upper bound by the thresholds. Null for events
    /// raised before intervals decided.
    pub baseline_ci_ms: Option<IntervalMs>,
    /// 95% confidence interval of the metric in the candidate.
    pub candidate_ci_ms: Option<IntervalMs>,
    pub summary: String,
    /// `open` while the regression holds, `resolved` once neither p50 nor p95 of the candidate
    /// crosses the thresholds any more.
    pub state: &'static str,
    /// When it was resolved; null while open.
    pub resolved_at: Option<String>,
    /// The metric in the candidate when it was resolved.
    pub resolved_candidate_ms: Option<f64>,
    /// Why it was resolved: where both quantiles stood.
    pub resolved_summary: Option<String>,
}

/// A `service.version` seen in the window.
#[derive(Debug, Clone, Serialize)]
pub struct VersionSeenDto {
    pub version: String,
    pub requests: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionsDto {
    /// First seen first.
    pub versions: Vec<VersionSeenDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegressionsDto {
    pub regressions: Vec<RegressionEventDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BurnDto {
    pub severity: String,
    pub long_window: String,
    pub short_window: String,
    /// The burn rate that fires.
    pub factor: f64,
    pub long_burn: f64,
    pub short_burn: f64,
    pub firing: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertTransitionDto {
    pub from: String,
    pub to: String,
    pub at: String,
    pub observed: Option<f64>,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertDto {
    pub service: String,
    pub endpoint: String,
    /// A summary key (`p95_ms`, `db_ms`, ...), or `burn_rate` for an SLO.
    pub metric: String,
    /// The limit; for an SLO, the burn rate of the worst window pair that fires.
    pub budget: f64,
    /// The value; for an SLO, the burn rate over that pair's long window. Null without requests.
    pub observed: Option<f64>,
    pub window: String,
    /// ok, pending, firing or resolved.
    pub state: &'static str,
    /// When the state was entered.
    pub since: String,
    /// budget or slo.
    pub kind: &'static str,
    /// The rule's stable key.
    pub rule: String,
    pub requests: u64,
    /// One sentence; for a breach, what moved since the hour before.
    pub summary: String,
    /// SLO only: its objective, threshold and every window pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub burn: Vec<BurnDto>,
    /// The newest transitions first.
    pub history: Vec<AlertTransitionDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertsDto {
    pub alerts: Vec<AlertDto>,
    /// When the rules were last evaluated; null before the first evaluation.
    pub evaluated_at: Option<String>,
    /// Seconds between evaluations.
    pub interval_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryAttemptDto {
    pub attempt: u32,
    pub at: String,
    /// delivered, retry, failed or dropped.
    pub outcome: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDto {
    pub id: i64,
    pub rule: String,
    pub service: String,
    pub endpoint: String,
    /// The state the transition entered: firing or resolved.
    pub state: String,
    /// Scheme and host only: webhook paths often carry secrets.
    pub url: String,
    pub format: String,
    /// pending, delivered, failed or dropped.
    pub status: String,
    pub created: String,
    pub attempts: Vec<DeliveryAttemptDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveriesDto {
    pub deliveries: Vec<DeliveryDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadDto {
    pub reloaded: bool,
    pub budgets: usize,
    pub slos: usize,
    pub webhooks: usize,
}

/// `bottleneck analyze --format json`: a capture analysed without a server, in the API's shapes.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReportDto {
    pub files: Vec<String>,
    pub exports: u64,
    pub spans: u64,
    /// Spans the decoders dropped as invalid, as a receiver would have.
    pub rejected_spans: u64,
    pub traces: u64,
    /// As `/api/v1/endpoints` lists them (most total time first), each with its operations,
    /// findings and gaps as `/api/v1/endpoint` gives them.
    pub endpoints: Vec<CaptureEndpointDto>,
    /// One entry per budget and matching endpoint; empty without `--config`.
    pub budgets: Vec<BudgetCheckDto>,
    /// Present with `--baseline`.
    pub baseline: Option<BaselineDiffDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptureEndpointDto {
    #[serde(flatten)]
    pub summary: EndpointSummaryDto,
    pub operations: Vec<OperationDto>,
    pub findings: Vec<FindingDto>,
    pub gaps: Vec<GapDto>,
}

/// A place in the source: file, line (1-based) and function, as the spans name them. A span
/// that names only its function gives a location with a null file and line.
#[derive(Debug, Clone, Serialize)]
pub struct CodeLocationDto {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub function: Option<String>,
}

/// One budget judged on one endpoint, as `bottleneck check` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetCheckDto {
    pub service: String,
    pub endpoint: String,
    pub metric: &'static str,
    pub budget: String,
    pub observed: String,
    pub requests: String,
    pub verdict: String,
    pub broken: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointNameDto {
    pub service: String,
    pub endpoint: String,
}

/// A capture compared with a baseline capture.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineDiffDto {
    pub regressed: bool,
    pub endpoints: Vec<EndpointDiffDto>,
    pub new_endpoints: Vec<EndpointNameDto>,
    pub gone_endpoints: Vec<EndpointNameDto>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallsChangeDto {
    pub category: &'static str,
    pub baseline_calls_per_request: f64,
    pub candidate_calls_per_request: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointDiffDto {
    pub service: String,
    pub endpoint: String,
    pub regressed: bool,
    /// What changed, one sentence each, regressions first.
    pub changes: Vec<String>,
    /// I/O categories whose calls per request moved by half a call or more.
    pub calls: Vec<CallsChangeDto>,
    pub new_findings: Vec<FindingDto>,
    pub gone_findings: Vec<FindingKeyDto>,
    /// The comparison `/api/v1/compare` gives for the same two sides.
    pub comparison: EndpointComparisonDto,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingKeyDto {
    pub kind: &'static str,
    pub name: String,
}
