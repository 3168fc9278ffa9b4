//! The regression finder: a background task that compares each `service.version` of a service
//! with the version first seen before it, endpoint by endpoint, raises a regression event when
//! the candidate is slower with confidence, and resolves the event when it no longer is.
//!
//! Warm-up: an endpoint is evaluated once both versions have `min_requests` requests in the
//! lookback. It is evaluated again as the candidate's traffic grows by a quarter, or a quarter of
//! the lookback later, so a regression that develops after the first evaluation is raised then,
//! and one that goes away is resolved. [`significance`] decides: raising needs the candidate's
//! 95% interval of p50 or p95 above the baseline's by the thresholds; an open event is resolved
//! when neither estimate crosses them any more. A resolved regression is raised again, as a new
//! event, only if the intervals show it again.
//!
//! Each evaluation's checks, raises and resolutions are committed together, and the store
//! keeps at most one open event per (endpoint, baseline, candidate): a restart neither repeats
//! nor loses one. Events are served at `/api/v1/regressions`; alert webhooks page through raises
//! by id and resolutions by their sequence.
//!
//! Invariant: reads rollups and writes only its own tables (`regression_checks`,
//! `regressions`); it never touches requests or rollups.

pub mod settings;
pub mod significance;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::analysis::aggregate::{Rollup, format_ms};
use crate::analysis::compare::{self, Comparison, Metric};
use crate::store::{
    LeaderRole, NewResolution, RegressionCheck, RegressionEvaluation, RegressionRecord, Store,
    StoreError, VersionTraffic, Window, minute_of,
};
use crate::time::now_unix_ns;
use settings::RegressionConfig;
use significance::{Slowdown, quantile_of, significant_slowdown, still_slower};

/// An endpoint is evaluated again once the candidate's requests have grown by this share since
/// the last evaluation (the intervals then narrow by a tenth, and a pair is evaluated about
/// three times per doubling of its traffic, so the same data is not looked at over and over),
/// or once this share of the lookback has passed (the window has replaced that much of its
/// data even where traffic is steady).
const REEVALUATE_SHARE: f64 = 0.25;

/// A regression was raised (self-telemetry: one log line per event).
pub struct RegressionDetected<'a> {
    /// The event as stored.
    pub record: &'a RegressionRecord,
}

impl RegressionDetected<'_> {
    /// Logs the event.
    pub fn emit(self) {
        let record = self.record;
        warn!(
            service = %record.service,
            endpoint = %record.endpoint,
            baseline = %record.baseline,
            candidate = %record.candidate,
            metric = %record.metric,
            summary = %record.summary,
            "regression detected"
        );
    }
}

/// A raised regression no longer holds (self-telemetry: one log line per event).
pub struct RegressionResolved<'a> {
    /// The event as it was open.
    pub record: &'a RegressionRecord,
    /// Why it is resolved.
    pub resolution: &'a NewResolution,
}

impl RegressionResolved<'_> {
    /// Logs the resolution.
    pub fn emit(self) {
        let record = self.record;
        info!(
            service = %record.service,
            endpoint = %record.endpoint,
            baseline = %record.baseline,
            candidate = %record.candidate,
            summary = %self.resolution.summary,
            "regression resolved"
        );
    }
}

/// What one pass changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Events raised (ids are assigned by the store and read back through its feed).
    pub raised: Vec<RegressionRecord>,
    /// Open events resolved.
    pub resolved: Vec<NewResolution>,
}

impl Outcome {
    /// Whether the pass raised and resolved nothing.
    pub fn is_empty(&self) -> bool {
        self.raised.is_empty() && self.resolved.is_empty()
    }
}

/// Runs [`find`] every `config.interval` until `stop` turns true.
pub async fn run(store: Store, config: RegressionConfig, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        // One instance of those sharing a database looks for regressions.
        if !store.lead(LeaderRole::Regressions).await {
            continue;
        }
        if let Err(err) = find(&store, &config, now_unix_ns()).await {
            // Nothing was recorded for the failed pair: it is evaluated again next time.
            warn!(error = %err, "regression finder failed; retrying next interval");
        }
    }
}

/// A service's version and the one first seen before it, with each endpoint's requests in both.
#[derive(Debug, Clone, PartialEq)]
struct VersionPair {
    service: String,
    baseline: String,
    candidate: String,
    baseline_requests: HashMap<i64, u64>,
    candidate_requests: HashMap<i64, u64>,
}

/// One version of a service in the lookback.
#[derive(Debug, Clone)]
struct VersionSeen {
    name: String,
    /// The first minute any of its endpoints was seen.
    first_minute: i64,
    /// Requests per endpoint.
    requests: HashMap<i64, u64>,
}

