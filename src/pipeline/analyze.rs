//! The analyzer: turns due traces into request rows and rollup updates, committed together with
//! the watermark in one transaction.
//!
//! A trace that was analysed before (late spans, or a replay after a restart) is re-read whole
//! from the store; its previous analysis is recomputed from the blocks that analysis saw and
//! taken back from the rollups as the new one is added, so a request is never counted twice.
//!
//! Rollups are not cached here: each commit carries changes (requests added, requests taken
//! back) that the store applies to the rows as stored, under their locks. That is what lets
//! several instances on one PostgreSQL database update the same rows: with a shared store the
//! traces come from claims in the database ([`Analyzer::process_claimed`]), not from memory.
//!
//! Invariant: only analyzers write requests and rollups, each trace is analysed by the one
//! instance holding its claim (or the single SQLite instance), and no lock is held across an
//! await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collector::model::{Span, TraceId};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, warn};

use super::delay::DelayHistogram;
use super::intern::{Caps, Folded, Interned};
use super::requeue::FailedBlocks;
use super::work::{self, AnalysedTrace, Batch, Work};
use crate::analysis::aggregate::Rollup;
use crate::analysis::{AnalysisConfig, RequestAnalysis};
use crate::histogram::LATENCY_BUCKETS;
use crate::store::{
    AnalysisCommit, ClaimRelease, ClaimedTrace, Granularity, RequestRow, RollupChange, RollupKey,
    Store, StoreError, minute_of,
};

/// Where a request is counted: under which endpoint and version, and at which start (the
/// request's own, or the time it was analysed when its clock is far ahead).
struct CountedAs<'a> {
    endpoint_id: i64,
    version: &'a str,
    start_unix_ns: u64,
}

impl CountedAs<'_> {
    /// The rollup rows a request counts in: its minute and its hour.
    fn rollup_keys(&self) -> [RollupKey; 2] {
        let minute = minute_of(self.start_unix_ns);
        [Granularity::Minute, Granularity::Hour].map(|granularity| RollupKey {
            endpoint_id: self.endpoint_id,
            version: self.version.to_owned(),
            minute: granularity.row_start(minute),
            granularity,
        })
    }
}

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

/// The analysis task's state: endpoint ids and the rollups being updated.
pub struct Analyzer {
    store: Store,
    config: Arc<AnalysisConfig>,
    interned: Interned,
    /// How far ahead of the analysis a request may start and be counted at its own start.
    max_clock_skew: Duration,
    /// Operation names kept per rollup row, which the store applies.
    max_operations_per_rollup: usize,
    stats: Arc<AnalysisStats>,
    /// The last commit, still running while the next batch is analysed.
    in_flight: Option<InFlight>,
    /// Commits of batches analysed while `in_flight` ran, merged into one that starts when it
    /// is done (SQLite).
    queued: Option<Queued>,
    /// The highest watermark a commit may still carry: below the blocks of a batch whose
    /// analysis failed and that the assembler does not hold again yet, so that a restart
    /// meanwhile replays them (SQLite; `None` when none failed).
    watermark_cap: Option<i64>,
    /// The floors of failed commits, for the assembler to read their blocks back.
    failed: Arc<FailedBlocks>,
    /// Traces analysed while some of their spans waited for a parent (children exported before
    /// their root), with the newest block that analysis saw: when more of such a trace arrives,
    /// it is analysed again from all its stored spans, as a trace analysed before is (SQLite).
    awaiting_parent: HashMap<TraceId, i64>,
}

/// Traces remembered as awaiting a parent, at most: roots that never come must not grow the map
/// without bound (past it, it starts over, and a late root of a forgotten trace is analysed with
/// the spans of its own batch).
const MAX_AWAITING_PARENT: usize = 100_000;

/// A commit running in the background, and the traces it writes.
struct InFlight {
    traces: HashSet<TraceId>,
    /// Below the oldest block of its batches.
    floor: i64,
    commit: JoinHandle<Result<(), StoreError>>,
}

