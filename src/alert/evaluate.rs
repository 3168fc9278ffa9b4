//! From observed numbers to alert states: the state machine, budget verdicts, and the sentence
//! that says which component moved.
//!
//! Invariant: pure; time comes in as an argument, and nothing here reads a store or a clock.

use std::time::Duration;

use collector::category::Category;

use super::budget::{Budget, Metric, Observed};
use super::burn::BurnCheck;
use crate::analysis::aggregate::format_ms;

/// Where an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// Within budget, or not enough data.
    Ok,
    /// Breached, but not for long enough yet (`for`).
    Pending,
    /// Breached for long enough: notified.
    Firing,
    /// Was firing, is back within budget: notified; stays until the next breach.
    Resolved,
}

impl AlertState {
    /// The API and store name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Ok => "ok",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    /// Reads `as_str` output.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ok" => Some(AlertState::Ok),
            "pending" => Some(AlertState::Pending),
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }

    /// Whether entering this state sends a notification.
    pub fn notifies(self) -> bool {
        matches!(self, AlertState::Firing | AlertState::Resolved)
    }
}

/// A state and the instant it was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The state.
    pub state: AlertState,
    /// When it was entered (for pending: when the breach began).
    pub since_unix_ns: u64,
}

/// The next status from the previous one (`None` for an alert never seen) and whether the rule
/// is breached now. `hold` is the budget's `for`.
pub fn next_status(
    previous: Option<Status>,
    breached: bool,
    hold: Duration,
    now_unix_ns: u64,
) -> Status {
    let at = |state| Status {
        state,
        since_unix_ns: now_unix_ns,
    };
    let hold_ns = hold.as_nanos() as u64;
    match (previous, breached) {
        (None, false) => at(AlertState::Ok),
        (Some(prev), false) => match prev.state {
            AlertState::Ok | AlertState::Resolved => prev,
            AlertState::Pending => at(AlertState::Ok),
            AlertState::Firing => at(AlertState::Resolved),
        },
        (None, true) => {
            if hold_ns == 0 {
                at(AlertState::Firing)
            } else {
                at(AlertState::Pending)
            }
        }
        (Some(prev), true) => match prev.state {
            AlertState::Firing => prev,
            AlertState::Pending if now_unix_ns.saturating_sub(prev.since_unix_ns) >= hold_ns => {
                at(AlertState::Firing)
            }
            AlertState::Pending => prev,
            AlertState::Ok | AlertState::Resolved if hold_ns == 0 => at(AlertState::Firing),
            AlertState::Ok | AlertState::Resolved => at(AlertState::Pending),
        },
    }
}

/// A value in the metric's unit for a sentence: `350 ms`, `12.0`.
pub fn format_value(metric: Metric, value: f64) -> String {
    if metric.is_ms() {
        format_ms(value * 1e6)
    } else {
        format!("{value:.1}")
    }
}

/// A budget's verdict over its window.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetVerdict {
    /// The metric's value, when there were requests.
    pub observed: Option<f64>,
    /// Requests in the window.
    pub requests: u64,
    /// Over the limit with enough requests.
    pub breached: bool,
    /// One sentence: the numbers, and for a breach what moved since the hour before.
    pub summary: String,
}

/// Judges one budget on the window's numbers; `before` is the hour before the window.
pub fn judge_budget(
    budget: &Budget,
    now: Option<&Observed>,
    before: Option<&Observed>,
) -> BudgetVerdict {
    let label = budget.metric.label();
    let limit = format_value(budget.metric, budget.limit);
    let window = humantime::format_duration(budget.window);
    let Some(now) = now.filter(|o| o.requests > 0) else {
        return BudgetVerdict {
            observed: None,
            requests: 0,
            breached: false,
            summary: format!("no requests in the last {window}"),
        };
    };
    let value = budget.metric.value(now);
    let shown = format_value(budget.metric, value);
    let (breached, summary) = if now.requests < budget.min_requests {
        (
            false,
            format!(
                "{label} {shown} on {} requests in {window}, fewer than the {} a verdict needs",
                now.requests, budget.min_requests
            ),
        )
    } else if value > budget.limit {
        (
            true,
            format!(
                "{label} {shown} > {limit} budget; {}",
                movement(now, before)
            ),
        )
    } else {
        (false, format!("{label} {shown} within the {limit} budget"))
    };
    BudgetVerdict {
        observed: Some(value),
        requests: now.requests,
        breached,
        summary,
    }
}

/// A component must move this much per request to be named: below it is noise.
const MIN_MOVE_MS: f64 = 1.0;
/// Database calls per request must change this much to be named.
const MIN_MOVE_CALLS: f64 = 0.5;