/// Consecutive version pairs of each service, oldest first: versions are ordered by the first
/// minute they were seen.
fn version_pairs(traffic: Vec<VersionTraffic>) -> Vec<VersionPair> {
    let mut by_service: BTreeMap<String, BTreeMap<String, VersionSeen>> = BTreeMap::new();
    for row in traffic {
        let seen = by_service
            .entry(row.service)
            .or_default()
            .entry(row.version.clone())
            .or_insert_with(|| VersionSeen {
                name: row.version,
                first_minute: i64::MAX,
                requests: HashMap::new(),
            });
        seen.first_minute = seen.first_minute.min(row.first_minute);
        *seen.requests.entry(row.endpoint_id).or_default() += row.requests;
    }
    let mut pairs = Vec::new();
    for (service, versions) in by_service {
        let mut versions: Vec<VersionSeen> = versions.into_values().collect();
        versions.sort_by(|a, b| {
            a.first_minute
                .cmp(&b.first_minute)
                .then_with(|| a.name.cmp(&b.name))
        });
        for pair in versions.windows(2) {
            pairs.push(VersionPair {
                service: service.clone(),
                baseline: pair[0].name.clone(),
                candidate: pair[1].name.clone(),
                baseline_requests: pair[0].requests.clone(),
                candidate_requests: pair[1].requests.clone(),
            });
        }
    }
    pairs
}

/// Whether an endpoint whose candidate now has `candidate_requests` is due for an evaluation.
fn due(
    last: Option<&RegressionCheck>,
    candidate_requests: u64,
    now_unix_ns: u64,
    lookback: Duration,
) -> bool {
    let Some(last) = last else {
        return true;
    };
    let grown =
        candidate_requests as f64 >= last.candidate_requests as f64 * (1.0 + REEVALUATE_SHARE);
    let stale_after_ns = lookback.as_nanos() as f64 * REEVALUATE_SHARE;
    let stale = now_unix_ns.saturating_sub(last.checked_unix_ns) as f64 >= stale_after_ns;
    grown || stale
}

fn merged(rollups: Vec<(crate::store::RollupKey, Rollup)>) -> HashMap<i64, Rollup> {
    let mut out: HashMap<i64, Rollup> = HashMap::new();
    for (key, rollup) in rollups {
        out.entry(key.endpoint_id).or_default().merge(&rollup);
    }
    out
}

/// Rollups of one version, merged per (endpoint, version), by endpoint.
fn per_endpoint(rollups: BTreeMap<(i64, String), Rollup>) -> HashMap<i64, Rollup> {
    rollups
        .into_iter()
        .map(|((endpoint_id, _), rollup)| (endpoint_id, rollup))
        .collect()
}

/// `16 ms–18 ms`.
fn range_ms(low_ns: f64, high_ns: f64) -> String {
    format!("{}–{}", format_ms(low_ns), format_ms(high_ns))
}

/// The sentence of an event: which quantile moved, with its intervals, then what explains it.
fn event_summary(
    endpoint: &str,
    candidate: &str,
    found: &Slowdown,
    comparison: &Comparison,
) -> String {
    let change = if found.baseline_ns > 0.0 {
        format!(
            " (+{:.0}%)",
            (found.candidate_ns / found.baseline_ns - 1.0) * 100.0
        )
    } else {
        String::new()
    };
    format!(
        "{} of {endpoint} went from {} to {}{change} with {candidate}; 95% intervals {} and {} \
         ({} and {} requests). {}",
        found.metric.as_str(),
        format_ms(found.baseline_ns),
        format_ms(found.candidate_ns),
        range_ms(found.baseline.low_ns, found.baseline.high_ns),
        range_ms(found.candidate.low_ns, found.candidate.high_ns),
        comparison.baseline.requests,
        comparison.candidate.requests,
        comparison.summary
    )
}

/// The sentence of a resolution: where both quantiles stand now.
fn resolution_summary(endpoint: &str, candidate: &str, old: &Rollup, new: &Rollup) -> String {
    let quantile = |metric: Metric| {
        let q = quantile_of(metric);
        format!(
            "{} {} against {}",
            metric.as_str(),
            format_ms(new.sketch.quantile_ns(q)),
            format_ms(old.sketch.quantile_ns(q))
        )
    };
    format!(
        "{endpoint} is back within the thresholds with {candidate}: {}, {} ({} and {} requests)",
        quantile(Metric::P50),
        quantile(Metric::P95),
        old.requests,
        new.requests
    )
}

