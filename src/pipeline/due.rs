//! Where the analysis gets its work: a source of due traces hands it batches, each with what
//! committing its analysis completes. The analysis itself (`analyze`) is the same whichever
//! source feeds it; only the source knows which store it runs on:
//! - `assembled` (one process, SQLite): traces the in-memory assembler held for their grace
//!   period; a commit carries the watermark below which every block is analysed.
//! - `claim` (instances sharing PostgreSQL): traces claimed in the database; a commit gives the
//!   claims back.
//!
//! A batch whose analysis is not committed is not lost: its source is told, with what it asked
//! to be redone, and has the traces analysed again (blocks read back, or claims given back).
//!
//! Invariant: what a commit completes is written in the same transaction as its results, and a
//! source never completes traces whose analysis failed.

use std::collections::HashMap;
use std::future::Future;

use collector::model::TraceId;
use tokio::time::Instant;

use super::error::PipelineError;
use super::scheduler::CommitScheduler;
use super::work::{AnalysedTrace, Batch};
use crate::store::{AnalysisCommit, ClaimRelease};

/// Due traces, and what committing their analysis completes.
pub struct DueBatch<R> {
    /// The traces to analyse.
    pub batch: Batch,
    /// What the commit of their analysis completes besides its results.
    pub completion: Completion,
    /// When the spans of each trace were committed: the analysis delay counts from here.
    pub arrivals: Vec<Instant>,
    /// What the source must do again if their analysis is not committed.
    pub redo: R,
}

/// What a commit completes besides its results, written in its transaction.
#[derive(Debug)]
pub enum Completion {
    /// Every block through this id has been analysed (one process: a restart replays from here).
    Watermark(i64),
    /// The claims the analysis is done with (a shared store).
    Claims(Vec<ClaimRelease>),
}

impl Completion {
    /// Makes `commit` complete this.
    pub fn complete(self, commit: &mut AnalysisCommit) {
        match self {
            Completion::Watermark(watermark) => commit.watermark = Some(watermark),
            Completion::Claims(releases) => commit.claims = releases,
        }
    }
}

/// What a source does again when an analysis is not committed; merged when commits are.
pub trait Redo: Send + 'static {
    /// Adds the work of `later`, whose commit was merged into this one's.
    fn absorb(&mut self, later: Self);
}

/// A source of due traces.
pub trait DueTraces: Send {
    /// What a failed commit leaves this source to do again.
    type Redo: Redo;

    /// Whether a commit may still run while the next batch is analysed, and batches analysed
    /// meanwhile be merged into the next commit.
    const OVERLAPPING_COMMITS: bool;

    /// The next batch; `None` once there will be none. `commits` is there for a source that
    /// must have everything analysed written before it goes on.
    fn next(
        &mut self,
        commits: &mut CommitScheduler<Self::Redo>,
    ) -> impl Future<Output = Option<DueBatch<Self::Redo>>> + Send;

    /// Adjusts what `commit` completes just before it is written, once every commit before it
    /// has finished (and, if it failed, been reported to [`DueTraces::failed`]).
    fn before_write(&self, _commit: &mut AnalysisCommit) {}

    /// The analysis of the batches with `redo` was not committed (already counted and to be
    /// logged here, in the source's words).
    fn failed(&mut self, redo: Self::Redo, err: &PipelineError);

    /// Adds to `prior` (fresh traces of a batch analysed before, with the newest block that
    /// analysis saw) those this source remembers beyond the store: traces whose analysis waited
    /// for a parent and produced no request, which the store cannot tell apart from new ones.
    fn seen_before(&mut self, _fresh: &[TraceId], _prior: &mut HashMap<TraceId, i64>) {}

    /// Called with the analyses of a batch with fresh traces, for a source to remember those
    /// that wait for a parent (see [`DueTraces::seen_before`]).
    fn analysed(&mut self, _analysed: &[AnalysedTrace]) {}
}
