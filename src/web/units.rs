//! Figures as the API and the pages show them: nanoseconds become milliseconds to the
//! microsecond, shares and speedups keep three decimals, per-request counts two. The one place
//! a figure is rounded, so a page never shows a number the API does not give.
//!
//! Invariant: conversion and rounding only; no formatting into text.

use collector::category::Category;

const NS_PER_MS: f64 = 1e6;

/// Milliseconds, to the microsecond, from nanoseconds.
pub fn ms(ns: f64) -> f64 {
    (ns / NS_PER_MS * 1000.0).round() / 1000.0
}

/// Milliseconds, to the microsecond, from whole nanoseconds.
pub fn ms_of(ns: u64) -> f64 {
    ms(ns as f64)
}

/// Nanoseconds from milliseconds as a query parameter gives them (negatives read as zero).
pub fn ns_from_ms(ms: f64) -> u64 {
    (ms.max(0.0) * NS_PER_MS) as u64
}

/// Milliseconds per category, to the microsecond, from nanoseconds per category.
pub fn ms_per_category(ns: [f64; Category::COUNT]) -> [f64; Category::COUNT] {
    ns.map(ms)
}

/// Two decimals: counts per request.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Three decimals: shares, speedups, burn rates.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_to_the_microsecond() {
        assert_eq!(ms(1_234_567.0), 1.235);
        assert_eq!(ms_of(250_000_000), 250.0);
        assert_eq!(ns_from_ms(-3.0), 0);
        assert_eq!(ns_from_ms(1.5), 1_500_000);
        assert_eq!(round2(9.876), 9.88);
        assert_eq!(round3(0.12345), 0.123);
    }
}
