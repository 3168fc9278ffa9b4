//! Mergeable per-endpoint rollups and the summaries computed from them.
//!
//! A [`Rollup`] holds everything one (service, endpoint, version, minute) contributes; rollups of
//! many minutes or versions merge into one, and [`summarize`] turns a merged rollup into the
//! numbers the API and pages show. Re-analysis of a request (late spans) calls `remove` with the
//! old analysis and `add` with the new one, so nothing is counted twice.
//!
//! Invariant: pure; the sketch's byte form is the only encoding here.

use std::collections::BTreeMap;

use collector::category::Category;

use super::{Breakdown, FindingKind, RequestAnalysis};

/// A latency distribution with at most 1% relative error at any quantile, mergeable.
/// Wrapped so the sketch implementation can be swapped without touching callers.
#[derive(Debug, Clone)]
pub struct LatencySketch(hdrhistogram::Histogram<u64>);

/// Per-operation sums within a rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OperationSums {
    /// Executions.
    pub calls: u64,
    /// Summed durations.
    pub total_ns: u64,
    /// Summed critical-path time.
    pub critical_ns: u64,
}

/// Per-finding sums within a rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FindingSums {
    /// Requests that had the finding.
    pub requests: u64,
    /// Summed executions of the statement concerned.
    pub count: u64,
    /// Summed potential saving.
    pub saving_ns: u64,
}

/// Everything a set of requests contributes to an endpoint's aggregates.
#[derive(Debug, Clone)]
pub struct Rollup {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Summed durations.
    pub duration_sum_ns: u64,
    /// The latency distribution.
    pub sketch: LatencySketch,
    /// Summed critical-path breakdowns.
    pub breakdown_sum: Breakdown,
    /// Summed database calls.
    pub db_calls: u64,
    /// Per (category, operation name).
    pub operations: BTreeMap<(Category, String), OperationSums>,
    /// Per (finding kind, name).
    pub findings: BTreeMap<(FindingKind, String), FindingSums>,
}

/// The headline numbers of an endpoint over some window, all per request where it says so.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Mean duration.
    pub mean_ns: f64,
    /// Quantiles from the sketch.
    pub p50_ns: f64,
    /// 90th percentile.
    pub p90_ns: f64,
    /// 95th percentile.
    pub p95_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
    /// Mean critical-path time per category (ns per request).
    pub breakdown_mean_ns: [f64; 6],
    /// Mean I/O time per request (db + cache + network + messaging).
    pub io_ns: f64,
    /// Mean CPU time per request.
    pub cpu_ns: f64,
    /// Database calls per request.
    pub db_calls_per_request: f64,
    /// Amdahl: mean / (mean - cpu); how much faster the endpoint could get if CPU work were free.
    pub speedup_if_cpu_free: f64,
    /// The category with the largest share of mean critical-path time.
    pub bottleneck: Category,
    /// Its share of the mean duration, 0..=1.
    pub bottleneck_share: f64,
    /// One sentence naming the bottleneck and the top finding.
    pub bottleneck_summary: String,
}

/// An endpoint's finding, averaged per request over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingStats {
    /// Kind.
    pub kind: FindingKind,
    /// Statement or span name.
    pub name: String,
    /// Share of requests that had it.
    pub request_share: f64,
    /// Executions per affected request.
    pub count_per_request: f64,
    /// Mean saving per request of the endpoint (ns).
    pub potential_saving_ns: f64,
    /// One sentence a person can act on.
    pub summary: String,
}

/// An endpoint's operation, averaged per request over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStats {
    /// Category.
    pub category: Category,
    /// Normalized statement or span name.
    pub name: String,
    /// Executions per request.
    pub calls_per_request: f64,
    /// Mean duration of one execution.
    pub mean_ns: f64,
    /// Critical-path time per request.
    pub critical_ns_per_request: f64,
}
