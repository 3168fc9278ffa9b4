//! The read model's views as the v1 DTOs: typed values become API strings, nanoseconds become
//! milliseconds through `web::units`. A new API field is filled here from its view.
//!
//! Invariant: mapping only; every figure comes from a view, every rounding from `web::units`.

use std::collections::BTreeMap;

use collector::category::Category;
use collector::model::KeyValue;

use super::dto::*;
use crate::alert::AlertView;
use crate::analysis::aggregate::{FindingStats, GapStats, OperationStats};
use crate::analysis::location::CodeLocation;
use crate::analysis::{Finding, RequestAnalysis};
use crate::read::alerts::{AlertWithHistory, Alerts};
use crate::read::compare::{EndpointCompare, EndpointComparison, ServiceCompare};
use crate::read::endpoint::{EndpointDetail, RequestSummary};
use crate::read::endpoints::{EndpointSummary, Endpoints, Services, VersionSeen};
use crate::read::rollup::LatencyBucket;
use crate::read::trace::{TraceSpan, TraceView, finding_sentence, gap_category};
use crate::store::{AlertTransition, DeliveryRecord, RegressionRecord};
use crate::time::rfc3339;
use crate::web::units::{ms, ms_of, ms_per_category, round2, round3};

/// Milliseconds per category from nanoseconds per category.
pub fn breakdown_ms(ns: [f64; Category::COUNT]) -> BreakdownMs {
    let values = ms_per_category(ns);
    Category::ALL
        .iter()
        .map(|c| (c.as_str(), values[c.index()]))
        .collect()
}

fn breakdown_of(breakdown: &crate::analysis::Breakdown) -> BreakdownMs {
    breakdown_ms(breakdown.0.map(|v| v as f64))
}

/// `GET /api/v1/services`.
pub fn services_dto(view: Services) -> ServicesDto {
    ServicesDto {
        data_since: view.data_since_unix_ns.map(rfc3339),
        services: view
            .services
            .into_iter()
            .map(|service| ServiceDto {
                name: service.name,
                endpoints: service.endpoints,
                requests: service.requests,
            })
            .collect(),
    }
}

/// An endpoint's summary as `/api/v1/endpoints` shows it.
pub fn summary_dto(view: &EndpointSummary) -> EndpointSummaryDto {
    let stats = &view.stats;
    EndpointSummaryDto {
        service: view.endpoint.service.clone(),
        endpoint: view.endpoint.endpoint.clone(),
        requests: stats.requests,
        errors: stats.errors,
        rate_per_sec: view.rate_per_sec(),
        mean_ms: ms(stats.mean_ns),
        p50_ms: ms(stats.p50_ns),
        p90_ms: ms(stats.p90_ns),
        p95_ms: ms(stats.p95_ns),
        p99_ms: ms(stats.p99_ns),
        breakdown_ms: breakdown_ms(stats.breakdown_mean_ns),
        io_ms: ms(stats.io_ns),
        cpu_ms: ms(stats.cpu_ns),
        db_calls_per_request: round2(stats.db_calls_per_request),
        speedup_if_cpu_free: round3(stats.speedup_if_cpu_free),
        speedup_if_cpu_free_max: round3(stats.speedup_if_cpu_free_max),
        bottleneck: BottleneckDto {
            category: stats.bottleneck.as_str(),
            share: round3(stats.bottleneck_share),
            summary: stats.bottleneck_summary.clone(),
        },
        total_ms: ms(view.total_ns()),
        folded: view.folded(),
    }
}

/// `GET /api/v1/endpoints`.
pub fn endpoints_dto(view: &Endpoints) -> EndpointsDto {
    EndpointsDto {
        endpoints: view.endpoints.iter().map(summary_dto).collect(),
        capped_services: view.capped_services.clone(),
    }
}

/// An endpoint's operations as the API shows them.
pub fn operation_dtos(operations: &[OperationStats]) -> Vec<OperationDto> {
    operations
        .iter()
        .map(|op| OperationDto {
            category: op.category.as_str(),
            name: op.name.clone(),
            gap: op.gap.is_some(),
            after: op.gap.as_ref().and_then(|place| place.after.clone()),
            before: op.gap.as_ref().and_then(|place| place.before.clone()),
            calls_per_request: round2(op.calls_per_request),
            mean_ms: ms(op.mean_ns),
            critical_ms_per_request: ms(op.critical_ns_per_request),
        })
        .collect()
}

