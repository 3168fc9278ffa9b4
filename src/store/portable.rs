//! The statements both backends run from one text: a backend lends its pools and names the few
//! words where the dialects differ, and the use-case code of each table family (`blocks`,
//! `catalog`, `requests`, `rollups`, `alert`, `regression`, and the eviction of `eviction`) is
//! written once, generic over `sqlx::Database`.
//!
//! Invariant: the generic code names no backend; what differs between SQLite and PostgreSQL is a
//! [`Dialect`] field, and the two dialects, side by side below, are the one place that says how.

use sqlx::postgres::PgQueryResult;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{Database, Encode, Pool, QueryBuilder, Type};

use super::eviction;

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
    /// Integers as one bound text value, which [`Dialect::in_integers`] and
    /// [`Dialect::zipped_integers`] read back: a statement then has one text, and one prepared
    /// form, whatever the number of integers. SQLite reads a JSON array, PostgreSQL an array.
    pub integers: fn(&[i64]) -> String,
    /// The condition that a column is one of the [`Dialect::integers`] bound as the parameter
    /// given (`$1`), written after the column.
    pub in_integers: fn(&str) -> String,
    /// Rows of two columns: the [`Dialect::integers`] bound as `$1` and `$2`, paired in order.
    pub zipped_integers: &'static str,
    /// Whether request rows carry a duration band (`requests::duration_band`, SQLite), indexed
    /// by endpoint: without statistics, SQLite finds the slowest requests of a long window and
    /// counts between two durations fastest band by band.
    pub duration_bands: bool,
    /// How a multi-row INSERT of analysis results begins. SQLite keeps a statement journal for
    /// a statement of many rows that may abort midway (a plain INSERT, whose constraint failure
    /// undoes that statement alone): every existing page the statement changes is copied there
    /// first. For the request rows, whose indexes take them on hundreds of pages, that copying
    /// is a real share of the server's CPU at full rate (docs/benchmarks-history.md). OR FAIL
    /// keeps the rows before a failure instead and needs no journal; a failed statement fails
    /// its transaction, which is then rolled back whole.
    pub insert_rows: &'static str,
    /// The type the text of a rollup row's sum of squares is cast to on writing: PostgreSQL
    /// stores it as NUMERIC, SQLite as text.
    pub decimal: &'static str,
    /// What follows the read of the rollup rows a commit changes, to lock them in one order
    /// (see `rollup_write`): PostgreSQL's row locks, ordered bytewise as the keys are sorted.
    /// SQLite's commit holds the write lock from its start.
    pub lock_rollup_rows: Option<&'static str>,
}

/// Integers separated by commas, for [`Dialect::integers`].
fn comma_separated(values: &[i64]) -> String {
    let items: Vec<String> = values.iter().map(i64::to_string).collect();
    items.join(",")
}

/// SQLite's words.
pub(in crate::store) const SQLITE: Dialect = Dialect {
    greatest: "MAX",
    indexed_by: "INDEXED BY",
    // TOTAL sums as a float, which never fails, and CAST saturates at the BIGINT bounds.
    saturating_sum: |column| format!("CAST(TOTAL({column}) AS INTEGER)"),
    intern_resource: eviction::INTERN_RESOURCE,
    begin_eviction: "BEGIN IMMEDIATE",
    lock_eviction: None,
    rollup_row_id: "(endpoint_id, version, minute)",
    integers: |values| format!("[{}]", comma_separated(values)),
    in_integers: |param| format!("IN (SELECT value FROM json_each({param}))"),
    zipped_integers: "SELECT a.value, b.value FROM json_each($1) a JOIN json_each($2) b ON b.key = a.key",
    duration_bands: true,
    insert_rows: "INSERT OR FAIL INTO",
    decimal: "TEXT",
    lock_rollup_rows: None,
};

/// PostgreSQL's words.
pub(in crate::store) const POSTGRES: Dialect = Dialect {
    greatest: "GREATEST",
    indexed_by: "",
    // SUM of BIGINTs is NUMERIC, which never overflows; the cast back would.
    saturating_sum: |column| format!("LEAST(SUM({column}), {})::BIGINT", i64::MAX),
    intern_resource: eviction::INTERN_RESOURCE_BY_HASH,
    begin_eviction: "BEGIN",
    lock_eviction: Some((eviction::LOCK_EVICTION, eviction::EVICTION_LOCK_KEY)),
    rollup_row_id: "ctid",
    integers: |values| format!("{{{}}}", comma_separated(values)),
    in_integers: |param| format!("= ANY(CAST({param} AS BIGINT[]))"),
    zipped_integers: "SELECT * FROM unnest(CAST($1 AS BIGINT[]), CAST($2 AS BIGINT[]))",
    duration_bands: false,
    insert_rows: "INSERT INTO",
    decimal: "NUMERIC",
    lock_rollup_rows: Some(" ORDER BY endpoint_id, version COLLATE \"C\", minute FOR UPDATE"),
};

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

impl<'a, DB: Database> Portable<'a, DB> {
    pub fn new(reader: &'a Pool<DB>, writer: &'a Pool<DB>, dialect: Dialect) -> Self {
        Self {
            reader,
            writer,
            dialect,
        }
    }
}

/// How many rows a statement changed: both backends' results say it, under no common trait.
pub(in crate::store) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
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

/// Public [`Store`](super::Store) methods whose body is portable, each written once: the body
/// becomes a method of [`Portable`] (see `portable_impl!`, where `self` is the backend's
/// `Portable`), and `Store` gets a method of the same signature and documentation that runs it
/// on whichever backend the store has.
macro_rules! portable_api {
    ($(
        $(#[$meta:meta])*
        pub async fn $name:ident(&$self:ident $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty $body:block
    )*) => {
        impl $crate::store::Store {
            $(
                $(#[$meta])*
                pub async fn $name(&$self $(, $arg: $ty)*) -> $ret {
                    portable!($self.$name($($arg),*))
                }
            )*
        }

        portable_impl! {
            $(
                pub(in crate::store) async fn $name(&$self $(, $arg: $ty)*) -> $ret $body
            )*
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
