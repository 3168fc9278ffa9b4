//! SQLite's side of the portable statements (`store::portable`): reads on the reader pool,
//! transactions on the one writing connection, and SQLite's words.

use sqlx::Sqlite;
use sqlx::sqlite::SqliteQueryResult;

use super::SqliteStore;
use crate::store::eviction;
use crate::store::portable::{Dialect, Portable, RowsAffected};

/// SQLite's words.
const DIALECT: Dialect = Dialect {
    greatest: "MAX",
    indexed_by: "INDEXED BY",
    // TOTAL sums as a float, which never fails, and CAST saturates at the BIGINT bounds.
    saturating_sum: |column| format!("CAST(TOTAL({column}) AS INTEGER)"),
    intern_resource: eviction::INTERN_RESOURCE,
    begin_eviction: "BEGIN IMMEDIATE",
    lock_eviction: None,
    rollup_row_id: "(endpoint_id, version, minute)",
};

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

impl SqliteStore {
    pub(in crate::store) fn portable(&self) -> Portable<'_, Sqlite> {
        Portable {
            reader: &self.pool,
            writer: &self.writer,
            dialect: DIALECT,
        }
    }
}
