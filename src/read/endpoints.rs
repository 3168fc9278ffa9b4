//! Views of many endpoints at once: services with traffic, every endpoint's summary, and the
//! versions a service ran.
//!
//! Invariant: reads rollups only.

use std::collections::{BTreeMap, BTreeSet};

use super::EndpointIndex;
use super::rollup::merge_by;
use crate::analysis::aggregate::{self, EndpointStats};
use crate::store::{EndpointRef, Granularity, OTHER_ENDPOINT, Store, StoreError, Window};

/// One endpoint's figures over a window.
#[derive(Debug, Clone)]
pub struct EndpointSummary {
    /// The endpoint.
    pub endpoint: EndpointRef,
    /// Its figures.
    pub stats: EndpointStats,
    /// The window they cover, which gives the request rate.
    pub window: Window,
}

impl EndpointSummary {
    /// Requests per second over the window.
    pub fn rate_per_sec(&self) -> f64 {
        let seconds = (self.window.to_unix_ns - self.window.from_unix_ns) as f64 / 1e9;
        self.stats.requests as f64 / seconds.max(1e-9)
    }

    /// Time spent in the endpoint over the window: what the overview ranks by.
    pub fn total_ns(&self) -> f64 {
        self.stats.mean_ns * self.stats.requests as f64
    }

    /// Whether this is the endpoint that names past the cap fold into.
    pub fn folded(&self) -> bool {
        self.endpoint.endpoint == OTHER_ENDPOINT
    }
}

/// A service with traffic in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceTraffic {
    /// `service.name`.
    pub name: String,
    /// Endpoints with traffic.
    pub endpoints: u64,
    /// Requests.
    pub requests: u64,
}

/// The services with traffic, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Services {
    /// The oldest data the store holds.
    pub data_since_unix_ns: Option<u64>,
    /// By name.
    pub services: Vec<ServiceTraffic>,
}

/// Services with traffic in the window.
pub async fn services(store: &Store, window: Window) -> Result<Services, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let rollups = store.rollups(window, None).await?;
    let mut by_service: BTreeMap<String, (BTreeSet<i64>, u64)> = BTreeMap::new();
    for (key, rollup) in &rollups {
        let Some(endpoint) = index.get(key.endpoint_id) else {
            continue;
        };
        let entry = by_service.entry(endpoint.service.clone()).or_default();
        entry.0.insert(key.endpoint_id);
        entry.1 += rollup.requests;
    }
    Ok(Services {
        data_since_unix_ns: store.data_since().await?,
        services: by_service
            .into_iter()
            .map(|(name, (endpoints, requests))| ServiceTraffic {
                name,
                endpoints: endpoints.len() as u64,
                requests,
            })
            .collect(),
    })
}

/// Every endpoint with traffic, most total time first.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Most total time first.
    pub endpoints: Vec<EndpointSummary>,
    /// Services with an endpoint folded into `other`.
    pub capped_services: Vec<String>,
}

/// Every endpoint (of `service`, when given) with traffic in the window.
pub async fn endpoints(
    store: &Store,
    window: Window,
    service: Option<&str>,
) -> Result<Endpoints, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = service.map(|s| index.ids(Some(s), None));
    let rollups = store.merged_rollups(window, ids.as_deref(), None).await?;
    let merged = merge_by(rollups, |(endpoint_id, _)| *endpoint_id);
    let mut endpoints: Vec<EndpointSummary> = merged
        .iter()
        .filter_map(|(id, rollup)| {
            let endpoint = index.get(*id)?;
            Some(EndpointSummary {
                stats: aggregate::summarize(rollup, &endpoint.endpoint)?,
                endpoint: endpoint.clone(),
                window,
            })
        })
        .collect();
    endpoints.sort_by(|a, b| b.total_ns().total_cmp(&a.total_ns()));
    let mut capped_services: Vec<String> = endpoints
        .iter()
        .filter(|e| e.folded())
        .map(|e| e.endpoint.service.clone())
        .collect();
    capped_services.dedup();
    Ok(Endpoints {
        endpoints,
        capped_services,
    })
}

/// A `service.version` with traffic in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSeen {
    /// The version, empty when unknown.
    pub version: String,
    /// Requests.
    pub requests: u64,
    /// The first minute it had traffic.
    pub first_seen_unix_ns: u64,
    /// The last minute it had traffic.
    pub last_seen_unix_ns: u64,
}

/// The `service.version`s of a service (or one endpoint) with traffic in the window, first seen
/// first: what a comparison can select.
pub async fn versions(
    store: &Store,
    window: Window,
    service: &str,
    endpoint: Option<&str>,
) -> Result<Vec<VersionSeen>, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = index.ids(Some(service), endpoint);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // (requests, first minute, last minute) per version.
    let mut seen: BTreeMap<String, (u64, i64, i64)> = BTreeMap::new();
    for (key, rollup) in store.rollups(window, Some(&ids)).await? {
        let last_minute = match key.granularity {
            Granularity::Minute => key.minute,
            Granularity::Hour => key.minute + 59,
        };
        let entry = seen
            .entry(key.version)
            .or_insert((0, key.minute, last_minute));
        entry.0 += rollup.requests;
        entry.1 = entry.1.min(key.minute);
        entry.2 = entry.2.max(last_minute);
    }
    let mut versions: Vec<(String, (u64, i64, i64))> = seen
        .into_iter()
        .filter(|(_, (requests, _, _))| *requests > 0)
        .collect();
    versions.sort_by(|a, b| a.1.1.cmp(&b.1.1).then_with(|| a.0.cmp(&b.0)));
    let instant = |minute: i64| (minute.max(0) as u64) * 60 * 1_000_000_000;
    Ok(versions
        .into_iter()
        .map(|(version, (requests, first, last))| VersionSeen {
            version,
            requests,
            first_seen_unix_ns: instant(first),
            last_seen_unix_ns: instant(last),
        })
        .collect())
}
