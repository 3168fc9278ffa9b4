//! Comparison of one endpoint between two selections (two versions, two windows): how the
//! latency moved, whether the move is more than noise, and which categories and operations
//! explain it.
//!
//! Both sides are [`Rollup`]s, so a comparison costs what a summary costs. The confidence
//! interval of the mean difference is Welch's t interval, computed from the rollups' sums and
//! sums of squares: no request rows are read, and unequal variances and sample sizes are fine.
//!
//! Attribution: the critical-path breakdown sums to the duration, so the per-category deltas sum
//! to the mean delta. Within I/O categories the operations' critical time per request sums to the
//! category, so operation deltas split the category delta. In-process time is different: every
//! span's self time is one `cpu` operation, while `wait` (self time not on a CPU) is split off only
//! in the breakdown; a wait delta is therefore reported as its own change and taken out of the
//! in-process operation that carried it.
//!
//! Invariant: pure; no IO, no `Result`.

use std::collections::{BTreeMap, BTreeSet};

use collector::category::Category;

use super::aggregate::{OperationSums, Rollup, format_ms};
use super::gap::Place;

/// Two-sided 95% quantiles of Student's t for 1 to 30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The 97.5% quantile of the standard normal distribution.
const Z_975: f64 = 1.959_964;

/// A change smaller than this is not reported: below a millisecond nobody acts.
const MIN_CHANGE_NS: f64 = 1_000_000.0;
/// Nor a change smaller than this share of the baseline's mean.
const MIN_CHANGE_SHARE: f64 = 0.01;
/// Calls per request that moved by at least this much (absolute) count as "ran more often".
pub const MIN_CALLS_CHANGE: f64 = 0.5;
/// A mean per call that moved by at least this share counts as "got slower" or "faster".
const MIN_MEAN_CHANGE_SHARE: f64 = 0.1;
/// At most this many `top_changes`.
const MAX_TOP_CHANGES: usize = 10;

/// The headline numbers of one side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headline {
    /// Requests.
    pub requests: u64,
    /// Mean duration.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: f64,
    /// 95th percentile.
    pub p95_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
}

/// A 95% confidence interval of the candidate's mean minus the baseline's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub low_ns: f64,
    /// Upper bound.
    pub high_ns: f64,
}

/// How an operation changed between the sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationChangeKind {
    /// Only the candidate runs it.
    Appeared,
    /// Only the baseline ran it.
    Vanished,
    /// Both run it.
    Changed,
}

impl OperationChangeKind {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Appeared => "appeared",
            Self::Vanished => "vanished",
            Self::Changed => "changed",
        }
    }
}

/// One operation on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationChange {
    /// Category.
    pub category: Category,
    /// Normalized statement or span name; for a gap, where it sits ("between `A` and `B`").
    pub name: String,
    /// For a gap (self time no span explains), the operations around it.
    pub gap: Option<Place>,
    /// Appeared, vanished or changed.
    pub kind: OperationChangeKind,
    /// Executions per request, baseline.
    pub baseline_calls_per_request: f64,
    /// Executions per request, candidate.
    pub candidate_calls_per_request: f64,
    /// Mean duration of one execution, baseline (0 when it did not run).
    pub baseline_mean_ns: f64,
    /// Mean duration of one execution, candidate (0 when it does not run).
    pub candidate_mean_ns: f64,
    /// Change of its critical-path time per request.
    pub critical_delta_ns: f64,
}

/// One entry of what explains the difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The category the time moved in.
    pub category: Category,
    /// The operation (for a gap, where it sits), or the category when no one operation
    /// accounts for the time.
    pub name: String,
    /// For a gap, the operations around it.
    pub gap: Option<Place>,
    /// Change of mean critical-path time per request.
    pub delta_ns: f64,
    /// One sentence.
    pub summary: String,
}

/// One endpoint compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The baseline side.
    pub baseline: Headline,
    /// The candidate side.
    pub candidate: Headline,
    /// Welch's 95% interval of the mean difference; `None` with fewer than two requests on a side
    /// or without sums of squares (rollups from before they were kept).
    pub mean_delta_ci: Option<Interval>,
    /// Change of the mean critical-path time per request, per category ([`Category::index`]).
    pub category_delta_ns: [f64; Category::COUNT],
    /// Every operation of either side, largest change of critical time first.
    pub operations: Vec<OperationChange>,
    /// What explains the difference, largest first.
    pub top_changes: Vec<Change>,
    /// One sentence.
    pub summary: String,
}

