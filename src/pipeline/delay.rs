//! How long traces wait for their analysis: from the commit of their spans to the commit of their
//! analysis, the grace period included. Exported at `/metrics` as a histogram, so that an
//! operator sees the analysis falling behind ingest before requests go missing from the pages,
//! and `bench` reports it over every trace of a run rather than a few probes.
//!
//! Invariant: only traces whose analysis was committed are counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::histogram::DELAY_BUCKETS;

/// Analysis delays since the process started: counts per [`DELAY_BUCKETS`] bucket, then +Inf.
#[derive(Debug, Default)]
pub struct DelayHistogram {
    buckets: [AtomicU64; DELAY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl DelayHistogram {
    /// Counts one delay per trace of a commit. Summed here first, so a commit of thousands of
    /// traces touches the shared counters once per bucket.
    pub fn record(&self, delays: impl IntoIterator<Item = Duration>) {
        let mut counts = [0u64; DELAY_BUCKETS.len() + 1];
        let mut sum_ns = 0u64;
        for delay in delays {
            let secs = delay.as_secs_f64();
            let bucket = DELAY_BUCKETS
                .iter()
                .position(|le| secs <= *le)
                .unwrap_or(DELAY_BUCKETS.len());
            counts[bucket] += 1;
            sum_ns = sum_ns.saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        }
        for (bucket, count) in self.buckets.iter().zip(counts) {
            if count > 0 {
                bucket.fetch_add(count, Relaxed);
            }
        }
        self.sum_ns.fetch_add(sum_ns, Relaxed);
    }

    /// The counts per bucket (not cumulative) and the summed delay in seconds.
    pub fn snapshot(&self) -> ([u64; DELAY_BUCKETS.len() + 1], f64) {
        let counts = std::array::from_fn(|idx| self.buckets[idx].load(Relaxed));
        (counts, self.sum_ns.load(Relaxed) as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delay_falls_in_the_first_bucket_that_holds_it() {
        let histogram = DelayHistogram::default();
        histogram.record([
            Duration::from_millis(100),
            Duration::from_secs(2),
            Duration::from_millis(2_001),
            Duration::from_secs(400),
        ]);
        histogram.record([Duration::from_millis(2_600)]);
        let (counts, sum) = histogram.snapshot();
        assert_eq!(counts[0], 1, "0.1 s is under 0.25 s");
        assert_eq!(counts[3], 1, "2 s is in the le=2 bucket");
        assert_eq!(counts[4], 1, "2.001 s is in the next");
        assert_eq!(counts[6], 1, "2.6 s is under 2.75 s");
        assert_eq!(counts[DELAY_BUCKETS.len()], 1, "400 s only under +Inf");
        assert_eq!(counts.iter().sum::<u64>(), 5);
        assert!((sum - 406.701).abs() < 1e-6);
    }
}
