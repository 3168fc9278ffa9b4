//! The read side shared by the JSON API and the pages: store reads turned into API values, so a
//! page never shows a number the API does not give.
//!
//! Invariant: reads only; aggregates come from rollups, single requests from request rows and
//! stored spans.

use std::collections::{BTreeMap, HashMap};

use collector::category::Category;
use collector::model::{Span, TraceId};

use super::api::dto::*;
use crate::alert::AlertHandle;
use crate::analysis::aggregate::{self, EndpointStats, LatencySketch, Rollup};
use crate::analysis::compare::{self, Thresholds};
use crate::analysis::critical_path;
use crate::analysis::gap::Gap;
use crate::analysis::location::CodeLocation;
use crate::analysis::{AnalysisConfig, Breakdown, analyze_trace};
use crate::store::{
    EndpointRef, OTHER_ENDPOINT, RegressionRecord, RequestRow, Store, StoreError, Window,
};
use crate::time::rfc3339;
use crate::web::read_limits::ReadLimits;
use crate::web::selector::Selector;

const NS_PER_MS: f64 = 1e6;

fn ms(ns: f64) -> f64 {
    (ns / NS_PER_MS * 1000.0).round() / 1000.0
}

/// Milliseconds per category from nanoseconds per category.
pub fn breakdown_ms(ns: [f64; Category::COUNT]) -> BreakdownMs {
    Category::ALL
        .iter()
        .map(|c| (c.as_str(), ms(ns[c.index()])))
        .collect()
}

fn breakdown_of(breakdown: &Breakdown) -> BreakdownMs {
    breakdown_ms(breakdown.0.map(|v| v as f64))
}

/// Endpoints by id, and the ids matching a service and endpoint filter.
pub struct EndpointIndex {
    by_id: HashMap<i64, EndpointRef>,
}

impl EndpointIndex {
    /// Reads the interned endpoints.
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            by_id: store
                .endpoints()
                .await?
                .into_iter()
                .map(|e| (e.id, e))
                .collect(),
        })
    }

    /// Ids of the endpoints of `service` (all when `None`) named `endpoint` (all when `None`).
    pub fn ids(&self, service: Option<&str>, endpoint: Option<&str>) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .by_id
            .values()
            .filter(|e| {
                service.is_none_or(|s| e.service == s) && endpoint.is_none_or(|n| e.endpoint == n)
            })
            .map(|e| e.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The endpoint with this id.
    pub fn get(&self, id: i64) -> Option<&EndpointRef> {
        self.by_id.get(&id)
    }
}

fn merge_by<Q, K: Ord>(
    rollups: impl IntoIterator<Item = (Q, Rollup)>,
    key: impl Fn(&Q) -> K,
) -> BTreeMap<K, Rollup> {
    let mut merged: BTreeMap<K, Rollup> = BTreeMap::new();
    for (rollup_key, rollup) in rollups {
        match merged.entry(key(&rollup_key)) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(rollup);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => slot.get_mut().merge(&rollup),
        }
    }
    merged
}

/// An endpoint's summary as `/api/v1/endpoints` shows it; `window` gives the request rate.
pub fn summary_dto(
    endpoint: &EndpointRef,
    stats: &EndpointStats,
    window: Window,
) -> EndpointSummaryDto {
    let seconds = (window.to_unix_ns - window.from_unix_ns) as f64 / 1e9;
    EndpointSummaryDto {
        service: endpoint.service.clone(),
        endpoint: endpoint.endpoint.clone(),
        requests: stats.requests,
        errors: stats.errors,
        rate_per_sec: stats.requests as f64 / seconds.max(1e-9),
        mean_ms: ms(stats.mean_ns),
        p50_ms: ms(stats.p50_ns),
        p90_ms: ms(stats.p90_ns),
        p95_ms: ms(stats.p95_ns),
        p99_ms: ms(stats.p99_ns),
        breakdown_ms: breakdown_ms(stats.breakdown_mean_ns),
        io_ms: ms(stats.io_ns),
        cpu_ms: ms(stats.cpu_ns),
        db_calls_per_request: (stats.db_calls_per_request * 100.0).round() / 100.0,
        speedup_if_cpu_free: (stats.speedup_if_cpu_free * 1000.0).round() / 1000.0,
        speedup_if_cpu_free_max: (stats.speedup_if_cpu_free_max * 1000.0).round() / 1000.0,
        bottleneck: BottleneckDto {
            category: stats.bottleneck.as_str(),
            share: (stats.bottleneck_share * 1000.0).round() / 1000.0,
            summary: stats.bottleneck_summary.clone(),
        },
        total_ms: ms(stats.mean_ns * stats.requests as f64),
        folded: endpoint.endpoint == OTHER_ENDPOINT,
    }
}

