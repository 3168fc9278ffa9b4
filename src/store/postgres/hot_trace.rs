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

/// The stored blocks of each claimed trace, up to $2 per trace: one bounded index scan each.
const BLOCKS: &str = "SELECT t.id, b.block_id FROM unnest($1::bytea[]) AS t(id) \
     CROSS JOIN LATERAL (SELECT block_id FROM trace_blocks WHERE trace_id = t.id LIMIT $2) b";

/// The claimed traces (id, blocks not analysed yet) split in one read of the trace index: the
/// blocks to read for those to analyse, and the hot ones, analysed before and with more than
/// [`MAX_BLOCKS_PER_TRACE`] blocks, whose spans are not read.
pub(super) async fn blocks_and_hot(
    conn: &mut PgConnection,
    claimed: &[(TraceId, usize)],
) -> Result<(Vec<i64>, HashSet<TraceId>), StoreError> {
    let keys: Vec<Vec<u8>> = claimed.iter().map(|(trace, _)| trace.0.to_vec()).collect();
    let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(BLOCKS)
        .bind(keys)
        .bind((MAX_BLOCKS_PER_TRACE + 1) as i64)
        .fetch_all(&mut *conn)
        .await?;
    let mut blocks_of: HashMap<Vec<u8>, Vec<i64>> = HashMap::new();
    for (trace, block) in rows {
        blocks_of.entry(trace).or_default().push(block);
    }
    let mut hot = HashSet::new();
    let mut wanted = HashSet::new();
    for (trace, n_new) in claimed {
        let blocks = blocks_of.remove(trace.0.as_slice()).unwrap_or_default();
        if blocks.len() > MAX_BLOCKS_PER_TRACE && blocks.len() > *n_new {
            hot.insert(*trace);
        } else {
            wanted.extend(blocks);
        }
    }
    let mut wanted: Vec<i64> = wanted.into_iter().collect();
    wanted.sort_unstable();
    Ok((wanted, hot))
}
