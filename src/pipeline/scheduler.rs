//! The commit scheduler: writes analysis commits in the order their batches were analysed. A
//! commit runs in the background while the next batch is analysed; batches analysed meanwhile
//! are merged into one commit ([`AnalysisCommit::absorb`]) that starts when it is done. A commit
//! that fails is counted and reported to its source with what it asked to be redone.
//!
//! Why merge: the SQLite writer is shared with ingest, so waiting for each batch's commit would
//! idle the analysis; merged, the analysis goes on meanwhile and the writer begins, reads and
//! writes each touched rollup row and commits once for several batches
//! (docs/benchmarks-history.md). A source whose commits must not overlap (claims: a lost claim
//! fails its whole commit) has each written before its next batch.
//!
//! Invariant: commits finish in the order they were analysed, and one starts only once the one
//! before it finished and its failure, if any, was reported to the source.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use collector::model::TraceId;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::analyze::AnalysisStats;
use super::due::{DueTraces, Redo};
use super::error::PipelineError;
use crate::store::{AnalysisCommit, Store, StoreError};

/// Batches merged into one commit at most: past this the analysis waits for the writer, so that
/// analysed results waiting to be written stay bounded.
const MAX_BATCHES_PER_COMMIT: usize = 4;

/// Analysis commits not yet finished: one running, and one merged from the batches analysed
/// while it runs.
pub struct CommitScheduler<R> {
    store: Store,
    stats: Arc<AnalysisStats>,
    /// The last commit, still running while the next batch is analysed.
    in_flight: Option<InFlight<R>>,
    /// Commits of batches analysed while `in_flight` ran, merged into one.
    queued: Option<Pending<R>>,
}

/// A commit running in the background, and the traces it writes.
struct InFlight<R> {
    traces: HashSet<TraceId>,
    redo: R,
    commit: JoinHandle<Result<(), StoreError>>,
}

/// A commit of one or more batches, not started yet.
struct Pending<R> {
    traces: HashSet<TraceId>,
    /// When each trace of its batches arrived, for the analysis delay.
    arrivals: Vec<Instant>,
    redo: R,
    commit: AnalysisCommit,
    batches: usize,
}

impl<R: Redo> Pending<R> {
    fn absorb(&mut self, later: Pending<R>) {
        self.traces.extend(later.traces);
        self.arrivals.extend(later.arrivals);
        self.redo.absorb(later.redo);
        self.commit.absorb(later.commit);
        self.batches += later.batches;
    }
}

impl<R: Redo> CommitScheduler<R> {
    /// Nothing to write yet.
    pub fn new(store: Store, stats: Arc<AnalysisStats>) -> Self {
        CommitScheduler {
            store,
            stats,
            in_flight: None,
            queued: None,
        }
    }

    /// Writes `commit`, the analysis of `traces`: in the background, or merged into the next
    /// commit while the previous one still runs.
    pub async fn submit<S: DueTraces<Redo = R>>(
        &mut self,
        source: &mut S,
        traces: Vec<TraceId>,
        arrivals: Vec<Instant>,
        redo: R,
        commit: AnalysisCommit,
    ) {
        let pending = Pending {
            traces: traces.into_iter().collect(),
            arrivals,
            redo,
            commit,
            batches: 1,
        };
        let pending = match self.queued.take() {
            Some(mut queued) => {
                queued.absorb(pending);
                queued
            }
            None => pending,
        };
        let writing =
            (self.in_flight.as_ref()).is_some_and(|in_flight| !in_flight.commit.is_finished());
        if S::OVERLAPPING_COMMITS && writing && pending.batches < MAX_BATCHES_PER_COMMIT {
            self.queued = Some(pending);
            return;
        }
        self.finish_in_flight(source).await;
        self.start(source, pending);
        if !S::OVERLAPPING_COMMITS {
            self.finish_in_flight(source).await;
        }
    }

    /// Writes everything analysed: waits for the commit running in the background, then starts
    /// the queued one and waits for it too.
    pub async fn flush<S: DueTraces<Redo = R>>(&mut self, source: &mut S) {
        self.finish_in_flight(source).await;
        if let Some(queued) = self.queued.take() {
            self.start(source, queued);
            self.finish_in_flight(source).await;
        }
    }

    /// Writes everything analysed if a commit not yet finished writes one of `traces`: whether a
    /// trace was analysed before is read from the store, so those commits must be in it first.
    pub async fn flush_if_writing<S: DueTraces<Redo = R>>(
        &mut self,
        source: &mut S,
        traces: &[TraceId],
    ) {
        let in_flight = self.in_flight.iter().map(|in_flight| &in_flight.traces);
        let queued = self.queued.iter().map(|queued| &queued.traces);
        let overlaps = in_flight
            .chain(queued)
            .any(|written| traces.iter().any(|id| written.contains(id)));
        if overlaps {
            self.flush(source).await;
        }
    }

    /// Counts an analysis that was not committed and tells its source.
    pub fn failed<S: DueTraces<Redo = R>>(&self, source: &mut S, redo: R, err: &PipelineError) {
        self.stats.failed_commits.fetch_add(1, Relaxed);
        source.failed(redo, err);
    }

    /// Starts writing `pending` in the background; the previous commit must be finished.
    fn start<S: DueTraces<Redo = R>>(&mut self, source: &S, pending: Pending<R>) {
        let Pending {
            traces,
            arrivals,
            redo,
            mut commit,
            ..
        } = pending;
        source.before_write(&mut commit);
        let store = self.store.clone();
        let stats = Arc::clone(&self.stats);
        self.in_flight = Some(InFlight {
            traces,
            redo,
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
    async fn finish_in_flight<S: DueTraces<Redo = R>>(&mut self, source: &mut S) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let err = match in_flight.commit.await {
            Ok(Ok(())) => return,
            Ok(Err(err)) => PipelineError::from(err),
            Err(err) => PipelineError::from(err),
        };
        self.failed(source, in_flight.redo, &err);
    }
}
