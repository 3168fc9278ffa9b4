//! A commit's request rows written as one statement of arrays, whatever their number: one round
//! trip, and one prepared statement for every commit.

use collector::category::Category;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;
use sqlx::{PgConnection, Postgres};

use super::REQUEST_COLUMNS;
use crate::store::{RequestRow, StoreError, ns};

/// The rows `$1..$17` hold, one array per column.
const ROWS: &str = "SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::text[], \
     $5::bigint[], $6::bigint[], $7::boolean[], $8::bigint[], $9::bigint[], $10::bigint[], \
     $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], \
     $17::bigint[])";

/// Inserts the rows, replacing those with the same key, and returns how many were new.
pub(super) async fn upsert(
    conn: &mut PgConnection,
    requests: &[RequestRow],
) -> Result<i64, StoreError> {
    if requests.is_empty() {
        return Ok(0);
    }
    // New rows are inserted first, which counts them. A trace's previous rows were deleted
    // before, so a row already there is rare; then every row is written again, replacing.
    let insert = format!(
        "WITH written AS (INSERT INTO requests ({REQUEST_COLUMNS}) {ROWS} \
         ON CONFLICT DO NOTHING RETURNING 1) SELECT COUNT(*) FROM written"
    );
    let inserted = with_rows(insert, requests).fetch_one(&mut *conn).await?;
    if inserted < requests.len() as i64 {
        let replace = format!(
            "WITH written AS (INSERT INTO requests ({REQUEST_COLUMNS}) {ROWS} \
             ON CONFLICT (trace_id, span_id, start_unix_ns) DO UPDATE SET \
             endpoint_id = EXCLUDED.endpoint_id, version = EXCLUDED.version, \
             duration_ns = EXCLUDED.duration_ns, error = EXCLUDED.error, db_ns = EXCLUDED.db_ns, \
             cache_ns = EXCLUDED.cache_ns, network_ns = EXCLUDED.network_ns, \
             messaging_ns = EXCLUDED.messaging_ns, cpu_ns = EXCLUDED.cpu_ns, \
             wait_ns = EXCLUDED.wait_ns, untraced_ns = EXCLUDED.untraced_ns, \
             n_db_calls = EXCLUDED.n_db_calls, last_block_id = EXCLUDED.last_block_id, \
             resource_id = EXCLUDED.resource_id RETURNING 1) SELECT COUNT(*) FROM written"
        );
        with_rows(replace, requests).fetch_one(&mut *conn).await?;
    }
    Ok(inserted)
}

/// `sql` with the rows bound as [`ROWS`] reads them.
fn with_rows(
    sql: String,
    requests: &[RequestRow],
) -> QueryScalar<'static, Postgres, i64, PgArguments> {
    let column =
        |value: fn(&RequestRow) -> i64| -> Vec<i64> { requests.iter().map(value).collect() };
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(
            (requests.iter())
                .map(|request| request.trace_id.0.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(
            (requests.iter())
                .map(|request| request.span_id.0.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(column(|request| request.endpoint_id))
        .bind(
            (requests.iter())
                .map(|request| request.version.clone())
                .collect::<Vec<_>>(),
        )
        .bind(column(|request| ns(request.start_unix_ns)))
        .bind(column(|request| ns(request.duration_ns)))
        .bind(
            (requests.iter())
                .map(|request| request.error)
                .collect::<Vec<_>>(),
        );
    for category in 0..Category::COUNT {
        query = query.bind(
            (requests.iter())
                .map(|request| ns(request.breakdown.0[category]))
                .collect::<Vec<_>>(),
        );
    }
    query
        .bind(column(|request| i64::from(request.n_db_calls)))
        .bind(column(|request| request.last_block_id))
        .bind(column(|request| request.resource_id))
}