/// `GET /api/v1/services`.
pub async fn services(store: &Store, window: Window) -> Result<ServicesDto, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let rollups = store.rollups(window, None).await?;
    let mut by_service: BTreeMap<String, (std::collections::BTreeSet<i64>, u64)> = BTreeMap::new();
    for (key, rollup) in &rollups {
        let Some(endpoint) = index.get(key.endpoint_id) else {
            continue;
        };
        let entry = by_service.entry(endpoint.service.clone()).or_default();
        entry.0.insert(key.endpoint_id);
        entry.1 += rollup.requests;
    }
    let data_since = store.data_since().await?.map(rfc3339);
    Ok(ServicesDto {
        data_since,
        services: by_service
            .into_iter()
            .map(|(name, (endpoints, requests))| ServiceDto {
                name,
                endpoints: endpoints.len() as u64,
                requests,
            })
            .collect(),
    })
}

/// `GET /api/v1/endpoints`: every endpoint with traffic in the window, most total time first.
pub async fn endpoints(
    store: &Store,
    window: Window,
    service: Option<&str>,
) -> Result<EndpointsDto, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = service.map(|s| index.ids(Some(s), None));
    let rollups = store.merged_rollups(window, ids.as_deref(), None).await?;
    let merged = merge_by(rollups, |(endpoint_id, _)| *endpoint_id);
    let mut endpoints: Vec<EndpointSummaryDto> = merged
        .iter()
        .filter_map(|(id, rollup)| {
            let endpoint = index.get(*id)?;
            let stats = aggregate::summarize(rollup, &endpoint.endpoint)?;
            Some(summary_dto(endpoint, &stats, window))
        })
        .collect();
    endpoints.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    let mut capped_services: Vec<String> = endpoints
        .iter()
        .filter(|e| e.folded)
        .map(|e| e.service.clone())
        .collect();
    capped_services.dedup();
    Ok(EndpointsDto {
        endpoints,
        capped_services,
    })
}

/// Buckets for the endpoint time series: about 60 points over the window, whole minutes.
fn bucket_minutes(window: Window) -> i64 {
    let (first, last) = window.minutes();
    ((last - first + 1) / 60).max(1)
}

/// `GET /api/v1/endpoint`.
pub async fn endpoint_detail(
    store: &Store,
    window: Window,
    service: &str,
    endpoint_name: &str,
) -> Result<Option<EndpointDetailDto>, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = index.ids(Some(service), Some(endpoint_name));
    let Some(endpoint) = ids.first().and_then(|id| index.get(*id)).cloned() else {
        return Ok(None);
    };
    let rollups = store.merged_rollups(window, Some(&ids), None).await?;
    let per_version = merge_by(rollups.clone(), |(_, version)| version.clone());
    let bucket = bucket_minutes(window);
    // The time series needs minute rows; the totals above may use hourly ones.
    let minute_rows = store.minute_rollups(window, Some(&ids)).await?;
    let per_bucket = merge_by(minute_rows, |key| {
        key.minute - key.minute.rem_euclid(bucket)
    });
    let all = merge_by(rollups, |_| ());
    let Some(rollup) = all.get(&()) else {
        return Ok(None);
    };
    let Some(stats) = aggregate::summarize(rollup, &endpoint.endpoint) else {
        return Ok(None);
    };
    let summary = summary_dto(&endpoint, &stats, window);

    let timeseries = per_bucket
        .iter()
        .filter_map(|(minute, rollup)| {
            let stats = aggregate::summarize(rollup, &endpoint.endpoint)?;
            Some(TimeseriesPointDto {
                t: (*minute * 60_000) as f64,
                requests: stats.requests,
                p50_ms: ms(stats.p50_ns),
                p95_ms: ms(stats.p95_ns),
                p99_ms: ms(stats.p99_ns),
                breakdown_ms: breakdown_ms(stats.breakdown_mean_ns),
            })
        })
        .collect();
    let operations = operation_dtos(rollup);
    let findings = finding_dtos(rollup);
    let gaps = gap_dtos(rollup);
    let versions = per_version
        .iter()
        .filter_map(|(version, rollup)| {
            let stats = aggregate::summarize(rollup, &endpoint.endpoint)?;
            Some(VersionSplitDto {
                version: version.clone(),
                requests: stats.requests,
                mean_ms: ms(stats.mean_ns),
                p50_ms: ms(stats.p50_ns),
                p95_ms: ms(stats.p95_ns),
                breakdown_ms: breakdown_ms(stats.breakdown_mean_ns),
            })
        })
        .collect();

    // Quantiles come from the sketch; the requests around them from the duration index, so the
    // page reads a few percent of the window's request rows, not all of them.
    let quantile = |q: f64| rollup.sketch.quantile_ns(q) as u64;
    let band = |from: u64, to: u64| store.breakdown_between(window, endpoint.id, from, to);
    let (median_n, median_sums) = band(quantile(0.45), quantile(0.55)).await?;
    let (tail_n, tail_sums) = band(quantile(0.95), u64::MAX).await?;
    let mean_of =
        |n: u64, sums: Breakdown| breakdown_ms(sums.0.map(|ns| ns as f64 / n.max(1) as f64));
    let tail_breakdown_ms = TailBreakdownDto {
        p50: mean_of(median_n, median_sums),
        slowest_5pct: mean_of(tail_n, tail_sums),
    };
    let latency_histogram = latency_histogram(&rollup.sketch);
    let typical_trace = store
        .request_at_least(window, endpoint.id, quantile(0.5))
        .await?
        .map(|r| trace_summary(&r, &endpoint));
    let slowest_traces = store
        .requests(window, Some(&[endpoint.id]), 0, 10)
        .await?
        .iter()
        .map(|r| trace_summary(r, &endpoint))
        .collect();
    Ok(Some(EndpointDetailDto {
        summary,
        timeseries,
        operations,
        tail_breakdown_ms,
        findings,
        gaps,
        slowest_traces,
        typical_trace,
        versions,
        latency_histogram,
    }))
}

