//! The schedule of `--rate`: a fixed number of spans per second, spread evenly over the
//! connections, each sending whole exports at a fixed interval, the connections staggered.
//!
//! The schedule is open-loop: an export is due at its time whatever happened to the previous
//! one, so a slow answer makes the next sends go out back to back until the connection is on time
//! again, as exporters with a full queue do; it never lowers the rate it was asked for.
//!
//! Invariant: pure arithmetic, no clock.

use std::time::Duration;

/// When one connection's exports are due, counted from the start of sending.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Pacing {
    interval_secs: f64,
    offset_secs: f64,
}

impl Pacing {
    /// Connection `worker` of `connections`, sending exports of `spans_per_export` spans, when
    /// all of them together send `spans_per_sec`.
    pub(super) fn new(
        spans_per_sec: u64,
        spans_per_export: usize,
        connections: usize,
        worker: usize,
    ) -> Pacing {
        let connections = connections.max(1);
        let exports_per_sec = spans_per_sec.max(1) as f64 / spans_per_export.max(1) as f64;
        let interval_secs = connections as f64 / exports_per_sec;
        Pacing {
            interval_secs,
            offset_secs: interval_secs * (worker % connections) as f64 / connections as f64,
        }
    }

    /// When this connection's export number `n_sent` (from 0) is due.
    pub(super) fn due(&self, n_sent: u64) -> Duration {
        Duration::from_secs_f64(self.offset_secs + self.interval_secs * n_sent as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exports due before `window` over all connections.
    fn exports_due(
        spans_per_sec: u64,
        spans_per_export: usize,
        connections: usize,
        window: Duration,
    ) -> u64 {
        (0..connections)
            .map(|worker| {
                let pacing = Pacing::new(spans_per_sec, spans_per_export, connections, worker);
                (0..).take_while(|&n| pacing.due(n) < window).count() as u64
            })
            .sum()
    }

    #[test]
    fn half_rate_soak_spreads_120_exports_a_second_over_8_connections() {
        let pacing = Pacing::new(120_000, 1000, 8, 0);
        assert_eq!(pacing.due(0), Duration::ZERO);
        assert_eq!(pacing.due(3).as_micros(), 200_000);
        assert_eq!(exports_due(120_000, 1000, 8, Duration::from_secs(10)), 1200);
    }

    #[test]
    fn connections_are_staggered_within_one_interval() {
        let first: Vec<u128> = (0..4)
            .map(|worker| Pacing::new(4_000, 1000, 4, worker).due(0).as_millis())
            .collect();
        assert_eq!(first, [0, 250, 500, 750]);
        assert_eq!(Pacing::new(4_000, 1000, 4, 3).due(1).as_millis(), 1750);
    }

    #[test]
    fn the_rate_holds_when_exports_do_not_divide_it() {
        // 7 connections, 300 spans per export, 10,000 spans/s: 33.3 exports a second.
        let due = exports_due(10_000, 300, 7, Duration::from_secs(60));
        assert!((1999..=2001).contains(&due), "{due}");
    }

    #[test]
    fn zero_rate_or_connections_do_not_divide_by_zero() {
        assert!(Pacing::new(0, 1000, 8, 0).due(1) > Duration::from_secs(1000));
        assert_eq!(Pacing::new(1000, 1000, 0, 0).due(1), Duration::from_secs(1));
    }
}
