//! Span blocks as the receivers packed them, the traces read back from them, and how far the
//! analysis has read (SQLite's watermark). What both backends read alike is written once here
//! (see `portable`); where a trace's blocks are found differs (SQLite's trace index and held
//! rows, PostgreSQL's day-partitioned trace table) and stays with each backend.
//!
//! Invariant: blocks are read as stored; nothing here writes.

use std::collections::{BTreeMap, HashMap, HashSet};

use collector::model::{Event, Span, TraceId};

use super::{Backend, EncodedBlock, Store, StoreError, block, unsigned};

/// Traces read whole by [`Store::traces_with_events`].
#[derive(Debug, Default)]
pub struct TracesRead {
    /// Each trace found: its spans ordered by start, and their events.
    pub traces: HashMap<TraceId, block::SpansWithEvents>,
    /// Bytes of the stored (compressed) blocks read for them.
    pub block_bytes: u64,
}

impl Store {
    /// Commits blocks in one transaction; returns their ids in order.
    pub async fn insert_blocks(&self, blocks: &[EncodedBlock]) -> Result<Vec<i64>, StoreError> {
        dispatch!(self.insert_blocks(blocks))
    }

    /// Every stored span of a trace with the id of the block it came in; `None` if unknown.
    pub async fn trace_spans(
        &self,
        trace_id: TraceId,
    ) -> Result<Option<Vec<(i64, Span)>>, StoreError> {
        dispatch!(self.trace_spans(trace_id))
    }

    /// Every stored span of a trace, ordered by start.
    pub async fn trace(&self, trace_id: TraceId) -> Result<Option<Vec<Span>>, StoreError> {
        Ok(self.trace_spans(trace_id).await?.map(|spans| {
            let mut spans: Vec<Span> = spans.into_iter().map(|(_, span)| span).collect();
            spans.sort_by_key(|span| span.start_unix_ns);
            spans
        }))
    }

    /// Every stored span of a trace, ordered by start, with the events they recorded; `None` if
    /// unknown. Events are not part of [`Span`], so they are read from the blocks here.
    pub async fn trace_with_events(
        &self,
        trace_id: TraceId,
    ) -> Result<Option<(Vec<Span>, Vec<Event>)>, StoreError> {
        Ok(self
            .traces_with_events(&[trace_id])
            .await?
            .traces
            .remove(&trace_id))
    }

    /// [`Store::trace_with_events`] for several traces, each block decoded once however many
    /// of them it holds; unknown traces are absent.
    pub async fn traces_with_events(
        &self,
        trace_ids: &[TraceId],
    ) -> Result<TracesRead, StoreError> {
        let mut blocks = BTreeMap::new();
        for trace_id in trace_ids {
            for (id, data) in dispatch!(self.trace_blocks(*trace_id))? {
                blocks.entry(id).or_insert(data);
            }
        }
        let wanted: HashSet<TraceId> = trace_ids.iter().copied().collect();
        let mut read = TracesRead::default();
        for data in blocks.into_values() {
            read.block_bytes += data.len() as u64;
            for (trace_id, (spans, events)) in block::decode_traces_with_events(&data, &wanted)? {
                let (all_spans, all_events) = read.traces.entry(trace_id).or_default();
                all_spans.extend(spans);
                all_events.extend(events);
            }
        }
        for (spans, _) in read.traces.values_mut() {
            spans.sort_by_key(|span| span.start_unix_ns);
        }
        Ok(read)
    }
}

portable_impl! {
    /// Raises the `meta` value of `key` to `value` in `tx`, never lowering it: the watermarks and
    /// cursors kept there only move forward, whatever order commits computed them in.
    pub(in crate::store) async fn raise_meta(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        key: &str,
        value: i64,
    ) -> Result<(), StoreError> {
        let upsert = format!(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = {}(meta.value, excluded.value)",
            self.dialect.greatest
        );
        sqlx::query(sqlx::AssertSqlSafe(upsert))
            .bind(key.to_owned())
            .bind(value)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

portable_api! {
    /// Blocks with an id above `after_id`, oldest first, at most `limit`, as stored (see
    /// [`block::decode`]): replay after a restart.
    pub async fn blocks_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        const SELECT: &str = "SELECT id, data FROM span_blocks WHERE id > $1 ORDER BY id LIMIT $2";
        Ok(sqlx::query_as(SELECT)
            .bind(after_id)
            .bind(limit)
            .fetch_all(self.reader)
            .await?)
    }

    /// The newest block id, 0 for an empty store.
    pub async fn last_block_id(&self) -> Result<i64, StoreError> {
        const SELECT: &str = "SELECT COALESCE(MAX(id), 0) FROM span_blocks";
        Ok(sqlx::query_scalar(SELECT).fetch_one(self.reader).await?)
    }

    /// The analysis watermark: every block up to it has been analysed.
    pub async fn analysis_watermark(&self) -> Result<i64, StoreError> {
        const SELECT: &str = "SELECT value FROM meta WHERE key = 'analysis_watermark'";
        Ok(sqlx::query_scalar(SELECT)
            .fetch_optional(self.reader)
            .await?
            .unwrap_or(0))
    }

    /// When the oldest stored span arrived: how far back span data goes after retention.
    pub async fn data_since(&self) -> Result<Option<u64>, StoreError> {
        // The first block by id is the oldest one received (ids grow with time): an index
        // lookup, where MIN over a time column would scan.
        const SELECT: &str = "SELECT received_unix_ns FROM span_blocks ORDER BY id LIMIT 1";
        let oldest: Option<i64> = sqlx::query_scalar(SELECT)
            .fetch_optional(self.reader)
            .await?;
        Ok(oldest.map(unsigned))
    }
}
