//! The analyzer's interned ids: the store's endpoints and resources, cached, and the caps that
//! bound them ([`Caps`]). Past `max_services`, new services count as [`OTHER_SERVICE`]; past
//! `max_endpoints_per_service`, a service's new endpoints as [`OTHER_ENDPOINT`]; past
//! `max_versions_per_service`, its new versions as [`OTHER_VERSION`]; past `max_resources`,
//! requests of new processes get resource id 0. Each fold is counted ([`Folded`]), as are the
//! operation names the store folds per rollup row past `max_operations_per_rollup`.
//!
//! Retention evicts the endpoints and resources nothing refers to any more, and removes old
//! rollups (with them the versions only they held), and then moves the store's eviction
//! generation. When a lookup meets a cap, or a while after the generation was
//! last read, it is read again, and if it moved the cache is reloaded: the caps count live rows,
//! so a slot retention freed goes to the next new endpoint or process. An id evicted while this
//! cache still holds it is harmless: each commit carries the names behind the ids handed out
//! for it ([`Interned::take_names`]), and the store interns a name again if its id is gone
//! (`store/eviction.rs`).
//!
//! Invariant: reads the generation at most once per commit, and never hands out an id the
//! store did not return.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::store::{InternedNames, OTHER_ENDPOINT, Store, StoreError, canonical_attributes};

/// The cache's maps hash with foldhash rather than SipHash: every request looks its service,
/// endpoint and version up in them several times. foldhash is seeded per process, and the caps
/// bound how many names a sender can add.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<T> = HashSet<T, foldhash::fast::RandomState>;

/// The service new services count as past `max_services`.
pub const OTHER_SERVICE: &str = "other";

/// The version new versions of a service count as past `max_versions_per_service`.
pub const OTHER_VERSION: &str = "other";

/// Services kept by default: far more than one deployment runs, while a sender minting a
/// service name per process or per request stays bounded.
pub const DEFAULT_MAX_SERVICES: usize = 1_000;

/// Versions kept per service by default: a deployment every hour of the 90 days of rollups
/// kept by default is about 2,000; a version per build of every branch is many more.
pub const DEFAULT_MAX_VERSIONS_PER_SERVICE: usize = 2_000;

/// Resources kept by default. A resource is one process's attribute set, and ordinary churn
/// (a pod per deployment and restart) stays interned until its requests expire, a week by
/// default: 100,000 is 14,000 new processes a day, while a resource attribute carrying a request
/// id stays bounded. Each costs one row and, in the analyzer's cache, its attribute text.
pub const DEFAULT_MAX_RESOURCES: usize = 100_000;

/// The caps on what the analysis interns: each bounds the rows and the cache of one kind of name
/// a sender controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Distinct endpoints per service, `other` aside.
    pub endpoints_per_service: usize,
    /// Distinct services, `other` aside.
    pub services: usize,
    /// Distinct versions per service, `other` aside.
    pub versions_per_service: usize,
    /// Distinct resources.
    pub resources: usize,
    /// Distinct operation names per rollup row, `other` aside (applied by the store:
    /// `store::operation_cap`).
    pub operations_per_rollup: usize,
}

/// Requests whose name was folded into `other` (or, for a resource, stored without it), by
/// kind, for `/metrics`.
#[derive(Debug, Default)]
pub struct Folded {
    /// Requests of a service past `max_services`.
    pub services: AtomicU64,
    /// Requests of a version past `max_versions_per_service`.
    pub versions: AtomicU64,
    /// Requests of a process past `max_resources`.
    pub resources: AtomicU64,
    /// Operation names counted under `other` of a rollup row past `max_operations_per_rollup`,
    /// once per row written.
    pub operations: AtomicU64,
}

/// How long the cache goes without reading the eviction generation while no cap is met: an
/// evicted id it holds costs each commit using it a lookup of its name in the store, so this
/// bounds how long that goes on after a retention pass.
const GENERATION_READ_INTERVAL: Duration = Duration::from_secs(60);

/// Interned endpoint ids by service, then endpoint: looked up by `&str` on every request, so
/// without allocating a key.
#[derive(Debug, Default)]
struct EndpointIds(Map<String, Map<String, i64>>);

impl EndpointIds {
    fn get(&self, service: &str, endpoint: &str) -> Option<i64> {
        self.0.get(service)?.get(endpoint).copied()
    }

    fn insert(&mut self, service: &str, endpoint: &str, id: i64) {
        self.0
            .entry(service.to_owned())
            .or_default()
            .insert(endpoint.to_owned(), id);
    }
}

impl Folded {
    /// Renders `bottleneck_cardinality_folded_total`, one series per kind.
    pub fn write_prometheus(&self, out: &mut String) {
        let name = "bottleneck_cardinality_folded_total";
        out.push_str(&format!(
            "# HELP {name} Requests counted under `other` (a resource: stored without it), or operation names of a rollup row, because a cap was met.\n# TYPE {name} counter\n"
        ));
        for (kind, count) in [
            ("service", &self.services),
            ("version", &self.versions),
            ("resource", &self.resources),
            ("operation", &self.operations),
        ] {
            out.push_str(&format!(
                "{name}{{kind=\"{kind}\"}} {}\n",
                count.load(Relaxed)
            ));
        }
    }
}

