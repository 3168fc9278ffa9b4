//! Rollups as the read side combines them: stored rows merged under a key (endpoint, version,
//! time bucket), and a merged sketch read into the latency buckets the views show.
//!
//! Invariant: pure; merging is `Rollup::merge`, never a figure recomputed here.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::analysis::aggregate::{LatencySketch, Rollup};
use crate::store::Window;

/// Merges rollup rows that share `key(row key)`.
pub fn merge_by<Q, K: Ord>(
    rollups: impl IntoIterator<Item = (Q, Rollup)>,
    key: impl Fn(&Q) -> K,
) -> BTreeMap<K, Rollup> {
    let mut merged: BTreeMap<K, Rollup> = BTreeMap::new();
    for (rollup_key, rollup) in rollups {
        match merged.entry(key(&rollup_key)) {
            Entry::Vacant(slot) => {
                slot.insert(rollup);
            }
            Entry::Occupied(mut slot) => slot.get_mut().merge(&rollup),
        }
    }
    merged
}

/// Buckets for the endpoint time series: about 60 points over the window, whole minutes.
pub fn bucket_minutes(window: Window) -> i64 {
    let (first, last) = window.minutes();
    ((last - first + 1) / 60).max(1)
}

/// Upper bounds (ns) of the log-spaced latency buckets: factor 1.5 from 0.1 ms to ten minutes.
/// Grown in milliseconds, as the bounds the API has always shown were.
fn latency_bounds_ns() -> Vec<f64> {
    let mut bounds_ms = vec![0.1f64];
    while *bounds_ms.last().expect("starts non-empty") < 600_000.0 {
        let next = bounds_ms.last().expect("starts non-empty") * 1.5;
        bounds_ms.push(next);
    }
    bounds_ms.into_iter().map(|ms| ms * 1e6).collect()
}

/// One latency bucket: requests in `(from_ns, to_ns]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBucket {
    /// Lower bound (exclusive), 0 for the first bucket.
    pub from_ns: f64,
    /// Upper bound (inclusive).
    pub to_ns: f64,
    /// Requests in it.
    pub requests: u64,
}

/// Log-spaced latency buckets counted from the sketch, trimmed to the populated range.
pub fn latency_histogram(sketch: &LatencySketch) -> Vec<LatencyBucket> {
    let bounds = latency_bounds_ns();
    let mut below = 0;
    let mut counts = Vec::with_capacity(bounds.len());
    for upper_ns in &bounds {
        let at_most = sketch.count_at_most_ns(*upper_ns as u64);
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
        .map(|idx| LatencyBucket {
            from_ns: if idx == 0 { 0.0 } else { bounds[idx - 1] },
            to_ns: bounds[idx],
            requests: counts[idx],
        })
        .collect()
}

/// One latency bucket of a comparison: both sides' requests in `(from_ns, to_ns]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareBucket {
    /// Lower bound (exclusive), 0 for the first bucket.
    pub from_ns: f64,
    /// Upper bound (inclusive).
    pub to_ns: f64,
    /// Baseline requests in it.
    pub baseline_requests: u64,
    /// Candidate requests in it.
    pub candidate_requests: u64,
}

/// Both sides' latency distributions on the buckets of [`latency_histogram`], read from the
/// rollups' sketches (rollup and request-row selections both fill them), trimmed to the range
/// either side populates.
pub fn compare_histogram(baseline: &Rollup, candidate: &Rollup) -> Vec<CompareBucket> {
    let bounds = latency_bounds_ns();
    let counts = |rollup: &Rollup| -> Vec<u64> {
        let mut below = 0;
        bounds
            .iter()
            .enumerate()
            .map(|(idx, upper_ns)| {
                let at_most = if idx == bounds.len() - 1 {
                    rollup.sketch.count()
                } else {
                    rollup.sketch.count_at_most_ns(*upper_ns as u64)
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
        .map(|idx| CompareBucket {
            from_ns: if idx == 0 { 0.0 } else { bounds[idx - 1] },
            to_ns: bounds[idx],
            baseline_requests: before[idx],
            candidate_requests: after[idx],
        })
        .collect()
}
