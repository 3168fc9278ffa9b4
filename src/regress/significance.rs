//! When a candidate version is slower than its baseline, decided from 95% confidence intervals
//! of its quantiles rather than from the quantiles themselves: the p95 of 50 requests is one of
//! the slowest three, and two or three outliers move it by any amount.
//!
//! A quantile's interval is distribution-free: with `n` requests, the number that fall below
//! the true quantile `q` is binomial(n, q), so the order statistics at ranks
//! `n·q ∓ z·√(n·q·(1−q))` (normal approximation, rounded outward) bracket the quantile with 95%
//! confidence whatever the latency distribution. The ranks are read from the merged rollup
//! sketch, so the bounds are within its 1% resolution. When a rank falls outside the sample the
//! quantile cannot be bounded yet, and it decides nothing: the median needs 8 requests, the p95
//! 73.
//!
//! A regression is raised when the candidate's lower bound exceeds the baseline's upper bound
//! by both thresholds, and it holds until neither quantile's estimate crosses them any more. The
//! gap between the two rules keeps an event from flapping while the evidence sits between them.
//!
//! Invariant: pure; no IO, no `Result`.

use crate::analysis::aggregate::LatencySketch;
use crate::analysis::compare::{Metric, Thresholds};

/// The 97.5% quantile of the standard normal distribution: two-sided 95% intervals.
const Z_975: f64 = 1.959_964;

/// The quantiles judged, in the order a regression names them.
const QUANTILES: [(Metric, f64); 2] = [(Metric::P50, 0.50), (Metric::P95, 0.95)];

/// A 95% confidence interval of one quantile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileInterval {
    /// Lower bound.
    pub low_ns: f64,
    /// Upper bound.
    pub high_ns: f64,
}

/// A quantile of the candidate that is slower than the baseline's beyond the thresholds, with
/// 95% confidence on each side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowdown {
    /// p50 or p95 (p50 when both are).
    pub metric: Metric,
    /// The baseline's estimate.
    pub baseline_ns: f64,
    /// The candidate's estimate.
    pub candidate_ns: f64,
    /// The baseline's interval.
    pub baseline: QuantileInterval,
    /// The candidate's interval.
    pub candidate: QuantileInterval,
}

/// The value at rank `rank` (1-based) of the sketch's `n` latencies.
fn at_rank(sketch: &LatencySketch, rank: u64, n: u64) -> f64 {
    // The sketch reads quantile q at rank ⌈q·n⌉; half a rank below keeps rounding off it.
    sketch.quantile_ns((rank as f64 - 0.5) / n as f64)
}

/// The 95% interval of quantile `q` of the sketch's latencies; `None` while too few requests
/// bound it.
pub fn quantile_interval(sketch: &LatencySketch, q: f64) -> Option<QuantileInterval> {
    let n = sketch.count();
    let center = n as f64 * q;
    let spread = Z_975 * (center * (1.0 - q)).sqrt();
    let low_rank = (center - spread).floor();
    let high_rank = (center + spread).ceil();
    if low_rank < 1.0 || high_rank > n as f64 {
        return None;
    }
    Some(QuantileInterval {
        low_ns: at_rank(sketch, low_rank as u64, n),
        high_ns: at_rank(sketch, high_rank as u64, n),
    })
}

/// Whether `after` is slower than `before` by both thresholds.
fn exceeds(before_ns: f64, after_ns: f64, thresholds: &Thresholds) -> bool {
    after_ns - before_ns >= thresholds.min_delta_ns as f64
        && after_ns >= before_ns * (1.0 + thresholds.min_ratio)
}

/// The first quantile (p50, then p95) whose candidate interval lies above the baseline's by
/// both thresholds: the evidence a regression is raised on.
pub fn significant_slowdown(
    baseline: &LatencySketch,
    candidate: &LatencySketch,
    thresholds: &Thresholds,
) -> Option<Slowdown> {
    QUANTILES.into_iter().find_map(|(metric, q)| {
        let before = quantile_interval(baseline, q)?;
        let after = quantile_interval(candidate, q)?;
        exceeds(before.high_ns, after.low_ns, thresholds).then(|| Slowdown {
            metric,
            baseline_ns: baseline.quantile_ns(q),
            candidate_ns: candidate.quantile_ns(q),
            baseline: before,
            candidate: after,
        })
    })
}

/// Whether a raised regression still holds: the estimate of p50 or p95 is still slower by
/// both thresholds. Once neither is, the regression is resolved.
pub fn still_slower(
    baseline: &LatencySketch,
    candidate: &LatencySketch,
    thresholds: &Thresholds,
) -> bool {
    QUANTILES.into_iter().any(|(_, q)| {
        exceeds(
            baseline.quantile_ns(q),
            candidate.quantile_ns(q),
            thresholds,
        )
    })
}

