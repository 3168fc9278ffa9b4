//! PostgreSQL's side of the portable statements (`store::portable`): one pool for reads and
//! transactions, and PostgreSQL's words.

use sqlx::Postgres;
use sqlx::postgres::PgQueryResult;

use super::{EVICTION_LOCK_KEY, LOCK_EVICTION, PgStore};
use crate::store::eviction;
use crate::store::portable::{Dialect, Portable, RowsAffected};

/// PostgreSQL's words.
const DIALECT: Dialect = Dialect {
    greatest: "GREATEST",
    indexed_by: "",
    // SUM of BIGINTs is NUMERIC, which never overflows; the cast back would.
    saturating_sum: |column| format!("LEAST(SUM({column}), {})::BIGINT", i64::MAX),
    intern_resource: eviction::INTERN_RESOURCE_BY_HASH,
    begin_eviction: "BEGIN",
    lock_eviction: Some((LOCK_EVICTION, EVICTION_LOCK_KEY)),
    rollup_row_id: "ctid",
};

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}

impl PgStore {
    pub(in crate::store) fn portable(&self) -> Portable<'_, Postgres> {
        Portable {
            reader: &self.pool,
            writer: &self.pool,
            dialect: DIALECT,
        }
    }
}
