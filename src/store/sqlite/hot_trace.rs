//! How many blocks a trace has in SQLite, counted up to a bound (see `store::hot_trace`).

use collector::model::TraceId;

use super::{SqliteStore, trace_key};
use crate::store::StoreError;

impl SqliteStore {
    /// The trace's stored blocks, counting at most `at_most`: written index rows (a key the
    /// trace may share with another, which only overcounts) and those still in memory.
    pub(in crate::store) async fn stored_blocks_of(
        &self,
        trace: TraceId,
        at_most: usize,
    ) -> Result<usize, StoreError> {
        const COUNT: &str = "SELECT COUNT(*) FROM \
             (SELECT 1 FROM trace_index WHERE trace_key = $1 LIMIT $2)";
        let recent = self.recent_traces().blocks_of(&trace).len();
        if recent >= at_most {
            return Ok(recent);
        }
        let written: i64 = sqlx::query_scalar(COUNT)
            .bind(trace_key(&trace))
            .bind((at_most - recent) as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok(recent + written as usize)
    }
}
