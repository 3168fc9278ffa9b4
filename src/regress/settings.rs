//! The regression finder's settings (`[regression]` in the config file).
//!
//! Invariant: plain values; the finder reads them once when it starts.

use std::time::Duration;

use serde::Deserialize;

use crate::analysis::compare::Thresholds;
use crate::time::{duration_text, ms_as_ns};

/// A regression is raised within a minute of the evidence for it, at the cost of one grouped
/// count of the lookback's rollups per look; sketches are read only for endpoints due.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// With 50 requests the median's 95% interval spans the middle 30% of them, narrow enough to
/// tell a 20% change on typical spreads. The p95 decides only from 73 requests on each side,
/// where its interval first exists.
pub const DEFAULT_MIN_REQUESTS: u64 = 50;
/// One day covers a rollout and its predecessor's last day of traffic.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(86_400);
/// Fewer requests per version give no interval at all.
const LEAST_MIN_REQUESTS: u64 = 2;

/// The regression finder: when a service sends a new `service.version`, each endpoint is compared
/// with the previous version once both have enough requests, and again as the new version's
/// traffic grows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RegressionSection")]
pub struct RegressionConfig {
    /// How often the finder looks for versions due for an evaluation.
    pub interval: Duration,
    /// The warm-up: requests each version of an endpoint needs before it is evaluated at all.
    pub min_requests: u64,
    /// How far back versions and their traffic are read.
    pub lookback: Duration,
    /// A regression is p50 or p95 slower by both the ratio and the absolute amount, measured
    /// from the baseline's upper to the candidate's lower 95% bound.
    pub thresholds: Thresholds,
}

impl Default for RegressionConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            min_requests: DEFAULT_MIN_REQUESTS,
            lookback: DEFAULT_LOOKBACK,
            thresholds: Thresholds::default(),
        }
    }
}

/// `[regression]` as the file writes it: the thresholds flat, the absolute one in milliseconds.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RegressionSection {
    #[serde(deserialize_with = "duration_text")]
    interval: Duration,
    min_requests: u64,
    #[serde(deserialize_with = "duration_text")]
    lookback: Duration,
    min_increase_ratio: f64,
    #[serde(rename = "min_increase_ms", deserialize_with = "ms_as_ns")]
    min_increase_ns: u64,
}

impl Default for RegressionSection {
    fn default() -> Self {
        let defaults = RegressionConfig::default();
        Self {
            interval: defaults.interval,
            min_requests: defaults.min_requests,
            lookback: defaults.lookback,
            min_increase_ratio: defaults.thresholds.min_ratio,
            min_increase_ns: defaults.thresholds.min_delta_ns,
        }
    }
}

impl From<RegressionSection> for RegressionConfig {
    fn from(section: RegressionSection) -> Self {
        Self {
            interval: section.interval,
            min_requests: section.min_requests.max(LEAST_MIN_REQUESTS),
            lookback: section.lookback,
            thresholds: Thresholds {
                min_ratio: section.min_increase_ratio.max(0.0),
                min_delta_ns: section.min_increase_ns,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_settings_from_the_file() {
        let regression: RegressionConfig = toml::from_str(
            "interval = \"5s\"\nmin_requests = 80\nmin_increase_ratio = 0.5\nmin_increase_ms = 10\n",
        )
        .unwrap();
        assert_eq!(regression.interval, Duration::from_secs(5));
        assert_eq!(regression.min_requests, 80);
        assert_eq!(regression.lookback, Duration::from_secs(86_400));
        assert_eq!(regression.thresholds.min_ratio, 0.5);
        assert_eq!(regression.thresholds.min_delta_ns, 10_000_000);
    }
}
