//! The analyzer's interned ids: the store's endpoints and resources, cached, and the caps that
//! bound them. Past `max_endpoints_per_service`, a service's new endpoints count as
//! [`OTHER_ENDPOINT`]; past [`MAX_RESOURCES`], requests of new processes get resource id 0.
//!
//! Retention evicts the endpoints and resources nothing refers to any more and then moves the
//! store's eviction generation. When a lookup meets a cap, or a while after the generation was
//! last read, it is read again, and if it moved the cache is reloaded: the caps count live rows,
//! so a slot retention freed goes to the next new endpoint or process. An id evicted while this
//! cache still holds it is harmless: each commit carries the names behind the ids handed out
//! for it ([`Interned::take_names`]), and the store interns a name again if its id is gone
//! (`store/eviction.rs`).
//!
//! Invariant: reads the generation at most once per commit, and never hands out an id the
//! store did not return.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::store::{InternedNames, OTHER_ENDPOINT, Store, StoreError, canonical_attributes};

/// Distinct resources interned at most. A resource is one process's attribute set, so this is
/// thousands of deployments' worth of live processes (retention evicts the ones gone); past it
/// (e.g. a resource attribute carrying a request id), requests get resource id 0 and only
/// attribute selections miss them.
pub const MAX_RESOURCES: usize = 10_000;

/// How long the cache goes without reading the eviction generation while no cap is met: an
/// evicted id it holds costs each commit using it a lookup of its name in the store, so this
/// bounds how long that goes on after a retention pass.
const GENERATION_READ_INTERVAL: Duration = Duration::from_secs(60);

/// Interned endpoint ids by service, then endpoint: looked up by `&str` on every request, so
/// without allocating a key.
#[derive(Debug, Default)]
struct EndpointIds(HashMap<String, HashMap<String, i64>>);

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

/// The ids as the store held them, and how many endpoints each service has besides `other`.
#[derive(Debug, Default)]
struct Cache {
    endpoint_ids: EndpointIds,
    endpoints_per_service: HashMap<String, usize>,
    /// By canonical attributes.
    resource_ids: HashMap<String, i64>,
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
        Ok(cache)
    }
}

/// The interned ids, the caps, and the names handed out for the commit being built.
#[derive(Debug)]
pub struct Interned {
    max_endpoints_per_service: usize,
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
    pub async fn load(store: &Store, max_endpoints_per_service: usize) -> Result<Self, StoreError> {
        // The generation first: an eviction between the two reads makes the next read reload.
        let generation = store.eviction_generation().await?;
        Ok(Interned {
            max_endpoints_per_service,
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
                cap = self.max_endpoints_per_service,
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
            .is_none_or(|count| *count < self.max_endpoints_per_service);
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
    /// none, and past [`MAX_RESOURCES`].
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
            && self.cache.resource_ids.len() >= MAX_RESOURCES
        {
            self.reload_if_evicted(store).await?;
        }
        let id = match self.cache.resource_ids.get(canonical) {
            Some(id) => *id,
            None if self.cache.resource_ids.len() >= MAX_RESOURCES => return Ok(0),
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
