//! The JSON report of `analyze`: the API's own shapes (`web::api::dto`), built by the same
//! functions that build `/api/v1/endpoints`, `/api/v1/endpoint` and `/api/v1/compare`, so a
//! capture reads like the server's answer on the same spans.
//!
//! Invariant: builds values only; the caller prints them.

use super::Analysed;
use super::baseline::BaselineDiff;
use super::endpoints::CaptureAnalysis;
use crate::analysis::aggregate;
use crate::analysis::compare::Thresholds;
use crate::cli::check::Row;
use crate::read::compare::EndpointComparison;
use crate::read::endpoint::RollupDetail;
use crate::read::endpoints::EndpointSummary;
use crate::store::{EndpointRef, Window};
use crate::web::api::dto::*;
use crate::web::api::present;
use crate::web::units::round2;

fn endpoint_ref(service: &str, endpoint: &str) -> EndpointRef {
    EndpointRef {
        id: 0,
        service: service.to_owned(),
        endpoint: endpoint.to_owned(),
    }
}

/// Every endpoint of a capture, most total time first, as the API orders them.
pub fn endpoints(analysis: &CaptureAnalysis, window: Window) -> Vec<CaptureEndpointDto> {
    let mut out: Vec<CaptureEndpointDto> = analysis
        .endpoints
        .iter()
        .filter_map(|(name, captured)| {
            let (service, endpoint) = name;
            let summary = EndpointSummary {
                stats: aggregate::summarize(&captured.rollup, endpoint)?,
                endpoint: endpoint_ref(service, endpoint),
                window,
            };
            let detail = RollupDetail::of(&captured.rollup);
            Some(CaptureEndpointDto {
                summary: present::summary_dto(&summary),
                operations: present::operation_dtos(&detail.operations),
                findings: detail.findings.iter().map(present::finding_dto).collect(),
                gaps: present::gap_dtos(&detail.gaps),
            })
        })
        .collect();
    out.sort_by(|a, b| b.summary.total_ms.total_cmp(&a.summary.total_ms));
    out
}

/// The budget rows as values.
pub fn budgets(rows: &[Row]) -> Vec<BudgetCheckDto> {
    rows.iter()
        .map(|row| BudgetCheckDto {
            service: row.service.clone(),
            endpoint: row.endpoint.clone(),
            metric: row.metric,
            budget: row.budget.clone(),
            observed: row.observed.clone(),
            requests: row.requests.clone(),
            verdict: row.verdict.clone(),
            broken: row.broken,
        })
        .collect()
}

/// The baseline comparison as values.
pub fn baseline(diff: &BaselineDiff, baseline: &Analysed, candidate: &Analysed) -> BaselineDiffDto {
    let name = |(service, endpoint): &(String, String)| EndpointNameDto {
        service: service.clone(),
        endpoint: endpoint.clone(),
    };
    let endpoints = diff
        .endpoints
        .iter()
        .filter_map(|it| {
            let (service, endpoint) = &it.endpoint;
            let before = &baseline.analysis.endpoints.get(&it.endpoint)?.rollup;
            let after = &candidate.analysis.endpoints.get(&it.endpoint)?.rollup;
            let comparison = present::comparison_dto(&EndpointComparison::of(
                &endpoint_ref(service, endpoint),
                (before, baseline.window),
                (after, candidate.window),
                "this change",
                &Thresholds::default(),
            )?);
            Some(EndpointDiffDto {
                service: service.clone(),
                endpoint: endpoint.clone(),
                regressed: it.regressed(),
                changes: it.sentences.clone(),
                calls: it
                    .calls
                    .iter()
                    .map(|c| CallsChangeDto {
                        category: c.category.as_str(),
                        baseline_calls_per_request: round2(c.baseline),
                        candidate_calls_per_request: round2(c.candidate),
                    })
                    .collect(),
                new_findings: it.new_findings.iter().map(present::finding_dto).collect(),
                gone_findings: it
                    .gone_findings
                    .iter()
                    .map(|(kind, name)| FindingKeyDto {
                        kind: kind.as_str(),
                        name: name.clone(),
                    })
                    .collect(),
                comparison,
            })
        })
        .collect();
    BaselineDiffDto {
        regressed: diff.regressed(),
        endpoints,
        new_endpoints: diff.new_endpoints.iter().map(name).collect(),
        gone_endpoints: diff.gone_endpoints.iter().map(name).collect(),
    }
}