/// One finding of an endpoint as the API shows it.
pub fn finding_dto(finding: &FindingStats) -> FindingDto {
    FindingDto {
        kind: finding.kind.as_str(),
        name: finding.name.clone(),
        count_per_request: round2(finding.count_per_request),
        potential_saving_ms: ms(finding.potential_saving_ns),
        summary: finding.summary.clone(),
        request_share: round3(finding.request_share),
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

/// Where an endpoint's untraced (or unexplained) self time sits.
pub fn gap_dtos(gaps: &[GapStats]) -> Vec<GapDto> {
    gaps.iter()
        .map(|gap| GapDto {
            place: gap.place.describe(),
            mean_ms: ms(gap.total_mean_ns()),
            request_share: round3(gap.request_share),
            cpu_ms: ms(gap.mean_ns[Category::Cpu.index()]),
            wait_ms: ms(gap.mean_ns[Category::Wait.index()]),
            untraced_ms: ms(gap.mean_ns[Category::Untraced.index()]),
            after: gap.place.after.clone(),
            before: gap.place.before.clone(),
        })
        .collect()
}

fn latency_bucket_dto(bucket: &LatencyBucket) -> LatencyBucketDto {
    LatencyBucketDto {
        from_ms: ms(bucket.from_ns),
        to_ms: ms(bucket.to_ns),
        requests: bucket.requests,
    }
}

/// A stored request as `/api/v1/traces` lists it.
pub fn trace_summary_dto(view: &RequestSummary) -> TraceSummaryDto {
    let request = &view.request;
    TraceSummaryDto {
        trace_id: request.trace_id.to_hex(),
        span_id: request.span_id.to_hex(),
        service: view.endpoint.service.clone(),
        endpoint: view.endpoint.endpoint.clone(),
        version: request.version.clone(),
        start: rfc3339(request.start_unix_ns),
        duration_ms: ms_of(request.duration_ns),
        breakdown_ms: breakdown_of(&request.breakdown),
        error: request.error,
    }
}

/// `GET /api/v1/traces`.
pub fn traces_dto(view: &[RequestSummary]) -> TracesDto {
    TracesDto {
        traces: view.iter().map(trace_summary_dto).collect(),
    }
}

/// `GET /api/v1/endpoint`.
pub fn endpoint_detail_dto(view: &EndpointDetail) -> EndpointDetailDto {
    EndpointDetailDto {
        summary: summary_dto(&view.summary),
        timeseries: view
            .timeseries
            .iter()
            .map(|point| TimeseriesPointDto {
                t: (point.minute * 60_000) as f64,
                requests: point.stats.requests,
                p50_ms: ms(point.stats.p50_ns),
                p95_ms: ms(point.stats.p95_ns),
                p99_ms: ms(point.stats.p99_ns),
                breakdown_ms: breakdown_ms(point.stats.breakdown_mean_ns),
            })
            .collect(),
        operations: operation_dtos(&view.operations),
        tail_breakdown_ms: TailBreakdownDto {
            p50: breakdown_ms(view.tail.median_ns),
            slowest_5pct: breakdown_ms(view.tail.slowest_5pct_ns),
        },
        findings: view.findings.iter().map(finding_dto).collect(),
        gaps: gap_dtos(&view.gaps),
        slowest_traces: view.slowest.iter().map(trace_summary_dto).collect(),
        typical_trace: view.typical.as_ref().map(trace_summary_dto),
        versions: view
            .versions
            .iter()
            .map(|split| VersionSplitDto {
                version: split.version.clone(),
                requests: split.stats.requests,
                mean_ms: ms(split.stats.mean_ns),
                p50_ms: ms(split.stats.p50_ns),
                p95_ms: ms(split.stats.p95_ns),
                breakdown_ms: breakdown_ms(split.stats.breakdown_mean_ns),
            })
            .collect(),
        latency_histogram: view
            .latency_histogram
            .iter()
            .map(latency_bucket_dto)
            .collect(),
    }
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.to_string()))
        .collect()
}