/// An endpoint's operations as the API shows them, largest critical time per request first.
pub fn operation_dtos(rollup: &Rollup) -> Vec<OperationDto> {
    aggregate::operations(rollup)
        .into_iter()
        .map(|op| OperationDto {
            category: op.category.as_str(),
            name: op.name,
            gap: op.gap.is_some(),
            after: op.gap.as_ref().and_then(|place| place.after.clone()),
            before: op.gap.as_ref().and_then(|place| place.before.clone()),
            calls_per_request: (op.calls_per_request * 100.0).round() / 100.0,
            mean_ms: ms(op.mean_ns),
            critical_ms_per_request: ms(op.critical_ns_per_request),
        })
        .collect()
}

/// An endpoint's findings as the API shows them, largest saving per request first.
pub fn finding_dtos(rollup: &Rollup) -> Vec<FindingDto> {
    aggregate::findings(rollup)
        .into_iter()
        .map(finding_dto)
        .collect()
}

/// One finding of an endpoint as the API shows it.
pub fn finding_dto(finding: aggregate::FindingStats) -> FindingDto {
    FindingDto {
        kind: finding.kind.as_str(),
        name: finding.name,
        count_per_request: (finding.count_per_request * 100.0).round() / 100.0,
        potential_saving_ms: ms(finding.potential_saving_ns),
        summary: finding.summary,
        request_share: (finding.request_share * 1000.0).round() / 1000.0,
        location: finding.location.as_ref().map(location_dto),
    }
}

/// A code location as the API shows it.
pub fn location_dto(location: &CodeLocation) -> CodeLocationDto {
    CodeLocationDto {
        file: location.file.clone(),
        line: location.line,
        function: location.function.clone(),
    }
}

/// Where an endpoint's untraced (or unexplained) self time sits, most time first.
pub fn gap_dtos(rollup: &Rollup) -> Vec<GapDto> {
    aggregate::gaps(rollup)
        .into_iter()
        .map(|gap| GapDto {
            place: gap.place.describe(),
            mean_ms: ms(gap.total_mean_ns()),
            request_share: (gap.request_share * 1000.0).round() / 1000.0,
            cpu_ms: ms(gap.mean_ns[Category::Cpu.index()]),
            wait_ms: ms(gap.mean_ns[Category::Wait.index()]),
            untraced_ms: ms(gap.mean_ns[Category::Untraced.index()]),
            after: gap.place.after,
            before: gap.place.before,
        })
        .collect()
}

/// Upper bounds (ms) of the log-spaced latency buckets: factor 1.5 from 0.1 ms to ten minutes.
fn latency_bounds() -> Vec<f64> {
    let mut bounds = vec![0.1f64];
    while *bounds.last().expect("starts non-empty") < 600_000.0 {
        let next = bounds.last().expect("starts non-empty") * 1.5;
        bounds.push(next);
    }
    bounds
}

/// Log-spaced latency buckets counted from the sketch, trimmed to the populated range.
fn latency_histogram(sketch: &LatencySketch) -> Vec<LatencyBucketDto> {
    let bounds_ms = latency_bounds();
    let mut below = 0;
    let mut counts = Vec::with_capacity(bounds_ms.len());
    for upper_ms in &bounds_ms {
        let at_most = sketch.count_at_most_ns((upper_ms * NS_PER_MS) as u64);
        counts.push(at_most.saturating_sub(below));
        below = below.max(at_most);
    }
    if let Some(last) = counts.last_mut() {
        *last += sketch.count().saturating_sub(below);
    }
    let (Some(first), Some(last)) = (
        counts.iter().position(|c| *c > 0),
        counts.iter().rposition(|c| *c > 0),
    ) else {
        return Vec::new();
    };
    (first..=last)
        .map(|idx| LatencyBucketDto {
            from_ms: if idx == 0 {
                0.0
            } else {
                (bounds_ms[idx - 1] * 1000.0).round() / 1000.0
            },
            to_ms: (bounds_ms[idx] * 1000.0).round() / 1000.0,
            requests: counts[idx],
        })
        .collect()
}

