//! The regression finder: a background task that notices a service's new `service.version` and,
//! once an endpoint has enough requests in both that version and the one before it, compares
//! the two and raises a regression event when p50 or p95 got slower beyond the thresholds.
//!
//! Versions are ordered by the first minute they were seen; each version is compared with the
//! one first seen before it. Every (endpoint, baseline, candidate) is evaluated exactly once: the
//! evaluation is recorded in the same transaction as the events it raised, so a restart neither
//! repeats nor loses one. Events are stored and served at `/api/v1/regressions`; senders (alert
//! webhooks) page through them by id with [`Store::regressions`].
//!
//! Invariant: reads rollups and writes only its own tables (`regression_checks`,
//! `regressions`); it never touches requests or rollups.

pub mod significance;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::analysis::aggregate::{Rollup, format_ms};
use crate::analysis::compare::{self, Comparison, Regression};
use crate::config::RegressionConfig;
use crate::store::{
    LeaderRole, RegressionRecord, Store, StoreError, VersionTraffic, Window, minute_of,
};

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

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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

/// Consecutive version pairs of each service, oldest first: (service, baseline, candidate).
fn version_pairs(traffic: Vec<VersionTraffic>) -> Vec<(String, VersionTraffic, VersionTraffic)> {
    let mut by_service: BTreeMap<String, Vec<VersionTraffic>> = BTreeMap::new();
    for version in traffic {
        by_service
            .entry(version.service.clone())
            .or_default()
            .push(version);
    }
    let mut pairs = Vec::new();
    for (service, mut versions) in by_service {
        versions.sort_by(|a, b| {
            a.first_minute
                .cmp(&b.first_minute)
                .then_with(|| a.version.cmp(&b.version))
        });
        for pair in versions.windows(2) {
            pairs.push((service.clone(), pair[0].clone(), pair[1].clone()));
        }
    }
    pairs
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

/// The sentence of an event: which quantile moved, then what explains it.
fn event_summary(
    endpoint: &str,
    candidate: &str,
    found: &Regression,
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
        "{} of {endpoint} went from {} to {}{change} with {candidate}. {}",
        found.metric.as_str(),
        format_ms(found.baseline_ns),
        format_ms(found.candidate_ns),
        comparison.summary
    )
}

/// One pass: evaluates every endpoint of every version pair that has enough requests and has
/// not been evaluated yet. Returns the events raised.
pub async fn find(
    store: &Store,
    config: &RegressionConfig,
    now_unix_ns: u64,
) -> Result<Vec<RegressionRecord>, StoreError> {
    let lookback_ns = u64::try_from(config.lookback.as_nanos()).unwrap_or(u64::MAX);
    let window = Window {
        from_unix_ns: now_unix_ns.saturating_sub(lookback_ns),
        // Up to the end of the current minute: the rollup of the minute in progress counts.
        to_unix_ns: now_unix_ns + Duration::from_secs(60).as_nanos() as u64,
    };
    let traffic = store
        .version_traffic(minute_of(window.from_unix_ns))
        .await?;
    let endpoints = store.endpoints().await?;
    let mut raised = Vec::new();
    for (service, baseline, candidate) in version_pairs(traffic) {
        if baseline.requests < config.min_requests || candidate.requests < config.min_requests {
            continue;
        }
        let ids: Vec<i64> = endpoints
            .iter()
            .filter(|e| e.service == service)
            .map(|e| e.id)
            .collect();
        let checked = store
            .regression_checked(&ids, &baseline.version, &candidate.version)
            .await?;
        let ids: Vec<i64> = ids.into_iter().filter(|id| !checked.contains(id)).collect();
        if ids.is_empty() {
            continue;
        }
        let counts = |rollups: &HashMap<i64, Rollup>, id: i64| {
            rollups.get(&id).map_or(0, |rollup| rollup.requests)
        };
        let before = merged(
            store
                .version_rollups(window, Some(&ids), &baseline.version)
                .await?,
        );
        let after = merged(
            store
                .version_rollups(window, Some(&ids), &candidate.version)
                .await?,
        );
        let ready: Vec<i64> = ids
            .into_iter()
            .filter(|id| {
                counts(&before, *id) >= config.min_requests
                    && counts(&after, *id) >= config.min_requests
            })
            .collect();
        if ready.is_empty() {
            continue;
        }
        let with_details = |version| store.merged_rollups(window, Some(&ready), Some(version));
        let before = per_endpoint(with_details(&baseline.version).await?);
        let after = per_endpoint(with_details(&candidate.version).await?);
        let mut found = Vec::new();
        for id in &ready {
            let (Some(old), Some(new), Some(endpoint)) = (
                before.get(id),
                after.get(id),
                endpoints.iter().find(|e| e.id == *id),
            ) else {
                continue;
            };
            let Some(comparison) =
                compare::compare(old, new, &endpoint.endpoint, &candidate.version)
            else {
                continue;
            };
            let Some(regression) = compare::regression(&comparison, &config.thresholds) else {
                continue;
            };
            found.push(RegressionRecord {
                id: 0,
                detected_unix_ns: now_unix_ns,
                endpoint_id: *id,
                service: service.clone(),
                endpoint: endpoint.endpoint.clone(),
                baseline: baseline.version.clone(),
                candidate: candidate.version.clone(),
                metric: regression.metric.as_str().to_owned(),
                baseline_ns: regression.baseline_ns as u64,
                candidate_ns: regression.candidate_ns as u64,
                baseline_requests: old.requests,
                candidate_requests: new.requests,
                mean_delta_ns: comparison.mean_delta_ns() as i64,
                mean_delta_ci_ns: comparison
                    .mean_delta_ci
                    .map(|ci| (ci.low_ns as i64, ci.high_ns as i64)),
                summary: event_summary(
                    &endpoint.endpoint,
                    &candidate.version,
                    &regression,
                    &comparison,
                ),
            });
        }
        store
            .record_regression_checks(
                &ready,
                &baseline.version,
                &candidate.version,
                now_unix_ns,
                &found,
            )
            .await?;
        info!(
            service,
            baseline = %baseline.version,
            candidate = %candidate.version,
            endpoints = ready.len(),
            regressions = found.len(),
            "versions compared"
        );
        for record in &found {
            RegressionDetected { record }.emit();
        }
        raised.extend(found);
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(service: &str, version: &str, first_minute: i64) -> VersionTraffic {
        VersionTraffic {
            service: service.into(),
            version: version.into(),
            first_minute,
            requests: 100,
        }
    }

    #[test]
    fn each_version_is_compared_with_the_one_seen_before_it() {
        let pairs = version_pairs(vec![
            traffic("auth", "1.2", 30),
            traffic("auth", "1.0", 10),
            traffic("idp", "7", 5),
            traffic("auth", "1.1", 20),
        ]);
        let names: Vec<(String, String, String)> = pairs
            .into_iter()
            .map(|(s, b, c)| (s, b.version, c.version))
            .collect();
        assert_eq!(
            names,
            vec![
                ("auth".into(), "1.0".into(), "1.1".into()),
                ("auth".into(), "1.1".into(), "1.2".into()),
            ]
        );
    }
}
