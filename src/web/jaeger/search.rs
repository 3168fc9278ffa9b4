//! Trace search and lookup for the Jaeger API: requests found through the store's
//! (endpoint, start) index, newest first across the service's endpoints, a few at a time; their
//! traces read whole in batches (a stored block is decoded once per batch however many of the
//! batch's traces it holds), checked and converted.
//!
//! Invariant: bounded work: a search stops at `limit` matches, or once it has read
//! [`CANDIDATES`] traces, [`BLOCK_BYTES`] of stored blocks or spent [`TIME`], and then answers
//! with what matched and a warning saying where it stopped; never a scan of every stored request.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use collector::model::{Event, Span, TraceId};

use super::model::{self, TraceJson};
use super::params::Search;
use super::verdict;
use crate::analysis::AnalysisConfig;
use crate::read::EndpointIndex;
use crate::store::{RequestRow, Store, StoreError, Window};

/// Traces one search reads at most. Tags are not indexed, so a tag search reads each
/// candidate whole; this bounds it to a few hundred traces.
pub const CANDIDATES: usize = 500;

/// Bytes of stored (compressed) blocks one search reads at most: traces of thousands of spans
/// reach it long before [`CANDIDATES`].
pub const BLOCK_BYTES: u64 = 32 * 1024 * 1024;

/// Time one search spends reading traces at most, so that a loaded machine answers late
/// rather than not at all; lowered to half the `[reads]` timeout where that is shorter, so
/// that a cut search answers before the timeout does.
pub const TIME: Duration = Duration::from_secs(3);

/// Request rows read from one endpoint at a time: most searches stop within the first.
const ROWS_PER_READ: usize = 32;

/// Traces read and checked together: Jaeger UI's and Grafana's default limit, so a search
/// without tags reads one batch.
const TRACES_PER_READ: usize = 20;

/// Tags of the verdict start so; a search for one needs the analysis before the match.
const VERDICT_PREFIX: &str = "bottleneck.";

/// What a search found, and why it stopped before `limit` if a bound stopped it.
#[derive(Debug)]
pub struct Found {
    /// The matching traces, newest request first.
    pub traces: Vec<TraceJson>,
    /// Set when a bound stopped the search while older candidates were left unread.
    pub cut: Option<String>,
}

/// One trace in Jaeger's model, with the verdict's tags; `None` if unknown.
pub async fn trace(
    store: &Store,
    trace_id: TraceId,
    config: &AnalysisConfig,
) -> Result<Option<TraceJson>, StoreError> {
    let Some((spans, events)) = store.trace_with_events(trace_id).await? else {
        return Ok(None);
    };
    let config = config.clone();
    // A trace of ten thousand spans takes a while to analyse and convert: off the runtime.
    tokio::task::spawn_blocking(move || converted(trace_id, &spans, &events, &config, None))
        .await
        .map_err(|err| StoreError::Corrupt(format!("trace conversion failed: {err}")))
}

