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
use super::analyze::Analyzer;
use super::work::{Batch, FreshTrace};
use crate::store::{Store, StoreError, block};

/// How often due traces are looked for when the last batch left none due. Batches come back to
/// back while more are due; at the held bound's target lateness the analysis catches up often,
/// and a quarter second tick then left it idle with traces falling due: the analysed rate fell
/// an eighth and commits merged fewer batches (BENCHMARKS.md).
const TICK: Duration = Duration::from_millis(50);

/// Blocks read per replay query after a restart.
const REPLAY_BATCH: i64 = 64;

/// Traces analysed and committed at once (about 10,000 spans decoded at once), so one batch's
/// memory and commit stay small; a batch goes past it only to finish the blocks it has taken.
/// When more are due, the next batch follows at once.
/// 5,000 analysed no faster and held 70 MiB more at full rate; 2,000 analysed 3% more than this
/// and held 20-25 MiB more (BENCHMARKS.md).
const MAX_TRACES_PER_BATCH: usize = 1_000;

/// The most compressed block bytes held waiting for analysis, per second of the grace period (at
/// least one second's worth): the ceiling of the held bound below. Past the bound the assembler
/// stops taking committed blocks, the writer waits, the ingest queue fills and exporters are told
/// to retry: memory stays bounded when analysis falls behind ingest. At 36 bytes a span the
/// ceiling holds a grace period of 350,000 spans/s, which caps the analysed rate there. At the
/// default 2 s, 32 MiB held up to 3 s of backlog at saturation (visible in 5-6 s and 50 MiB more
/// RSS), and 16 MiB capped the rate at 230,000 spans/s on a machine that analysed 270,000 with 24
/// (BENCHMARKS.md).
const HELD_BYTES_PER_GRACE_SECOND: usize = 12 * 1024 * 1024;

/// How late the oldest due trace may be when a batch is taken. At saturation the held blocks are
/// a queue in front of the analysis: what they hold beyond a grace period's worth is backlog, and
/// a trace waits its bytes over the analysed rate past its grace period. With the bound fixed at
/// its ceiling traces waited 0.8-1.1 s past it on a machine that analysed 260,000 spans/s. So the
/// bound follows the lateness: it shrinks while batches leave later than this and grows back
/// while they leave sooner, and settles where the backlog lasts about this long at whatever rate
/// the machine analyses; exporters wait instead, each for its own export. Refusing every block
/// while late was worse: the grace period's pipeline emptied, and two seconds later the analysis
/// starved (BENCHMARKS.md).
const TARGET_LATENESS: Duration = Duration::from_millis(250);

/// The share by which the held bound moves per batch taken: about 5% a second at full rate.
/// The effect of a move shows a grace period later, so a faster bound overshoots: at 1% a batch
/// it swung between 9 and 24 MiB and the analysed rate fell a fifth (BENCHMARKS.md).
const HELD_BOUND_STEP: f64 = 0.002;

/// The least share of the ceiling the held bound keeps, so that after a long stall of the
/// analysis (which shrinks it batch by batch) intake is not held low for long: at the default
/// 2 s, 6 MiB, a grace period at about 85,000 spans/s.
const HELD_BOUND_FLOOR: f64 = 0.25;

