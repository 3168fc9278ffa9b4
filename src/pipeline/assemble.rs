//! The assembler: one task, no locks. It gathers committed blocks by trace, waits out the grace
//! period after a trace's first spans arrive, then decodes the trace's spans from the blocks and
//! hands the trace to the analysis (through `assembled`, its source of due traces).
//!
//! Blocks are held in their stored, compressed form (about 40 bytes a span rather than about a
//! kilobyte decoded), so a grace period's worth of traffic at full rate fits in a few megabytes,
//! and each block is decoded once, when its traces fall due.
//!
//! On start it replays every block after the analysis watermark, so requests that were stored
//! but not analysed before a crash or restart are analysed now. After an analysis commit failed,
//! it reads the blocks after the failed batch's floor back the same way (`requeue`).
//!
//! Invariant: a trace leaves memory only through the analyzer, and the watermark only moves past
//! a block once every trace with spans in it has been analysed and committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use collector::model::TraceId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::CommittedBlock;
use super::analyze::{self, Analyzer};
use super::assembled::AssembledTraces;
use super::held_bound::HeldBound;
use super::requeue::{FailedBlocks, REQUEUE_INTERVAL};
use super::work::{Batch, FreshTrace};
use crate::store::{Store, StoreError, block};

/// How often due traces are looked for when the last batch left none due. Batches come back to
/// back while more are due; at the held bound's target lateness the analysis catches up often,
/// and a longer tick would then leave it idle with traces falling due, lowering the analysed rate
/// and the batches each commit merges (docs/benchmarks-history.md).
const TICK: Duration = Duration::from_millis(50);

/// Blocks read per replay query after a restart.
const REPLAY_BATCH: i64 = 64;

/// Traces analysed and committed at once (about 10,000 spans decoded at once), so one batch's
/// memory and commit stay small; a batch goes past it only to finish the blocks it has taken.
/// When more are due, the next batch follows at once. Larger batches gain little or no analysed
/// rate for tens of MiB more memory at full rate (docs/benchmarks-history.md).
const MAX_TRACES_PER_BATCH: usize = 1_000;

struct Pending {
    block_ids: Vec<i64>,
    first_block_id: i64,
    last_block_id: i64,
}

struct HeldBlock {
    data: Arc<Vec<u8>>,
    /// Pending traces with spans in this block; the block is let go at zero.
    n_waiting: usize,
}

/// Traces waiting for their grace period to pass, and the blocks holding their spans.
struct Assembler {
    grace_period: Duration,
    pending: HashMap<TraceId, Pending>,
    blocks: HashMap<i64, HeldBlock>,
    /// Bytes of the blocks in `blocks`.
    held_bytes: usize,
    /// At or past this many held bytes, no block is taken.
    held_bound: HeldBound,
    /// The watermark of the last batch sent, if that batch was empty.
    empty_sent_with: Option<i64>,
    /// Trace ids in arrival order with their due time; the grace period is constant, so this is
    /// also due order.
    due: VecDeque<(Instant, TraceId)>,
    last_block_id: i64,
}

impl Assembler {
    fn new(grace_period: Duration) -> Self {
        Assembler {
            grace_period,
            pending: HashMap::new(),
            blocks: HashMap::new(),
            held_bytes: 0,
            held_bound: HeldBound::new(grace_period),
            empty_sent_with: None,
            due: VecDeque::new(),
            last_block_id: 0,
        }
    }

    fn add(&mut self, block: CommittedBlock, now: Instant) {
        self.last_block_id = self.last_block_id.max(block.block_id);
        if block.trace_ids.is_empty() {
            return;
        }
        for trace_id in &block.trace_ids {
            let entry = self.pending.entry(*trace_id).or_insert_with(|| {
                self.due.push_back((now + self.grace_period, *trace_id));
                Pending {
                    block_ids: Vec::new(),
                    first_block_id: block.block_id,
                    last_block_id: block.block_id,
                }
            });
            entry.last_block_id = entry.last_block_id.max(block.block_id);
            entry.block_ids.push(block.block_id);
        }
        self.held_bytes += block.data.len();
        self.blocks.insert(
            block.block_id,
            HeldBlock {
                data: block.data,
                n_waiting: block.trace_ids.len(),
            },
        );
    }

