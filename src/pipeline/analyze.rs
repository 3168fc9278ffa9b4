//! The analysis, whichever store it runs on: takes due batches from a source (`due`), decodes
//! and analyses them (`work`), decides where each request is counted (its endpoint and
//! resource ids, interned and capped by `intern`; its start, clamped by `skew`), builds the
//! commit (`rows`) and hands it, completed as the source says, to the commit scheduler
//! (`scheduler`).
//!
//! A fresh trace (spans from held blocks) that was analysed before (late spans, or a replay
//! after a restart) is re-read whole from the store; its previous analysis is recomputed from
//! the blocks that analysis saw and taken back from the rollups as the new one is added, so a
//! request is never counted twice. Traces at hand (claimed) come whole, with what their previous
//! analysis saw.
//!
//! Rollups are not cached here: each commit carries changes (requests added, requests taken
//! back) that the store applies to the rows as stored, under their locks. That is what lets
//! several instances on one PostgreSQL database update the same rows.
//!
//! Invariant: only analyzers write requests and rollups, each trace is analysed by the one
//! instance holding its claim (or the single SQLite instance), and no lock is held across an
//! await.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collector::model::{Span, SpanId, TraceId};

use super::delay::DelayHistogram;
use super::due::{DueBatch, DueTraces};
use super::error::PipelineError;
use super::intern::{Caps, Folded, Interned};
use super::rows::{self, Counted, CountedAs};
use super::scheduler::CommitScheduler;
use super::work::{self, AnalysedTrace, Batch, Work};
use crate::analysis::{AnalysisConfig, RequestAnalysis};
use crate::histogram::LATENCY_BUCKETS;
use crate::store::{AnalysisCommit, RequestRow, Store, StoreError};

/// Counters of the analysis, for `/metrics`, plus per-endpoint figures since start.
#[derive(Debug, Default)]
pub struct AnalysisStats {
    /// Traces analysed.
    pub traces: AtomicU64,
    /// Requests analysed (re-analyses included).
    pub requests: AtomicU64,
    /// Traces re-analysed because spans arrived after their first analysis.
    pub reanalysed_traces: AtomicU64,
    /// Odd input worked around (orphans, skew, cycles, duplicate ids).
    pub anomalies: AtomicU64,
    /// Analysis commits that failed (their blocks are read back and analysed again).
    pub failed_commits: AtomicU64,
    /// Late arrivals of hot traces not analysed (see `store::hot_trace`): each a batch of blocks
    /// of a trace with more stored blocks than the cap, stored and served but not re-read.
    pub hot_trace_skips: AtomicU64,
    /// Requests whose service, version or resource was past its cap.
    pub folded: Folded,
    /// Requests that started more than `max_clock_skew` ahead of their analysis, counted at its
    /// time.
    pub clock_skew_clamped: AtomicU64,
    /// From each trace's spans committed to its analysis committed.
    pub delay: DelayHistogram,
    /// Per service, then endpoint: requests, errors, latency buckets and breakdown sums. Sorted,
    /// so that `/metrics` renders one service at a time in order, under the lock, copying none.
    pub endpoints: Mutex<BTreeMap<String, BTreeMap<String, EndpointCounters>>>,
}

/// Cumulative figures of one endpoint since the process started.
#[derive(Debug, Clone, Default)]
pub struct EndpointCounters {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Request counts per [`LATENCY_BUCKETS`] bucket, then +Inf.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Summed durations.
    pub duration_sum_ns: u64,
    /// Summed critical-path breakdown.
    pub breakdown_sum_ns: [u64; collector::category::Category::COUNT],
}

impl EndpointCounters {
    /// Saturates: a request may claim to last centuries, and an overflow here would panic with
    /// the counters' lock held and poison `/metrics` for good.
    fn record(&mut self, request: &RequestAnalysis) {
        self.requests = self.requests.saturating_add(1);
        self.errors = self.errors.saturating_add(u64::from(request.error));
        let secs = request.duration_ns as f64 / 1e9;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[bucket] = self.latency_buckets[bucket].saturating_add(1);
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(request.duration_ns);
        for (sum, value) in self.breakdown_sum_ns.iter_mut().zip(request.breakdown.0) {
            *sum = sum.saturating_add(value);
        }
    }
}

