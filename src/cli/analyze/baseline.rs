//! Two captures compared per endpoint, for a pull request: calls per request by category,
//! operations that appeared or vanished or run more often, findings that are new, and latency
//! (only when it moved beyond the regression thresholds with a confidence interval that
//! excludes zero: CI runners are noisy). Built on `analysis::compare`, as `/api/v1/compare` is.
//!
//! A change regresses when it adds I/O calls per request, brings a new finding (a kind the
//! endpoint did not have, or a statement it was not found on), or makes an endpoint slower by
//! the thresholds; an endpoint only one capture has is reported, never a
//! regression (a renamed route is not slower).
//!
//! Invariant: pure; the sentences name the endpoint and the figures they rest on.

use collector::category::Category;

use super::endpoints::{CaptureAnalysis, EndpointName};
use crate::analysis::FindingKind;
use crate::analysis::aggregate::{self, FindingStats, Rollup};
use crate::analysis::compare::{
    self, MIN_CALLS_CHANGE, OperationChangeKind, Regression, Thresholds,
};

/// Calls per request of one I/O category on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct CallsChange {
    /// The category.
    pub category: Category,
    /// Baseline calls per request.
    pub baseline: f64,
    /// Candidate calls per request.
    pub candidate: f64,
}

/// One endpoint both captures have.
#[derive(Debug, Clone)]
pub struct EndpointDiff {
    /// The endpoint.
    pub endpoint: EndpointName,
    /// I/O categories whose calls per request moved by at least [`MIN_CALLS_CHANGE`].
    pub calls: Vec<CallsChange>,
    /// Findings the candidate has and the baseline had not.
    pub new_findings: Vec<FindingStats>,
    /// Findings the baseline had and the candidate has not.
    pub gone_findings: Vec<(FindingKind, String)>,
    /// p50 or p95 slower beyond the thresholds, with the mean's interval above zero.
    pub slower: Option<Regression>,
    /// What changed, one sentence each, regressions first.
    pub sentences: Vec<String>,
}

impl EndpointDiff {
    /// Whether this change makes the endpoint worse.
    pub fn regressed(&self) -> bool {
        self.calls.iter().any(|c| c.candidate > c.baseline)
            || !self.new_findings.is_empty()
            || self.slower.is_some()
    }
}

/// Two captures compared.
#[derive(Debug, Clone, Default)]
pub struct BaselineDiff {
    /// Endpoints of both, in name order.
    pub endpoints: Vec<EndpointDiff>,
    /// Endpoints only the candidate has.
    pub new_endpoints: Vec<EndpointName>,
    /// Endpoints only the baseline had.
    pub gone_endpoints: Vec<EndpointName>,
}

impl BaselineDiff {
    /// Whether any endpoint regressed.
    pub fn regressed(&self) -> bool {
        self.endpoints.iter().any(EndpointDiff::regressed)
    }
}

/// Compares every endpoint of `candidate` with `baseline`.
pub fn diff(baseline: &CaptureAnalysis, candidate: &CaptureAnalysis) -> BaselineDiff {
    let mut out = BaselineDiff::default();
    for (name, after) in &candidate.endpoints {
        match baseline.endpoints.get(name) {
            Some(before) => {
                if let Some(diff) = endpoint_diff(name, &before.rollup, &after.rollup) {
                    out.endpoints.push(diff);
                }
            }
            None => out.new_endpoints.push(name.clone()),
        }
    }
    out.gone_endpoints = baseline
        .endpoints
        .keys()
        .filter(|name| !candidate.endpoints.contains_key(*name))
        .cloned()
        .collect();
    out
}

/// Calls per request of an I/O category: database calls as the summary counts them, other
/// categories summed over their operations.
fn calls_per_request(rollup: &Rollup, category: Category) -> f64 {
    if rollup.requests == 0 {
        return 0.0;
    }
    let calls = if category == Category::Db {
        rollup.db_calls
    } else {
        rollup
            .operations
            .iter()
            .filter(|((c, name), _)| {
                *c == category && crate::analysis::gap::Place::of_operation(name).is_none()
            })
            .map(|(_, sums)| sums.calls)
            .sum()
    };
    calls as f64 / rollup.requests as f64
}

/// Whether two findings are the same problem. Duplicates, N+1s, slow queries and hot spots are
/// named by their statement or span, which a change keeps; sequential I/O and stretches of
/// untraced or waiting time are named by the operations around them, which change whenever a
/// neighbouring call is added or removed, so they are the same when their kind is.
fn same_finding(a: (FindingKind, &str), b: (FindingKind, &str)) -> bool {
    let named_by_place = matches!(
        a.0,
        FindingKind::SequentialIo | FindingKind::UntracedTime | FindingKind::UninstrumentedWait
    );
    a.0 == b.0 && (named_by_place || a.1 == b.1)
}

/// "1 query", "2 cache calls".
fn calls_noun(category: Category, n: f64) -> String {
    let count = if (n - n.round()).abs() < 0.05 {
        format!("{:.0}", n.round())
    } else {
        format!("{n:.1}")
    };
    let one = (n - 1.0).abs() < 0.05;
    let noun = match (category, one) {
        (Category::Db, true) => "query",
        (Category::Db, false) => "queries",
        (Category::Messaging, true) => "message",
        (Category::Messaging, false) => "messages",
        (Category::Cache, true) => "cache call",
        (Category::Cache, false) => "cache calls",
        (_, true) => "network call",
        (_, false) => "network calls",
    };
    format!("{count} {noun}")
}