/// The ids as the store held them, and how many endpoints each service has besides `other`.
#[derive(Debug, Default)]
struct Cache {
    endpoint_ids: EndpointIds,
    endpoints_per_service: Map<String, usize>,
    /// By canonical attributes.
    resource_ids: Map<String, i64>,
    /// The versions of each service that rollups hold.
    versions: Map<String, Set<String>>,
}

impl Cache {
    async fn read(store: &Store) -> Result<Cache, StoreError> {
        let mut cache = Cache::default();
        for endpoint in store.endpoints().await? {
            if endpoint.endpoint != OTHER_ENDPOINT {
                *cache
                    .endpoints_per_service
                    .entry(endpoint.service.clone())
                    .or_default() += 1;
            }
            cache
                .endpoint_ids
                .insert(&endpoint.service, &endpoint.endpoint, endpoint.id);
        }
        cache.resource_ids = store
            .resources()
            .await?
            .into_iter()
            .map(|resource| (canonical_attributes(&resource.attributes), resource.id))
            .collect();
        cache.versions = read_versions(store).await?;
        Ok(cache)
    }

    /// Services with endpoints, `other` aside.
    fn services(&self) -> usize {
        let other = self.endpoint_ids.0.contains_key(OTHER_SERVICE);
        self.endpoint_ids.0.len() - usize::from(other)
    }
}

async fn read_versions(store: &Store) -> Result<Map<String, Set<String>>, StoreError> {
    let mut versions: Map<String, Set<String>> = Map::default();
    for (service, version) in store.service_versions().await? {
        versions.entry(service).or_default().insert(version);
    }
    Ok(versions)
}

/// The interned ids, the caps, and the names handed out for the commit being built.
#[derive(Debug)]
pub struct Interned {
    caps: Caps,
    cache: Cache,
    /// The store's eviction generation when the cache was read.
    generation: i64,
    /// When the generation was last read.
    generation_read_at: Instant,
    /// Whether it was read for the commit being built.
    generation_read_for_commit: bool,
    /// The names behind the ids handed out for the commit being built.
    names: InternedNames,
}

impl Interned {
    /// Reads the interned endpoints and resources; fails only if the store cannot be read.
    pub async fn load(store: &Store, caps: Caps) -> Result<Self, StoreError> {
        // The generation first: an eviction between the two reads makes the next read reload.
        let generation = store.eviction_generation().await?;
        Ok(Interned {
            caps,
            cache: Cache::read(store).await?,
            generation,
            generation_read_at: Instant::now(),
            generation_read_for_commit: false,
            names: InternedNames::default(),
        })
    }

    /// The names behind the ids handed out since the last call, for the commit that writes
    /// under them; the next lookups belong to the next commit.
    pub fn take_names(&mut self) -> InternedNames {
        self.generation_read_for_commit = false;
        std::mem::take(&mut self.names)
    }

