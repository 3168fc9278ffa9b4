//! SQLite's side of the portable statements (`store::portable`): reads on the reader pool,
//! transactions on the one writing connection, and the scalar `MAX`.

use sqlx::Sqlite;

use super::SqliteStore;
use crate::store::portable::{Dialect, Portable};

impl SqliteStore {
    pub(in crate::store) fn portable(&self) -> Portable<'_, Sqlite> {
        Portable {
            reader: &self.pool,
            writer: &self.writer,
            dialect: Dialect { greatest: "MAX" },
        }
    }
}