fn endpoint_diff(name: &EndpointName, before: &Rollup, after: &Rollup) -> Option<EndpointDiff> {
    let (service, endpoint) = name;
    let comparison = compare::compare(before, after, endpoint, "this change")?;
    let calls: Vec<CallsChange> = Category::ALL
        .into_iter()
        .filter(|category| category.is_io())
        .map(|category| CallsChange {
            category,
            baseline: calls_per_request(before, category),
            candidate: calls_per_request(after, category),
        })
        .filter(|c| (c.candidate - c.baseline).abs() >= MIN_CALLS_CHANGE)
        .collect();
    let had: Vec<(FindingKind, String)> = aggregate::findings(before)
        .into_iter()
        .map(|f| (f.kind, f.name))
        .collect();
    let has = aggregate::findings(after);
    let gone_findings: Vec<(FindingKind, String)> = had
        .iter()
        .filter(|(kind, name)| {
            !has.iter()
                .any(|f| same_finding((*kind, name), (f.kind, &f.name)))
        })
        .cloned()
        .collect();
    let new_findings: Vec<FindingStats> = has
        .into_iter()
        .filter(|f| {
            !had.iter()
                .any(|(kind, name)| same_finding((*kind, name), (f.kind, &f.name)))
        })
        .collect();
    let slower = compare::regression(&comparison, &Thresholds::default())
        .filter(|_| comparison.significant());

    let mut sentences = Vec::new();
    for change in calls.iter().filter(|c| c.candidate > c.baseline) {
        sentences.push(format!(
            "this change adds {} per request to {service} {endpoint} ({} → {})",
            calls_noun(change.category, change.candidate - change.baseline),
            trim(change.baseline),
            trim(change.candidate)
        ));
    }
    for finding in &new_findings {
        sentences.push(format!(
            "new finding in {service} {endpoint}: {}",
            finding.summary
        ));
    }
    if let Some(found) = &slower {
        sentences.push(format!(
            "{service} {endpoint} is slower: {} {} instead of {}",
            found.metric.as_str(),
            aggregate::format_ms(found.candidate_ns),
            aggregate::format_ms(found.baseline_ns)
        ));
    }
    for change in calls.iter().filter(|c| c.candidate < c.baseline) {
        sentences.push(format!(
            "this change removes {} per request from {service} {endpoint} ({} → {})",
            calls_noun(change.category, change.baseline - change.candidate),
            trim(change.baseline),
            trim(change.candidate)
        ));
    }
    for op in comparison.operations.iter().filter(|op| op.gap.is_none()) {
        match op.kind {
            OperationChangeKind::Appeared => sentences.push(format!(
                "{service} {endpoint}: {} `{}` appeared ({} per request)",
                op.category.as_str(),
                op.name,
                trim(op.candidate_calls_per_request)
            )),
            OperationChangeKind::Vanished => sentences.push(format!(
                "{service} {endpoint}: {} `{}` vanished (was {} per request)",
                op.category.as_str(),
                op.name,
                trim(op.baseline_calls_per_request)
            )),
            OperationChangeKind::Changed
                if (op.candidate_calls_per_request - op.baseline_calls_per_request).abs()
                    >= MIN_CALLS_CHANGE =>
            {
                sentences.push(format!(
                    "{service} {endpoint}: {} `{}` runs {} times per request instead of {}",
                    op.category.as_str(),
                    op.name,
                    trim(op.candidate_calls_per_request),
                    trim(op.baseline_calls_per_request)
                ))
            }
            OperationChangeKind::Changed => {}
        }
    }
    for (kind, name) in &gone_findings {
        sentences.push(format!(
            "{service} {endpoint}: finding {} `{name}` is gone",
            kind.as_str()
        ));
    }
    Some(EndpointDiff {
        endpoint: name.clone(),
        calls,
        new_findings,
        gone_findings,
        slower,
        sentences,
    })
}

/// `2`, `2.5`.
fn trim(x: f64) -> String {
    if (x - x.round()).abs() < 0.005 {
        format!("{:.0}", x.round())
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::AnalysisConfig;
    use crate::analysis::fixture;
    use crate::cli::analyze::endpoints::analyse;

    /// A login running `queries` statements back to back: nothing else changes with their number.
    fn capture(queries: u32) -> CaptureAnalysis {
        let mut text = format!(
            "auth: POST /login 0..{} server http.route=/login\n",
            queries * 10 + 1
        );
        for n in 0..queries {
            let at = 1 + n * 10;
            text.push_str(&format!(
                "  SELECT t{n} {at}..{} client db.system=postgresql db.statement=\"SELECT * FROM t{n}\"\n",
                at + 9
            ));
        }
        analyse(fixture::parse(&text), &AnalysisConfig::default())
    }

    #[test]
    fn one_more_query_per_request_regresses_and_says_so() {
        let diff = diff(&capture(2), &capture(3));
        assert!(diff.regressed());
        let login = &diff.endpoints[0];
        assert_eq!(
            login.sentences[0],
            "this change adds 1 query per request to auth POST /login (2 → 3)"
        );
        assert!(
            login
                .sentences
                .iter()
                .any(|s| s.contains("`SELECT * FROM t2` appeared (1 per request)")),
            "{:?}",
            login.sentences
        );
        let back = super::diff(&capture(3), &capture(2));
        assert!(
            !back.regressed(),
            "fewer queries is no regression: {:?}",
            back.endpoints[0].sentences
        );
        assert!(back.endpoints[0].sentences[0].starts_with("this change removes 1 query"));
        assert!(!super::diff(&capture(2), &capture(2)).regressed());
    }
}
