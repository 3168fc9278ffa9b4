//! One endpoint in depth: headline figures, the time series, operations, findings, gaps, the slow
//! tail beside the median, example requests and the split per version; and request lists.
//!
//! Invariant: aggregates from rollups; the tail and example requests from the duration index of
//! request rows, never a scan of the window's rows.

use collector::category::Category;

use super::EndpointIndex;
use super::endpoints::EndpointSummary;
use super::rollup::{LatencyBucket, bucket_minutes, latency_histogram, merge_by};
use crate::analysis::Breakdown;
use crate::analysis::aggregate::{
    self, EndpointStats, FindingStats, GapStats, OperationStats, Rollup,
};
use crate::store::{EndpointRef, RequestRow, Store, StoreError, Window};

/// Mean nanoseconds per category.
pub type CategoryMeansNs = [f64; Category::COUNT];

/// One point of the time series: a bucket of whole minutes.
#[derive(Debug, Clone)]
pub struct TimeseriesPoint {
    /// The bucket's first minute since the epoch.
    pub minute: i64,
    /// The bucket's figures.
    pub stats: EndpointStats,
}

/// One version's share of the endpoint.
#[derive(Debug, Clone)]
pub struct VersionSplit {
    /// `service.version`, empty when unknown.
    pub version: String,
    /// Its figures.
    pub stats: EndpointStats,
}

/// The mean breakdown of requests around the median beside that of the slowest 5%.
#[derive(Debug, Clone, PartialEq)]
pub struct TailBreakdown {
    /// Requests between the 45th and 55th percentile.
    pub median_ns: CategoryMeansNs,
    /// Requests at or above the 95th percentile.
    pub slowest_5pct_ns: CategoryMeansNs,
}

/// A stored request with the endpoint it belongs to.
#[derive(Debug, Clone)]
pub struct RequestSummary {
    /// The request row.
    pub request: RequestRow,
    /// Its endpoint.
    pub endpoint: EndpointRef,
}

/// One endpoint over a window.
#[derive(Debug, Clone)]
pub struct EndpointDetail {
    /// The headline figures.
    pub summary: EndpointSummary,
    /// About 60 points over the window.
    pub timeseries: Vec<TimeseriesPoint>,
    /// Largest critical time per request first.
    pub operations: Vec<OperationStats>,
    /// The median beside the slow tail.
    pub tail: TailBreakdown,
    /// Largest saving per request first.
    pub findings: Vec<FindingStats>,
    /// Where untraced (or unexplained) self time sits, most time first.
    pub gaps: Vec<GapStats>,
    /// The slowest requests, slowest first.
    pub slowest: Vec<RequestSummary>,
    /// A request at the median.
    pub typical: Option<RequestSummary>,
    /// Per version, by version.
    pub versions: Vec<VersionSplit>,
    /// The latency distribution, trimmed to its populated range.
    pub latency_histogram: Vec<LatencyBucket>,
}

/// Operations, findings and gaps of one rollup: what an endpoint's detail and a capture report
/// list.
#[derive(Debug, Clone)]
pub struct RollupDetail {
    /// Largest critical time per request first.
    pub operations: Vec<OperationStats>,
    /// Largest saving per request first.
    pub findings: Vec<FindingStats>,
    /// Most time first.
    pub gaps: Vec<GapStats>,
}

impl RollupDetail {
    /// The lists of one rollup.
    pub fn of(rollup: &Rollup) -> Self {
        Self {
            operations: aggregate::operations(rollup),
            findings: aggregate::findings(rollup),
            gaps: aggregate::gaps(rollup),
        }
    }
}

fn mean_per_category(n: u64, sums: Breakdown) -> CategoryMeansNs {
    sums.0.map(|ns| ns as f64 / n.max(1) as f64)
}

/// One endpoint over the window; `None` without requests.
pub async fn endpoint_detail(
    store: &Store,
    window: Window,
    service: &str,
    endpoint_name: &str,
) -> Result<Option<EndpointDetail>, StoreError> {
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
    let timeseries = per_bucket
        .iter()
        .filter_map(|(minute, rollup)| {
            Some(TimeseriesPoint {
                minute: *minute,
                stats: aggregate::summarize(rollup, &endpoint.endpoint)?,
            })
        })
        .collect();
    let versions = per_version
        .iter()
        .filter_map(|(version, rollup)| {
            Some(VersionSplit {
                version: version.clone(),
                stats: aggregate::summarize(rollup, &endpoint.endpoint)?,
            })
        })
        .collect();

    // Quantiles come from the sketch; the requests around them from the duration index, so the
    // page reads a few percent of the window's request rows, not all of them.
    let quantile = |q: f64| rollup.sketch.quantile_ns(q) as u64;
    let band = |from: u64, to: u64| store.breakdown_between(window, endpoint.id, from, to);
    let (median_n, median_sums) = band(quantile(0.45), quantile(0.55)).await?;
    let (tail_n, tail_sums) = band(quantile(0.95), u64::MAX).await?;
    let tail = TailBreakdown {
        median_ns: mean_per_category(median_n, median_sums),
        slowest_5pct_ns: mean_per_category(tail_n, tail_sums),
    };
    let summary_of = |request: RequestRow| RequestSummary {
        request,
        endpoint: endpoint.clone(),
    };
    let typical = store
        .request_at_least(window, endpoint.id, quantile(0.5))
        .await?
        .map(summary_of);
    let slowest = store
        .requests(window, Some(&[endpoint.id]), 0, 10)
        .await?
        .into_iter()
        .map(summary_of)
        .collect();
    let RollupDetail {
        operations,
        findings,
        gaps,
    } = RollupDetail::of(rollup);
    Ok(Some(EndpointDetail {
        latency_histogram: latency_histogram(&rollup.sketch),
        summary: EndpointSummary {
            endpoint: endpoint.clone(),
            stats,
            window,
        },
        timeseries,
        operations,
        tail,
        findings,
        gaps,
        slowest,
        typical,
        versions,
    }))
}

/// Requests matching the filter, slowest first, at least `min_duration_ns` long.
pub async fn requests(
    store: &Store,
    window: Window,
    service: Option<&str>,
    endpoint: Option<&str>,
    min_duration_ns: u64,
    limit: i64,
) -> Result<Vec<RequestSummary>, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = (service.is_some() || endpoint.is_some()).then(|| index.ids(service, endpoint));
    let rows = store
        .requests(window, ids.as_deref(), min_duration_ns, limit)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|request| {
            Some(RequestSummary {
                endpoint: index.get(request.endpoint_id)?.clone(),
                request,
            })
        })
        .collect())
}