/// The analysis task's state: the configuration and the interned ids.
pub struct Analyzer {
    store: Store,
    config: Arc<AnalysisConfig>,
    interned: Interned,
    /// How far ahead of the analysis a request may start and be counted at its own start.
    max_clock_skew: Duration,
    /// Operation names kept per rollup row, which the store applies.
    max_operations_per_rollup: usize,
    stats: Arc<AnalysisStats>,
}

/// Analyses the batches `source` yields, in order, until it yields no more; then writes
/// everything analysed. Failures are counted and reported to the source, which has the traces
/// analysed again.
pub async fn run<S: DueTraces>(mut source: S, mut analyzer: Analyzer) {
    let mut commits = CommitScheduler::new(analyzer.store.clone(), Arc::clone(&analyzer.stats));
    while let Some(due) = source.next(&mut commits).await {
        let DueBatch {
            batch,
            completion,
            arrivals,
            redo,
        } = due;
        let traces = trace_ids(&batch);
        // An empty batch writes everything analysed before it, then what it completes.
        let empty = batch.is_empty();
        if empty {
            commits.flush(&mut source).await;
        } else {
            commits.flush_if_writing(&mut source, &traces).await;
        }
        match analyzer.commit_of(batch, &traces, &mut source).await {
            Ok(mut commit) => {
                completion.complete(&mut commit);
                (commits.submit(&mut source, traces, arrivals, redo, commit)).await;
            }
            Err(err) => commits.failed(&mut source, redo, &err),
        }
        if empty {
            commits.flush(&mut source).await;
        }
    }
    commits.flush(&mut source).await;
}

impl Analyzer {
    /// Loads the interned endpoints; fails only if the store cannot be read.
    pub async fn load(
        store: Store,
        config: AnalysisConfig,
        caps: Caps,
        max_clock_skew: Duration,
        stats: Arc<AnalysisStats>,
    ) -> Result<Analyzer, StoreError> {
        let interned = Interned::load(&store, caps).await?;
        Ok(Analyzer {
            store,
            config: Arc::new(config),
            interned,
            max_clock_skew,
            max_operations_per_rollup: caps.operations_per_rollup,
            stats,
        })
    }

    /// The analysis of `batch` (whose traces are `traces`) as one commit, not yet completed.
    async fn commit_of<S: DueTraces>(
        &mut self,
        batch: Batch,
        traces: &[TraceId],
        source: &mut S,
    ) -> Result<AnalysisCommit, PipelineError> {
        if batch.is_empty() {
            return Ok(AnalysisCommit::default());
        }
        let analysed = self.analyse(batch, traces, source).await?;
        let counted = self.count(&analysed).await?;
        let mut commit = rows::commit_of(&analysed, counted);
        commit.names = self.interned.take_names();
        commit.max_operations_per_rollup = Some(self.max_operations_per_rollup);
        Ok(commit)
    }

    /// Decodes and analyses `batch`. Fresh traces analysed before are analysed again from all
    /// their stored spans (hot ones excepted, see `store::hot_trace`).
    async fn analyse<S: DueTraces>(
        &mut self,
        batch: Batch,
        traces: &[TraceId],
        source: &mut S,
    ) -> Result<Vec<AnalysedTrace>, PipelineError> {
        if batch.fresh.is_empty() {
            return analyse_parts(batch, &self.config).await;
        }
        let fresh: Cow<[TraceId]> = if batch.at_hand.is_empty() {
            Cow::Borrowed(traces)
        } else {
            Cow::Owned(batch.fresh.iter().map(|trace| trace.trace_id).collect())
        };
        // Which traces were analysed before is asked while the batch is analysed as if none were:
        // almost always none were, so the batch need not wait for the answer. Those that were
        // are analysed again below, with their stored spans.
        let (prior, analysed) = tokio::join!(
            self.store.analysed_traces(&fresh),
            analyse_parts(batch, &self.config)
        );
        let (mut prior, mut analysed) = (prior?, analysed?);
        source.seen_before(&fresh, &mut prior);
        if !prior.is_empty() {
            analysed.retain(|trace| !prior.contains_key(&trace.trace_id));
            let mut at_hand = Vec::new();
            for trace_id in fresh.iter().filter(|id| prior.contains_key(id)) {
                if self.store.trace_is_hot(*trace_id).await? {
                    self.stats.hot_trace_skips.fetch_add(1, Relaxed);
                    continue;
                }
                let Some(stored) = self.store.trace_spans(*trace_id).await? else {
                    continue;
                };
                at_hand.extend(reanalysis(*trace_id, stored, prior[trace_id]));
            }
            let batch = Batch {
                at_hand,
                ..Batch::default()
            };
            analysed.extend(analyse_parts(batch, &self.config).await?);
        }
        source.analysed(&analysed);
        Ok(analysed)
    }