/// The most block bytes held for a grace period.
fn max_held_bytes(grace_period: Duration) -> usize {
    let seconds = grace_period.as_secs_f64().max(1.0);
    (HELD_BYTES_PER_GRACE_SECOND as f64 * seconds) as usize
}

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
    /// Past this many, no block is taken; moves between a floor and [`max_held_bytes`] with the
    /// lateness of the batches taken.
    held_bound: usize,
    /// The most `held_bound` may be.
    max_held_bytes: usize,
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
            held_bound: max_held_bytes(grace_period),
            max_held_bytes: max_held_bytes(grace_period),
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
    fn take_due_batch(&mut self, now: Instant, everything: bool) -> DueBatch {
        if let Some((due_at, _)) = self.due.front()
            && *due_at <= now
        {
            self.follow_lateness(now - *due_at);
        }
        let batch = self.take_due(now, everything);
        DueBatch {
            batch,
            watermark: self.watermark(),
        }
    }

    /// Whether `due` is worth sending, noting it as sent if so. A batch with traces always is. An
    /// empty one writes whatever the analysis still holds and the watermark; the same again would
    /// write nothing new, so it is not, and an idle server does not write every tick.
    fn worth_sending(&mut self, due: &DueBatch) -> bool {
        let empty_with = due.batch.is_empty().then_some(due.watermark);
        let worth = empty_with.is_none() || empty_with != self.empty_sent_with;
        if worth {
            self.empty_sent_with = empty_with;
        }
        worth
    }

    /// Moves the held bound one step against the lateness of the oldest due trace, between its
    /// floor and ceiling.
    fn follow_lateness(&mut self, lateness: Duration) {
        let factor = if lateness > TARGET_LATENESS {
            1.0 - HELD_BOUND_STEP
        } else {
            1.0 + HELD_BOUND_STEP
        };
        let floor = self.max_held_bytes as f64 * HELD_BOUND_FLOOR;
        self.held_bound =
            (self.held_bound as f64 * factor).clamp(floor, self.max_held_bytes as f64) as usize;
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
struct DueBatch {
    batch: Batch,
    watermark: i64,
}

/// Runs until the writer is gone, then analyses everything still pending.
///
/// The analysis runs as a task of its own, fed one batch ahead: while it decodes, analyses and
/// commits, this task goes on taking committed blocks. When one task did both, the writer's small
/// queue filled during every batch and ingest stopped until the batch was done; the server then
/// used three quarters of the machine at saturation (BENCHMARKS.md).
pub async fn run(
    mut committed: mpsc::Receiver<CommittedBlock>,
    store: Store,
    analyzer: Analyzer,
    grace_period: Duration,
) {
    let mut assembler = Assembler::new(grace_period);
    if let Err(err) = replay(&store, &mut assembler).await {
        error!(error = %err, "replaying unanalysed blocks failed; they will be retried on the next start");
    }
    let (batches, to_analyse) = mpsc::channel(QUEUED_BATCHES);
    let analysis = tokio::spawn(analyse(to_analyse, analyzer));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set by the tick, and kept while full batches show that more are due: then the next batch is
    // taken as soon as the analysis can queue it, taking turns with committed blocks (select
    // picks among ready branches at random).
    let mut look_for_due = false;
    loop {
        tokio::select! {
            block = committed.recv(), if assembler.held_bytes < assembler.held_bound => match block {
                Some(block) => assembler.add(block, Instant::now()),
                None => break,
            },
            permit = batches.reserve(), if look_for_due => {
                let Ok(permit) = permit else { break };
                // An empty batch still commits the watermark, past blocks with nothing due.
                let due = assembler.take_due_batch(Instant::now(), false);
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

/// Analyses batches in the order they were taken, so each commit's watermark covers the batches
/// before it.
async fn analyse(mut batches: mpsc::Receiver<DueBatch>, mut analyzer: Analyzer) {
    while let Some(DueBatch { batch, watermark }) = batches.recv().await {
        analyzer.process(batch, watermark).await;
    }
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
        let encoded = block::encode(fixture::parse(fixture_text), 0);
        CommittedBlock {
            block_id,
            data: Arc::new(encoded.data),
            trace_ids: encoded.trace_ids,
        }
    }

    #[test]
    fn the_held_bound_follows_the_grace_period_and_never_closes() {
        let mib = 1024 * 1024;
        assert_eq!(max_held_bytes(Duration::from_secs(2)), 24 * mib);
        assert_eq!(max_held_bytes(Duration::from_secs(10)), 120 * mib);
        assert_eq!(
            max_held_bytes(Duration::ZERO),
            12 * mib,
            "without a grace period blocks still flow"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_held_bound_shrinks_while_batches_leave_late_and_grows_back_when_on_time() {
        let mut assembler = Assembler::new(Duration::from_secs(2));
        let ceiling = assembler.max_held_bytes;
        assert_eq!(
            assembler.held_bound, ceiling,
            "a new assembler holds up to its ceiling"
        );
        let block = |block_id: i64| CommittedBlock {
            block_id,
            data: Arc::new(vec![0; 8]),
            trace_ids: vec![TraceId(u128::try_from(block_id).unwrap().to_be_bytes())],
        };
        // Each trace is taken a second past its grace period: the bound shrinks a step a batch.
        for block_id in 1..=1_000 {
            assembler.add(block(block_id), Instant::now());
            tokio::time::advance(Duration::from_secs(3)).await;
            assert_eq!(
                assembler.take_due_batch(Instant::now(), false).batch.len(),
                1
            );
        }
        let floor = (ceiling as f64 * HELD_BOUND_FLOOR) as usize;
        assert_eq!(
            assembler.held_bound, floor,
            "1,000 late batches reach the floor and stop"
        );
        // Taken on time, the bound grows back, up to its ceiling and not past it.
        for block_id in 1_001..=2_000 {
            assembler.add(block(block_id), Instant::now());
            tokio::time::advance(Duration::from_secs(2)).await;
            assert_eq!(
                assembler.take_due_batch(Instant::now(), false).batch.len(),
                1
            );
        }
        assert_eq!(assembler.held_bound, ceiling);
        // Nothing due moves nothing: the lateness of a batch is not known before it is due.
        assembler.held_bound = floor;
        assembler.add(block(2_001), Instant::now());
        assert!(
            assembler
                .take_due_batch(Instant::now(), false)
                .batch
                .is_empty()
        );
        assert_eq!(assembler.held_bound, floor);
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