/// Which components moved between the hour before and now: "db +140 ms since the last hour,
/// 4 more queries per request".
pub fn movement(now: &Observed, before: Option<&Observed>) -> String {
    let Some(before) = before.filter(|b| b.requests > 0) else {
        return "no traffic in the hour before to compare with".into();
    };
    let mut moves: Vec<(Category, f64)> = Category::ALL
        .iter()
        .map(|c| {
            (
                *c,
                now.breakdown_ms[c.index()] - before.breakdown_ms[c.index()],
            )
        })
        .filter(|(_, delta)| delta.abs() >= MIN_MOVE_MS)
        .collect();
    moves.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let mut parts: Vec<String> = moves
        .iter()
        .take(2)
        .map(|(category, delta)| {
            let sign = if *delta >= 0.0 { "+" } else { "-" };
            format!(
                "{} {sign}{}",
                category.as_str(),
                format_ms(delta.abs() * 1e6)
            )
        })
        .collect();
    if let Some(first) = parts.first_mut() {
        first.push_str(" since the last hour");
    }
    let calls = now.db_calls_per_request - before.db_calls_per_request;
    if calls.abs() >= MIN_MOVE_CALLS {
        let more = if calls > 0.0 { "more" } else { "fewer" };
        let n = calls.abs();
        let n = if (n - n.round()).abs() < 0.05 {
            format!("{n:.0}")
        } else {
            format!("{n:.1}")
        };
        parts.push(format!("{n} {more} queries per request"));
    }
    if parts.is_empty() {
        return format!("no component moved by {MIN_MOVE_MS} ms or more since the last hour");
    }
    parts.join(", ")
}

/// The sentence of an SLO's verdict from its worst window pair.
pub fn slo_summary(
    worst: &BurnCheck,
    objective: f64,
    threshold_ms: f64,
    now: Option<&Observed>,
    before: Option<&Observed>,
) -> String {
    let head = format!(
        "{}: error budget burning {:.1}× over {} and {:.1}× over {} (fires at {:.1}×); objective {}% under {}",
        worst.severity,
        worst.long_burn,
        humantime::format_duration(worst.long),
        worst.short_burn,
        humantime::format_duration(worst.short),
        worst.factor,
        objective * 100.0,
        format_ms(threshold_ms * 1e6),
    );
    match (worst.firing, now) {
        (true, Some(now)) => format!("{head}; {}", movement(now, before)),
        _ => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::budget::Pattern;

    const S: u64 = 1_000_000_000;

    fn status(state: AlertState, since_s: u64) -> Option<Status> {
        Some(Status {
            state,
            since_unix_ns: since_s * S,
        })
    }

    #[test]
    fn state_machine() {
        use AlertState::*;
        let hold = Duration::from_secs(60);
        let none = Duration::ZERO;
        // (previous, breached, hold, now, expected state, expected since)
        type Case = (Option<Status>, bool, Duration, u64, AlertState, u64);
        let cases: &[Case] = &[
            (None, false, hold, 100, Ok, 100),
            (None, true, none, 100, Firing, 100),
            (None, true, hold, 100, Pending, 100),
            (status(Pending, 100), true, hold, 130, Pending, 100),
            (status(Pending, 100), true, hold, 160, Firing, 160),
            (status(Pending, 100), false, hold, 130, Ok, 130),
            (status(Firing, 100), true, hold, 500, Firing, 100),
            (status(Firing, 100), false, hold, 500, Resolved, 500),
            (status(Resolved, 500), false, hold, 900, Resolved, 500),
            (status(Resolved, 500), true, none, 900, Firing, 900),
            (status(Ok, 10), true, hold, 900, Pending, 900),
        ];
        for (prev, breached, hold, now, state, since) in cases {
            let got = next_status(*prev, *breached, *hold, now * S);
            assert_eq!(
                (got.state, got.since_unix_ns),
                (*state, since * S),
                "{prev:?} breached={breached}"
            );
        }
    }

    fn observed(requests: u64, p95_ms: f64, db_ms: f64, db_calls: f64) -> Observed {
        let mut breakdown_ms = [0.0; Category::COUNT];
        breakdown_ms[Category::Db.index()] = db_ms;
        breakdown_ms[Category::Cpu.index()] = 50.0;
        Observed {
            requests,
            p95_ms,
            breakdown_ms,
            db_calls_per_request: db_calls,
            ..Observed::default()
        }
    }

    fn budget(min_requests: u64) -> Budget {
        Budget {
            service: Pattern::new("auth"),
            endpoint: Pattern::new("POST /login"),
            metric: Metric::P95,
            limit: 200.0,
            window: Duration::from_secs(300),
            hold: Duration::ZERO,
            min_requests,
        }
    }

    #[test]
    fn breach_names_what_moved() {
        let now = observed(100, 350.0, 210.0, 12.0);
        let before = observed(500, 180.0, 70.0, 8.0);
        let verdict = judge_budget(&budget(20), Some(&now), Some(&before));
        assert!(verdict.breached);
        assert_eq!(verdict.observed, Some(350.0));
        assert_eq!(
            verdict.summary,
            "p95 350 ms > 200 ms budget; db +140 ms since the last hour, 4 more queries per request"
        );
    }

    #[test]
    fn verdicts_without_a_breach() {
        let now = observed(100, 150.0, 10.0, 1.0);
        let within = judge_budget(&budget(20), Some(&now), None);
        assert!(!within.breached);
        assert_eq!(within.summary, "p95 150 ms within the 200 ms budget");

        let few = observed(5, 900.0, 10.0, 1.0);
        let verdict = judge_budget(&budget(20), Some(&few), None);
        assert!(!verdict.breached);
        assert_eq!(
            verdict.summary,
            "p95 900 ms on 5 requests in 5m, fewer than the 20 a verdict needs"
        );

        let none = judge_budget(&budget(20), None, None);
        assert_eq!(none.observed, None);
        assert_eq!(none.summary, "no requests in the last 5m");

        let slow = observed(100, 900.0, 10.0, 1.0);
        let verdict = judge_budget(&budget(20), Some(&slow), None);
        assert_eq!(
            verdict.summary,
            "p95 900 ms > 200 ms budget; no traffic in the hour before to compare with"
        );
    }
}