    fn take_due(&mut self, now: Instant, everything: bool) -> Batch {
        let mut taken = Batch::default();
        while let Some((due_at, trace_id)) = self.due.front().copied() {
            if !everything && due_at > now {
                break;
            }
            // Past the limit, only traces whose blocks the batch already has: a block's traces
            // are due together, and leaving some for the next batch would decode it twice.
            if taken.fresh.len() >= MAX_TRACES_PER_BATCH
                && !self.pending.get(&trace_id).is_some_and(|pending| {
                    pending
                        .block_ids
                        .iter()
                        .all(|block_id| taken.blocks.contains_key(block_id))
                })
            {
                break;
            }
            self.due.pop_front();
            let Some(pending) = self.pending.remove(&trace_id) else {
                continue;
            };
            for block_id in &pending.block_ids {
                let Some(held) = self.blocks.get_mut(block_id) else {
                    continue;
                };
                taken
                    .blocks
                    .entry(*block_id)
                    .or_insert_with(|| Arc::clone(&held.data));
                held.n_waiting -= 1;
                if held.n_waiting == 0 {
                    self.held_bytes -= held.data.len();
                    self.blocks.remove(block_id);
                }
            }
            taken.fresh.push(FreshTrace {
                trace_id,
                block_ids: pending.block_ids,
                last_block_id: pending.last_block_id,
                arrived: due_at - self.grace_period,
            });
        }
        taken
    }

    /// The due traces, at most about [`MAX_TRACES_PER_BATCH`] (every one with `everything`), with
    /// the watermark their commit may carry.
    fn take_due_batch(&mut self, now: Instant, everything: bool) -> TakenBatch {
        let lateness = self
            .due
            .front()
            .and_then(|(due_at, _)| now.checked_duration_since(*due_at));
        let held_before = self.held_bytes;
        let batch = self.take_due(now, everything);
        let released = held_before - self.held_bytes;
        self.held_bound
            .batch_taken(now, lateness, held_before, released);
        TakenBatch {
            batch,
            watermark: self.watermark(),
            requeued_after: None,
        }
    }

    /// Whether `due` is worth sending, noting it as sent if so. A batch with traces always is. An
    /// empty one writes whatever the analysis still holds and the watermark; the same again would
    /// write nothing new, so it is not, and an idle server does not write every tick.
    fn worth_sending(&mut self, due: &TakenBatch) -> bool {
        if due.requeued_after.is_some() {
            return true;
        }
        let empty_with = due.batch.is_empty().then_some(due.watermark);
        let worth = empty_with.is_none() || empty_with != self.empty_sent_with;
        if worth {
            self.empty_sent_with = empty_with;
        }
        worth
    }

    /// Every block up to the returned id has no trace waiting here.
    fn watermark(&self) -> i64 {
        self.pending
            .values()
            .map(|p| p.first_block_id - 1)
            .min()
            .unwrap_or(self.last_block_id)
    }
}

/// Batches taken but not yet analysed, besides the one being analysed. One is enough to keep the
/// analysis busy; more would only hold more blocks outside the held bound.
const QUEUED_BATCHES: usize = 1;

/// Due traces taken together, with the watermark to commit with their analysis.
pub(super) struct TakenBatch {
    pub(super) batch: Batch,
    pub(super) watermark: i64,
    /// Set when the blocks after this id were read back for failed analysis commits, before
    /// this batch was taken: the analysis may stop holding its watermark below them.
    pub(super) requeued_after: Option<i64>,
}