/// The quantile a metric names.
pub fn quantile_of(metric: Metric) -> f64 {
    QUANTILES
        .into_iter()
        .find(|(m, _)| *m == metric)
        .map_or(0.5, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// `count` latencies spread evenly over `from_ms..from_ms + 20`.
    fn spread(sketch: &mut LatencySketch, count: u64, from_ms: u64) {
        for i in 0..count {
            sketch.record_ns((from_ms + i % 21) * MS);
        }
    }

    fn sketch(parts: &[(u64, u64)]) -> LatencySketch {
        let mut sketch = LatencySketch::new();
        for &(count, from_ms) in parts {
            spread(&mut sketch, count, from_ms);
        }
        sketch
    }

    fn ms(ns: f64) -> f64 {
        ns / MS as f64
    }

    #[test]
    fn the_median_interval_brackets_the_middle_ranks() {
        let mut one_to_hundred = LatencySketch::new();
        for i in 1..=100 {
            one_to_hundred.record_ns(i * MS);
        }
        let interval = quantile_interval(&one_to_hundred, 0.5).unwrap();
        // 50 ∓ 1.96·√25: ranks 40 and 60, within the sketch's 1%.
        let near = |ns: f64, expected_ms: f64| (ms(ns) / expected_ms - 1.0).abs() <= 0.01;
        assert!(near(interval.low_ns, 40.0), "{interval:?}");
        assert!(near(interval.high_ns, 60.0), "{interval:?}");
    }

    #[test]
    fn a_quantile_is_bounded_only_with_enough_requests() {
        assert!(quantile_interval(&sketch(&[(7, 20)]), 0.5).is_none());
        assert!(quantile_interval(&sketch(&[(8, 20)]), 0.5).is_some());
        assert!(quantile_interval(&sketch(&[(72, 20)]), 0.95).is_none());
        assert!(quantile_interval(&sketch(&[(73, 20)]), 0.95).is_some());
        assert!(quantile_interval(&LatencySketch::new(), 0.5).is_none());
    }

    #[test]
    fn a_shift_beyond_the_thresholds_is_a_slowdown_of_the_median() {
        let baseline = sketch(&[(60, 20)]);
        let candidate = sketch(&[(30, 320)]);
        let found = significant_slowdown(&baseline, &candidate, &Thresholds::default()).unwrap();
        assert_eq!(found.metric, Metric::P50);
        assert!(found.baseline.high_ns < 41.0 * MS as f64, "{found:?}");
        assert!(found.candidate.low_ns > 320.0 * MS as f64, "{found:?}");
        assert!(still_slower(&baseline, &candidate, &Thresholds::default()));
    }

    #[test]
    fn the_same_distribution_is_no_slowdown() {
        let baseline = sketch(&[(200, 20)]);
        let candidate = sketch(&[(500, 20)]);
        assert_eq!(
            significant_slowdown(&baseline, &candidate, &Thresholds::default()),
            None
        );
        assert!(!still_slower(&baseline, &candidate, &Thresholds::default()));
    }

    #[test]
    fn outliers_that_move_the_p95_only_within_its_interval_are_no_slowdown() {
        let baseline = sketch(&[(200, 20)]);
        // 6% of the candidate's requests take 100 ms: its p95 estimate is one of them.
        let candidate = sketch(&[(188, 20), (12, 100)]);
        let thresholds = Thresholds::default();
        assert!(exceeds(
            baseline.quantile_ns(0.95),
            candidate.quantile_ns(0.95),
            &thresholds
        ));
        assert_eq!(
            significant_slowdown(&baseline, &candidate, &thresholds),
            None
        );
    }

    #[test]
    fn a_slow_tail_on_enough_requests_is_a_slowdown_of_the_p95() {
        let baseline = sketch(&[(200, 20)]);
        let candidate = sketch(&[(400, 20), (130, 300)]);
        let found = significant_slowdown(&baseline, &candidate, &Thresholds::default()).unwrap();
        assert_eq!(found.metric, Metric::P95);
        assert!(found.candidate.low_ns >= 300.0 * MS as f64, "{found:?}");
    }

    #[test]
    fn a_regression_holds_while_an_estimate_crosses_and_ends_when_none_does() {
        let baseline = sketch(&[(200, 20)]);
        let thresholds = Thresholds::default();
        // 20 slow requests then 400 fast ones: under 5% slow, the p95 is fast again.
        assert!(still_slower(
            &baseline,
            &sketch(&[(20, 320), (200, 20)]),
            &thresholds
        ));
        assert!(!still_slower(
            &baseline,
            &sketch(&[(20, 320), (400, 20)]),
            &thresholds
        ));
    }
}