fn span_dto(view: &TraceView, traced: &TraceSpan) -> SpanDto {
    let span = &traced.span;
    SpanDto {
        span_id: span.span_id.to_hex(),
        parent_span_id: span.parent_span_id.map(|id| id.to_hex()),
        service: span.resource.service_name.clone(),
        version: span.resource.service_version.clone().unwrap_or_default(),
        name: span.name.clone(),
        kind: span.kind.as_str(),
        start: rfc3339(span.start_unix_ns),
        offset_ms: ms_of(view.offset_ns(span.start_unix_ns)),
        duration_ms: ms_of(span.duration_ns),
        category: traced.category.as_str(),
        attributes: attributes(&span.attributes),
        resource: attributes(&span.resource.attributes),
        status: span.status.code.as_str(),
        status_message: span.status.message.clone(),
        events: span.n_events,
    }
}

/// A request's finding with the sentence an endpoint's finding of one request would carry.
fn request_finding_dto(finding: &Finding) -> RequestFindingDto {
    RequestFindingDto {
        kind: finding.kind.as_str(),
        name: finding.name.clone(),
        count_per_request: f64::from(finding.count),
        potential_saving_ms: ms_of(finding.potential_saving_ns),
        summary: finding_sentence(finding),
        span_ids: finding.span_ids.iter().map(|id| id.to_hex()).collect(),
        location: finding.location.as_ref().map(location_dto),
    }
}

fn trace_request_dto(view: &TraceView, request: &RequestAnalysis) -> TraceRequestDto {
    TraceRequestDto {
        span_id: request.span_id.to_hex(),
        service: request.service.clone(),
        endpoint: request.endpoint.clone(),
        duration_ms: ms_of(request.duration_ns),
        breakdown_ms: breakdown_of(&request.breakdown),
        db_calls: request.n_db_calls,
        findings: request.findings.iter().map(request_finding_dto).collect(),
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
                offset_ms: ms_of(view.offset_ns(gap.start_unix_ns)),
                duration_ms: ms_of(gap.duration_ns),
                cpu_ms: gap.cpu_ns.map(ms_of),
                category: gap_category(gap).as_str(),
            })
            .collect(),
    }
}

/// `GET /api/v1/traces/{id}`.
pub fn trace_dto(view: &TraceView) -> TraceDto {
    TraceDto {
        trace_id: view.trace_id.to_hex(),
        duration_ms: ms_of(view.duration_ns()),
        spans: view.spans.iter().map(|span| span_dto(view, span)).collect(),
        requests: view
            .requests
            .iter()
            .map(|request| trace_request_dto(view, request))
            .collect(),
    }
}

fn interval_ms((low_ns, high_ns): (f64, f64)) -> IntervalMs {
    IntervalMs {
        low: ms(low_ns),
        high: ms(high_ns),
    }
}

