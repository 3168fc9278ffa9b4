//! A day partition whose rows already sit in the DEFAULT partition: a clock ahead of the server
//! put requests of a day before its partition existed. PostgreSQL refuses to create a partition
//! while the default one holds rows of its range, so without this the day's rows would all go to
//! the default partition, which retention can only clean row by row. The rows are moved into a
//! new table, which is then attached as the day's partition, in one transaction.
//!
//! Invariant: no row is lost or duplicated: the move and the attach commit together or not at
//! all.

use sqlx::postgres::PgPool;

use crate::store::StoreError;

/// Creates `partition` of `table` for `column` in [`from`, `to`), taking its rows from
/// `{table}_default`; returns how many were moved.
pub(super) async fn attach_with_default_rows(
    pool: &PgPool,
    table: &str,
    column: &str,
    partition: &str,
    from: i64,
    to: i64,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let create =
        format!("CREATE TABLE {partition} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut *tx)
        .await?;
    let moved = format!(
        "WITH moved AS (DELETE FROM {table}_default WHERE {column} >= $1 AND {column} < $2 \
         RETURNING *) INSERT INTO {partition} SELECT * FROM moved"
    );
    let n_moved = sqlx::query(sqlx::AssertSqlSafe(moved))
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let attach = format!(
        "ALTER TABLE {table} ATTACH PARTITION {partition} FOR VALUES FROM ({from}) TO ({to})"
    );
    sqlx::query(sqlx::AssertSqlSafe(attach))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n_moved)
}
