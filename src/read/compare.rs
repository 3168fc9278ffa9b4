//! Comparisons: the requests two selectors pick, per endpoint, compared by the analysis.
//!
//! Versions and windows are answered from rollups. Resource attributes are not in the rollups:
//! those selections read request rows (capped by the read limits) and have no per-operation
//! detail.
//!
//! Invariant: reads only; every figure of a comparison comes from `analysis::compare`.

use std::collections::{BTreeMap, HashSet};

use super::EndpointIndex;
use super::endpoints::EndpointSummary;
use super::rollup::{CompareBucket, compare_histogram, merge_by};
use crate::analysis::aggregate::{self, Rollup};
use crate::analysis::compare::{self, Comparison, Regression, Thresholds, Verdict};
use crate::config::ReadLimits;
use crate::store::{EndpointRef, Store, StoreError, Window};

/// A selection of traffic: one side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The text as given, for labels.
    pub text: String,
    /// `service.version`.
    pub version: Option<String>,
    /// A time range replacing the request's window.
    pub window: Option<Window>,
    /// Resource attributes that must all match.
    pub attributes: Vec<(String, String)>,
}

impl Selector {
    /// What to call this side in a sentence: the version when it names one.
    pub fn label(&self) -> &str {
        self.version.as_deref().unwrap_or(&self.text)
    }

    /// Whether rollups can answer it (no resource attributes).
    pub fn from_rollups(&self) -> bool {
        self.attributes.is_empty()
    }
}

/// Where a comparison's figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Rollups: both selectors name versions or windows only.
    Rollups,
    /// Request rows: a selector names resource attributes.
    Requests,
}

impl Source {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rollups => "rollups",
            Self::Requests => "requests",
        }
    }
}

/// One endpoint compared.
#[derive(Debug, Clone)]
pub struct EndpointComparison {
    /// The baseline side's figures.
    pub baseline: EndpointSummary,
    /// The candidate side's figures.
    pub candidate: EndpointSummary,
    /// What changed.
    pub comparison: Comparison,
    /// Slower, faster or unchanged, by the thresholds.
    pub verdict: Verdict,
    /// The quantile that got slower beyond the thresholds, if one did.
    pub regression: Option<Regression>,
}

impl EndpointComparison {
    /// Compares two rollups of one endpoint; `None` when a side has no requests.
    pub fn of(
        endpoint: &EndpointRef,
        (baseline, baseline_window): (&Rollup, Window),
        (candidate, candidate_window): (&Rollup, Window),
        candidate_label: &str,
        thresholds: &Thresholds,
    ) -> Option<Self> {
        let comparison =
            compare::compare(baseline, candidate, &endpoint.endpoint, candidate_label)?;
        let side = |rollup: &Rollup, window: Window| {
            Some(EndpointSummary {
                endpoint: endpoint.clone(),
                stats: aggregate::summarize(rollup, &endpoint.endpoint)?,
                window,
            })
        };
        Some(Self {
            baseline: side(baseline, baseline_window)?,
            candidate: side(candidate, candidate_window)?,
            verdict: compare::verdict(&comparison, thresholds),
            regression: compare::regression(&comparison, thresholds),
            comparison,
        })
    }
}

/// One endpoint compared, with both latency distributions.
#[derive(Debug, Clone)]
pub struct EndpointCompare {
    /// The baseline selector as given.
    pub baseline_selector: String,
    /// The candidate selector as given.
    pub candidate_selector: String,
    /// Rollups or request rows.
    pub source: Source,
    /// Both sides on the same buckets.
    pub latency_histogram: Vec<CompareBucket>,
    /// The comparison.
    pub comparison: EndpointComparison,
}

/// Every endpoint of a service compared.
#[derive(Debug, Clone)]
pub struct ServiceCompare {
    /// The service.
    pub service: String,
    /// The baseline selector as given.
    pub baseline_selector: String,
    /// The candidate selector as given.
    pub candidate_selector: String,
    /// Rollups or request rows.
    pub source: Source,
    /// Endpoints with baseline traffic only, by name.
    pub only_in_baseline: Vec<String>,
    /// Endpoints with candidate traffic only, by name.
    pub only_in_candidate: Vec<String>,
    /// Slower ones first, then by the change of the mean, largest first.
    pub endpoints: Vec<EndpointComparison>,
}

/// A comparison's answer.
pub enum CompareAnswer {
    /// One endpoint.
    Endpoint(Box<EndpointCompare>),
    /// Every endpoint of a service.
    Service(ServiceCompare),
}

/// Why a comparison has no answer.
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
    let resources: HashSet<i64> = store
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

/// One endpoint, or with `endpoint` absent every endpoint of the service, compared.
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
        Source::Rollups
    } else {
        Source::Requests
    };
    let compared = |id: i64| {
        EndpointComparison::of(
            index.get(id)?,
            (before.get(&id)?, baseline_window),
            (after.get(&id)?, candidate_window),
            candidate.label(),
            thresholds,
        )
    };
    if endpoint.is_some() {
        let histogram = ids
            .first()
            .and_then(|id| Some(compare_histogram(before.get(id)?, after.get(id)?)));
        return Ok(match ids.first().and_then(|id| compared(*id)) {
            Some(comparison) => Ok(CompareAnswer::Endpoint(Box::new(EndpointCompare {
                baseline_selector: baseline.text.clone(),
                candidate_selector: candidate.text.clone(),
                source,
                latency_histogram: histogram.unwrap_or_default(),
                comparison,
            }))),
            None => Err(CompareMissing::NoData("baseline or candidate")),
        });
    }
    let mut endpoints: Vec<EndpointComparison> =
        ids.iter().filter_map(|id| compared(*id)).collect();
    endpoints.sort_by(|a, b| {
        let slower = |compared: &EndpointComparison| compared.verdict == Verdict::Slower;
        slower(b).cmp(&slower(a)).then_with(|| {
            b.comparison
                .mean_delta_ns()
                .total_cmp(&a.comparison.mean_delta_ns())
        })
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
    Ok(Ok(CompareAnswer::Service(ServiceCompare {
        service: service.to_owned(),
        baseline_selector: baseline.text.clone(),
        candidate_selector: candidate.text.clone(),
        source,
        only_in_baseline: only(&before, &after),
        only_in_candidate: only(&after, &before),
        endpoints,
    })))
}
