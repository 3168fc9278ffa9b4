//! The newest rows of the trace index, held in memory until there are enough of them to write in
//! one sorted batch.
//!
//! `trace_blocks` maps a trace id to the blocks holding its spans. Trace ids are random, so the
//! rows of one commit land on as many pages of that B-tree as there are rows, once the tree has
//! more pages than a commit has rows: each row then rewrote a whole page, 4 KiB of WAL and 4 KiB
//! more at the checkpoint per trace, most of what the server wrote to disk at full rate
//! (BENCHMARKS.md). Written [`MERGE_ROWS`] at a time and sorted, rows share pages instead.
//!
//! The rows held here are not durable. The `trace_index_through` meta row names the newest block
//! whose rows are in `trace_blocks`; on open, the rows of later blocks are read back from the
//! blocks themselves (`SqliteStore::recover_recent_traces`).
//!
//! Invariant: `by_trace` and `blocks` hold the same (trace, block) pairs, blocks in id order.

use std::collections::{HashMap, HashSet, VecDeque};

use collector::model::TraceId;

/// Rows held before they are written to `trace_blocks` together: at full rate a few seconds of
/// traffic, about 4 MiB of memory.
pub(super) const MERGE_ROWS: usize = 50_000;

/// Rows written per transaction of a merge, a range of trace ids each.
pub(super) const MERGE_TRANSACTION_ROWS: usize = 5_000;

#[derive(Debug, Default)]
pub(super) struct RecentTraces {
    /// The blocks of each trace, oldest first.
    by_trace: HashMap<TraceId, Vec<i64>>,
    /// Each block's traces, blocks in id order.
    blocks: VecDeque<(i64, Vec<TraceId>)>,
    n_rows: usize,
}

impl RecentTraces {
    /// Holds the rows of a block newer than every block held.
    pub(super) fn add(&mut self, block_id: i64, trace_ids: &[TraceId]) {
        for trace_id in trace_ids {
            self.by_trace.entry(*trace_id).or_default().push(block_id);
        }
        self.n_rows += trace_ids.len();
        self.blocks.push_back((block_id, trace_ids.to_vec()));
    }

    /// Rows held.
    pub(super) fn len(&self) -> usize {
        self.n_rows
    }

    /// The blocks held for a trace.
    pub(super) fn blocks_of(&self, trace_id: &TraceId) -> &[i64] {
        self.by_trace.get(trace_id).map_or(&[], Vec::as_slice)
    }

    /// The (trace, block) rows held for any of `trace_ids`.
    pub(super) fn rows_of(&self, trace_ids: &[TraceId]) -> Vec<(TraceId, i64)> {
        trace_ids
            .iter()
            .flat_map(|trace_id| {
                self.blocks_of(trace_id)
                    .iter()
                    .map(move |block_id| (*trace_id, *block_id))
            })
            .collect()
    }

    /// Every row held, sorted by trace as the table is, and the newest block among them.
    pub(super) fn sorted_rows(&self) -> (Vec<(TraceId, i64)>, Option<i64>) {
        let mut rows: Vec<(TraceId, i64)> = self
            .blocks
            .iter()
            .flat_map(|(block_id, trace_ids)| trace_ids.iter().map(move |id| (*id, *block_id)))
            .collect();
        rows.sort_unstable();
        (rows, self.blocks.back().map(|(block_id, _)| *block_id))
    }

    /// Lets go of the rows of every block up to `block_id`, written to the table.
    pub(super) fn release_through(&mut self, block_id: i64) {
        while let Some((oldest, _)) = self.blocks.front()
            && *oldest <= block_id
        {
            let (oldest, trace_ids) = self.blocks.pop_front().expect("front exists");
            self.unindex(oldest, trace_ids);
        }
    }

    /// Lets go of the rows of deleted blocks.
    pub(super) fn forget(&mut self, deleted: &[i64]) {
        let deleted: HashSet<i64> = deleted.iter().copied().collect();
        let (gone, kept) = std::mem::take(&mut self.blocks)
            .into_iter()
            .partition(|(block_id, _)| deleted.contains(block_id));
        self.blocks = kept;
        for (block_id, trace_ids) in gone {
            self.unindex(block_id, trace_ids);
        }
    }

    fn unindex(&mut self, block_id: i64, trace_ids: Vec<TraceId>) {
        self.n_rows -= trace_ids.len();
        for trace_id in trace_ids {
            if let Some(blocks) = self.by_trace.get_mut(&trace_id) {
                blocks.retain(|held| *held != block_id);
                if blocks.is_empty() {
                    self.by_trace.remove(&trace_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(n: u8) -> TraceId {
        TraceId([n; 16])
    }

    #[test]
    fn rows_are_found_by_trace_and_let_go_by_block() {
        let mut recent = RecentTraces::default();
        recent.add(1, &[trace(1), trace(2)]);
        recent.add(2, &[trace(2)]);
        recent.add(3, &[trace(3)]);
        assert_eq!(recent.len(), 4);
        assert_eq!(recent.blocks_of(&trace(2)), [1, 2]);
        assert_eq!(
            recent.rows_of(&[trace(2), trace(9)]),
            [(trace(2), 1), (trace(2), 2)]
        );
        let (rows, newest) = recent.sorted_rows();
        assert_eq!(
            rows,
            [(trace(1), 1), (trace(2), 1), (trace(2), 2), (trace(3), 3)]
        );
        assert_eq!(newest, Some(3));

        recent.release_through(2);
        assert_eq!(recent.len(), 1);
        assert!(recent.blocks_of(&trace(1)).is_empty());
        assert!(recent.blocks_of(&trace(2)).is_empty());
        assert_eq!(recent.blocks_of(&trace(3)), [3]);
        assert!(
            !recent.by_trace.contains_key(&trace(2)),
            "no empty entry is left behind"
        );
    }

    #[test]
    fn deleted_blocks_are_forgotten_whatever_their_place() {
        let mut recent = RecentTraces::default();
        recent.add(1, &[trace(1)]);
        recent.add(2, &[trace(1), trace(2)]);
        recent.add(3, &[trace(3)]);
        recent.forget(&[2, 7]);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent.blocks_of(&trace(1)), [1]);
        assert!(recent.blocks_of(&trace(2)).is_empty());
        assert_eq!(recent.sorted_rows().0, [(trace(1), 1), (trace(3), 3)]);
    }
}