    /// Where each request of `analysed` is counted, interning the names of those analysed now;
    /// counts the traces, the folds and clamps, and each request in its endpoint's figures.
    async fn count<'a>(
        &mut self,
        analysed: &'a [AnalysedTrace],
    ) -> Result<Counted<'a>, StoreError> {
        let mut counted = Counted {
            new: Vec::with_capacity(analysed.iter().map(|trace| trace.new.len()).sum()),
            ..Counted::default()
        };
        // Where each previously analysed request was counted, from its stored row: another
        // instance may have interned its endpoint, and its version and start may have been
        // folded or clamped by a cache or a clock that have moved since.
        let mut counted_under: HashMap<(TraceId, SpanId), RequestRow> = HashMap::new();
        for trace in analysed.iter().filter(|trace| trace.reanalysed) {
            counted.replace_traces.push(trace.trace_id);
            self.stats.reanalysed_traces.fetch_add(1, Relaxed);
            for row in self.store.trace_requests(trace.trace_id).await? {
                counted_under.insert((row.trace_id, row.span_id), row);
            }
        }
        let anomalies = analysed.iter().map(|trace| trace.anomalies).sum();
        self.stats.traces.fetch_add(analysed.len() as u64, Relaxed);
        self.stats.anomalies.fetch_add(anomalies, Relaxed);

        // Resources of one batch are few: look each up once, not once per request, by the address
        // of its rendered text, which the requests of one resource share (the map holds the text,
        // so no address is freed and reused while it is in use as a key).
        let mut resource_ids: HashMap<usize, (Arc<str>, i64)> = HashMap::new();
        let analysed_unix_ns = super::claim::now_unix_ns();
        for trace in analysed {
            for request in &trace.old {
                let keys = match counted_under.get(&(request.trace_id, request.span_id)) {
                    Some(row) => Some(
                        CountedAs {
                            endpoint_id: row.endpoint_id,
                            version: &row.version,
                            start_unix_ns: row.start_unix_ns,
                        }
                        .rollup_key(),
                    ),
                    None => {
                        let service = self.interned.known_service(&request.service);
                        (self.known_endpoint_id(service, &request.endpoint)).map(|endpoint_id| {
                            CountedAs {
                                endpoint_id,
                                version: self.interned.known_version(service, &request.version),
                                start_unix_ns: request.start_unix_ns,
                            }
                            .rollup_key()
                        })
                    }
                };
                counted.old.push(keys);
            }
            for (request, resource) in trace.new.iter().zip(&trace.resources) {
                let service = self.interned.service(&self.store, &request.service).await?;
                if service != request.service {
                    self.stats.folded.services.fetch_add(1, Relaxed);
                }
                let endpoint_id = self.endpoint_id(service, &request.endpoint).await?;
                let version = (self.interned)
                    .version(&self.store, service, &request.version)
                    .await?;
                if version != request.version {
                    self.stats.folded.versions.fetch_add(1, Relaxed);
                }
                let clamped = super::skew::clamped_start(
                    request.start_unix_ns,
                    analysed_unix_ns,
                    self.max_clock_skew,
                );
                if clamped.is_some() {
                    self.stats.clock_skew_clamped.fetch_add(1, Relaxed);
                }
                let address = Arc::as_ptr(resource).cast::<u8>() as usize;
                let resource_id = match resource_ids.get(&address) {
                    Some((_, id)) => *id,
                    None => {
                        let id = self.resource_id(&request.service, resource).await?;
                        resource_ids.insert(address, (Arc::clone(resource), id));
                        id
                    }
                };
                if resource_id == 0 && !resource.is_empty() {
                    self.stats.folded.resources.fetch_add(1, Relaxed);
                }
                self.record_counters(service, request);
                let counted_as = CountedAs {
                    endpoint_id,
                    version,
                    start_unix_ns: clamped.unwrap_or(request.start_unix_ns),
                };
                counted.new.push((counted_as, resource_id));
            }
        }
        self.stats
            .requests
            .fetch_add(counted.new.len() as u64, Relaxed);
        Ok(counted)
    }

    /// Counts `request` under the (possibly folded) `service` it was counted under.
    fn record_counters(&self, service: &str, request: &RequestAnalysis) {
        let name = self.capped_name(service, &request.endpoint);
        let mut endpoints = self
            .stats
            .endpoints
            .lock()
            .expect("no panics while holding the counters lock");
        let per_service = match endpoints.get_mut(service) {
            Some(per_service) => per_service,
            None => endpoints.entry(service.to_owned()).or_default(),
        };
        match per_service.get_mut(name) {
            Some(counters) => counters.record(request),
            None => per_service
                .entry(name.to_owned())
                .or_default()
                .record(request),
        }
    }

    fn capped_name<'a>(&self, service: &str, endpoint: &'a str) -> &'a str {
        self.interned.capped_name(service, endpoint)
    }

    /// The id an endpoint was counted under: its own, or `other` past the cap.
    fn known_endpoint_id(&self, service: &str, endpoint: &str) -> Option<i64> {
        self.interned.known_endpoint_id(service, endpoint)
    }

    async fn endpoint_id(&mut self, service: &str, endpoint: &str) -> Result<i64, StoreError> {
        self.interned
            .endpoint_id(&self.store, service, endpoint)
            .await
    }

    /// The id of a request's resource, interning it if new; 0 past the resource cap.
    async fn resource_id(&mut self, service: &str, canonical: &str) -> Result<i64, StoreError> {
        self.interned
            .resource_id(&self.store, service, canonical)
            .await
    }
}