/// One pass: evaluates every endpoint of every version pair that is past its warm-up and due.
/// Returns what changed.
pub async fn find(
    store: &Store,
    config: &RegressionConfig,
    now_unix_ns: u64,
) -> Result<Outcome, StoreError> {
    let lookback_ns = u64::try_from(config.lookback.as_nanos()).unwrap_or(u64::MAX);
    let window = Window {
        from_unix_ns: now_unix_ns.saturating_sub(lookback_ns),
        // Up to the end of the current minute: the rollup of the minute in progress counts.
        to_unix_ns: now_unix_ns + Duration::from_secs(60).as_nanos() as u64,
    };
    let traffic = store
        .version_traffic(minute_of(window.from_unix_ns))
        .await?;
    let mut outcome = Outcome::default();
    for pair in version_pairs(traffic) {
        let found = evaluate(store, config, window, &pair, now_unix_ns).await?;
        outcome.raised.extend(found.raised);
        outcome.resolved.extend(found.resolved);
    }
    Ok(outcome)
}

/// Evaluates the endpoints of one version pair that are past the warm-up and due, and commits
/// the checks, raises and resolutions together.
async fn evaluate(
    store: &Store,
    config: &RegressionConfig,
    window: Window,
    pair: &VersionPair,
    now_unix_ns: u64,
) -> Result<Outcome, StoreError> {
    let warm: Vec<i64> = pair
        .candidate_requests
        .iter()
        .filter(|(id, requests)| {
            **requests >= config.min_requests
                && pair
                    .baseline_requests
                    .get(id)
                    .is_some_and(|before| *before >= config.min_requests)
        })
        .map(|(id, _)| *id)
        .collect();
    if warm.is_empty() {
        return Ok(Outcome::default());
    }
    let checks = store
        .regression_checks(&warm, &pair.baseline, &pair.candidate)
        .await?;
    let mut ids: Vec<i64> = warm
        .into_iter()
        .filter(|id| {
            due(
                checks.get(id),
                pair.candidate_requests[id],
                now_unix_ns,
                config.lookback,
            )
        })
        .collect();
    if ids.is_empty() {
        return Ok(Outcome::default());
    }
    ids.sort_unstable();
    let open: HashMap<i64, RegressionRecord> = store
        .open_regressions(&pair.service, &pair.baseline, &pair.candidate)
        .await?
        .into_iter()
        .map(|event| (event.endpoint_id, event))
        .collect();
    let before = merged(
        store
            .version_rollups(window, Some(&ids), &pair.baseline)
            .await?,
    );
    let after = merged(
        store
            .version_rollups(window, Some(&ids), &pair.candidate)
            .await?,
    );
    let mut evaluation = RegressionEvaluation {
        baseline: pair.baseline.clone(),
        candidate: pair.candidate.clone(),
        checked_unix_ns: now_unix_ns,
        ..RegressionEvaluation::default()
    };
    let mut slowdowns: Vec<(i64, Slowdown)> = Vec::new();
    for id in ids {
        let (Some(old), Some(new)) = (before.get(&id), after.get(&id)) else {
            continue;
        };
        evaluation.checked.push((id, pair.candidate_requests[&id]));
        match open.get(&id) {
            Some(event) if !still_slower(&old.sketch, &new.sketch, &config.thresholds) => {
                let q = Metric::parse(&event.metric).map_or(0.5, quantile_of);
                evaluation.resolved.push(NewResolution {
                    regression_id: event.id,
                    resolved_unix_ns: now_unix_ns,
                    candidate_ns: new.sketch.quantile_ns(q) as u64,
                    summary: resolution_summary(&event.endpoint, &pair.candidate, old, new),
                });
            }
            Some(_) => {}
            None => {
                if let Some(slowdown) =
                    significant_slowdown(&old.sketch, &new.sketch, &config.thresholds)
                {
                    slowdowns.push((id, slowdown));
                }
            }
        }
    }
    if !slowdowns.is_empty() {
        evaluation.raised = raise(store, window, pair, &slowdowns, now_unix_ns).await?;
    }
    store.record_regression_evaluation(&evaluation).await?;
    info!(
        service = %pair.service,
        baseline = %pair.baseline,
        candidate = %pair.candidate,
        endpoints = evaluation.checked.len(),
        raised = evaluation.raised.len(),
        resolved = evaluation.resolved.len(),
        "versions compared"
    );
    for record in &evaluation.raised {
        RegressionDetected { record }.emit();
    }
    for resolution in &evaluation.resolved {
        if let Some(record) = open.values().find(|e| e.id == resolution.regression_id) {
            RegressionResolved { record, resolution }.emit();
        }
    }
    Ok(Outcome {
        raised: evaluation.raised,
        resolved: evaluation.resolved,
    })
}

