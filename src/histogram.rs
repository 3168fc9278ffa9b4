//! The bucket bounds of the histograms the process exports at `/metrics`: shared by the counters
//! that fill them (the analysis task) and the exposition that writes them (`web::metrics`), so
//! neither imports the other.
//!
//! Invariant: bounds only, ascending, in seconds; the +Inf bucket is implied.

/// Upper bounds (seconds) of the per-endpoint request latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds (seconds) of the analysis delay histogram: fine around the default grace period
/// of 2 s and the 3 s goal for a request to be visible, coarse beyond.
pub const DELAY_BUCKETS: [f64; 14] = [
    0.25, 0.5, 1.0, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0, 10.0, 60.0, 300.0,
];
