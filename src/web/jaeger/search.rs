//! Trace search and lookup for the Jaeger API: requests found through the store's
//! (endpoint, start) index, newest first, each trace read whole and converted.
//!
//! Invariant: bounded work: at most `limit` traces are read, or [`TAG_CANDIDATES`] when tags
//! must be checked on the spans themselves; never a scan of every stored request.

use std::collections::{BTreeMap, HashMap, HashSet};

use collector::model::TraceId;

use super::model::{self, TraceJson};
use super::params::Search;
use super::verdict;
use crate::analysis::AnalysisConfig;
use crate::store::{RequestRow, Store, StoreError};
use crate::web::query::EndpointIndex;

/// Traces whose spans a tag search checks at most: the newest requests matching the other
/// filters. Tags are not indexed, so each candidate is read whole; this bounds one search to a
/// few hundred trace reads.
pub const TAG_CANDIDATES: usize = 500;

/// Tags of the verdict start so; a search for one needs the analysis before the match.
const VERDICT_PREFIX: &str = "bottleneck.";

/// One trace in Jaeger's model, with the verdict's tags; `None` if unknown.
pub async fn trace(
    store: &Store,
    trace_id: TraceId,
    config: &AnalysisConfig,
) -> Result<Option<TraceJson>, StoreError> {
    matching_trace(store, trace_id, config, None).await
}

/// [`trace`], or `None` as well when no span of `service` carries every tag of `wanted`. The
/// analysis runs first only when a wanted tag is the verdict's; otherwise only for a match, as
/// most candidates of a tag search are not one.
async fn matching_trace(
    store: &Store,
    trace_id: TraceId,
    config: &AnalysisConfig,
    wanted: Option<(&str, &BTreeMap<String, String>)>,
) -> Result<Option<TraceJson>, StoreError> {
    let Some((spans, events)) = store.trace_with_events(trace_id).await? else {
        return Ok(None);
    };
    let config = config.clone();
    let wanted = wanted.map(|(service, tags)| (service.to_owned(), tags.clone()));
    // A trace of ten thousand spans takes a while to analyse and convert: off the runtime.
    tokio::task::spawn_blocking(move || {
        if let Some((service, tags)) = &wanted
            && !tags.keys().any(|key| key.starts_with(VERDICT_PREFIX))
            && !model::trace(trace_id, &spans, &events, &HashMap::new()).matches(service, tags)
        {
            return None;
        }
        let verdict = verdict::tags(&spans, &config);
        let json = model::trace(trace_id, &spans, &events, &verdict);
        match &wanted {
            Some((service, tags)) if !json.matches(service, tags) => None,
            _ => Some(json),
        }
    })
    .await
    .map_err(|err| StoreError::Corrupt(format!("trace conversion failed: {err}")))
}

/// The service names Bottleneck has seen requests of, sorted.
pub async fn services(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> = store
        .endpoints()
        .await?
        .into_iter()
        .map(|e| e.service)
        .collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// The endpoints of a service, sorted: the operations a search can select.
pub async fn operations(store: &Store, service: &str) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> = store
        .endpoints()
        .await?
        .into_iter()
        .filter(|e| e.service == service)
        .map(|e| e.endpoint)
        .collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// The newest traces with a request matching `search`, newest first.
pub async fn find(
    store: &Store,
    search: &Search,
    config: &AnalysisConfig,
) -> Result<Vec<TraceJson>, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let ids = index.ids(Some(&search.service), search.operation.as_deref());
    let wanted = if search.tags.is_empty() {
        search.limit
    } else {
        TAG_CANDIDATES.max(search.limit)
    };
    let per_endpoint = i64::try_from(wanted).unwrap_or(i64::MAX);
    let mut rows: Vec<RequestRow> = Vec::new();
    for id in ids {
        rows.extend(
            store
                .newest_requests(
                    search.window,
                    id,
                    (search.min_duration_ns, search.max_duration_ns),
                    per_endpoint,
                )
                .await?,
        );
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.start_unix_ns));
    let mut seen = HashSet::new();
    let candidates: Vec<TraceId> = rows
        .into_iter()
        .map(|row| row.trace_id)
        .filter(|trace_id| seen.insert(*trace_id))
        .take(wanted)
        .collect();
    let mut out = Vec::new();
    for trace_id in candidates {
        if out.len() == search.limit {
            break;
        }
        // A trace removed by retention since its request was read is skipped.
        let wanted = (!search.tags.is_empty()).then_some((search.service.as_str(), &search.tags));
        if let Some(json) = matching_trace(store, trace_id, config, wanted).await? {
            out.push(json);
        }
    }
    Ok(out)
}