impl Comparison {
    /// Candidate mean minus baseline mean.
    pub fn mean_delta_ns(&self) -> f64 {
        self.candidate.mean_ns - self.baseline.mean_ns
    }

    /// Candidate median minus baseline median.
    pub fn p50_delta_ns(&self) -> f64 {
        self.candidate.p50_ns - self.baseline.p50_ns
    }

    /// Difference of the 95th percentiles.
    pub fn p95_delta_ns(&self) -> f64 {
        self.candidate.p95_ns - self.baseline.p95_ns
    }

    /// Difference of the 99th percentiles.
    pub fn p99_delta_ns(&self) -> f64 {
        self.candidate.p99_ns - self.baseline.p99_ns
    }

    /// Whether the interval of the mean difference excludes zero.
    pub fn significant(&self) -> bool {
        self.mean_delta_ci
            .is_some_and(|ci| ci.low_ns > 0.0 || ci.high_ns < 0.0)
    }
}

/// When a latency change counts as a regression (or an improvement): both bounds must be met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Relative change, 0.2 for +20%.
    pub min_ratio: f64,
    /// Absolute change.
    pub min_delta_ns: u64,
}

impl Default for Thresholds {
    /// +20% and +20 ms: a fifth is beyond the run-to-run noise of a typical service, and 20 ms is
    /// what a person starts to notice in an interactive request.
    fn default() -> Self {
        Self {
            min_ratio: 0.2,
            min_delta_ns: 20_000_000,
        }
    }
}

/// Which quantile crossed the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// The median.
    P50,
    /// The 95th percentile.
    P95,
}

impl Metric {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P95 => "p95",
        }
    }

    /// Parses an API name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::P50, Self::P95]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// A quantile that got slower beyond the thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regression {
    /// p50 or p95 (p50 when both did).
    pub metric: Metric,
    /// The baseline's value.
    pub baseline_ns: f64,
    /// The candidate's value.
    pub candidate_ns: f64,
}

/// The verdict on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// p50 or p95 slower beyond the thresholds.
    Slower,
    /// p50 or p95 faster beyond the thresholds, and neither slower.
    Faster,
    /// Neither.
    Unchanged,
}

impl Verdict {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slower => "slower",
            Self::Faster => "faster",
            Self::Unchanged => "unchanged",
        }
    }
}

