//! A Prometheus histogram read from a server's `/metrics`, summed over instances, with quantiles
//! estimated as Prometheus' `histogram_quantile` does: linearly within the bucket that holds
//! them.

/// Cumulative counts by upper bound, in the order exposed (ascending, `+Inf` last).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Histogram {
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// The buckets of the unlabelled histogram `name` in `metrics`; empty if it is not there.
    pub(super) fn parse(metrics: &str, name: &str) -> Histogram {
        let prefix = format!("{name}_bucket{{le=\"");
        let buckets = metrics
            .lines()
            .filter_map(|line| {
                let (le, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        Histogram { buckets }
    }

    /// Adds another instance's counts, bucket by bucket.
    pub(super) fn add(&mut self, other: &Histogram) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
            return;
        }
        for ((_, count), (_, more)) in self.buckets.iter_mut().zip(&other.buckets) {
            *count += more;
        }
    }

    /// The observations made after `earlier`, a reading of the same histogram.
    pub(super) fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .zip(
                earlier
                    .buckets
                    .iter()
                    .map(|(_, count)| *count)
                    .chain(std::iter::repeat(0.0)),
            )
            .map(|((le, count), before)| (*le, count - before))
            .collect();
        Histogram { buckets }
    }

    /// Observations counted.
    pub(super) fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, count)| *count)
    }

    /// The `q` quantile; `None` without observations. In the `+Inf` bucket it is the highest
    /// finite bound.
    pub(super) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut below = (0.0, 0.0);
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(below.0);
                }
                let (lower, count_below) = below;
                let in_bucket = count - count_below;
                if in_bucket <= 0.0 {
                    return Some(le);
                }
                return Some(lower + (le - lower) * (rank - count_below) / in_bucket);
            }
            below = (le, count);
        }
        Some(below.0)
    }

    /// The share of observations at most `le`, which must be one of the bounds.
    pub(super) fn share_within(&self, le: f64) -> Option<f64> {
        let total = self.count();
        let (_, within) = self.buckets.iter().find(|(bound, _)| *bound == le)?;
        (total > 0.0).then(|| within / total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# TYPE delay histogram\n\
        delay_bucket{le=\"1\"} 0\n\
        delay_bucket{le=\"2\"} 50\n\
        delay_bucket{le=\"3\"} 90\n\
        delay_bucket{le=\"+Inf\"} 100\n\
        delay_sum 230\n\
        delay_count 100\n\
        other_bucket{le=\"1\"} 7\n";

    #[test]
    fn quantiles_are_interpolated_within_their_bucket() {
        let histogram = Histogram::parse(METRICS, "delay");
        assert_eq!(histogram.count(), 100.0);
        assert_eq!(histogram.quantile(0.25), Some(1.5));
        assert_eq!(histogram.quantile(0.5), Some(2.0));
        assert_eq!(histogram.quantile(0.7), Some(2.5));
        assert_eq!(
            histogram.quantile(0.99),
            Some(3.0),
            "in +Inf: the last bound"
        );
        assert_eq!(histogram.share_within(3.0), Some(0.9));
        assert_eq!(histogram.share_within(2.5), None, "not a bound");
    }

    #[test]
    fn instances_add_up_and_an_absent_histogram_is_empty() {
        let mut sum = Histogram::default();
        assert_eq!(sum.quantile(0.5), None);
        sum.add(&Histogram::parse(METRICS, "delay"));
        sum.add(&Histogram::parse(METRICS, "delay"));
        assert_eq!(sum.count(), 200.0);
        assert_eq!(sum.share_within(2.0), Some(0.5));
        assert_eq!(Histogram::parse(METRICS, "absent"), Histogram::default());
        let later = sum.since(&Histogram::parse(METRICS, "delay"));
        assert_eq!(later.count(), 100.0, "what the second instance added");
        assert_eq!(later.share_within(3.0), Some(0.9));
        assert_eq!(
            sum.since(&Histogram::default()),
            sum,
            "since nothing: everything"
        );
    }
}
