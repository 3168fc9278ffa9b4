//! Throwaway PostgreSQL databases, for the test suites and benchmarks that need an empty
//! database each: created next to the one a URL names, dropped when done.
//!
//! Invariant: only ever drops databases it created (their names carry the prefix and a random
//! suffix).

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::StoreError;

/// Name prefix of every database created here.
pub const PREFIX: &str = "bottleneck_test_";

/// A database created for one test; [`ScratchDatabase::drop_now`] removes it.
#[derive(Debug, Clone)]
pub struct ScratchDatabase {
    /// The URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |at| scheme_end + at);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl ScratchDatabase {
    /// Creates an empty database on the server `admin_url` points at.
    pub async fn create(admin_url: &str) -> Result<ScratchDatabase, StoreError> {
        let name = format!("{PREFIX}{:016x}", rand::random::<u64>());
        let mut conn = PgConnection::connect(admin_url).await?;
        let create = format!("CREATE DATABASE {name}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(ScratchDatabase {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    /// Drops the database, disconnecting whoever is still connected.
    pub async fn drop_now(&self) -> Result<(), StoreError> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