/// Both sides' latency distributions on the buckets of [`latency_histogram`], read from the
/// rollups' sketches (rollup and request-row selections both fill them), trimmed to the range
/// either side populates.
fn compare_histogram(baseline: &Rollup, candidate: &Rollup) -> Vec<CompareBucketDto> {
    let bounds = latency_bounds();
    let counts = |rollup: &Rollup| -> Vec<u64> {
        let mut below = 0;
        bounds
            .iter()
            .enumerate()
            .map(|(idx, upper)| {
                let at_most = if idx == bounds.len() - 1 {
                    rollup.sketch.count()
                } else {
                    rollup.sketch.count_at_most_ns((upper * NS_PER_MS) as u64)
                };
                let count = at_most.saturating_sub(below);
                below = below.max(at_most);
                count
            })
            .collect()
    };
    let (before, after) = (counts(baseline), counts(candidate));
    let populated = |idx: &usize| before[*idx] > 0 || after[*idx] > 0;
    let Some(first) = (0..bounds.len()).find(populated) else {
        return Vec::new();
    };
    let last = (0..bounds.len()).rev().find(populated).unwrap_or(first);
    (first..=last)
        .map(|idx| CompareBucketDto {
            from_ms: if idx == 0 {
                0.0
            } else {
                (bounds[idx - 1] * 1000.0).round() / 1000.0
            },
            to_ms: (bounds[idx] * 1000.0).round() / 1000.0,
            baseline_requests: before[idx],
            candidate_requests: after[idx],
        })
        .collect()
}

fn trace_summary(request: &RequestRow, endpoint: &EndpointRef) -> TraceSummaryDto {
    TraceSummaryDto {
        trace_id: request.trace_id.to_hex(),
        span_id: request.span_id.to_hex(),
        service: endpoint.service.clone(),
        endpoint: endpoint.endpoint.clone(),
        version: request.version.clone(),
        start: rfc3339(request.start_unix_ns),
        duration_ms: ms(request.duration_ns as f64),
        breakdown_ms: breakdown_of(&request.breakdown),
        error: request.error,
    }
}

/// `GET /api/v1/traces`: requests matching the filter, slowest first.
pub async fn traces(
    store: &Store,
    window: Window,
    service: Option<&str>,
    endpoint: Option<&str>,
    min_ms: f64,
    limit: i64,
) -> Result<TracesDto, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = (service.is_some() || endpoint.is_some()).then(|| index.ids(service, endpoint));
    let rows = store
        .requests(
            window,
            ids.as_deref(),
            (min_ms.max(0.0) * NS_PER_MS) as u64,
            limit,
        )
        .await?;
    Ok(TracesDto {
        traces: rows
            .iter()
            .filter_map(|row| Some(trace_summary(row, index.get(row.endpoint_id)?)))
            .collect(),
    })
}

fn attributes(attributes: &[collector::model::KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.to_string()))
        .collect()
}

/// `GET /api/v1/traces/{id}`: every span, and every request re-analysed from them.
pub async fn trace(
    store: &Store,
    trace_id: TraceId,
    config: &AnalysisConfig,
) -> Result<Option<TraceDto>, StoreError> {
    let Some(spans) = store.trace(trace_id).await? else {
        return Ok(None);
    };
    let config = config.clone();
    let dto = tokio::task::spawn_blocking(move || trace_dto(trace_id, &spans, &config))
        .await
        .map_err(|err| StoreError::Corrupt(format!("trace rendering failed: {err}")))?;
    Ok(Some(dto))
}