/// Runs until the writer is gone, then analyses everything still pending.
///
/// The analysis runs as a task of its own, fed one batch ahead: while it decodes, analyses and
/// commits, this task goes on taking committed blocks. Were one task to do both, the writer's
/// small queue would fill during every batch and ingest would stop until the batch was done.
pub async fn run(
    mut committed: mpsc::Receiver<CommittedBlock>,
    store: Store,
    analyzer: Analyzer,
    grace_period: Duration,
) {
    let mut assembler = Assembler::new(grace_period);
    let failed = Arc::new(FailedBlocks::default());
    let mut last_requeue = Instant::now();
    if let Err(err) = replay(&store, &mut assembler).await {
        error!(error = %err, "replaying unanalysed blocks failed; they will be retried on the next start");
    }
    let (batches, to_analyse) = mpsc::channel(QUEUED_BATCHES);
    let source = AssembledTraces::new(to_analyse, Arc::clone(&failed));
    let analysis = tokio::spawn(analyze::run(source, analyzer));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set by the tick, and kept while full batches show that more are due: then the next batch is
    // taken as soon as the analysis can queue it, taking turns with committed blocks (select
    // picks among ready branches at random).
    let mut look_for_due = false;
    loop {
        tokio::select! {
            block = committed.recv(), if assembler.held_bytes < assembler.held_bound.get() => match block {
                Some(block) => assembler.add(block, Instant::now()),
                None => break,
            },
            permit = batches.reserve(), if look_for_due => {
                let Ok(permit) = permit else { break };
                let requeued_after = if failed.pending().is_some() && last_requeue.elapsed() >= REQUEUE_INTERVAL {
                    last_requeue = Instant::now();
                    requeue(&store, &mut assembler, &failed).await
                } else {
                    None
                };
                // An empty batch still commits the watermark, past blocks with nothing due.
                let mut due = assembler.take_due_batch(Instant::now(), false);
                due.requeued_after = requeued_after;
                look_for_due = due.batch.len() >= MAX_TRACES_PER_BATCH;
                if assembler.worth_sending(&due) {
                    permit.send(due);
                }
            }
            _ = tick.tick(), if !look_for_due => look_for_due = true,
        }
    }
    // Shutdown: the writer has drained the queue; analyse what is left without waiting.
    loop {
        let due = assembler.take_due_batch(Instant::now(), true);
        let last = due.batch.is_empty();
        if batches.send(due).await.is_err() || last {
            break;
        }
    }
    drop(batches);
    if let Err(err) = analysis.await {
        error!(error = %err, "the analysis task failed; unanalysed blocks are replayed on the next start");
    }
}

async fn replay(store: &Store, assembler: &mut Assembler) -> Result<(), StoreError> {
    let after = store.analysis_watermark().await?;
    assembler.last_block_id = after;
    let n_blocks = hold_stored_blocks(store, assembler, after, i64::MAX).await?;
    if n_blocks > 0 {
        info!(n_blocks, "replaying blocks stored but not yet analysed");
    }
    Ok(())
}

/// Reads back the blocks of failed analysis commits: every block after the lowest failed floor
/// up to the newest this assembler has taken (later ones are still on their way to it), except
/// those it holds. Returns that floor once they are held; on an error it stays noted.
async fn requeue(store: &Store, assembler: &mut Assembler, failed: &FailedBlocks) -> Option<i64> {
    let after = failed.take()?;
    let through = assembler.last_block_id;
    match hold_stored_blocks(store, assembler, after, through).await {
        Ok(n_blocks) => {
            info!(
                n_blocks,
                after, "analysing again the blocks of failed analysis commits"
            );
            Some(after)
        }
        Err(err) => {
            failed.note(after);
            warn!(error = %err, "reading back the blocks of failed analysis commits failed; retrying");
            None
        }
    }
}

