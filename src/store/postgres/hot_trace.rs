//! How many blocks traces have in PostgreSQL, counted up to a bound (see `store::hot_trace`).

use std::collections::{HashMap, HashSet};

use collector::model::TraceId;
use sqlx::postgres::PgConnection;

use super::{DAY_NS, PgStore};
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

/// The stored blocks of each claimed trace received before $3, up to $2 per trace: one bounded
/// index scan each, in the day partitions the bound leaves (a scan of an empty partition's index
/// costs as much as finding a row in a full one).
const BLOCKS: &str = "SELECT t.id, b.block_id FROM unnest($1::bytea[]) AS t(id) \
     CROSS JOIN LATERAL (SELECT block_id FROM trace_blocks \
         WHERE trace_id = t.id AND received_unix_ns < $3 LIMIT $2) b";

/// Whether any block was received at or after $1 (by the receiving instance's clock).
const ANY_RECEIVED_FROM: &str =
    "SELECT EXISTS (SELECT 1 FROM trace_blocks WHERE received_unix_ns >= $1)";

/// A bound below the receive time of every stored block: the start of tomorrow (by this clock)
/// while no block was received from then on, as none is unless an instance's clock is ahead;
/// the partitions of the days ahead, created early and empty, are then not searched per trace.
/// A block stored after this look is one that arrived after the claim, analysed next time.
async fn received_bound(conn: &mut PgConnection, now_unix_ns: i64) -> Result<i64, StoreError> {
    let tomorrow = (now_unix_ns.div_euclid(DAY_NS) + 1).saturating_mul(DAY_NS);
    let later: bool = sqlx::query_scalar(ANY_RECEIVED_FROM)
        .bind(tomorrow)
        .fetch_one(&mut *conn)
        .await?;
    Ok(if later { i64::MAX } else { tomorrow })
}

/// The claimed traces (id, blocks not analysed yet) split in one read of the trace index: the
/// blocks to read for those to analyse, and the hot ones, analysed before and with more than
/// [`MAX_BLOCKS_PER_TRACE`] blocks, whose spans are not read.
pub(super) async fn blocks_and_hot(
    conn: &mut PgConnection,
    claimed: &[(TraceId, usize)],
    now_unix_ns: i64,
) -> Result<(Vec<i64>, HashSet<TraceId>), StoreError> {
    let bound = received_bound(conn, now_unix_ns).await?;
    let keys: Vec<Vec<u8>> = claimed.iter().map(|(trace, _)| trace.0.to_vec()).collect();
    let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(BLOCKS)
        .bind(keys)
        .bind((MAX_BLOCKS_PER_TRACE + 1) as i64)
        .bind(bound)
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
