//! Latencies of the simulated dependencies: log-normal, like real service times, with a long
//! right tail.
//!
//! Invariant: every value comes from the caller's seeded generator (same seed, same latencies)
//! and is bounded, so a request never takes unboundedly long.

use std::time::Duration;

use rand::Rng;

/// The tail is cut at this multiple of the mean: long enough for visible p99s, short enough that
/// a test run stays bounded.
const MAX_TIMES_MEAN: f64 = 8.0;

/// A log-normal duration with the given mean; `sigma` is the spread of its logarithm (0.3 is a
/// steady dependency, 0.8 a jittery one).
pub fn log_normal(rng: &mut impl Rng, mean: Duration, sigma: f64) -> Duration {
    // For a log-normal, mean = exp(mu + sigma^2 / 2), so this mu keeps the requested mean.
    let mu = mean.as_secs_f64().ln() - sigma * sigma / 2.0;
    let secs = (mu + sigma * standard_normal(rng)).exp();
    Duration::from_secs_f64(secs.min(mean.as_secs_f64() * MAX_TIMES_MEAN))
}

/// A standard normal draw by the Box-Muller transform (rand_distr is not a dependency).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The wait until the next arrival of a Poisson process with `rate_per_sec` arrivals per second.
pub fn interarrival(rng: &mut impl Rng, rate_per_sec: f64) -> Duration {
    let u: f64 = 1.0 - rng.random::<f64>();
    Duration::from_secs_f64((-u.ln() / rate_per_sec).min(60.0))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn log_normal_keeps_its_mean_and_bound() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mean = Duration::from_millis(20);
        let draws: Vec<Duration> = (0..20_000)
            .map(|_| log_normal(&mut rng, mean, 0.5))
            .collect();
        let avg_ms =
            draws.iter().map(Duration::as_secs_f64).sum::<f64>() / draws.len() as f64 * 1e3;
        assert!((18.5..21.5).contains(&avg_ms), "{avg_ms}");
        assert!(draws.iter().all(|d| *d <= mean * 8));
    }

    #[test]
    fn interarrivals_average_one_over_rate() {
        let mut rng = SmallRng::seed_from_u64(8);
        let avg = (0..20_000)
            .map(|_| interarrival(&mut rng, 50.0).as_secs_f64())
            .sum::<f64>()
            / 20_000.0;
        assert!((0.019..0.021).contains(&avg), "{avg}");
    }
}
