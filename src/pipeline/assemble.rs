//! The assembler: one task, no locks. It gathers committed spans by trace, waits out the grace
//! period after a trace's first spans arrive, then hands the trace to the analyzer.
//!
//! On start it replays every block after the analysis watermark, so requests that were stored
//! but not analysed before a crash or restart are analysed now.
//!
//! Invariant: a trace leaves memory only through the analyzer, and the watermark only moves past
//! a block once every trace with spans in it has been analysed and committed.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use collector::model::{Span, TraceId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info};

use super::CommittedBlock;
use super::analyze::{Analyzer, DueTrace};
use crate::store::Store;

/// How often due traces are looked for. A quarter second keeps the export-to-visible delay close
/// to the grace period while batching analysis commits.
const TICK: Duration = Duration::from_millis(250);

/// Blocks read per replay query after a restart.
const REPLAY_BATCH: i64 = 64;

/// Most traces analysed per tick; the rest wait for the next tick, so one tick's commit stays small.
const MAX_TRACES_PER_TICK: usize = 20_000;

/// Most spans held waiting for analysis. Past it the assembler stops taking committed blocks, the
/// writer waits, the ingest queue fills and exporters are told to retry: memory stays bounded
/// when analysis falls behind ingest. 100,000 spans are about a second of ingest at full rate.
const MAX_PENDING_SPANS: usize = 100_000;

struct Pending {
    spans: Vec<Span>,
    first_block_id: i64,
    last_block_id: i64,
}

/// Traces waiting for their grace period to pass.
struct Assembler {
    grace_period: Duration,
    pending: HashMap<TraceId, Pending>,
    /// Spans in `pending`.
    n_pending_spans: usize,
    /// Trace ids in arrival order with their due time; the grace period is constant, so this is
    /// also due order.
    due: VecDeque<(Instant, TraceId)>,
    last_block_id: i64,
}

impl Assembler {
    fn add(&mut self, block: CommittedBlock, now: Instant) {
        self.last_block_id = self.last_block_id.max(block.block_id);
        self.n_pending_spans += block.spans.len();
        for span in block.spans {
            let entry = self.pending.entry(span.trace_id).or_insert_with(|| {
                self.due.push_back((now + self.grace_period, span.trace_id));
                Pending {
                    spans: Vec::new(),
                    first_block_id: block.block_id,
                    last_block_id: block.block_id,
                }
            });
            entry.last_block_id = entry.last_block_id.max(block.block_id);
            entry.spans.push(span);
        }
    }

    fn take_due(&mut self, now: Instant, everything: bool) -> Vec<DueTrace> {
        let mut taken = Vec::new();
        while let Some((due_at, trace_id)) = self.due.front().copied() {
            if (!everything && due_at > now) || taken.len() >= MAX_TRACES_PER_TICK {
                break;
            }
            self.due.pop_front();
            if let Some(pending) = self.pending.remove(&trace_id) {
                self.n_pending_spans -= pending.spans.len();
                taken.push(DueTrace {
                    trace_id,
                    spans: pending.spans,
                    last_block_id: pending.last_block_id,
                });
            }
        }
        taken
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

/// Runs until the writer is gone, then analyses everything still pending.
pub async fn run(
    mut committed: mpsc::Receiver<CommittedBlock>,
    store: Store,
    mut analyzer: Analyzer,
    grace_period: Duration,
) {
    let mut assembler = Assembler {
        grace_period,
        pending: HashMap::new(),
        n_pending_spans: 0,
        due: VecDeque::new(),
        last_block_id: 0,
    };
    if let Err(err) = replay(&store, &mut assembler).await {
        error!(error = %err, "replaying unanalysed blocks failed; they will be retried on the next start");
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            block = committed.recv(), if assembler.n_pending_spans < MAX_PENDING_SPANS => match block {
                Some(block) => assembler.add(block, Instant::now()),
                None => break,
            },
            _ = tick.tick() => {
                let due = assembler.take_due(Instant::now(), false);
                analyzer.process(due, assembler.watermark()).await;
            }
        }
    }
    // Shutdown: the writer has drained the queue; analyse what is left without waiting.
    loop {
        let due = assembler.take_due(Instant::now(), true);
        if due.is_empty() {
            break;
        }
        analyzer.process(due, assembler.watermark()).await;
    }
    analyzer.process(Vec::new(), assembler.watermark()).await;
}

async fn replay(store: &Store, assembler: &mut Assembler) -> Result<(), crate::store::StoreError> {
    let mut after = store.analysis_watermark().await?;
    assembler.last_block_id = after;
    let mut n_blocks = 0;
    loop {
        let blocks = store.blocks_after(after, REPLAY_BATCH).await?;
        let Some((last, _)) = blocks.last() else {
            break;
        };
        after = *last;
        n_blocks += blocks.len();
        let now = Instant::now();
        for (block_id, spans) in blocks {
            assembler.add(CommittedBlock { block_id, spans }, now);
        }
    }
    if n_blocks > 0 {
        info!(n_blocks, "replaying blocks stored but not yet analysed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn traces_wait_out_the_grace_period() {
        let mut assembler = Assembler {
            grace_period: Duration::from_secs(2),
            pending: HashMap::new(),
            n_pending_spans: 0,
            due: VecDeque::new(),
            last_block_id: 0,
        };
        let span = crate::analysis::fixture::parse("auth: GET /health 0..1 server").remove(0);
        let start = Instant::now();
        assembler.add(
            CommittedBlock {
                block_id: 1,
                spans: vec![span.clone()],
            },
            start,
        );
        assert_eq!(assembler.watermark(), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assembler.add(
            CommittedBlock {
                block_id: 2,
                spans: vec![span],
            },
            Instant::now(),
        );
        assert!(assembler.take_due(Instant::now(), false).is_empty());
        tokio::time::advance(Duration::from_millis(1001)).await;
        let due = assembler.take_due(Instant::now(), false);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].spans.len(),
            2,
            "spans of a later block join their trace"
        );
        assert_eq!(due[0].last_block_id, 2);
        assert_eq!(assembler.watermark(), 2);
    }
}