fn per(sum: f64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn headline(rollup: &Rollup) -> Headline {
    Headline {
        requests: rollup.requests,
        mean_ns: per(rollup.duration_sum_ns as f64, rollup.requests),
        p50_ns: rollup.sketch.quantile_ns(0.50),
        p95_ns: rollup.sketch.quantile_ns(0.95),
        p99_ns: rollup.sketch.quantile_ns(0.99),
    }
}

/// The unbiased sample variance of the durations, exact in integers until the final division.
fn variance(rollup: &Rollup) -> Option<f64> {
    let n = rollup.requests;
    if n < 2 {
        return None;
    }
    let sum = u128::from(rollup.duration_sum_ns);
    let n_sq_sum = u128::from(n).checked_mul(rollup.duration_sq_sum)?;
    let sum_sq = sum.checked_mul(sum)?;
    // By Cauchy–Schwarz n·Σx² ≥ (Σx)²; less means the squares were never summed.
    let spread = n_sq_sum.checked_sub(sum_sq)?;
    Some(spread as f64 / (n as f64 * (n - 1) as f64))
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (rounded down: conservative).
/// Beyond the table, the Cornish–Fisher expansion around the normal quantile, which matches the
/// table's last entry to three decimals.
pub fn t_975(df: f64) -> f64 {
    let df = if df.is_finite() { df.max(1.0) } else { 1e9 };
    if df < 31.0 {
        return T_975[(df.floor() as usize).clamp(1, 30) - 1];
    }
    let z = Z_975;
    z + (z.powi(3) + z) / (4.0 * df)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df * df)
}

/// Welch's 95% interval of mean(candidate) − mean(baseline).
fn welch(baseline: &Rollup, candidate: &Rollup) -> Option<Interval> {
    let (v1, v2) = (variance(baseline)?, variance(candidate)?);
    let (n1, n2) = (baseline.requests as f64, candidate.requests as f64);
    let delta = per(candidate.duration_sum_ns as f64, candidate.requests)
        - per(baseline.duration_sum_ns as f64, baseline.requests);
    let (a, b) = (v1 / n1, v2 / n2);
    let se2 = a + b;
    if se2 <= 0.0 {
        // Both sides constant: the difference is exact.
        return Some(Interval {
            low_ns: delta,
            high_ns: delta,
        });
    }
    let df = se2 * se2 / (a * a / (n1 - 1.0) + b * b / (n2 - 1.0));
    let half = t_975(df) * se2.sqrt();
    Some(Interval {
        low_ns: delta - half,
        high_ns: delta + half,
    })
}

/// `+298 ms`, `-4.0 ms`.
pub fn signed_ms(ns: f64) -> String {
    let sign = if ns < 0.0 { "-" } else { "+" };
    format!("{sign}{}", format_ms(ns.abs()))
}

/// `12`, `12.5`.
fn count(x: f64) -> String {
    if (x - x.round()).abs() < 0.05 {
        format!("{:.0}", x.round())
    } else {
        format!("{x:.1}")
    }
}

fn operation_changes(baseline: &Rollup, candidate: &Rollup) -> Vec<OperationChange> {
    let keys: BTreeSet<&(Category, String)> = baseline
        .operations
        .keys()
        .chain(candidate.operations.keys())
        .collect();
    let none = OperationSums::default();
    let mut out: Vec<OperationChange> = keys
        .into_iter()
        .map(|key| {
            let before = baseline.operations.get(key).unwrap_or(&none);
            let after = candidate.operations.get(key).unwrap_or(&none);
            let kind = match (before.calls, after.calls) {
                (0, _) => OperationChangeKind::Appeared,
                (_, 0) => OperationChangeKind::Vanished,
                _ => OperationChangeKind::Changed,
            };
            let gap = Place::of_operation(&key.1);
            OperationChange {
                category: key.0,
                name: gap.as_ref().map_or_else(|| key.1.clone(), Place::describe),
                gap,
                kind,
                baseline_calls_per_request: per(before.calls as f64, baseline.requests),
                candidate_calls_per_request: per(after.calls as f64, candidate.requests),
                baseline_mean_ns: per(before.total_ns as f64, before.calls),
                candidate_mean_ns: per(after.total_ns as f64, after.calls),
                critical_delta_ns: per(after.critical_ns as f64, candidate.requests)
                    - per(before.critical_ns as f64, baseline.requests),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.critical_delta_ns
            .abs()
            .total_cmp(&a.critical_delta_ns.abs())
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// What happened to an operation, in a few words after its name.
fn operation_phrase(op: &OperationChange, candidate_label: &str) -> String {
    match op.kind {
        OperationChangeKind::Appeared => format!(
            "is new with {candidate_label} ({} per request, {} each)",
            count(op.candidate_calls_per_request),
            format_ms(op.candidate_mean_ns)
        ),
        OperationChangeKind::Vanished => format!(
            "is gone with {candidate_label} (was {} per request, {} each)",
            count(op.baseline_calls_per_request),
            format_ms(op.baseline_mean_ns)
        ),
        OperationChangeKind::Changed => {
            let calls_moved = (op.candidate_calls_per_request - op.baseline_calls_per_request)
                .abs()
                >= MIN_CALLS_CHANGE;
            let mean_moved = op.baseline_mean_ns > 0.0
                && ((op.candidate_mean_ns - op.baseline_mean_ns) / op.baseline_mean_ns).abs()
                    >= MIN_MEAN_CHANGE_SHARE;
            let calls = format!(
                "ran {} times per request instead of {}",
                count(op.candidate_calls_per_request),
                count(op.baseline_calls_per_request)
            );
            let mean = format!(
                "took {} per call instead of {}",
                format_ms(op.candidate_mean_ns),
                format_ms(op.baseline_mean_ns)
            );
            match (calls_moved, mean_moved) {
                (true, true) => format!("{calls} and {mean}"),
                (true, false) => calls,
                (false, true) => mean,
                (false, false) => "spent more or less time on the critical path".to_owned(),
            }
        }
    }
}

fn operation_change(
    op: &OperationChange,
    delta_ns: f64,
    endpoint: &str,
    candidate_label: &str,
) -> Change {
    let summary = match &op.gap {
        Some(place) => format!(
            "{} {} in {endpoint} {}{}: {}",
            signed_ms(delta_ns),
            op.category.as_str(),
            place.describe(),
            match op.kind {
                OperationChangeKind::Appeared => format!(", new with {candidate_label}"),
                OperationChangeKind::Vanished => format!(", gone with {candidate_label}"),
                OperationChangeKind::Changed => String::new(),
            },
            gap_meaning(op.category)
        ),
        None => format!(
            "{} {} in {endpoint}: `{}` {}",
            signed_ms(delta_ns),
            op.category.as_str(),
            op.name,
            operation_phrase(op, candidate_label)
        ),
    };
    Change {
        category: op.category,
        name: op.name.clone(),
        gap: op.gap.clone(),
        delta_ns,
        summary,
    }
}

/// What time of a gap in this category is, and how to see into it.
fn gap_meaning(category: Category) -> &'static str {
    match category {
        Category::Wait => {
            "measured off the CPU, so I/O, a lock or sleeping that has no span; add one there"
        }
        Category::Cpu => "measured on the CPU, in code between the two calls; profile it",
        _ => {
            "no span covers it and no CPU was measured, so it may be CPU or I/O; add a span \
             there, or measure CPU (cpu.time_ns), to find out"
        }
    }
}

/// The changes that explain the difference, largest first: every operation whose critical time
/// moved by at least `min_change_ns`, and per category the time no single operation accounts
/// for. Gaps are operations too, so time that moved between two spans is placed.
fn top_changes(
    category_delta_ns: &[f64; Category::COUNT],
    operations: &[OperationChange],
    min_change_ns: f64,
    endpoint: &str,
    candidate_label: &str,
) -> Vec<Change> {
    let mut changes = Vec::new();
    // A measured gap is a cpu and a wait operation whose split follows its span's overall
    // proportion, so one gap's time can move between the two when another gap grows: a gap
    // is judged by its whole change, shown in the category that moved the most that way.
    let mut gaps: BTreeMap<&str, Vec<&OperationChange>> = BTreeMap::new();
    for op in operations.iter().filter(|op| op.gap.is_some()) {
        gaps.entry(op.name.as_str()).or_default().push(op);
    }
    for parts in gaps.values() {
        let delta: f64 = parts.iter().map(|op| op.critical_delta_ns).sum();
        let carrier = parts
            .iter()
            .filter(|op| op.critical_delta_ns.signum() == delta.signum())
            .max_by(|a, b| {
                a.critical_delta_ns
                    .abs()
                    .total_cmp(&b.critical_delta_ns.abs())
            });
        if let Some(carrier) = carrier.filter(|_| delta.abs() >= min_change_ns) {
            changes.push(operation_change(carrier, delta, endpoint, candidate_label));
        }
    }
    for category in Category::ALL {
        let mut explained = 0.0;
        for op in operations.iter().filter(|op| op.category == category) {
            explained += op.critical_delta_ns;
            if op.gap.is_none() && op.critical_delta_ns.abs() >= min_change_ns {
                changes.push(operation_change(
                    op,
                    op.critical_delta_ns,
                    endpoint,
                    candidate_label,
                ));
            }
        }
        // Time no single operation accounts for (many small ones, or overlap moved around).
        let rest = category_delta_ns[category.index()] - explained;
        if rest.abs() >= min_change_ns {
            changes.push(Change {
                category,
                name: category.as_str().to_owned(),
                gap: None,
                delta_ns: rest,
                summary: format!(
                    "{} {} in {endpoint} spread over several operations",
                    signed_ms(rest),
                    category.as_str()
                ),
            });
        }
    }
    changes.sort_by(|a, b| {
        b.delta_ns
            .abs()
            .total_cmp(&a.delta_ns.abs())
            .then_with(|| a.name.cmp(&b.name))
    });
    changes.truncate(MAX_TOP_CHANGES);
    changes
}

/// Compares an endpoint's baseline with its candidate; `None` when a side has no requests.
/// `candidate_label` names the candidate in sentences ("1.1", "the candidate").
pub fn compare(
    baseline: &Rollup,
    candidate: &Rollup,
    endpoint: &str,
    candidate_label: &str,
) -> Option<Comparison> {
    if baseline.requests == 0 || candidate.requests == 0 {
        return None;
    }
    let before = headline(baseline);
    let after = headline(candidate);
    let mut category_delta_ns = [0.0; Category::COUNT];
    for category in Category::ALL {
        category_delta_ns[category.index()] = per(
            candidate.breakdown_sum.get(category) as f64,
            candidate.requests,
        ) - per(
            baseline.breakdown_sum.get(category) as f64,
            baseline.requests,
        );
    }
    let operations = operation_changes(baseline, candidate);
    let min_change_ns = MIN_CHANGE_NS.max(before.mean_ns * MIN_CHANGE_SHARE);
    let top_changes = top_changes(
        &category_delta_ns,
        &operations,
        min_change_ns,
        endpoint,
        candidate_label,
    );
    let mean_delta_ci = welch(baseline, candidate);
    let delta = after.mean_ns - before.mean_ns;
    let sizes = format!("{} vs {} requests", before.requests, after.requests);
    let headline_sentence = match mean_delta_ci {
        None => format!(
            "{endpoint}: {} on average with {candidate_label} ({sizes}: too few, or too old, to tell a change from noise)",
            signed_ms(delta)
        ),
        Some(ci) => {
            let range = format!(
                "95% CI {}..{}, {sizes}",
                signed_ms(ci.low_ns),
                signed_ms(ci.high_ns)
            );
            if ci.low_ns > 0.0 {
                format!(
                    "{endpoint} is {} slower on average with {candidate_label} ({range})",
                    format_ms(delta)
                )
            } else if ci.high_ns < 0.0 {
                format!(
                    "{endpoint} is {} faster on average with {candidate_label} ({range})",
                    format_ms(-delta)
                )
            } else {
                format!(
                    "{endpoint}: no significant change of the mean with {candidate_label} ({}, {range})",
                    signed_ms(delta)
                )
            }
        }
    };
    let summary = match top_changes.first() {
        Some(top) => format!("{headline_sentence}; largest change: {}", top.summary),
        None => headline_sentence,
    };
    Some(Comparison {
        baseline: before,
        candidate: after,
        mean_delta_ci,
        category_delta_ns,
        operations,
        top_changes,
        summary,
    })
}

fn crossed(before: f64, after: f64, thresholds: &Thresholds) -> bool {
    after - before >= thresholds.min_delta_ns as f64
        && after >= before * (1.0 + thresholds.min_ratio)
}

/// The regression, if p50 or p95 got slower beyond both thresholds (p50 is reported first).
pub fn regression(comparison: &Comparison, thresholds: &Thresholds) -> Option<Regression> {
    let (before, after) = (&comparison.baseline, &comparison.candidate);
    [
        (Metric::P50, before.p50_ns, after.p50_ns),
        (Metric::P95, before.p95_ns, after.p95_ns),
    ]
    .into_iter()
    .find(|(_, b, a)| crossed(*b, *a, thresholds))
    .map(|(metric, baseline_ns, candidate_ns)| Regression {
        metric,
        baseline_ns,
        candidate_ns,
    })
}

/// Slower, faster or unchanged, by the same thresholds in either direction.
pub fn verdict(comparison: &Comparison, thresholds: &Thresholds) -> Verdict {
    let (before, after) = (&comparison.baseline, &comparison.candidate);
    if regression(comparison, thresholds).is_some() {
        Verdict::Slower
    } else if crossed(after.p50_ns, before.p50_ns, thresholds)
        || crossed(after.p95_ns, before.p95_ns, thresholds)
    {
        Verdict::Faster
    } else {
        Verdict::Unchanged
    }
}

#[cfg(test)]
mod tests;
