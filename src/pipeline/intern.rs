//! The analyzer's interned ids: the store's endpoints and resources, cached, and the caps that
//! bound them. Past `max_endpoints_per_service`, a service's new endpoints count as
//! [`OTHER_ENDPOINT`]; past [`MAX_RESOURCES`], requests of new processes get resource id 0.
//!
//! Invariant: never hands out an id the store did not return.

use std::collections::HashMap;

use tracing::warn;

use crate::store::{Store, StoreError, canonical_attributes};

/// The endpoint every endpoint past a service's cap is folded into.
pub const OTHER_ENDPOINT: &str = "other";

/// Distinct resources interned at most. A resource is one process's attribute set, so this is
/// thousands of deployments' worth; past it (e.g. a resource attribute carrying a request id),
/// requests get resource id 0 and only attribute selections miss them.
pub const MAX_RESOURCES: usize = 10_000;

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

/// The interned ids and the caps.
#[derive(Debug)]
pub struct Interned {
    max_endpoints_per_service: usize,
    cache: Cache,
}

impl Interned {
    /// Reads the interned endpoints and resources; fails only if the store cannot be read.
    pub async fn load(store: &Store, max_endpoints_per_service: usize) -> Result<Self, StoreError> {
        Ok(Interned {
            max_endpoints_per_service,
            cache: Cache::read(store).await?,
        })
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
        if let Some(id) = self.cache.endpoint_ids.get(service, endpoint) {
            return Ok(id);
        }
        let name = self.admitted_name(service, endpoint);
        if let Some(id) = self.cache.endpoint_ids.get(service, name) {
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
        if let Some(id) = self.cache.resource_ids.get(canonical) {
            return Ok(*id);
        }
        if self.cache.resource_ids.len() >= MAX_RESOURCES {
            return Ok(0);
        }
        let id = store.intern_resource(service, canonical).await?;
        self.cache.resource_ids.insert(canonical.to_owned(), id);
        Ok(id)
    }
}