/// One endpoint compared, as `/api/v1/compare` shows it.
pub fn comparison_dto(view: &EndpointComparison) -> EndpointComparisonDto {
    let comparison = &view.comparison;
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
    EndpointComparisonDto {
        baseline: summary_dto(&view.baseline),
        candidate: summary_dto(&view.candidate),
        delta_ms,
        mean_delta_ci_ms: comparison
            .mean_delta_ci
            .map(|ci| interval_ms((ci.low_ns, ci.high_ns))),
        significant: comparison.significant(),
        verdict: view.verdict.as_str(),
        regression: view.regression.map(|found| RegressionDto {
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
        summary: comparison.summary.clone(),
    }
}

/// `GET /api/v1/compare` of one endpoint.
pub fn compare_dto(view: &EndpointCompare) -> CompareDto {
    CompareDto {
        baseline_selector: view.baseline_selector.clone(),
        candidate_selector: view.candidate_selector.clone(),
        source: view.source.as_str(),
        latency_histogram: view
            .latency_histogram
            .iter()
            .map(|bucket| CompareBucketDto {
                from_ms: ms(bucket.from_ns),
                to_ms: ms(bucket.to_ns),
                baseline_requests: bucket.baseline_requests,
                candidate_requests: bucket.candidate_requests,
            })
            .collect(),
        comparison: comparison_dto(&view.comparison),
    }
}

/// `GET /api/v1/compare` of every endpoint of a service.
pub fn service_compare_dto(view: &ServiceCompare) -> ServiceCompareDto {
    ServiceCompareDto {
        service: view.service.clone(),
        baseline_selector: view.baseline_selector.clone(),
        candidate_selector: view.candidate_selector.clone(),
        source: view.source.as_str(),
        only_in_baseline: view.only_in_baseline.clone(),
        only_in_candidate: view.only_in_candidate.clone(),
        endpoints: view.endpoints.iter().map(comparison_dto).collect(),
    }
}

/// `GET /api/v1/versions`.
pub fn versions_dto(view: Vec<VersionSeen>) -> VersionsDto {
    VersionsDto {
        versions: view
            .into_iter()
            .map(|seen| VersionSeenDto {
                version: seen.version,
                requests: seen.requests,
                first_seen: rfc3339(seen.first_seen_unix_ns),
                last_seen: rfc3339(seen.last_seen_unix_ns),
            })
            .collect(),
    }
}

fn whole_interval_ms((low_ns, high_ns): (u64, u64)) -> IntervalMs {
    interval_ms((low_ns as f64, high_ns as f64))
}

/// One regression event as the feed shows it.
pub fn regression_event_dto(record: RegressionRecord) -> RegressionEventDto {
    let state = regression_state(&record);
    RegressionEventDto {
        id: record.id,
        detected_at: rfc3339(record.detected_unix_ns),
        service: record.service,
        endpoint: record.endpoint,
        baseline: record.baseline,
        candidate: record.candidate,
        metric: record.metric,
        baseline_ms: ms_of(record.baseline_ns),
        candidate_ms: ms_of(record.candidate_ns),
        baseline_requests: record.baseline_requests,
        candidate_requests: record.candidate_requests,
        mean_delta_ms: ms(record.mean_delta_ns as f64),
        mean_delta_ci_ms: record
            .mean_delta_ci_ns
            .map(|(low, high)| interval_ms((low as f64, high as f64))),
        baseline_ci_ms: record.baseline_interval_ns.map(whole_interval_ms),
        candidate_ci_ms: record.candidate_interval_ns.map(whole_interval_ms),
        state,
        summary: record.summary,
        resolved_at: record
            .resolution
            .as_ref()
            .map(|r| rfc3339(r.resolved_unix_ns)),
        resolved_candidate_ms: record.resolution.as_ref().map(|r| ms_of(r.candidate_ns)),
        resolved_summary: record.resolution.map(|r| r.summary),
    }
}

/// `open`, or `resolved` once the finder saw the candidate back within the thresholds.
pub fn regression_state(record: &RegressionRecord) -> &'static str {
    if record.resolution.is_some() {
        "resolved"
    } else {
        "open"
    }
}

/// `GET /api/v1/regressions`.
pub fn regressions_dto(records: Vec<RegressionRecord>) -> RegressionsDto {
    RegressionsDto {
        regressions: records.into_iter().map(regression_event_dto).collect(),
    }
}

fn transition_dto(transition: AlertTransition) -> AlertTransitionDto {
    AlertTransitionDto {
        from: transition.from_state,
        to: transition.to_state,
        at: rfc3339(transition.at_unix_ns),
        observed: transition.observed.map(round3),
        summary: transition.summary,
    }
}

fn alert_dto(AlertWithHistory { alert, history }: AlertWithHistory) -> AlertDto {
    let AlertView {
        rule_key,
        service,
        endpoint,
        metric,
        budget,
        observed,
        window,
        status,
        kind,
        requests,
        summary,
        slo,
        burn,
        ..
    } = alert;
    AlertDto {
        history: history.into_iter().map(transition_dto).collect(),
        service,
        endpoint,
        metric,
        budget,
        observed: observed.map(round3),
        window: humantime::format_duration(window).to_string(),
        state: status.state.as_str(),
        since: rfc3339(status.since_unix_ns),
        kind: kind.as_str(),
        rule: rule_key,
        requests,
        summary,
        objective: slo.map(|(objective, _)| objective),
        threshold_ms: slo.map(|(_, threshold)| threshold),
        burn: burn
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
}

/// `GET /api/v1/alerts`; `interval_s` is the evaluation interval in force.
pub fn alerts_dto(view: Alerts, interval_s: f64) -> AlertsDto {
    AlertsDto {
        alerts: view.alerts.into_iter().map(alert_dto).collect(),
        evaluated_at: view.evaluated_at_unix_ns.map(rfc3339),
        interval_s,
    }
}

/// Scheme, host and port of a URL: webhook paths and queries often carry tokens.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..end].rsplit('@').next().unwrap_or_default();
    let elided = if end < rest.len() { "/…" } else { "" };
    format!("{scheme}://{host}{elided}")
}

/// `GET /api/v1/alerts/deliveries`.
pub fn deliveries_dto(records: Vec<DeliveryRecord>) -> DeliveriesDto {
    DeliveriesDto {
        deliveries: records
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
    }
}
