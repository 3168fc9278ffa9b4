//! Exporters' clocks ahead of ours: where in time a request is counted. A request that starts
//! more than `max_clock_skew` after the time it is analysed (a grace period after it was
//! received) is counted at that time: in the windows, the rollup minutes and, on PostgreSQL, the
//! day partitions. Its stored spans keep the times the exporter sent, so the trace view shows
//! the skew.
//!
//! Invariant: only moves a start forward past the bound back to the analysis time; a start
//! within the bound, or in the past, is kept as sent.

use std::time::Duration;

/// How far ahead of our clock a request may start and still be counted at its own start. NTP
/// keeps clocks within milliseconds, and a badly set one is off by hours or days; 15 minutes
/// leaves room for a client clock a little off without letting a request slip past every
/// window anyone looks at.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Where a request that starts at `start_unix_ns`, analysed at `analysed_unix_ns`, is counted:
/// `None` to count it at its own start, `Some(analysed_unix_ns)` when it starts more than
/// `max_skew` ahead.
pub fn clamped_start(start_unix_ns: u64, analysed_unix_ns: u64, max_skew: Duration) -> Option<u64> {
    let bound =
        analysed_unix_ns.saturating_add(max_skew.as_nanos().min(u128::from(u64::MAX)) as u64);
    (start_unix_ns > bound).then_some(analysed_unix_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_NS: u64 = 60_000_000_000;

    #[test]
    fn only_starts_past_the_bound_are_moved_to_the_analysis_time() {
        let now = 1_000 * MINUTE_NS;
        let skew = Duration::from_secs(15 * 60);
        assert_eq!(clamped_start(now - 60 * MINUTE_NS, now, skew), None);
        assert_eq!(clamped_start(now + 15 * MINUTE_NS, now, skew), None);
        assert_eq!(
            clamped_start(now + 15 * MINUTE_NS + 1, now, skew),
            Some(now)
        );
        assert_eq!(clamped_start(u64::MAX, now, skew), Some(now));
        assert_eq!(clamped_start(u64::MAX, u64::MAX, skew), None);
    }
}