    /// The service a request of `service` was counted under: its own, or `other` past the cap.
    pub fn known_service<'a>(&self, service: &'a str) -> &'a str {
        if self.cache.endpoint_ids.0.contains_key(service) {
            service
        } else {
            OTHER_SERVICE
        }
    }

    /// The service a new request of `service` is counted under: its own, or `other` once the
    /// cap is met (after reading the store again, in case retention freed a place).
    pub async fn service<'a>(
        &mut self,
        store: &Store,
        service: &'a str,
    ) -> Result<&'a str, StoreError> {
        self.reload_when_due(store).await?;
        if self.cache.endpoint_ids.0.contains_key(service)
            || self.cache.services() < self.caps.services
        {
            return Ok(service);
        }
        if self.reload_if_evicted(store).await? && self.cache.services() < self.caps.services {
            return Ok(service);
        }
        Ok(OTHER_SERVICE)
    }

    /// The version a request of (counted) `service` was counted under, without changing what
    /// is known: its own when known or below the cap, else `other`.
    pub fn known_version<'a>(&self, service: &str, version: &'a str) -> &'a str {
        let Some(known) = self.cache.versions.get(service) else {
            return version;
        };
        let counted = known.len() - usize::from(known.contains(OTHER_VERSION));
        if known.contains(version) || counted < self.caps.versions_per_service {
            version
        } else {
            OTHER_VERSION
        }
    }

    /// The version a new request of (counted) `service` is counted under: its own, or `other`
    /// once the service has `max_versions_per_service` versions in the rollups.
    pub async fn version<'a>(
        &mut self,
        store: &Store,
        service: &str,
        version: &'a str,
    ) -> Result<&'a str, StoreError> {
        self.reload_when_due(store).await?;
        if self.known_version(service, version) == OTHER_VERSION {
            self.reload_if_evicted(store).await?;
        }
        let counted = self.known_version(service, version);
        if counted != OTHER_VERSION {
            // Looked up before inserting: this runs for every request, and a known version
            // (nearly always) then costs no allocation.
            match self.cache.versions.get_mut(service) {
                Some(known) if known.contains(version) => {}
                Some(known) => {
                    known.insert(version.to_owned());
                }
                None => {
                    let known = Set::from_iter([version.to_owned()]);
                    self.cache.versions.insert(service.to_owned(), known);
                }
            }
        }
        Ok(counted)
    }

    /// The name a request of `endpoint` is counted under: its own, or `other` past the cap.
    pub fn capped_name<'a>(&self, service: &str, endpoint: &'a str) -> &'a str {
        if self.cache.endpoint_ids.get(service, endpoint).is_some() {
            endpoint
        } else {
            OTHER_ENDPOINT
        }
    }

    /// The id an endpoint was counted under: its own, or `other` past the cap.
    pub fn known_endpoint_id(&self, service: &str, endpoint: &str) -> Option<i64> {
        self.cache
            .endpoint_ids
            .get(service, endpoint)
            .or_else(|| self.cache.endpoint_ids.get(service, OTHER_ENDPOINT))
    }

    /// The id a new request of (service, endpoint) is counted under, interning it if new; the
    /// id of `other` once the service is at its cap.
    pub async fn endpoint_id(
        &mut self,
        store: &Store,
        service: &str,
        endpoint: &str,
    ) -> Result<i64, StoreError> {
        self.reload_when_due(store).await?;
        if let Some(id) = self.cache.endpoint_ids.get(service, endpoint) {
            self.note_endpoint(id, service, endpoint);
            return Ok(id);
        }
        let mut name = self.admitted_name(service, endpoint);
        if name == OTHER_ENDPOINT && self.reload_if_evicted(store).await? {
            name = self.admitted_name(service, endpoint);
        }
        if let Some(id) = self.cache.endpoint_ids.get(service, name) {
            self.note_endpoint(id, service, name);
            return Ok(id);
        }
        if name == OTHER_ENDPOINT {
            warn!(
                service,
                cap = self.caps.endpoints_per_service,
                "endpoint cap reached; further endpoints count as `other`"
            );
        } else {
            *self
                .cache
                .endpoints_per_service
                .entry(service.to_owned())
                .or_default() += 1;
        }
        let id = store.intern_endpoint(service, name).await?;
        self.cache.endpoint_ids.insert(service, name, id);
        self.note_endpoint(id, service, name);
        Ok(id)
    }

    /// `endpoint` if it is interned or its service is below the cap, else `other`.
    fn admitted_name<'a>(&self, service: &str, endpoint: &'a str) -> &'a str {
        let below_cap = self
            .cache
            .endpoints_per_service
            .get(service)
            .is_none_or(|count| *count < self.caps.endpoints_per_service);
        if below_cap || self.cache.endpoint_ids.get(service, endpoint).is_some() {
            endpoint
        } else {
            OTHER_ENDPOINT
        }
    }

    fn note_endpoint(&mut self, id: i64, service: &str, endpoint: &str) {
        self.names
            .endpoints
            .entry(id)
            .or_insert_with(|| (service.to_owned(), endpoint.to_owned()));
    }

    /// The id of a request's resource (given in canonical form), interning it if new; 0 for
    /// none, and past `max_resources`.
    pub async fn resource_id(
        &mut self,
        store: &Store,
        service: &str,
        canonical: &str,
    ) -> Result<i64, StoreError> {
        if canonical.is_empty() {
            return Ok(0);
        }
        self.reload_when_due(store).await?;
        if !self.cache.resource_ids.contains_key(canonical)
            && self.cache.resource_ids.len() >= self.caps.resources
        {
            self.reload_if_evicted(store).await?;
        }
        let id = match self.cache.resource_ids.get(canonical) {
            Some(id) => *id,
            None if self.cache.resource_ids.len() >= self.caps.resources => return Ok(0),
            None => {
                let id = store.intern_resource(service, canonical).await?;
                self.cache.resource_ids.insert(canonical.to_owned(), id);
                id
            }
        };
        self.names
            .resources
            .entry(id)
            .or_insert_with(|| (service.to_owned(), canonical.to_owned()));
        Ok(id)
    }

    async fn reload_when_due(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.generation_read_at.elapsed() >= GENERATION_READ_INTERVAL {
            self.reload_if_evicted(store).await?;
        }
        Ok(())
    }

    /// Reads the store's eviction generation, once per commit, and reloads the cache if it
    /// moved; says whether it did.
    async fn reload_if_evicted(&mut self, store: &Store) -> Result<bool, StoreError> {
        if self.generation_read_for_commit {
            return Ok(false);
        }
        self.generation_read_for_commit = true;
        self.generation_read_at = Instant::now();
        let generation = store.eviction_generation().await?;
        if generation == self.generation {
            return Ok(false);
        }
        self.cache = Cache::read(store).await?;
        self.generation = generation;
        info!(
            endpoints = self.cache.endpoints_per_service.values().sum::<usize>(),
            resources = self.cache.resource_ids.len(),
            "retention evicted interned ids; the analyzer's cache was read again"
        );
        Ok(true)
    }
}
