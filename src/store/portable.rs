//! The statements both backends run from one text: a backend lends its pools and names the few
//! words where the dialects differ, and the use-case code of each table family (`blocks`,
//! `catalog`, `requests`, `rollups`, `alert`, `regression`, and the eviction of `eviction`) is
//! written once, generic over `sqlx::Database`.
//!
//! Invariant: nothing here or in the generic code names a backend; what differs between SQLite
//! and PostgreSQL is a [`Dialect`] field, set in `sqlite/portable.rs` and `postgres/portable.rs`.

use sqlx::{Database, Encode, Pool, QueryBuilder, Type};

/// Rows per multi-row statement: 15 columns × 500 stays well under both backends' limits on
/// bound parameters (SQLite 32,766, PostgreSQL 65,535).
pub(in crate::store) const ROWS_PER_STATEMENT: usize = 500;

/// The words that differ between the dialects.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) struct Dialect {
    /// The larger of two values: SQLite's scalar `MAX`, PostgreSQL's `GREATEST`.
    pub greatest: &'static str,
    /// How a statement names the index to read by, before the index's name: SQLite's planner
    /// has no statistics to choose well between a table's indexes, PostgreSQL's has and takes
    /// no hints (empty).
    pub indexed_by: &'static str,
    /// The sum of a BIGINT column as a BIGINT that stops at its maximum, from the column's
    /// name: a sum that overflows fails the query in both databases, and a long window of a
    /// busy operation can pass 2^63 ns.
    pub saturating_sum: fn(&str) -> String,
    /// The statement that interns a resource (`eviction::INTERN_RESOURCE` or its variant by
    /// hash): the unique keys differ.
    pub intern_resource: &'static str,
    /// How a transaction that evicts interned ids begins, so that no analysis commit
    /// interleaves with it (see `eviction`): SQLite takes its write lock at once.
    pub begin_eviction: &'static str,
    /// A statement and its key, run first in such a transaction: PostgreSQL's eviction lock,
    /// taken exclusively (commits take it shared).
    pub lock_eviction: Option<(&'static str, i64)>,
    /// What names the rows of a rollup table in a delete of a batch of them: PostgreSQL's
    /// `ctid`; SQLite's key, as the tables have no rowid.
    pub rollup_row_id: &'static str,
}

impl Dialect {
    /// The hint that a statement reads `requests` by `index`, or nothing where the planner
    /// chooses by itself.
    pub fn index_hint(&self, index: &str) -> String {
        if self.indexed_by.is_empty() {
            String::new()
        } else {
            format!(" {} {index}", self.indexed_by)
        }
    }
}

/// One backend's pools, as the portable statements use them.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) struct Portable<'a, DB: Database> {
    /// Where reads go.
    pub reader: &'a Pool<DB>,
    /// Where transactions go: SQLite has one writing connection, PostgreSQL writes on its pool.
    pub writer: &'a Pool<DB>,
    /// The backend's words.
    pub dialect: Dialect,
}

/// How many rows a statement changed: both backends' results say it, under no common trait.
pub(in crate::store) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

/// Pushes `values` as the bound values of an `IN (` list, and closes it.
pub(in crate::store) fn push_integers<DB>(
    query: &mut QueryBuilder<DB>,
    values: impl IntoIterator<Item = i64>,
) where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut separated = query.separated(", ");
    for value in values {
        separated.push_bind(value);
    }
    query.push(")");
}

/// Implements methods of [`Portable`] for every backend: `portable_impl! { async fn .. }`. The
/// bounds say what the portable statements bind and read, the same for every family of tables,
/// and both backends meet them.
macro_rules! portable_impl {
    ($($body:tt)*) => {
        impl<DB> $crate::store::portable::Portable<'_, DB>
        where
            DB: sqlx::Database,
            for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
            DB::Arguments: sqlx::IntoArguments<DB>,
            usize: sqlx::ColumnIndex<DB::Row>,
            for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
            for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
            for<'q> f64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
            for<'q> bool: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
            for<'q> Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
            for<'q> Option<f64>: sqlx::Encode<'q, DB>,
            for<'q> Option<i64>: sqlx::Encode<'q, DB>,
            for<'q> Option<String>: sqlx::Encode<'q, DB>,
            DB::QueryResult: $crate::store::portable::RowsAffected,
        {
            $($body)*
        }
    };
}

/// Runs a portable method on whichever backend the store has.
macro_rules! portable {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(store) => store.portable().$method($($arg),*).await,
            Backend::Postgres(store) => store.portable().$method($($arg),*).await,
        }
    };
}
