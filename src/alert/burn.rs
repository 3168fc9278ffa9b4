//! Error-budget burn rates, as in the Google SRE workbook's "Alerting on SLOs" (multiwindow,
//! multi-burn-rate alerts): a burn rate of 1 spends exactly the error budget over the SLO
//! period; a page needs a fast burn over both a long window (it is real) and a short one (it is
//! still happening).
//!
//! Invariant: pure arithmetic; no clock, no IO.

use std::time::Duration;

use super::budget::BurnWindow;

/// Good and total requests in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Requests.
    pub total: u64,
    /// Requests at or under the SLO threshold.
    pub good: u64,
}

impl Counts {
    /// The share of bad requests; 0 without requests.
    pub fn error_ratio(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.total.saturating_sub(self.good) as f64 / self.total as f64
    }

    /// How many times faster than sustainable the error budget burns.
    pub fn burn_rate(&self, objective: f64) -> f64 {
        let budget = 1.0 - objective;
        if budget <= 0.0 {
            return f64::INFINITY;
        }
        self.error_ratio() / budget
    }
}

/// The workbook's share of the error budget a page spends in its 1 h window (2%) and a ticket in
/// its 6 h window (5%); with a 30-day period these are the familiar 14.4× and 6×.
const PAGE_BUDGET_SHARE: f64 = 0.02;
const TICKET_BUDGET_SHARE: f64 = 0.05;

/// The workbook's recommended pairs, with factors scaled to `period`: page on 1 h and 5 m, ticket
/// on 6 h and 30 m.
pub fn default_windows(period: Duration) -> Vec<BurnWindow> {
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let factor = |share: f64, long: Duration| share * period.as_secs_f64() / long.as_secs_f64();
    vec![
        BurnWindow {
            severity: "page".into(),
            long: hours(1),
            short: Duration::from_secs(300),
            factor: factor(PAGE_BUDGET_SHARE, hours(1)),
        },
        BurnWindow {
            severity: "ticket".into(),
            long: hours(6),
            short: Duration::from_secs(1800),
            factor: factor(TICKET_BUDGET_SHARE, hours(6)),
        },
    ]
}

/// One window pair's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnCheck {
    /// The pair's severity.
    pub severity: String,
    /// Its long window.
    pub long: Duration,
    /// Its short window.
    pub short: Duration,
    /// The burn rate that fires.
    pub factor: f64,
    /// Burn rate over the long window.
    pub long_burn: f64,
    /// Burn rate over the short window.
    pub short_burn: f64,
    /// Requests in the short window.
    pub short_requests: u64,
    /// Both windows burn at least `factor` and the short one has enough requests.
    pub firing: bool,
}

/// Checks every pair; `counts(window)` gives the requests in the window ending now.
pub fn check(
    windows: &[BurnWindow],
    objective: f64,
    min_requests: u64,
    counts: impl Fn(Duration) -> Counts,
) -> Vec<BurnCheck> {
    windows
        .iter()
        .map(|pair| {
            let long = counts(pair.long);
            let short = counts(pair.short);
            let long_burn = long.burn_rate(objective);
            let short_burn = short.burn_rate(objective);
            BurnCheck {
                severity: pair.severity.clone(),
                long: pair.long,
                short: pair.short,
                factor: pair.factor,
                long_burn,
                short_burn,
                short_requests: short.total,
                firing: short.total >= min_requests
                    && long_burn >= pair.factor
                    && short_burn >= pair.factor,
            }
        })
        .collect()
}

/// The pair that matters most: the first firing one (pairs are listed most urgent first), else
/// the one closest to firing.
pub fn worst(checks: &[BurnCheck]) -> Option<&BurnCheck> {
    checks.iter().find(|c| c.firing).or_else(|| {
        checks.iter().max_by(|a, b| {
            let closeness = |c: &BurnCheck| c.long_burn.min(c.short_burn) / c.factor;
            closeness(a).total_cmp(&closeness(b))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    fn thirty_days() -> Duration {
        Duration::from_secs(30 * 24 * HOUR)
    }

    /// Counts from a steady error ratio over the whole history, `rate` requests per second.
    fn steady(ratio: f64, rate: f64) -> impl Fn(Duration) -> Counts {
        move |window| {
            let total = (window.as_secs_f64() * rate) as u64;
            Counts {
                total,
                good: total - (total as f64 * ratio).round() as u64,
            }
        }
    }

    #[test]
    fn workbook_factors_for_thirty_days() {
        let windows = default_windows(thirty_days());
        assert_eq!(windows.len(), 2);
        assert!((windows[0].factor - 14.4).abs() < 1e-9, "{windows:?}");
        assert!((windows[1].factor - 6.0).abs() < 1e-9, "{windows:?}");
        assert_eq!(windows[0].long, Duration::from_secs(HOUR));
        assert_eq!(windows[0].short, Duration::from_secs(300));
        assert_eq!(windows[1].long, Duration::from_secs(6 * HOUR));
        assert_eq!(windows[1].short, Duration::from_secs(1800));
        // A 7-day period spends budget faster per hour of errors: lower factors.
        let week = default_windows(Duration::from_secs(7 * 24 * HOUR));
        assert!((week[0].factor - 3.36).abs() < 1e-9);
    }

    #[test]
    fn burn_rate_is_error_ratio_over_budget() {
        let counts = Counts {
            total: 1000,
            good: 980,
        };
        assert!((counts.error_ratio() - 0.02).abs() < 1e-12);
        assert!((counts.burn_rate(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(Counts::default().burn_rate(0.99), 0.0);
    }

    #[test]
    fn fast_burn_pages() {
        // 20% errors against a 99% objective: 20× the sustainable rate.
        let checks = check(&default_windows(thirty_days()), 0.99, 20, steady(0.2, 1.0));
        assert!(checks[0].firing, "{checks:?}");
        assert!(checks[1].firing, "{checks:?}");
        assert_eq!(worst(&checks).unwrap().severity, "page");
    }

    #[test]
    fn slow_burn_opens_a_ticket_but_does_not_page() {
        // 8% errors: 8× — above the ticket's 6×, below the page's 14.4×.
        let checks = check(&default_windows(thirty_days()), 0.99, 20, steady(0.08, 1.0));
        assert!(!checks[0].firing, "{checks:?}");
        assert!(checks[1].firing, "{checks:?}");
        assert_eq!(worst(&checks).unwrap().severity, "ticket");
    }

    #[test]
    fn burn_within_budget_fires_nothing() {
        let checks = check(&default_windows(thirty_days()), 0.99, 20, steady(0.02, 1.0));
        assert!(checks.iter().all(|c| !c.firing), "{checks:?}");
        assert_eq!(worst(&checks).unwrap().severity, "ticket");
    }

    #[test]
    fn a_burst_that_ended_resets_the_page() {
        // An hour ago everything failed; the last five minutes are clean. The long window still
        // burns, the short one does not: the page resets without waiting an hour.
        let counts = |window: Duration| {
            if window <= Duration::from_secs(300) {
                Counts {
                    total: 300,
                    good: 300,
                }
            } else {
                Counts {
                    total: 3600,
                    good: 3000,
                }
            }
        };
        let checks = check(&default_windows(thirty_days()), 0.99, 20, counts);
        assert!(checks[0].long_burn >= 14.4);
        assert!(!checks[0].firing);
    }

    #[test]
    fn too_few_requests_give_no_verdict() {
        let checks = check(&default_windows(thirty_days()), 0.99, 20, steady(1.0, 0.01));
        assert!(!checks[0].firing, "{checks:?}");
    }
}
