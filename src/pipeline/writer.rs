//! The store writer: one task that takes queued exports, commits as many as are waiting in one
//! transaction (group commit), and only then answers each export.
//!
//! Invariant: an export is answered `Ok` only after its block is committed; on a store error
//! every export of the group is answered with the error, so nothing is acknowledged unwritten.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use collector::sink::{CommitError, ExportReceiver, IngestStats, SpansRejected};
use tokio::sync::mpsc;
use tracing::{debug, error};

use super::CommittedBlock;
use crate::store::{Store, block};

/// Most spans committed in one transaction. Larger groups amortize the commit (fsync of the WAL)
/// further but make every export in the group wait for the whole group to be encoded.
const MAX_GROUP_SPANS: usize = 20_000;

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs until every sender of the queue is gone and the queue is drained.
pub async fn run(
    mut exports: ExportReceiver,
    store: Store,
    stats: Arc<IngestStats>,
    committed: mpsc::Sender<CommittedBlock>,
) {
    while let Some(first) = exports.recv().await {
        let mut group = vec![first];
        let mut n_spans = group[0].spans.len();
        while n_spans < MAX_GROUP_SPANS {
            match exports.try_recv() {
                Ok(export) => {
                    n_spans += export.spans.len();
                    group.push(export);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let received_unix_ns = now_unix_ns();
        // Encoding and compressing is CPU work of a few milliseconds per thousand spans: keep it
        // off the async workers that serve the receivers.
        // The decoded spans are dropped there too: from here on only the compact blocks are held.
        let encoded = tokio::task::spawn_blocking(move || {
            group
                .into_iter()
                .map(|export| (export.reply, block::encode(export.spans, received_unix_ns)))
                .unzip()
        })
        .await;
        let (replies, blocks): (Vec<_>, Vec<_>) = match encoded {
            Ok(encoded) => encoded,
            Err(err) => {
                error!(error = %err, "encoding span blocks panicked");
                continue;
            }
        };
        match store.insert_blocks(&blocks).await {
            Ok(ids) => {
                stats.record_commit(n_spans as u64, started.elapsed());
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
                error!(error = %err, n_spans, "committing span blocks failed; exports answered unavailable");
                let reason = CommitError(err.to_string());
                SpansRejected {
                    n_spans: n_spans as u64,
                    reason: "store_unavailable",
                }
                .emit(&stats);
                for reply in replies {
                    let _ = reply.send(Err(reason.clone()));
                }
            }
        }
    }
}
