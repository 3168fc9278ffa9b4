//! The assembler: one task, no locks. It gathers committed blocks by trace, waits out the grace
//! period after a trace's first spans arrive, then decodes the trace's spans from the blocks and
//! hands the trace to the analyzer.
//!
//! Blocks are held in their stored, compressed form (about 40 bytes a span rather than about a
//! kilobyte decoded), so a grace period's worth of traffic at full rate fits in a few megabytes,
//! and each block is decoded once, when its traces fall due.
//!
//! On start it replays every block after the analysis watermark, so requests that were stored
//! but not analysed before a crash or restart are analysed now.
//!
//! Invariant: a trace leaves memory only through the analyzer, and the watermark only moves past
//! a block once every trace with spans in it has been analysed and committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use collector::model::TraceId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info};

use super::CommittedBlock;
use super::analyze::{Analyzer, DueTrace};
use crate::store::{Store, StoreError, block};

/// How often due traces are looked for. A quarter second keeps the export-to-visible delay close
/// to the grace period while batching analysis commits.
const TICK: Duration = Duration::from_millis(250);

/// Blocks read per replay query after a restart.
const REPLAY_BATCH: i64 = 64;

/// Most traces analysed per tick (about 50,000 spans decoded at once); the rest wait for the next
/// tick, so one tick's memory and commit stay small.
const MAX_TRACES_PER_TICK: usize = 5_000;

/// Most compressed block bytes held waiting for analysis. Past it the assembler stops taking
/// committed blocks, the writer waits, the ingest queue fills and exporters are told to retry:
/// memory stays bounded when analysis falls behind ingest. 64 MiB hold over a million spans,
/// ten seconds of full-rate ingest: far more than a grace period.
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;

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
    /// Trace ids in arrival order with their due time; the grace period is constant, so this is
    /// also due order.
    due: VecDeque<(Instant, TraceId)>,
    last_block_id: i64,
}

/// Traces taken for analysis, with the blocks their spans are in.
struct Taken {
    traces: Vec<(TraceId, Pending)>,
    blocks: HashMap<i64, Arc<Vec<u8>>>,
}

impl Assembler {
    fn new(grace_period: Duration) -> Self {
        Assembler {
            grace_period,
            pending: HashMap::new(),
            blocks: HashMap::new(),
            held_bytes: 0,
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

    fn take_due(&mut self, now: Instant, everything: bool) -> Taken {
        let mut taken = Taken {
            traces: Vec::new(),
            blocks: HashMap::new(),
        };
        while let Some((due_at, trace_id)) = self.due.front().copied() {
            if (!everything && due_at > now) || taken.traces.len() >= MAX_TRACES_PER_TICK {
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
            taken.traces.push((trace_id, pending));
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

/// Decodes each block once and hands every due trace its spans. CPU work: run it off the async
/// workers. A block that cannot be decoded (it was written by this process moments ago, so only
/// memory corruption could do it) is logged and its spans skipped.
fn assemble(taken: Taken) -> Vec<DueTrace> {
    let mut traces: HashMap<TraceId, DueTrace> = taken
        .traces
        .iter()
        .map(|(trace_id, pending)| {
            (
                *trace_id,
                DueTrace {
                    trace_id: *trace_id,
                    spans: Vec::new(),
                    last_block_id: pending.last_block_id,
                },
            )
        })
        .collect();
    for (block_id, data) in taken.blocks {
        match block::decode(&data) {
            Ok(spans) => {
                for span in spans {
                    if let Some(trace) = traces.get_mut(&span.trace_id) {
                        trace.spans.push(span);
                    }
                }
            }
            Err(err) => error!(error = %err, block_id, "decoding a committed block failed"),
        }
    }
    traces
        .into_values()
        .filter(|trace| !trace.spans.is_empty())
        .collect()
}

async fn analyse_due(assembler: &mut Assembler, analyzer: &mut Analyzer, everything: bool) -> bool {
    let taken = assembler.take_due(Instant::now(), everything);
    if taken.traces.is_empty() {
        return false;
    }
    let due = match tokio::task::spawn_blocking(move || assemble(taken)).await {
        Ok(due) => due,
        Err(err) => {
            error!(error = %err, "assembling due traces failed");
            return true;
        }
    };
    analyzer.process(due, assembler.watermark()).await;
    true
}

/// Runs until the writer is gone, then analyses everything still pending.
pub async fn run(
    mut committed: mpsc::Receiver<CommittedBlock>,
    store: Store,
    mut analyzer: Analyzer,
    grace_period: Duration,
) {
    let mut assembler = Assembler::new(grace_period);
    if let Err(err) = replay(&store, &mut assembler).await {
        error!(error = %err, "replaying unanalysed blocks failed; they will be retried on the next start");
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            block = committed.recv(), if assembler.held_bytes < MAX_HELD_BYTES => match block {
                Some(block) => assembler.add(block, Instant::now()),
                None => break,
            },
            _ = tick.tick() => {
                if !analyse_due(&mut assembler, &mut analyzer, false).await {
                    analyzer.process(Vec::new(), assembler.watermark()).await;
                }
            }
        }
    }
    // Shutdown: the writer has drained the queue; analyse what is left without waiting.
    while analyse_due(&mut assembler, &mut analyzer, true).await {}
    analyzer.process(Vec::new(), assembler.watermark()).await;
}

async fn replay(store: &Store, assembler: &mut Assembler) -> Result<(), StoreError> {
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
        for (block_id, data) in blocks {
            let mut trace_ids: Vec<TraceId> = block::decode(&data)?
                .iter()
                .map(|span| span.trace_id)
                .collect();
            trace_ids.sort_unstable();
            trace_ids.dedup();
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
    if n_blocks > 0 {
        info!(n_blocks, "replaying blocks stored but not yet analysed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::fixture;

    fn committed(block_id: i64, fixture_text: &str) -> CommittedBlock {
        let encoded = block::encode(&fixture::parse(fixture_text), 0);
        CommittedBlock {
            block_id,
            data: Arc::new(encoded.data),
            trace_ids: encoded.trace_ids,
        }
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
        assert!(assembler.take_due(Instant::now(), false).traces.is_empty());
        assert_eq!(assembler.blocks.len(), 2);
        tokio::time::advance(Duration::from_millis(1001)).await;
        let taken = assembler.take_due(Instant::now(), false);
        assert_eq!(taken.traces.len(), 1);
        assert!(
            assembler.blocks.is_empty(),
            "blocks are let go once their traces are taken"
        );
        assert_eq!(assembler.held_bytes, 0);
        let due = assemble(taken);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].spans.len(),
            3,
            "spans of a later block join their trace"
        );
        assert_eq!(due[0].last_block_id, 2);
        assert_eq!(assembler.watermark(), 2);
    }
}
