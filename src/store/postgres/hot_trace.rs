//! How many blocks traces have in PostgreSQL, counted up to a bound (see `store::hot_trace`).

use std::collections::{HashMap, HashSet};

use collector::model::TraceId;
use sqlx::postgres::PgConnection;

use super::PgStore;
use crate::store::StoreError;
use crate::store::hot_trace::MAX_BLOCKS_PER_TRACE;

/// Each trace's stored blocks, counting at most $2 per trace: one bounded index scan each.
const COUNT: &str = "SELECT t.id, (SELECT COUNT(*) FROM \
     (SELECT 1 FROM trace_blocks b WHERE b.trace_id = t.id LIMIT $2) n) \
     FROM unnest($1::bytea[]) AS t(id)";

impl PgStore {
    pub(in crate::store) async fn stored_blocks_of(
        &self,
        trace: TraceId,
        at_most: usize,
    ) -> Result<usize, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let counts = stored_blocks(&mut conn, &[trace], at_most).await?;
        Ok(counts.get(trace.0.as_slice()).copied().unwrap_or(0))
    }
}

async fn stored_blocks(
    conn: &mut PgConnection,
    traces: &[TraceId],
    at_most: usize,
) -> Result<HashMap<Vec<u8>, usize>, StoreError> {
    let keys: Vec<Vec<u8>> = traces.iter().map(|trace| trace.0.to_vec()).collect();
    let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(COUNT)
        .bind(keys)
        .bind(at_most as i64)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|(id, n)| (id, n as usize)).collect())
}

/// Those of the claimed traces (id, blocks not analysed yet) that were analysed before and have
/// more than [`MAX_BLOCKS_PER_TRACE`] blocks: their spans are not read.
pub(super) async fn hot_among(
    conn: &mut PgConnection,
    claimed: &[(TraceId, usize)],
) -> Result<HashSet<TraceId>, StoreError> {
    let traces: Vec<TraceId> = claimed.iter().map(|(trace, _)| *trace).collect();
    let counts = stored_blocks(conn, &traces, MAX_BLOCKS_PER_TRACE + 1).await?;
    Ok(claimed
        .iter()
        .filter(|(trace, n_new)| {
            let stored = counts.get(trace.0.as_slice()).copied().unwrap_or(0);
            stored > MAX_BLOCKS_PER_TRACE && stored > *n_new
        })
        .map(|(trace, _)| *trace)
        .collect())
}
