//! The server's vital signs over a run, taken every `--sample-every`: spans stored so far,
//! resident memory, open files, OS threads and tokio tasks, summed over the instances. A soak
//! reads them as a curve: under a steady load each should level off after a warm-up.
//!
//! Invariant: a figure that could not be read stays `None`; a sample is never invented.

use std::time::Duration;

use super::histogram::Histogram;

/// The point after which memory should have levelled off: caches full, pools grown.
pub(super) const WARM_UP: Duration = Duration::from_secs(60);

/// One reading.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    /// Since sending started.
    pub(super) at: Duration,
    /// Taken after sending stopped, while the server caught up.
    pub(super) catching_up: bool,
    pub(super) spans_stored: Option<u64>,
    pub(super) rss_bytes: Option<u64>,
    pub(super) open_fds: Option<u64>,
    pub(super) threads: Option<u64>,
    pub(super) tasks: Option<u64>,
    /// The analysis delay of every trace analysed so far; empty if unread.
    pub(super) analysis_delay: Histogram,
}

/// How resident memory grew under load: from the first sample at or after [`WARM_UP`] (or the
/// first sample, in a shorter run) to the last sample taken while sending. Samples of the
/// catch-up are left out so that both ends saw the same load.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Growth {
    pub(super) from: Duration,
    pub(super) to: Duration,
    pub(super) percent: f64,
    /// The lowest and highest RSS from `from` to `to`: two points of a curve that swings with
    /// each batch say less than its range.
    pub(super) min_bytes: u64,
    pub(super) max_bytes: u64,
    /// Mean RSS of the first and of the second half of the samples from `from` to `to` (the
    /// middle one of an odd count left out). A single sample taken before the caches filled
    /// moves the two ends a lot and these little. This is how a soak is judged flat.
    pub(super) half_means_bytes: (u64, u64),
}

impl Growth {
    /// The second half's mean against the first's, in percent.
    pub(super) fn half_means_percent(&self) -> f64 {
        let (first, second) = (
            self.half_means_bytes.0 as f64,
            self.half_means_bytes.1 as f64,
        );
        (second - first) / first * 100.0
    }
}

/// See [`Growth`]; `None` with fewer than two samples under load or an unreadable RSS.
pub(super) fn rss_growth(samples: &[Sample], warm_up: Duration) -> Option<Growth> {
    let under_load: Vec<&Sample> = samples.iter().filter(|s| !s.catching_up).collect();
    let first = under_load
        .iter()
        .find(|s| s.at >= warm_up)
        .or(under_load.first())?;
    let last = under_load.last()?;
    if last.at <= first.at {
        return None;
    }
    let (from, to) = (first.rss_bytes? as f64, last.rss_bytes? as f64);
    if from <= 0.0 {
        return None;
    }
    let window: Vec<u64> = under_load
        .iter()
        .filter(|s| s.at >= first.at)
        .filter_map(|s| s.rss_bytes)
        .collect();
    // Both ends are in the window, so each half has a sample at least.
    let half = window.len() / 2;
    let mean = |part: &[u64]| part.iter().sum::<u64>() / part.len() as u64;
    Some(Growth {
        from: first.at,
        to: last.at,
        percent: (to - from) / from * 100.0,
        min_bytes: *window.iter().min()?,
        max_bytes: *window.iter().max()?,
        half_means_bytes: (mean(&window[..half]), mean(&window[window.len() - half..])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: u64, rss_mib: u64, catching_up: bool) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            catching_up,
            spans_stored: Some(secs * 1000),
            rss_bytes: Some(rss_mib << 20),
            open_fds: Some(40),
            threads: Some(12),
            tasks: Some(30),
            analysis_delay: Histogram::default(),
        }
    }

    /// Samples taken while sending, from (seconds, RSS in MiB).
    fn under_load(points: &[(u64, u64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(secs, rss_mib)| sample(secs, rss_mib, false))
            .collect()
    }

    #[test]
    fn growth_starts_after_the_warm_up() {
        let samples = under_load(&[(10, 50), (60, 200), (70, 240), (80, 190), (600, 220)]);
        let growth = rss_growth(&samples, WARM_UP).expect("two samples under load");
        assert_eq!(growth.from, Duration::from_secs(60));
        assert_eq!(growth.to, Duration::from_secs(600));
        assert!((growth.percent - 10.0).abs() < 1e-9, "{}", growth.percent);
        assert_eq!((growth.min_bytes, growth.max_bytes), (190 << 20, 240 << 20));
        assert_eq!(growth.half_means_bytes, (220 << 20, 205 << 20));
    }

    #[test]
    fn a_low_first_sample_moves_the_ends_and_not_the_halves() {
        let samples = under_load(&[(60, 130), (90, 150), (120, 150), (150, 151), (180, 150)]);
        let growth = rss_growth(&samples, WARM_UP).expect("samples under load");
        assert!(growth.percent > 15.0, "{}", growth.percent);
        assert_eq!(growth.half_means_bytes, (140 << 20, (301 << 20) / 2));
        assert!(
            (growth.half_means_percent() - 7.5).abs() < 1e-9,
            "{}",
            growth.half_means_percent()
        );
    }

    #[test]
    fn a_short_run_measures_from_its_first_sample() {
        let samples = vec![sample(10, 100, false), sample(20, 90, false)];
        let growth = rss_growth(&samples, WARM_UP).expect("two samples");
        assert_eq!(growth.from, Duration::from_secs(10));
        assert!((growth.percent + 10.0).abs() < 1e-9, "{}", growth.percent);
    }

    #[test]
    fn catch_up_samples_are_not_the_end_point() {
        let samples = vec![
            sample(10, 100, false),
            sample(20, 110, false),
            sample(25, 400, true),
        ];
        let growth = rss_growth(&samples, WARM_UP).expect("two samples under load");
        assert_eq!(growth.to, Duration::from_secs(20));
        assert!((growth.percent - 10.0).abs() < 1e-9);
    }

    #[test]
    fn no_growth_from_one_sample_or_an_unknown_rss() {
        assert_eq!(rss_growth(&[sample(10, 100, false)], WARM_UP), None);
        assert_eq!(rss_growth(&[], WARM_UP), None);
        let mut unknown = vec![sample(10, 100, false), sample(20, 100, false)];
        unknown[1].rss_bytes = None;
        assert_eq!(rss_growth(&unknown, WARM_UP), None);
    }
}