/// The trace in Jaeger's model, or `None` when `wanted` is given and no span of its service
/// carries every tag of it. The analysis runs first only when a wanted tag is the verdict's;
/// otherwise only for a match, as most candidates of a tag search are not one.
fn converted(
    trace_id: TraceId,
    spans: &[Span],
    events: &[Event],
    config: &AnalysisConfig,
    wanted: Option<(&str, &BTreeMap<String, String>)>,
) -> Option<TraceJson> {
    if let Some((service, tags)) = wanted
        && !tags.keys().any(|key| key.starts_with(VERDICT_PREFIX))
        && !model::trace(trace_id, spans, events, &HashMap::new()).matches(service, tags)
    {
        return None;
    }
    let verdict = verdict::tags(spans, config);
    let json = model::trace(trace_id, spans, events, &verdict);
    match wanted {
        Some((service, tags)) if !json.matches(service, tags) => None,
        _ => Some(json),
    }
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

/// The newest traces with a request matching `search`, newest first, within the bounds and
/// `time` (at most [`TIME`]).
pub async fn find(
    store: &Store,
    search: &Search,
    config: &AnalysisConfig,
    time: Duration,
) -> Result<Found, StoreError> {
    let index = EndpointIndex::load(store).await?;
    let endpoint_ids = index.ids(Some(&search.service), search.operation.as_deref());
    let mut candidates = Candidates::new(store, search, endpoint_ids);
    let wanted = (!search.tags.is_empty()).then(|| (search.service.clone(), search.tags.clone()));
    let started = Instant::now();
    let (mut read, mut block_bytes) = (0, 0);
    let mut traces = Vec::new();
    let mut bound = None;
    while traces.len() < search.limit {
        bound = if read >= CANDIDATES.max(search.limit) {
            Some(format!("{read} candidate traces"))
        } else if block_bytes >= BLOCK_BYTES {
            Some(format!("{} MiB of stored spans", block_bytes >> 20))
        } else if started.elapsed() >= time {
            Some(format!("{} ms", time.as_millis()))
        } else {
            None
        };
        if bound.is_some() {
            break;
        }
        let batch = candidates.next(TRACES_PER_READ).await?;
        if batch.is_empty() {
            break;
        }
        read += batch.len();
        let found = store.traces_with_events(&batch).await?;
        block_bytes += found.block_bytes;
        let room = search.limit - traces.len();
        let (config, wanted) = (config.clone(), wanted.clone());
        // A trace removed by retention since its request was read is skipped.
        let matched = tokio::task::spawn_blocking(move || {
            let mut found = found.traces;
            batch
                .into_iter()
                .filter_map(|trace_id| {
                    let (spans, events) = found.remove(&trace_id)?;
                    let wanted = wanted
                        .as_ref()
                        .map(|(service, tags)| (service.as_str(), tags));
                    converted(trace_id, &spans, &events, &config, wanted)
                })
                .take(room)
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|err| StoreError::Corrupt(format!("trace conversion failed: {err}")))?;
        traces.extend(matched);
    }
    let cut = match bound {
        Some(bound) if !candidates.is_exhausted().await? => Some(format!(
            "search stopped after reading {bound}, its bound: {} of the traces read matched, \
             older ones were not searched; narrow the time range, operation or durations",
            traces.len()
        )),
        _ => None,
    };
    Ok(Found { traces, cut })
}

/// The traces of a search's requests, newest request first: a merge of each endpoint's newest
/// requests, read [`ROWS_PER_READ`] at a time backwards along the (endpoint, start) index.
struct Candidates<'a> {
    store: &'a Store,
    search: &'a Search,
    endpoints: Vec<EndpointCursor>,
    seen: HashSet<TraceId>,
}

/// Where the reading of one endpoint's requests stands.
struct EndpointCursor {
    endpoint_id: i64,
    /// Exclusive end of the requests not read yet: the oldest start read so far. Requests of
    /// the endpoint that started in the same nanosecond as a page's last are skipped.
    before_unix_ns: u64,
    rows: VecDeque<RequestRow>,
    done: bool,
}

impl<'a> Candidates<'a> {
    fn new(store: &'a Store, search: &'a Search, endpoint_ids: Vec<i64>) -> Self {
        let endpoints = endpoint_ids
            .into_iter()
            .map(|endpoint_id| EndpointCursor {
                endpoint_id,
                before_unix_ns: search.window.to_unix_ns,
                rows: VecDeque::new(),
                done: false,
            })
            .collect();
        Self {
            store,
            search,
            endpoints,
            seen: HashSet::new(),
        }
    }

    /// Reads the next requests of every endpoint whose read ones were all taken.
    async fn fill(&mut self) -> Result<(), StoreError> {
        for cursor in self.endpoints.iter_mut() {
            if !cursor.rows.is_empty() || cursor.done {
                continue;
            }
            let window = Window {
                from_unix_ns: self.search.window.from_unix_ns,
                to_unix_ns: cursor.before_unix_ns,
            };
            let rows = self
                .store
                .newest_requests(
                    window,
                    cursor.endpoint_id,
                    (self.search.min_duration_ns, self.search.max_duration_ns),
                    ROWS_PER_READ as i64,
                )
                .await?;
            cursor.done = rows.len() < ROWS_PER_READ;
            if let Some(oldest) = rows.last() {
                cursor.before_unix_ns = oldest.start_unix_ns;
            }
            cursor.rows.extend(rows);
        }
        Ok(())
    }

    /// The next `n` traces not taken before, fewer when the requests run out.
    async fn next(&mut self, n: usize) -> Result<Vec<TraceId>, StoreError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            self.fill().await?;
            let Some(newest) = self
                .endpoints
                .iter_mut()
                .filter_map(|cursor| Some((cursor.rows.front()?.start_unix_ns, cursor)))
                .max_by_key(|(start, _)| *start)
                .map(|(_, cursor)| cursor)
            else {
                break;
            };
            let row = newest.rows.pop_front().expect("a front row");
            if self.seen.insert(row.trace_id) {
                out.push(row.trace_id);
            }
        }
        Ok(out)
    }

    /// Whether every request was taken.
    async fn is_exhausted(&mut self) -> Result<bool, StoreError> {
        self.fill().await?;
        Ok(self.endpoints.iter().all(|cursor| cursor.rows.is_empty()))
    }
}
