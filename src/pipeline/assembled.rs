//! The due traces of one process (SQLite): the batches the assembler takes, as a source for the
//! analysis. A commit carries the watermark below which every block is analysed, so a restart
//! replays from there. When a commit fails, the blocks after its batches' floor are noted for
//! the assembler to read back (`requeue`), and the watermark is held below them until it holds
//! them again.
//!
//! Invariant: a commit's watermark never passes a block whose analysis failed and that the
//! assembler does not hold again.

use std::collections::HashMap;
use std::sync::Arc;

use collector::model::TraceId;
use tokio::sync::mpsc;
use tracing::{error, info};

use super::assemble::TakenBatch;
use super::due::{Completion, DueBatch, DueTraces, Redo};
use super::error::PipelineError;
use super::requeue::FailedBlocks;
use super::scheduler::CommitScheduler;
use super::work::{AnalysedTrace, Batch};
use crate::store::AnalysisCommit;

/// Traces remembered as awaiting a parent, at most: roots that never come must not grow the map
/// without bound (past it, it starts over, and a late root of a forgotten trace is analysed with
/// the spans of its own batch).
const MAX_AWAITING_PARENT: usize = 100_000;

/// The batches the assembler takes, in the order it took them, so that each commit's watermark
/// covers the batches before it.
pub struct AssembledTraces {
    batches: mpsc::Receiver<TakenBatch>,
    /// The highest watermark a commit may still carry: below the blocks of a batch whose
    /// analysis failed and that the assembler does not hold again yet, so that a restart
    /// meanwhile replays them (`None` when none failed).
    watermark_cap: Option<i64>,
    /// The floors of failed commits, for the assembler to read their blocks back.
    failed_blocks: Arc<FailedBlocks>,
    /// Traces analysed while some of their spans waited for a parent (children exported before
    /// their root), with the newest block that analysis saw: when more of such a trace arrives,
    /// it is analysed again from all its stored spans, as a trace analysed before is.
    awaiting_parent: HashMap<TraceId, i64>,
}

/// Every block after this id is analysed again if the commit fails: the floor below the oldest
/// block of its batches.
pub struct BlocksAfter(i64);

impl Redo for BlocksAfter {
    fn absorb(&mut self, later: Self) {
        self.0 = self.0.min(later.0);
    }
}

impl AssembledTraces {
    /// The batches coming from `batches`; the floors of failed commits go to `failed`.
    pub fn new(batches: mpsc::Receiver<TakenBatch>, failed: Arc<FailedBlocks>) -> Self {
        AssembledTraces {
            batches,
            watermark_cap: None,
            failed_blocks: failed,
            awaiting_parent: HashMap::new(),
        }
    }

    /// `watermark`, held below the blocks of any batch whose analysis failed.
    fn capped(&self, watermark: i64) -> i64 {
        self.watermark_cap
            .map_or(watermark, |cap| watermark.min(cap))
    }
}

impl DueTraces for AssembledTraces {
    type Redo = BlocksAfter;

    const OVERLAPPING_COMMITS: bool = true;

    async fn next(
        &mut self,
        commits: &mut CommitScheduler<BlocksAfter>,
    ) -> Option<DueBatch<BlocksAfter>> {
        let TakenBatch {
            batch,
            watermark,
            requeued_after,
        } = self.batches.recv().await?;
        if let Some(after) = requeued_after {
            // The assembler holds again every block after `after`: failed commits whose blocks
            // those are no longer hold the watermark back. Commits analysed before are written
            // first, still capped; failures not yet requeued keep capping it.
            commits.flush(self).await;
            self.watermark_cap = self.failed_blocks.pending();
            info!(
                after,
                "the blocks of failed analysis commits are held again and analysed anew"
            );
        }
        let arrivals = batch.fresh.iter().map(|trace| trace.arrived).collect();
        let floor = batch_floor(&batch);
        Some(DueBatch {
            batch,
            completion: Completion::Watermark(watermark),
            arrivals,
            redo: BlocksAfter(floor),
        })
    }

    fn before_write(&self, commit: &mut AnalysisCommit) {
        commit.watermark = commit.watermark.map(|watermark| self.capped(watermark));
    }

    fn failed(&mut self, redo: BlocksAfter, err: &PipelineError) {
        let BlocksAfter(floor) = redo;
        self.watermark_cap = Some(self.watermark_cap.map_or(floor, |cap| cap.min(floor)));
        self.failed_blocks.note(floor);
        error!(error = %err, "analysis commit failed; its blocks are read back and analysed again");
    }

    fn seen_before(&mut self, fresh: &[TraceId], prior: &mut HashMap<TraceId, i64>) {
        if self.awaiting_parent.is_empty() {
            return;
        }
        for trace_id in fresh {
            if let Some(seen_through) = self.awaiting_parent.remove(trace_id) {
                prior.entry(*trace_id).or_insert(seen_through);
            }
        }
    }

    fn analysed(&mut self, analysed: &[AnalysedTrace]) {
        for trace in analysed.iter().filter(|trace| trace.awaits_parent) {
            if self.awaiting_parent.len() >= MAX_AWAITING_PARENT {
                self.awaiting_parent.clear();
            }
            self.awaiting_parent
                .insert(trace.trace_id, trace.last_block_id);
        }
    }
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