/// The events of the slowdowns found, each with the comparison that explains it (read with the
/// operations and findings, for those endpoints only).
async fn raise(
    store: &Store,
    window: Window,
    pair: &VersionPair,
    slowdowns: &[(i64, Slowdown)],
    now_unix_ns: u64,
) -> Result<Vec<RegressionRecord>, StoreError> {
    let ids: Vec<i64> = slowdowns.iter().map(|(id, _)| *id).collect();
    let with_details = |version| store.merged_rollups(window, Some(&ids), Some(version));
    let before = per_endpoint(with_details(&pair.baseline).await?);
    let after = per_endpoint(with_details(&pair.candidate).await?);
    let names: HashMap<i64, String> = store
        .endpoints()
        .await?
        .into_iter()
        .filter(|e| ids.contains(&e.id))
        .map(|e| (e.id, e.endpoint))
        .collect();
    let mut raised = Vec::new();
    for (id, slowdown) in slowdowns {
        let (Some(old), Some(new), Some(endpoint)) = (before.get(id), after.get(id), names.get(id))
        else {
            continue;
        };
        let Some(comparison) = compare::compare(old, new, endpoint, &pair.candidate) else {
            continue;
        };
        let bounds = |interval: significance::QuantileInterval| {
            Some((interval.low_ns as u64, interval.high_ns as u64))
        };
        raised.push(RegressionRecord {
            id: 0,
            detected_unix_ns: now_unix_ns,
            endpoint_id: *id,
            service: pair.service.clone(),
            endpoint: endpoint.clone(),
            baseline: pair.baseline.clone(),
            candidate: pair.candidate.clone(),
            metric: slowdown.metric.as_str().to_owned(),
            baseline_ns: slowdown.baseline_ns as u64,
            candidate_ns: slowdown.candidate_ns as u64,
            baseline_requests: old.requests,
            candidate_requests: new.requests,
            mean_delta_ns: comparison.mean_delta_ns() as i64,
            mean_delta_ci_ns: comparison
                .mean_delta_ci
                .map(|ci| (ci.low_ns as i64, ci.high_ns as i64)),
            baseline_interval_ns: bounds(slowdown.baseline),
            candidate_interval_ns: bounds(slowdown.candidate),
            summary: event_summary(endpoint, &pair.candidate, slowdown, &comparison),
            resolution: None,
        });
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(
        service: &str,
        endpoint_id: i64,
        version: &str,
        first_minute: i64,
    ) -> VersionTraffic {
        VersionTraffic {
            service: service.into(),
            endpoint_id,
            version: version.into(),
            first_minute,
            requests: 100,
        }
    }

    #[test]
    fn each_version_is_compared_with_the_one_seen_before_it() {
        let pairs = version_pairs(vec![
            traffic("auth", 1, "1.2", 30),
            traffic("auth", 1, "1.0", 10),
            traffic("idp", 3, "7", 5),
            traffic("auth", 2, "1.1", 25),
            // A version is as old as its first endpoint.
            traffic("auth", 1, "1.1", 20),
        ]);
        let names: Vec<(String, String, String)> = pairs
            .iter()
            .map(|p| (p.service.clone(), p.baseline.clone(), p.candidate.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("auth".into(), "1.0".into(), "1.1".into()),
                ("auth".into(), "1.1".into(), "1.2".into()),
            ]
        );
        assert_eq!(
            pairs[0].candidate_requests,
            [(1, 100), (2, 100)].into_iter().collect()
        );
        assert_eq!(pairs[0].baseline_requests, [(1, 100)].into_iter().collect());
    }

    #[test]
    fn an_endpoint_is_evaluated_again_as_its_candidate_grows_or_its_window_moves_on() {
        let hour = Duration::from_secs(3600);
        let minute_ns = 60_000_000_000;
        let last = RegressionCheck {
            checked_unix_ns: 100 * minute_ns,
            candidate_requests: 80,
        };
        assert!(due(None, 50, 100 * minute_ns, hour), "never evaluated");
        assert!(!due(Some(&last), 80, 101 * minute_ns, hour));
        assert!(!due(Some(&last), 99, 101 * minute_ns, hour));
        assert!(
            due(Some(&last), 100, 101 * minute_ns, hour),
            "a quarter more"
        );
        assert!(
            due(Some(&last), 80, 115 * minute_ns, hour),
            "a quarter hour on"
        );
    }
}