/// Batches merged into one commit while the previous commit runs: the SQLite writer is shared
/// with ingest, so waiting for each batch's commit would idle the analysis; merged, the analysis
/// goes on meanwhile and the writer begins, reads and writes each touched rollup row and commits
/// once for several batches (docs/benchmarks-history.md).
struct Queued {
    traces: HashSet<TraceId>,
    /// When each fresh trace of its batches arrived, for the analysis delay.
    arrivals: Vec<Instant>,
    /// Below the oldest block of its batches.
    floor: i64,
    commit: AnalysisCommit,
    batches: usize,
}

/// Batches merged into one commit at most: past this the analysis waits for the writer, so that
/// analysed results waiting to be written stay bounded.
const MAX_BATCHES_PER_COMMIT: usize = 4;

impl Queued {
    fn absorb(
        &mut self,
        traces: Vec<TraceId>,
        arrivals: Vec<Instant>,
        floor: i64,
        commit: AnalysisCommit,
    ) {
        self.traces.extend(traces);
        self.arrivals.extend(arrivals);
        self.floor = self.floor.min(floor);
        self.commit.absorb(commit);
        self.batches += 1;
    }
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
            in_flight: None,
            queued: None,
            watermark_cap: None,
            failed: Arc::default(),
            awaiting_parent: HashMap::new(),
        })
    }

    /// Where this analyzer notes the blocks of its failed commits (see [`Analyzer::requeued`]).
    pub fn failed_blocks(&self) -> Arc<FailedBlocks> {
        Arc::clone(&self.failed)
    }

    /// The assembler holds again every block after `after`: failed commits whose blocks those
    /// are no longer hold the watermark back. Commits analysed before are written first, still
    /// capped; failures not yet requeued keep capping it.
    pub async fn requeued(&mut self, after: i64) {
        self.flush().await;
        self.watermark_cap = self.failed.pending();
        tracing::info!(
            after,
            "the blocks of failed analysis commits are held again and analysed anew"
        );
    }

    /// Analyses a batch of due traces and commits the results with `watermark`. The commit runs
    /// while the next batch is analysed, or, while the previous one still runs, is merged with
    /// the next batches' into one; an empty batch writes everything analysed. Errors are logged
    /// and counted: the blocks stay behind the watermark and the assembler reads them back from
    /// the store ([`FailedBlocks`]).
    pub async fn process(&mut self, batch: Batch, watermark: i64) {
        let floor = batch_floor(&batch);
        if let Err(err) = self.try_process(batch, watermark, floor).await {
            self.commit_failed(&err, floor);
        }
    }

    fn commit_failed(&mut self, err: &StoreError, floor: i64) {
        self.stats.failed_commits.fetch_add(1, Relaxed);
        self.watermark_cap = Some(self.watermark_cap.map_or(floor, |cap| cap.min(floor)));
        self.failed.note(floor);
        error!(error = %err, "analysis commit failed; its blocks are read back and analysed again");
    }

    /// `watermark`, held below the blocks of any batch whose analysis failed.
    fn capped(&self, watermark: i64) -> i64 {
        self.watermark_cap
            .map_or(watermark, |cap| watermark.min(cap))
    }

    /// Writes everything analysed: waits for the commit running in the background, then starts
    /// the queued one and waits for it too.
    async fn flush(&mut self) {
        self.finish_in_flight().await;
        if let Some(queued) = self.queued.take() {
            self.start_commit(queued);
            self.finish_in_flight().await;
        }
    }

    /// Starts writing `queued` in the background; the previous commit must be finished, so that
    /// a failure of it has capped the watermark this one carries.
    fn start_commit(&mut self, queued: Queued) {
        let Queued {
            traces,
            arrivals,
            floor,
            mut commit,
            ..
        } = queued;
        commit.watermark = commit.watermark.map(|watermark| self.capped(watermark));
        let store = self.store.clone();
        let stats = Arc::clone(&self.stats);
        self.in_flight = Some(InFlight {
            traces,
            floor,
            commit: tokio::spawn(async move {
                let operations_folded = store.commit_analysis(&commit).await?;
                (stats.folded.operations).fetch_add(operations_folded, Relaxed);
                let committed = Instant::now();
                stats.delay.record(
                    arrivals
                        .into_iter()
                        .map(|arrived| committed.saturating_duration_since(arrived)),
                );
                Ok(())
            }),
        });
    }

    /// Waits for the commit running in the background, if any.
    async fn finish_in_flight(&mut self) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        match in_flight.commit.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => self.commit_failed(&err, in_flight.floor),
            Err(err) => self.commit_failed(
                &StoreError::Corrupt(format!("analysis commit task failed: {err}")),
                in_flight.floor,
            ),
        }
    }

    /// Analyses traces claimed in a shared store and releases the claims in the same commit.
    /// On an error nothing is written; the claims expire and the traces are analysed again, by
    /// this instance or another.
    pub async fn process_claimed(&mut self, claimed: Vec<ClaimedTrace>) {
        if claimed.is_empty() {
            return;
        }
        if let Err(err) = self.try_process_claimed(claimed).await {
            self.stats.failed_commits.fetch_add(1, Relaxed);
            warn!(error = %err, "analysis commit failed; the claimed traces are analysed again once their claims are given back");
        }
    }

    async fn try_process(
        &mut self,
        batch: Batch,
        watermark: i64,
        floor: i64,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            self.flush().await;
            self.store
                .commit_analysis(&AnalysisCommit {
                    watermark: Some(self.capped(watermark)),
                    ..Default::default()
                })
                .await?;
            return Ok(());
        }
        let ids: Vec<TraceId> = batch.fresh.iter().map(|trace| trace.trace_id).collect();
        let arrivals: Vec<Instant> = batch.fresh.iter().map(|trace| trace.arrived).collect();
        // Whether a trace was analysed before is read from the store: the commits still running
        // or queued must be in it when they write one of these traces (spans that arrived late).
        let in_flight = self.in_flight.iter().map(|in_flight| &in_flight.traces);
        let queued = self.queued.iter().map(|queued| &queued.traces);
        let overlaps = in_flight
            .chain(queued)
            .any(|traces| ids.iter().any(|id| traces.contains(id)));
        if overlaps {
            self.flush().await;
        }
        // Which traces were analysed before is asked while the batch is analysed as if none were:
        // almost always none were, so the batch need not wait for the answer. Those that were
        // are analysed again below, with their stored spans.
        let (prior, analysed) = tokio::join!(
            self.store.analysed_traces(&ids),
            analyse_parts(batch, &self.config)
        );
        let (mut prior, mut analysed) = (prior?, analysed?);
        if !self.awaiting_parent.is_empty() {
            for trace_id in &ids {
                if let Some(seen_through) = self.awaiting_parent.remove(trace_id) {
                    prior.entry(*trace_id).or_insert(seen_through);
                }
            }
        }
        if !prior.is_empty() {
            analysed.retain(|trace| !prior.contains_key(&trace.trace_id));
            let mut at_hand = Vec::new();
            for trace_id in ids.iter().filter(|id| prior.contains_key(id)) {
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
        for trace in analysed.iter().filter(|trace| trace.awaits_parent) {
            if self.awaiting_parent.len() >= MAX_AWAITING_PARENT {
                self.awaiting_parent.clear();
            }
            self.awaiting_parent
                .insert(trace.trace_id, trace.last_block_id);
        }
        let mut commit = self.commit_of(analysed, Vec::new()).await?;
        commit.watermark = Some(watermark);
        let queued = match self.queued.take() {
            Some(mut queued) => {
                queued.absorb(ids, arrivals, floor, commit);
                queued
            }
            None => Queued {
                traces: ids.into_iter().collect(),
                arrivals,
                floor,
                commit,
                batches: 1,
            },
        };
        let writing =
            (self.in_flight.as_ref()).is_some_and(|in_flight| !in_flight.commit.is_finished());
        if writing && queued.batches < MAX_BATCHES_PER_COMMIT {
            self.queued = Some(queued);
            return Ok(());
        }
        self.finish_in_flight().await;
        self.start_commit(queued);
        Ok(())
    }

    async fn try_process_claimed(&mut self, claimed: Vec<ClaimedTrace>) -> Result<(), StoreError> {
        let ids: Vec<TraceId> = claimed.iter().map(|trace| trace.trace_id).collect();
        let first_seen: Vec<u64> = claimed
            .iter()
            .map(|trace| trace.first_seen_unix_ns)
            .collect();
        let prior = self.store.analysed_traces(&ids).await?;
        let mut work = Vec::with_capacity(claimed.len());
        let mut releases = Vec::with_capacity(claimed.len());
        for trace in claimed {
            if trace.hot {
                self.stats.hot_trace_skips.fetch_add(1, Relaxed);
            }
            let new_blocks: std::collections::HashSet<i64> =
                trace.new_blocks.iter().copied().collect();
            releases.push(ClaimRelease {
                trace_id: trace.trace_id,
                claim: trace.claim,
                analysed_blocks: trace.new_blocks,
            });
            let newest = trace
                .spans
                .iter()
                .map(|(block, _)| *block)
                .max()
                .unwrap_or(0);
            let has_new = trace
                .spans
                .iter()
                .any(|(block, _)| new_blocks.contains(block));
            if !has_new {
                continue; // its new blocks are gone (retention), or were analysed already
            }
            let old_spans = prior.contains_key(&trace.trace_id).then(|| {
                trace
                    .spans
                    .iter()
                    .filter(|(block, _)| !new_blocks.contains(block))
                    .map(|(_, span)| span.clone())
                    .collect()
            });
            work.push(Work {
                trace_id: trace.trace_id,
                spans: trace.spans.into_iter().map(|(_, span)| span).collect(),
                old_spans,
                last_block_id: newest,
            });
        }
        let batch = Batch {
            at_hand: work,
            ..Batch::default()
        };
        let analysed = analyse_parts(batch, &self.config).await?;
        let commit = self.commit_of(analysed, releases).await?;
        let operations_folded = self.store.commit_analysis(&commit).await?;
        (self.stats.folded.operations).fetch_add(operations_folded, Relaxed);
        let committed_unix_ns = super::claim::now_unix_ns();
        self.stats.delay.record(
            first_seen
                .into_iter()
                .map(|seen| Duration::from_nanos(committed_unix_ns.saturating_sub(seen))),
        );
        Ok(())
    }

    /// Turns a batch's analyses into a commit (not yet applied).
    async fn commit_of(
        &mut self,
        analysed: Vec<AnalysedTrace>,
        claims: Vec<ClaimRelease>,
    ) -> Result<AnalysisCommit, StoreError> {
        // Where each previously analysed request was counted, from its stored row: another
        // instance may have interned its endpoint, and its version and start may have been
        // folded or clamped by a cache or a clock that have moved since.
        let mut counted_under: HashMap<(TraceId, collector::model::SpanId), RequestRow> =
            HashMap::new();
        let mut replace_traces = Vec::new();
        for trace in analysed.iter().filter(|trace| trace.reanalysed) {
            replace_traces.push(trace.trace_id);
            self.stats.reanalysed_traces.fetch_add(1, Relaxed);
            for row in self.store.trace_requests(trace.trace_id).await? {
                counted_under.insert((row.trace_id, row.span_id), row);
            }
        }
        let anomalies = analysed.iter().map(|trace| trace.anomalies).sum();
        self.stats.traces.fetch_add(analysed.len() as u64, Relaxed);
        self.stats.anomalies.fetch_add(anomalies, Relaxed);

        let mut changes: HashMap<RollupKey, RollupChange> = HashMap::new();
        let mut requests = Vec::new();
        // Resources of one batch are few: look each up once, not once per request, by the address
        // of its rendered text, which the requests of one resource share (the map holds the text,
        // so no address is freed and reused while it is in use as a key).
        let mut resource_ids: HashMap<usize, (Arc<str>, i64)> = HashMap::new();
        let analysed_unix_ns = super::claim::now_unix_ns();
        for analysed_trace in analysed {
            let AnalysedTrace {
                new,
                resources,
                old,
                last_block_id,
                ..
            } = analysed_trace;
            for request in &old {
                let counted = match counted_under.get(&(request.trace_id, request.span_id)) {
                    Some(row) => Some(CountedAs {
                        endpoint_id: row.endpoint_id,
                        version: &row.version,
                        start_unix_ns: row.start_unix_ns,
                    }),
                    None => {
                        let service = self.interned.known_service(&request.service);
                        (self.known_endpoint_id(service, &request.endpoint)).map(|endpoint_id| {
                            CountedAs {
                                endpoint_id,
                                version: self.interned.known_version(service, &request.version),
                                start_unix_ns: request.start_unix_ns,
                            }
                        })
                    }
                };
                for key in counted.iter().flat_map(CountedAs::rollup_keys) {
                    change_of(&mut changes, key).removed.add(request);
                }
            }
            for (request, resource) in new.iter().zip(&resources) {
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
                let counted = CountedAs {
                    endpoint_id,
                    version,
                    start_unix_ns: clamped.unwrap_or(request.start_unix_ns),
                };
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
                for key in counted.rollup_keys() {
                    change_of(&mut changes, key).added.add(request);
                }
                requests.push(RequestRow {
                    trace_id: request.trace_id,
                    span_id: request.span_id,
                    endpoint_id,
                    version: version.to_owned(),
                    start_unix_ns: counted.start_unix_ns,
                    duration_ns: request.duration_ns,
                    error: request.error,
                    breakdown: request.breakdown,
                    n_db_calls: request.n_db_calls,
                    last_block_id,
                    resource_id,
                });
                self.record_counters(service, request);
            }
        }
        self.stats
            .requests
            .fetch_add(requests.len() as u64, Relaxed);
        Ok(AnalysisCommit {
            replace_traces,
            requests,
            rollups: changes.into_values().collect(),
            watermark: None,
            claims,
            names: self.interned.take_names(),
            max_operations_per_rollup: Some(self.max_operations_per_rollup),
        })
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

/// Decodes and analyses a batch on blocking threads, one part per core: pure CPU work, kept off
/// the async workers.
async fn analyse_parts(
    batch: Batch,
    config: &Arc<AnalysisConfig>,
) -> Result<Vec<AnalysedTrace>, StoreError> {
    let parts: Vec<_> = work::split(batch)
        .into_iter()
        .map(|part| {
            let config = Arc::clone(config);
            tokio::task::spawn_blocking(move || work::run(part, &config))
        })
        .collect();
    let mut analysed = Vec::new();
    for part in parts {
        let part = part
            .await
            .map_err(|err| StoreError::Corrupt(format!("analysis task failed: {err}")))?;
        analysed.extend(part);
    }
    Ok(analysed)
}

/// The watermark below every block of a batch's fresh traces.
fn batch_floor(batch: &Batch) -> i64 {
    batch
        .fresh
        .iter()
        .flat_map(|trace| trace.block_ids.iter().copied())
        .min()
        .map_or(i64::MAX, |oldest| oldest - 1)
}

/// The change to one rollup row, started empty.
fn change_of(changes: &mut HashMap<RollupKey, RollupChange>, key: RollupKey) -> &mut RollupChange {
    changes.entry(key.clone()).or_insert_with(|| RollupChange {
        key,
        added: Rollup::new(),
        removed: Rollup::new(),
    })
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
    use crate::pipeline::work::FreshTrace;
    use crate::store::block;

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
        let mut analyzer = Analyzer::load(
            store.clone(),
            AnalysisConfig::default(),
            caps,
            Duration::from_secs(900),
            stats,
        )
        .await
        .unwrap();
        let request = "auth: GET /users 0..10 server http.route=/users version=1.0\n  \
                       SELECT users 1..3 client db.system=postgresql";
        let mut watermark = 0;
        for n in 1..=40 {
            let spans = (0..25).flat_map(|i| trace(n * 25 + i, request)).collect();
            let (batch, block_id) = stored_batch(&store, spans).await;
            analyzer.process(batch, block_id).await;
            watermark = block_id;
        }
        // Late spans of a trace of the last batch, whose commit may still be queued.
        let late = "auth: SELECT late 5..8 client db.system=postgresql version=1.0 id=5 parent=1";
        let (batch, block_id) = stored_batch(&store, trace(40 * 25, late)).await;
        analyzer.process(batch, block_id).await;
        analyzer.process(Batch::default(), block_id).await;
        watermark = watermark.max(block_id);

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
