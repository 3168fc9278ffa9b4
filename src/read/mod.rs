//! The read model: what the store holds, turned into typed views that the JSON API and the pages
//! both render. Views keep the analysis' own types (categories, finding kinds, comparisons),
//! typed ids and durations in nanoseconds; milliseconds, strings and rounding happen at the web
//! edge (`web::units`), so a page never shows a number the API does not give.
//!
//! Invariant: reads only; aggregates come from rollups, single requests from request rows and
//! stored spans. Knows no HTTP, JSON or HTML.

pub mod alerts;
pub mod compare;
pub mod endpoint;
pub mod endpoints;
pub mod regressions;
pub mod rollup;
pub mod trace;

use std::collections::HashMap;

use crate::store::{EndpointRef, Store, StoreError};

/// Endpoints by id, and the ids matching a service and endpoint filter.
pub struct EndpointIndex {
    by_id: HashMap<i64, EndpointRef>,
}

impl EndpointIndex {
    /// Reads the interned endpoints.
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            by_id: store
                .endpoints()
                .await?
                .into_iter()
                .map(|e| (e.id, e))
                .collect(),
        })
    }

    /// Ids of the endpoints of `service` (all when `None`) named `endpoint` (all when `None`).
    pub fn ids(&self, service: Option<&str>, endpoint: Option<&str>) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .by_id
            .values()
            .filter(|e| {
                service.is_none_or(|s| e.service == s) && endpoint.is_none_or(|n| e.endpoint == n)
            })
            .map(|e| e.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The endpoint with this id.
    pub fn get(&self, id: i64) -> Option<&EndpointRef> {
        self.by_id.get(&id)
    }
}
