//! PostgreSQL's side of the portable statements (`store::portable`): one pool for reads and
//! transactions, and `GREATEST`.

use sqlx::Postgres;

use super::PgStore;
use crate::store::portable::{Dialect, Portable};

impl PgStore {
    pub(in crate::store) fn portable(&self) -> Portable<'_, Postgres> {
        Portable {
            reader: &self.pool,
            writer: &self.pool,
            dialect: Dialect {
                greatest: "GREATEST",
            },
        }
    }
}
