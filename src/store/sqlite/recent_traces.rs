//! The newest rows of the trace index, held in memory until there are enough of them to write in
//! one sorted batch.
//!
//! `trace_index` maps a trace's [`trace_key`] to the blocks holding its spans. Keys are random, so
//! the rows of one commit land on as many pages of that B-tree as there are rows, once the tree has
//! more pages than a commit has rows: each row then rewrites a whole page, a page of WAL and
//! another at the checkpoint per trace, most of what the server would write to disk at full rate.
//! Written [`MERGE_ROWS`] at a time and sorted, rows share pages instead.
//!
//! The rows held here are not durable. The `trace_index_through` meta row names the newest block
//! whose rows are in `trace_index`; on open, the rows of later blocks are read back from the
//! blocks themselves (`SqliteStore::recover_recent_traces`).
//!
//! Invariant: `by_trace` and `blocks` hold the same (trace, block) pairs, blocks in id order.

use std::collections::{HashMap, HashSet, VecDeque};

use collector::model::TraceId;

/// Rows held before they are written to `trace_index` together: at full rate a few seconds of
/// traffic, about 4 MiB of memory.
pub(super) const MERGE_ROWS: usize = 50_000;

/// Rows written per transaction of a merge, a range of trace ids each.
pub(super) const MERGE_TRANSACTION_ROWS: usize = 5_000;

/// The key of a trace in `trace_index`: the trace id's two 8-byte halves XORed, big-endian. An
/// integer key costs less per row than the 16-byte id, to compare, to bind and to store, and
/// every stored trace writes rows. Both halves count: 64-bit trace ids have an upper half of
/// zeros, and X-Ray's begin with a time. Two traces may share a key; readers match the full id in
/// the rows or spans the key leads to. Migration 10 computes the same in SQL for rows stored
/// before it.
pub(super) fn trace_key(trace: &TraceId) -> i64 {
    let (high, low) = trace.0.split_at(8);
    let half = |bytes: &[u8]| i64::from_be_bytes(bytes.try_into().expect("8 bytes"));
    half(high) ^ half(low)
}

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

    /// Every row held as (trace key, block), sorted as the table is, and the newest block among
    /// them.
    pub(super) fn sorted_rows(&self) -> (Vec<(i64, i64)>, Option<i64>) {
        let mut rows: Vec<(i64, i64)> = self
            .blocks
            .iter()
            .flat_map(|(block_id, trace_ids)| {
                trace_ids.iter().map(move |id| (trace_key(id), *block_id))
            })
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

    /// Distinct keys: the two halves differ.
    fn trace(n: u8) -> TraceId {
        let mut id = [n; 16];
        id[15] = 0;
        TraceId(id)
    }

    #[test]
    fn keys_xor_the_halves_so_64_bit_ids_stay_apart() {
        let mut id = [0; 16];
        id[8..].copy_from_slice(&0x0123_4567_89ab_cdef_u64.to_be_bytes());
        assert_eq!(trace_key(&TraceId(id)), 0x0123_4567_89ab_cdef);
        id[0] = 0xff;
        assert_eq!(
            trace_key(&TraceId(id)),
            0xfe23_4567_89ab_cdef_u64 as i64,
            "the top byte lands in the sign"
        );
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
        let key = |n| trace_key(&trace(n));
        let mut expected = [(key(1), 1), (key(2), 1), (key(2), 2), (key(3), 3)];
        expected.sort_unstable();
        assert_eq!(rows, expected);
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
        let mut expected = [(trace_key(&trace(1)), 1), (trace_key(&trace(3)), 3)];
        expected.sort_unstable();
        assert_eq!(recent.sorted_rows().0, expected);
    }
}