/// The traces of a batch, fresh and at hand.
fn trace_ids(batch: &Batch) -> Vec<TraceId> {
    let fresh = batch.fresh.iter().map(|trace| trace.trace_id);
    let at_hand = batch.at_hand.iter().map(|work| work.trace_id);
    fresh.chain(at_hand).collect()
}

/// Decodes and analyses a batch on blocking threads, one part per core: pure CPU work, kept off
/// the async workers.
async fn analyse_parts(
    batch: Batch,
    config: &Arc<AnalysisConfig>,
) -> Result<Vec<AnalysedTrace>, PipelineError> {
    let parts: Vec<_> = work::split(batch)
        .into_iter()
        .map(|part| {
            let config = Arc::clone(config);
            tokio::task::spawn_blocking(move || work::run(part, &config))
        })
        .collect();
    let mut analysed = Vec::new();
    for part in parts {
        analysed.extend(part.await?);
    }
    Ok(analysed)
}

/// The work of re-analysing a trace whose previous analysis saw blocks up to `seen_through`;
/// nothing when no newer block is stored (a replay of what was analysed).
fn reanalysis(trace_id: TraceId, stored: Vec<(i64, Span)>, seen_through: i64) -> Option<Work> {
    let newest = stored
        .iter()
        .map(|(block, _)| *block)
        .max()
        .unwrap_or(seen_through);
    if newest <= seen_through {
        return None;
    }
    let old = stored
        .iter()
        .filter(|(block, _)| *block <= seen_through)
        .map(|(_, span)| span.clone())
        .collect();
    Some(Work {
        trace_id,
        spans: stored.into_iter().map(|(_, span)| span).collect(),
        old_spans: Some(old),
        last_block_id: newest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::fixture;
    use crate::config::DatabaseUrl;
    use crate::pipeline::assemble::TakenBatch;
    use crate::pipeline::assembled::AssembledTraces;
    use crate::pipeline::work::FreshTrace;
    use crate::store::{Granularity, RollupKey, block, minute_of};
    use tokio::sync::mpsc;

    /// Stores a block of `spans` and the batch that analyses the traces in it.
    async fn stored_batch(store: &Store, spans: Vec<Span>) -> (Batch, i64) {
        let encoded = block::encode(spans, 0);
        let trace_ids = encoded.trace_ids.clone();
        let data = Arc::new(encoded.data.clone());
        let block_id = store.insert_blocks(&[encoded]).await.unwrap()[0];
        let fresh = trace_ids
            .into_iter()
            .map(|trace_id| FreshTrace {
                trace_id,
                block_ids: vec![block_id],
                last_block_id: block_id,
                arrived: tokio::time::Instant::now(),
            })
            .collect();
        let batch = Batch {
            fresh,
            blocks: HashMap::from([(block_id, data)]),
            at_hand: Vec::new(),
        };
        (batch, block_id)
    }

    fn trace_id(n: u32) -> TraceId {
        TraceId(u128::from(n).to_be_bytes())
    }

    fn trace(n: u32, fixture_text: &str) -> Vec<Span> {
        let mut spans = fixture::parse(fixture_text);
        for span in &mut spans {
            span.trace_id = trace_id(n);
        }
        spans
    }

    // Batches analysed back to back are committed merged whenever the previous commit is still
    // running; however the timing falls, every request is written once, counted once in the
    // rollups, and a trace that comes back with late spans replaces its first analysis.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_analysed_back_to_back_count_every_request_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&DatabaseUrl::Sqlite(dir.path().join("analyze.db")))
            .await
            .unwrap();
        let stats = Arc::new(AnalysisStats::default());
        let caps = Caps {
            endpoints_per_service: 100,
            services: 100,
            versions_per_service: 100,
            resources: 100,
            operations_per_rollup: 100,
        };
        let analyzer = Analyzer::load(
            store.clone(),
            AnalysisConfig::default(),
            caps,
            Duration::from_secs(900),
            stats,
        )
        .await
        .unwrap();
        // Fed as the assembler feeds it: one batch queued while one is analysed.
        let (batches, taken) = mpsc::channel(1);
        let source = AssembledTraces::new(taken, Arc::default());
        let analysis = tokio::spawn(run(source, analyzer));
        let send = |batch, watermark| {
            let batches = batches.clone();
            async move {
                let taken = TakenBatch {
                    batch,
                    watermark,
                    requeued_after: None,
                };
                batches.send(taken).await.unwrap();
            }
        };
        let request = "auth: GET /users 0..10 server http.route=/users version=1.0\n  \
                       SELECT users 1..3 client db.system=postgresql";
        let mut watermark = 0;
        for n in 1..=40 {
            let spans = (0..25).flat_map(|i| trace(n * 25 + i, request)).collect();
            let (batch, block_id) = stored_batch(&store, spans).await;
            send(batch, block_id).await;
            watermark = block_id;
        }
        // Late spans of a trace of the last batch, whose commit may still be queued.
        let late = "auth: SELECT late 5..8 client db.system=postgresql version=1.0 id=5 parent=1";
        let (batch, block_id) = stored_batch(&store, trace(40 * 25, late)).await;
        send(batch, block_id).await;
        send(Batch::default(), block_id).await;
        watermark = watermark.max(block_id);
        drop(batches);
        analysis.await.unwrap();

        assert_eq!(store.analysis_watermark().await.unwrap(), watermark);
        assert_eq!(store.stats().await.unwrap().n_requests, 1_000);
        let rows = store.trace_requests(trace_id(40 * 25)).await.unwrap();
        assert_eq!(rows.len(), 1, "the late spans' trace has one request row");
        assert_eq!(rows[0].n_db_calls, 2, "from its second analysis");
        let endpoint_id = rows[0].endpoint_id;
        let key = RollupKey {
            endpoint_id,
            version: rows[0].version.clone(),
            minute: Granularity::Hour.row_start(minute_of(rows[0].start_unix_ns)),
            granularity: Granularity::Hour,
        };
        let rollup = store.rollup(&key).await.unwrap();
        let rollup = rollup.unwrap_or_else(|| panic!("no rollup row {key:?}"));
        assert_eq!(rollup.requests, 1_000);
        assert_eq!(rollup.sketch.count(), 1_000);
    }
}