fn trace_dto(trace_id: TraceId, spans: &[Span], config: &AnalysisConfig) -> TraceDto {
    let start = spans.iter().map(|s| s.start_unix_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_ns()).max().unwrap_or(start);
    let (requests, _) = analyze_trace(spans, config);
    TraceDto {
        trace_id: trace_id.to_hex(),
        duration_ms: ms((end - start) as f64),
        spans: spans
            .iter()
            .map(|span| SpanDto {
                span_id: span.span_id.to_hex(),
                parent_span_id: span.parent_span_id.map(|id| id.to_hex()),
                service: span.resource.service_name.clone(),
                version: span.resource.service_version.clone().unwrap_or_default(),
                name: span.name.clone(),
                kind: span.kind.as_str(),
                start: rfc3339(span.start_unix_ns),
                offset_ms: ms((span.start_unix_ns - start) as f64),
                duration_ms: ms(span.duration_ns as f64),
                // In-process spans show whether their self time was measured: cpu or untraced.
                category: critical_path::self_category(span, false).as_str(),
                attributes: attributes(&span.attributes),
                resource: attributes(&span.resource.attributes),
                status: span.status.code.as_str(),
                status_message: span.status.message.clone(),
                events: span.n_events,
            })
            .collect(),
        requests: requests
            .iter()
            .map(|request| TraceRequestDto {
                span_id: request.span_id.to_hex(),
                service: request.service.clone(),
                endpoint: request.endpoint.clone(),
                duration_ms: ms(request.duration_ns as f64),
                breakdown_ms: breakdown_of(&request.breakdown),
                db_calls: request.n_db_calls,
                findings: request
                    .findings
                    .iter()
                    .map(|finding| RequestFindingDto {
                        kind: finding.kind.as_str(),
                        name: finding.name.clone(),
                        count_per_request: f64::from(finding.count),
                        potential_saving_ms: ms(finding.potential_saving_ns as f64),
                        summary: aggregate::finding_sentence(
                            finding.kind,
                            &finding.name,
                            f64::from(finding.count),
                            finding.potential_saving_ns as f64,
                        ),
                        span_ids: finding.span_ids.iter().map(|id| id.to_hex()).collect(),
                        location: finding.location.as_ref().map(location_dto),
                    })
                    .collect(),
                critical_path: request.critical_path.iter().map(|id| id.to_hex()).collect(),
                detached: request.detached.iter().map(|id| id.to_hex()).collect(),
                gaps: request
                    .gaps
                    .iter()
                    .map(|gap| TraceGapDto {
                        span_id: gap.span_id.to_hex(),
                        after: gap.after.clone(),
                        before: gap.before.clone(),
                        start: rfc3339(gap.start_unix_ns),
                        offset_ms: ms(gap.start_unix_ns.saturating_sub(start) as f64),
                        duration_ms: ms(gap.duration_ns as f64),
                        cpu_ms: gap.cpu_ns.map(|ns| ms(ns as f64)),
                        category: gap_category(gap).as_str(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The category a gap is shown in: untraced where no CPU was measured, else the larger of its
/// cpu and wait parts.
pub fn gap_category(gap: &Gap) -> Category {
    match gap.parts() {
        [(Category::Untraced, _), _] => Category::Untraced,
        [(_, cpu), (_, wait)] if cpu >= wait => Category::Cpu,
        _ => Category::Wait,
    }
}

/// Where a comparison's numbers came from.
pub enum CompareAnswer {
    /// One endpoint.
    Endpoint(Box<CompareDto>),
    /// Every endpoint of a service.
    Service(ServiceCompareDto),
}

/// Why a comparison has no answer (404).
pub enum CompareMissing {
    /// No such service or endpoint.
    Unknown,
    /// This side selected no requests.
    NoData(&'static str),
}

/// The requests one selector picks, merged per endpoint.
async fn selected_rollups(
    store: &Store,
    service: &str,
    ids: &[i64],
    selector: &Selector,
    default_window: Window,
    limits: &ReadLimits,
) -> Result<(BTreeMap<i64, Rollup>, Window), StoreError> {
    let window = selector.window.unwrap_or(default_window);
    if selector.from_rollups() {
        let rollups = store
            .merged_rollups(window, Some(ids), selector.version.as_deref())
            .await?;
        return Ok((merge_by(rollups, |(endpoint_id, _)| *endpoint_id), window));
    }
    let resources: std::collections::HashSet<i64> = store
        .resources()
        .await?
        .into_iter()
        .filter(|resource| {
            resource.service == service
                && selector
                    .attributes
                    .iter()
                    .all(|wanted| resource.attributes.contains(wanted))
        })
        .map(|resource| resource.id)
        .collect();
    let mut merged: BTreeMap<i64, Rollup> = BTreeMap::new();
    if resources.is_empty() {
        return Ok((merged, window));
    }
    limits.check_request_window(window)?;
    for row in store
        .selected_requests(
            window,
            ids,
            selector.version.as_deref(),
            limits.max_request_rows,
        )
        .await?
    {
        if resources.contains(&row.resource_id) {
            merged.entry(row.endpoint_id).or_default().add_headline(
                row.duration_ns,
                row.error,
                &row.breakdown,
                row.n_db_calls,
            );
        }
    }
    Ok((merged, window))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One endpoint compared, as `/api/v1/compare` shows it; `None` when a side has no requests.
#[allow(clippy::too_many_arguments)]
pub fn comparison_dto(
    endpoint: &EndpointRef,
    baseline: &Rollup,
    baseline_window: Window,
    candidate: &Rollup,
    candidate_window: Window,
    candidate_label: &str,
    thresholds: &Thresholds,
) -> Option<EndpointComparisonDto> {
    let comparison = compare::compare(baseline, candidate, &endpoint.endpoint, candidate_label)?;
    let before = aggregate::summarize(baseline, &endpoint.endpoint)?;
    let after = aggregate::summarize(candidate, &endpoint.endpoint)?;
    let mut delta_ms: BTreeMap<&'static str, f64> = BTreeMap::new();
    delta_ms.insert("total", ms(comparison.mean_delta_ns()));
    delta_ms.insert("p50", ms(comparison.p50_delta_ns()));
    delta_ms.insert("p95", ms(comparison.p95_delta_ns()));
    delta_ms.insert("p99", ms(comparison.p99_delta_ns()));
    for category in Category::ALL {
        delta_ms.insert(
            category.as_str(),
            ms(comparison.category_delta_ns[category.index()]),
        );
    }
    Some(EndpointComparisonDto {
        baseline: summary_dto(endpoint, &before, baseline_window),
        candidate: summary_dto(endpoint, &after, candidate_window),
        delta_ms,
        mean_delta_ci_ms: comparison.mean_delta_ci.map(|ci| IntervalMs {
            low: ms(ci.low_ns),
            high: ms(ci.high_ns),
        }),
        significant: comparison.significant(),
        verdict: compare::verdict(&comparison, thresholds).as_str(),
        regression: compare::regression(&comparison, thresholds).map(|found| RegressionDto {
            metric: found.metric.as_str(),
            baseline_ms: ms(found.baseline_ns),
            candidate_ms: ms(found.candidate_ns),
        }),
        top_changes: comparison
            .top_changes
            .iter()
            .map(|change| ChangeDto {
                category: change.category.as_str(),
                name: change.name.clone(),
                delta_ms: ms(change.delta_ns),
                summary: change.summary.clone(),
                gap: change.gap.is_some(),
                after: change.gap.as_ref().and_then(|place| place.after.clone()),
                before: change.gap.as_ref().and_then(|place| place.before.clone()),
            })
            .collect(),
        operations: comparison
            .operations
            .iter()
            .map(|op| OperationChangeDto {
                category: op.category.as_str(),
                name: op.name.clone(),
                gap: op.gap.is_some(),
                after: op.gap.as_ref().and_then(|place| place.after.clone()),
                before: op.gap.as_ref().and_then(|place| place.before.clone()),
                change: op.kind.as_str(),
                baseline_calls_per_request: round2(op.baseline_calls_per_request),
                candidate_calls_per_request: round2(op.candidate_calls_per_request),
                baseline_mean_ms: ms(op.baseline_mean_ns),
                candidate_mean_ms: ms(op.candidate_mean_ns),
                critical_delta_ms: ms(op.critical_delta_ns),
            })
            .collect(),
        summary: comparison.summary,
    })
}

/// `GET /api/v1/compare`: one endpoint, or with `endpoint` absent every endpoint of the service.
#[allow(clippy::too_many_arguments)]
pub async fn compare(
    store: &Store,
    default_window: Window,
    service: &str,
    endpoint: Option<&str>,
    baseline: &Selector,
    candidate: &Selector,
    thresholds: &Thresholds,
    limits: &ReadLimits,
) -> Result<Result<CompareAnswer, CompareMissing>, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = index.ids(Some(service), endpoint);
    if ids.is_empty() {
        return Ok(Err(CompareMissing::Unknown));
    }
    let (before, baseline_window) =
        selected_rollups(store, service, &ids, baseline, default_window, limits).await?;
    let (after, candidate_window) =
        selected_rollups(store, service, &ids, candidate, default_window, limits).await?;
    if before.is_empty() {
        return Ok(Err(CompareMissing::NoData("baseline")));
    }
    if after.is_empty() {
        return Ok(Err(CompareMissing::NoData("candidate")));
    }
    let source = if baseline.from_rollups() && candidate.from_rollups() {
        "rollups"
    } else {
        "requests"
    };
    let dto_of = |id: i64| {
        comparison_dto(
            index.get(id)?,
            before.get(&id)?,
            baseline_window,
            after.get(&id)?,
            candidate_window,
            candidate.label(),
            thresholds,
        )
    };
    if endpoint.is_some() {
        let histogram = ids
            .first()
            .and_then(|id| Some(compare_histogram(before.get(id)?, after.get(id)?)));
        return Ok(match ids.first().and_then(|id| dto_of(*id)) {
            Some(comparison) => Ok(CompareAnswer::Endpoint(Box::new(CompareDto {
                baseline_selector: baseline.text.clone(),
                candidate_selector: candidate.text.clone(),
                source,
                latency_histogram: histogram.unwrap_or_default(),
                comparison,
            }))),
            None => Err(CompareMissing::NoData("baseline or candidate")),
        });
    }
    let mut endpoints: Vec<EndpointComparisonDto> =
        ids.iter().filter_map(|id| dto_of(*id)).collect();
    endpoints.sort_by(|a, b| {
        let slower = |dto: &EndpointComparisonDto| dto.verdict == "slower";
        slower(b)
            .cmp(&slower(a))
            .then_with(|| b.delta_ms["total"].total_cmp(&a.delta_ms["total"]))
    });
    let only = |this: &BTreeMap<i64, Rollup>, other: &BTreeMap<i64, Rollup>| {
        let mut names: Vec<String> = this
            .keys()
            .filter(|id| !other.contains_key(id))
            .filter_map(|id| index.get(*id).map(|e| e.endpoint.clone()))
            .collect();
        names.sort();
        names
    };
    Ok(Ok(CompareAnswer::Service(ServiceCompareDto {
        service: service.to_owned(),
        baseline_selector: baseline.text.clone(),
        candidate_selector: candidate.text.clone(),
        source,
        only_in_baseline: only(&before, &after),
        only_in_candidate: only(&after, &before),
        endpoints,
    })))
}

/// `GET /api/v1/versions`: the `service.version`s of a service (or one endpoint) with traffic
/// in the window, first seen first: what a comparison can select.
pub async fn versions(
    store: &Store,
    window: Window,
    service: &str,
    endpoint: Option<&str>,
) -> Result<VersionsDto, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = index.ids(Some(service), endpoint);
    if ids.is_empty() {
        return Ok(VersionsDto {
            versions: Vec::new(),
        });
    }
    // (requests, first minute, last minute) per version.
    let mut seen: BTreeMap<String, (u64, i64, i64)> = BTreeMap::new();
    for (key, rollup) in store.rollups(window, Some(&ids)).await? {
        let last_minute = match key.granularity {
            crate::store::Granularity::Minute => key.minute,
            crate::store::Granularity::Hour => key.minute + 59,
        };
        let entry = seen
            .entry(key.version)
            .or_insert((0, key.minute, last_minute));
        entry.0 += rollup.requests;
        entry.1 = entry.1.min(key.minute);
        entry.2 = entry.2.max(last_minute);
    }
    let mut versions: Vec<(String, (u64, i64, i64))> = seen
        .into_iter()
        .filter(|(_, (requests, _, _))| *requests > 0)
        .collect();
    versions.sort_by(|a, b| a.1.1.cmp(&b.1.1).then_with(|| a.0.cmp(&b.0)));
    let instant = |minute: i64| rfc3339((minute.max(0) as u64) * 60 * 1_000_000_000);
    Ok(VersionsDto {
        versions: versions
            .into_iter()
            .map(|(version, (requests, first, last))| VersionSeenDto {
                version,
                requests,
                first_seen: instant(first),
                last_seen: instant(last),
            })
            .collect(),
    })
}

/// Events fetched per store read while looking for the newest ones.
const REGRESSION_PAGE: i64 = 1000;

/// The newest regression events (at most `limit`, newest first) detected in the window, of a
/// service and optionally one endpoint: the pages' banners. Reads the same feed as
/// `GET /api/v1/regressions`.
pub async fn recent_regressions(
    store: &Store,
    window: Window,
    service: Option<&str>,
    endpoint: Option<&str>,
    limit: usize,
) -> Result<Vec<RegressionEventDto>, StoreError> {
    let mut newest: std::collections::VecDeque<RegressionRecord> =
        std::collections::VecDeque::new();
    let mut after = 0;
    loop {
        let page = store.regressions(after, REGRESSION_PAGE, service).await?;
        let full = page.len() as i64 == REGRESSION_PAGE;
        for record in page {
            after = after.max(record.id);
            let in_window =
                (window.from_unix_ns..=window.to_unix_ns).contains(&record.detected_unix_ns);
            if in_window && endpoint.is_none_or(|name| record.endpoint == name) {
                newest.push_back(record);
                if newest.len() > limit {
                    newest.pop_front();
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(newest.into_iter().rev().map(regression_event).collect())
}

fn regression_event(record: RegressionRecord) -> RegressionEventDto {
    RegressionEventDto {
        id: record.id,
        detected_at: rfc3339(record.detected_unix_ns),
        service: record.service,
        endpoint: record.endpoint,
        baseline: record.baseline,
        candidate: record.candidate,
        metric: record.metric,
        baseline_ms: ms(record.baseline_ns as f64),
        candidate_ms: ms(record.candidate_ns as f64),
        baseline_requests: record.baseline_requests,
        candidate_requests: record.candidate_requests,
        mean_delta_ms: ms(record.mean_delta_ns as f64),
        mean_delta_ci_ms: record.mean_delta_ci_ns.map(|(low, high)| IntervalMs {
            low: ms(low as f64),
            high: ms(high as f64),
        }),
        baseline_ci_ms: record.baseline_interval_ns.map(interval_ms),
        candidate_ci_ms: record.candidate_interval_ns.map(interval_ms),
        summary: record.summary,
        state: if record.resolution.is_some() {
            "resolved"
        } else {
            "open"
        },
        resolved_at: record
            .resolution
            .as_ref()
            .map(|r| rfc3339(r.resolved_unix_ns)),
        resolved_candidate_ms: record
            .resolution
            .as_ref()
            .map(|r| ms(r.candidate_ns as f64)),
        resolved_summary: record.resolution.map(|r| r.summary),
    }
}

fn interval_ms((low_ns, high_ns): (u64, u64)) -> IntervalMs {
    IntervalMs {
        low: ms(low_ns as f64),
        high: ms(high_ns as f64),
    }
}

/// `GET /api/v1/regressions`: events after `after_id`, oldest first, optionally of one service.
pub async fn regressions(
    store: &Store,
    after_id: i64,
    limit: i64,
    service: Option<&str>,
) -> Result<RegressionsDto, StoreError> {
    let records = store.regressions(after_id, limit, service).await?;
    Ok(RegressionsDto {
        regressions: records.into_iter().map(regression_event).collect(),
    })
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Scheme, host and port of a URL: webhook paths and queries often carry tokens.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..end].rsplit('@').next().unwrap_or_default();
    let elided = if end < rest.len() { "/…" } else { "" };
    format!("{scheme}://{host}{elided}")
}

/// Transitions the API reads to fill the per-alert histories.
const HISTORY_SCAN: i64 = 2000;

/// `GET /api/v1/alerts`: the last evaluation, with each alert's newest transitions.
pub async fn alerts(store: &Store, handle: &AlertHandle) -> Result<AlertsDto, StoreError> {
    let snapshot = crate::alert::last_evaluation(store).await?;
    let mut history: HashMap<(String, String, String), Vec<AlertTransitionDto>> = HashMap::new();
    for transition in store.alert_transitions(HISTORY_SCAN).await? {
        let list = history
            .entry((
                transition.rule_key.clone(),
                transition.service.clone(),
                transition.endpoint.clone(),
            ))
            .or_default();
        if list.len() < crate::alert::HISTORY_PER_ALERT {
            list.push(AlertTransitionDto {
                from: transition.from_state,
                to: transition.to_state,
                at: rfc3339(transition.at_unix_ns),
                observed: transition.observed.map(round3),
                summary: transition.summary,
            });
        }
    }
    let alerts = snapshot
        .alerts
        .into_iter()
        .map(|view| {
            let key = (
                view.rule_key.clone(),
                view.service.clone(),
                view.endpoint.clone(),
            );
            AlertDto {
                history: history.remove(&key).unwrap_or_default(),
                service: view.service,
                endpoint: view.endpoint,
                metric: view.metric,
                budget: view.budget,
                observed: view.observed.map(round3),
                window: humantime::format_duration(view.window).to_string(),
                state: view.status.state.as_str(),
                since: rfc3339(view.status.since_unix_ns),
                kind: view.kind.as_str(),
                rule: view.rule_key,
                requests: view.requests,
                summary: view.summary,
                objective: view.slo.map(|(objective, _)| objective),
                threshold_ms: view.slo.map(|(_, threshold)| threshold),
                burn: view
                    .burn
                    .into_iter()
                    .map(|check| BurnDto {
                        severity: check.severity,
                        long_window: humantime::format_duration(check.long).to_string(),
                        short_window: humantime::format_duration(check.short).to_string(),
                        factor: round3(check.factor),
                        long_burn: round3(check.long_burn),
                        short_burn: round3(check.short_burn),
                        firing: check.firing,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(AlertsDto {
        alerts,
        evaluated_at: snapshot.evaluated_at_unix_ns.map(rfc3339),
        interval_s: handle.rules().settings.interval.as_secs_f64(),
    })
}

/// `GET /api/v1/alerts/deliveries`: the newest notifications with every attempt.
pub async fn deliveries(store: &Store, limit: i64) -> Result<DeliveriesDto, StoreError> {
    Ok(DeliveriesDto {
        deliveries: store
            .deliveries(limit)
            .await?
            .into_iter()
            .map(|record| DeliveryDto {
                id: record.id,
                rule: record.rule_key,
                service: record.service,
                endpoint: record.endpoint,
                state: record.to_state,
                url: redact_url(&record.url),
                format: record.format,
                status: record.status,
                created: rfc3339(record.created_unix_ns),
                attempts: record
                    .attempts
                    .into_iter()
                    .map(|attempt| DeliveryAttemptDto {
                        attempt: attempt.attempt,
                        at: rfc3339(attempt.at_unix_ns),
                        outcome: attempt.outcome,
                        http_status: attempt.http_status,
                        error: attempt.error,
                    })
                    .collect(),
            })
            .collect(),
    })
}
