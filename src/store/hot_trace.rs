//! Hot traces: a trace id with more stored blocks than [`MAX_BLOCKS_PER_TRACE`] (an exporter
//! that reuses one trace id, or a trace that never ends). Late spans of a trace analysed before
//! make the analysis re-read the whole trace, so without a cap each late block of a reused id
//! costs as much as every block before it: quadratic. Past the cap, late blocks of a trace are
//! not analysed again; they are stored and served like any other, and counted.
//!
//! Invariant: the count that decides reads at most `MAX_BLOCKS_PER_TRACE + 1` index rows, so
//! deciding costs the same however hot the trace.

use collector::model::TraceId;

use super::{Backend, Store, StoreError};

/// Stored blocks a trace may have and still be analysed again when more of it arrives. A
/// request's spans come in a few exports; a thousand is far past any real trace's.
pub const MAX_BLOCKS_PER_TRACE: usize = 1_000;

impl Store {
    /// Whether `trace_id` has more than [`MAX_BLOCKS_PER_TRACE`] stored blocks.
    pub async fn trace_is_hot(&self, trace_id: TraceId) -> Result<bool, StoreError> {
        let at_most = MAX_BLOCKS_PER_TRACE + 1;
        let stored = match &self.backend {
            Backend::Sqlite(store) => store.stored_blocks_of(trace_id, at_most).await?,
            Backend::Postgres(store) => store.stored_blocks_of(trace_id, at_most).await?,
        };
        Ok(stored > MAX_BLOCKS_PER_TRACE)
    }
}
