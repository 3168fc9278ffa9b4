//! The statements both backends run from one text: a backend lends its pools and names the few
//! words where the dialects differ, and the use-case code in `alert` and `regression` is written
//! once, generic over `sqlx::Database`.
//!
//! Invariant: nothing here or in the generic code names a backend; what differs between SQLite
//! and PostgreSQL is a [`Dialect`] field, set in `sqlite/portable.rs` and `postgres/portable.rs`.

use sqlx::{Database, Pool};

/// Rows per multi-row statement: 15 columns × 500 stays well under both backends' limits on
/// bound parameters (SQLite 32,766, PostgreSQL 65,535).
pub(in crate::store) const ROWS_PER_STATEMENT: usize = 500;

/// The words that differ between the dialects.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) struct Dialect {
    /// The larger of two values: SQLite's scalar `MAX`, PostgreSQL's `GREATEST`.
    pub greatest: &'static str,
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

/// Runs a portable method on whichever backend the store has.
macro_rules! portable {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(store) => store.portable().$method($($arg),*).await,
            Backend::Postgres(store) => store.portable().$method($($arg),*).await,
        }
    };
}
