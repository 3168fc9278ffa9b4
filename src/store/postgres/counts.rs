//! The stored rows `stats` reports (blocks, spans, requests), counted by the transactions that
//! add and remove them (see migration 0008) instead of by scanning the tables on each read.
//!
//! Invariant: every statement that inserts or deletes span blocks or request rows adds its
//! change here in the same transaction, so the sums are exact at every commit.

use sqlx::PgConnection;

use crate::store::{StoreError, unsigned};

/// Changes to the counts, negative for rows removed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub blocks: i64,
    pub spans: i64,
    pub requests: i64,
}

impl Counts {
    /// The change that takes these rows away.
    pub fn negated(self) -> Counts {
        Counts {
            blocks: -self.blocks,
            spans: -self.spans,
            requests: -self.requests,
        }
    }
}

/// Adds `$1..$3` to this connection's slot.
const ADD: &str = "INSERT INTO store_counts AS c (slot, blocks, spans, requests) \
     VALUES (pg_backend_pid() % 16, $1, $2, $3) ON CONFLICT (slot) DO UPDATE SET \
     blocks = c.blocks + EXCLUDED.blocks, spans = c.spans + EXCLUDED.spans, \
     requests = c.requests + EXCLUDED.requests";

const SUM: &str = "SELECT COALESCE(SUM(blocks), 0)::bigint, COALESCE(SUM(spans), 0)::bigint, \
     COALESCE(SUM(requests), 0)::bigint FROM store_counts";

/// Adds `change` in the transaction `conn` is in; nothing when it is zero.
pub(super) async fn add(conn: &mut PgConnection, change: Counts) -> Result<(), StoreError> {
    if change.blocks == 0 && change.spans == 0 && change.requests == 0 {
        return Ok(());
    }
    sqlx::query(ADD)
        .bind(change.blocks)
        .bind(change.spans)
        .bind(change.requests)
        .execute(conn)
        .await?;
    Ok(())
}

/// The rows stored: (blocks, spans, requests).
pub(super) async fn read(conn: &mut PgConnection) -> Result<(u64, u64, u64), StoreError> {
    let (blocks, spans, requests): (i64, i64, i64) = sqlx::query_as(SUM).fetch_one(conn).await?;
    Ok((unsigned(blocks), unsigned(spans), unsigned(requests)))
}
