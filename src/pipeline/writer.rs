//! The store writer: one task that takes queued exports, commits as many as are waiting in one
//! transaction (group commit), and only then answers each export.
//!
//! Invariant: an export is answered `Ok` only after its block is committed; on a store error
//! every export of the group is answered with the error, so nothing is acknowledged unwritten.
//!
//! When the store fails (PostgreSQL unreachable or restarting, a full disk), the writer logs one
//! error for the outage, answers every export that waited meanwhile at once, and keeps trying
//! with each new group; the first commit that succeeds ends the outage with one more log line.
//! The store's pool replaces dead connections, so ingest resumes without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use collector::sink::{CommitError, Export, ExportReceiver, IngestStats, SpansRejected};
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use super::CommittedBlock;
use crate::store::Store;

/// Most spans committed in one transaction. Larger groups amortize the commit (fsync of the WAL)
/// further but make every export in the group wait for the whole group to be written.
const MAX_GROUP_SPANS: usize = 20_000;

/// A store outage as the writer sees it: from the first failed commit to the next one that
/// succeeds. It is logged when it starts and when it ends, not once per refused group.
struct Outage {
    since: Instant,
    failed_commits: u64,
    refused_spans: u64,
}

impl Outage {
    fn ended(self) {
        info!(
            down_for = ?Duration::from_secs(self.since.elapsed().as_secs()),
            failed_commits = self.failed_commits,
            refused_spans = self.refused_spans,
            "store available again: span commits succeed"
        );
    }
}

/// Answers a failed group, and every export that queued up while it was being tried: the store
/// was just seen failing, so they are refused now rather than after another attempt of their own.
/// An export thus waits for at most one attempt, which the store bounds (PostgreSQL: the pool's
/// acquire timeout), and its exporter retries well within its own deadline.
fn refuse(
    replies: Vec<tokio::sync::oneshot::Sender<Result<(), CommitError>>>,
    n_spans: usize,
    exports: &mut ExportReceiver,
    reason: &CommitError,
    stats: &IngestStats,
) -> usize {
    let mut n_refused = n_spans;
    for reply in replies {
        let _ = reply.send(Err(reason.clone()));
    }
    while let Ok(Export { block, reply }) = exports.try_recv() {
        n_refused += block.n_spans as usize;
        let _ = reply.send(Err(reason.clone()));
    }
    // Counted, not logged per group: the outage has its own log lines.
    SpansRejected {
        n_spans: n_refused as u64,
        reason: "store_unavailable",
    }
    .count(stats);
    n_refused
}

/// Runs until every sender of the queue is gone and the queue is drained.
pub async fn run(
    mut exports: ExportReceiver,
    store: Store,
    stats: Arc<IngestStats>,
    committed: mpsc::Sender<CommittedBlock>,
) {
    let mut outage: Option<Outage> = None;
    while let Some(first) = exports.recv().await {
        let mut group = vec![first];
        let mut n_spans = group[0].block.n_spans as usize;
        while n_spans < MAX_GROUP_SPANS {
            match exports.try_recv() {
                Ok(export) => {
                    n_spans += export.block.n_spans as usize;
                    group.push(export);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let (replies, blocks): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|export| (export.reply, export.block))
            .unzip();
        match store.insert_blocks(&blocks).await {
            Ok(ids) => {
                stats.record_commit(n_spans as u64, started.elapsed());
                if let Some(outage) = outage.take() {
                    outage.ended();
                }
                debug!(n_exports = replies.len(), n_spans, "committed span blocks");
                for reply in replies {
                    // The exporter may have given up waiting; its spans are committed all the same.
                    let _ = reply.send(Ok(()));
                }
                let forward = blocks
                    .into_iter()
                    .zip(ids)
                    .map(|(block, block_id)| CommittedBlock {
                        block_id,
                        data: Arc::new(block.data),
                        trace_ids: block.trace_ids,
                    });
                for block in forward {
                    if committed.send(block).await.is_err() {
                        // The assembler is gone (shutdown): the blocks are stored and will be
                        // analysed from the store on the next start.
                        break;
                    }
                }
            }
            Err(err) => {
                stats.record_commit_failure();
                let reason = CommitError(err.to_string());
                let outage = outage.get_or_insert_with(|| {
                    error!(
                        error = %err,
                        n_spans,
                        "store unavailable: committing span blocks failed; exports are refused as unavailable until a commit succeeds"
                    );
                    Outage {
                        since: started,
                        failed_commits: 0,
                        refused_spans: 0,
                    }
                });
                outage.failed_commits += 1;
                let n_refused = refuse(replies, n_spans, &mut exports, &reason, &stats);
                outage.refused_spans += n_refused as u64;
                debug!(error = %err, n_refused, "span commit failed during a store outage");
            }
        }
    }
}