/// Holds the stored blocks in (`after`, `through`] that are not held already, as if they had
/// just been committed; returns how many.
async fn hold_stored_blocks(
    store: &Store,
    assembler: &mut Assembler,
    mut after: i64,
    through: i64,
) -> Result<usize, StoreError> {
    let mut n_blocks = 0;
    while after < through {
        let blocks = store.blocks_after(after, REPLAY_BATCH).await?;
        let Some((last, _)) = blocks.last() else {
            break;
        };
        after = *last;
        let now = Instant::now();
        for (block_id, data) in blocks {
            if block_id > through || assembler.blocks.contains_key(&block_id) {
                continue;
            }
            n_blocks += 1;
            let trace_ids = block::trace_ids(&data)?;
            assembler.add(
                CommittedBlock {
                    block_id,
                    data: Arc::new(data),
                    trace_ids,
                },
                now,
            );
        }
    }
    Ok(n_blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::fixture;

    fn committed(block_id: i64, fixture_text: &str) -> CommittedBlock {
        let encoded = block::encode(fixture::parse(fixture_text), 0);
        CommittedBlock {
            block_id,
            data: Arc::new(encoded.data),
            trace_ids: encoded.trace_ids,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_held_bound_hears_how_late_each_batch_is_and_what_it_let_go() {
        const MIB: usize = 1024 * 1024;
        let mut assembler = Assembler::new(Duration::from_secs(2));
        let start = assembler.held_bound.get();
        let block = |block_id: i64| CommittedBlock {
            block_id,
            data: Arc::new(vec![0; 4 * MIB]),
            trace_ids: vec![TraceId(u128::try_from(block_id).unwrap().to_be_bytes())],
        };
        let half_second = Duration::from_millis(500);
        async fn take_one(assembler: &mut Assembler, wait: Duration) {
            tokio::time::advance(wait).await;
            let taken = assembler.take_due_batch(Instant::now(), false).batch.len();
            assert_eq!(taken, 1);
        }
        // Blocks of 4 MiB at 0, 1, 2, 3 and 4 s, each with a trace due 2 s later.
        assembler.add(block(1), Instant::now());
        tokio::time::advance(2 * half_second).await;
        assembler.add(block(2), Instant::now());
        take_one(&mut assembler, 2 * half_second).await;
        assert_eq!(
            assembler.held_bound.get(),
            start,
            "on time at 2 s, 8 MiB held under 12"
        );
        assembler.add(block(3), Instant::now());
        tokio::time::advance(2 * half_second).await;
        assembler.add(block(4), Instant::now());
        // Then taken half a second late, a second apart: 4 MiB let go a second.
        take_one(&mut assembler, half_second).await;
        tokio::time::advance(half_second).await;
        assembler.add(block(5), Instant::now());
        take_one(&mut assembler, half_second).await;
        take_one(&mut assembler, 2 * half_second).await;
        // The third late batch is the first timed: 4 MiB let go in a second, so 9 MiB is a
        // grace period and the target lateness.
        assert!(
            assembler.held_bound.get().abs_diff(9 * MIB) <= 1,
            "{} bytes",
            assembler.held_bound.get()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_batch_is_sent_once_per_watermark() {
        let mut assembler = Assembler::new(Duration::from_secs(2));
        let take = |assembler: &mut Assembler| {
            let due = assembler.take_due_batch(Instant::now(), false);
            assembler.worth_sending(&due)
        };
        assert!(
            take(&mut assembler),
            "the first empty batch writes the watermark"
        );
        assert!(!take(&mut assembler), "the same again writes nothing");
        assembler.add(
            committed(1, "auth: GET /health 0..1 server"),
            Instant::now(),
        );
        assert!(
            !take(&mut assembler),
            "nothing due, the watermark not moved"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(take(&mut assembler), "a batch with a trace");
        assert!(
            take(&mut assembler),
            "then an empty one, which writes what the analysis still holds"
        );
        assert!(!take(&mut assembler));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_finishes_the_blocks_it_takes() {
        let mut assembler = Assembler::new(Duration::from_secs(2));
        let n_traces = MAX_TRACES_PER_BATCH + 500;
        let trace_ids = (0..n_traces as u128)
            .map(|n| TraceId(n.to_be_bytes()))
            .collect();
        let block = |block_id, trace_ids| CommittedBlock {
            block_id,
            data: Arc::new(vec![0; 8]),
            trace_ids,
        };
        assembler.add(block(1, trace_ids), Instant::now());
        assembler.add(block(2, vec![TraceId([0xff; 16])]), Instant::now());
        tokio::time::advance(Duration::from_secs(3)).await;
        let first = assembler.take_due(Instant::now(), false);
        assert_eq!(first.len(), n_traces, "all of block 1, past the limit");
        assert_eq!(first.blocks.len(), 1);
        let second = assembler.take_due(Instant::now(), false);
        assert_eq!(second.len(), 1, "block 2 waits for the next batch");
    }

    #[tokio::test(start_paused = true)]
    async fn traces_wait_out_the_grace_period_and_keep_only_compact_blocks() {
        let mut assembler = Assembler::new(Duration::from_secs(2));
        let start = Instant::now();
        assembler.add(committed(1, "auth: GET /health 0..1 server"), start);
        assert_eq!(assembler.watermark(), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assembler.add(
            committed(
                2,
                "auth: GET /health 0..1 server\n  SELECT 1 0..1 client db.system=sqlite",
            ),
            Instant::now(),
        );
        assert!(assembler.take_due(Instant::now(), false).is_empty());
        assert_eq!(assembler.blocks.len(), 2);
        tokio::time::advance(Duration::from_millis(1001)).await;
        let taken = assembler.take_due(Instant::now(), false);
        assert_eq!(taken.len(), 1);
        assert!(
            assembler.blocks.is_empty(),
            "blocks are let go once their traces are taken"
        );
        assert_eq!(assembler.held_bytes, 0);
        assert_eq!(
            taken.fresh[0].block_ids,
            [1, 2],
            "spans of a later block join their trace"
        );
        assert_eq!(taken.fresh[0].last_block_id, 2);
        assert_eq!(taken.blocks.len(), 2);
        assert_eq!(assembler.watermark(), 2);
    }
}
