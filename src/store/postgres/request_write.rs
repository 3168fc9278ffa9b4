//! A commit's request rows written as one statement of arrays, whatever their number: one round
//! trip, and one prepared statement for every commit.

use collector::category::Category;
use sqlx::PgConnection;

use super::REQUEST_COLUMNS;
use crate::store::{RequestRow, StoreError, ns};

/// Inserts the rows, replacing those with the same key, and returns how many were new.
pub(super) async fn upsert(
    conn: &mut PgConnection,
    requests: &[RequestRow],
) -> Result<i64, StoreError> {
    if requests.is_empty() {
        return Ok(0);
    }
    // Rows replaced are counted before the write (RETURNING cannot tell an insert from an
    // update on a partitioned table); only the claim holder writes a trace's rows, so none
    // appears in between.
    let upsert = format!(
        "WITH incoming AS (SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::text[], \
             $5::bigint[], $6::bigint[], $7::boolean[], $8::bigint[], $9::bigint[], $10::bigint[], \
             $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], \
             $16::bigint[], $17::bigint[]) AS u({REQUEST_COLUMNS})), \
         replaced AS (SELECT COUNT(*) AS n FROM requests \
             JOIN incoming USING (trace_id, span_id, start_unix_ns)), \
         written AS (INSERT INTO requests ({REQUEST_COLUMNS}) SELECT * FROM incoming \
         ON CONFLICT (trace_id, span_id, start_unix_ns) DO UPDATE SET \
         endpoint_id = EXCLUDED.endpoint_id, version = EXCLUDED.version, \
         duration_ns = EXCLUDED.duration_ns, error = EXCLUDED.error, db_ns = EXCLUDED.db_ns, \
         cache_ns = EXCLUDED.cache_ns, network_ns = EXCLUDED.network_ns, \
         messaging_ns = EXCLUDED.messaging_ns, cpu_ns = EXCLUDED.cpu_ns, \
         wait_ns = EXCLUDED.wait_ns, untraced_ns = EXCLUDED.untraced_ns, \
         n_db_calls = EXCLUDED.n_db_calls, last_block_id = EXCLUDED.last_block_id, \
         resource_id = EXCLUDED.resource_id RETURNING 1) \
         SELECT (SELECT COUNT(*) FROM written) - (SELECT n FROM replaced)"
    );
    let column =
        |value: fn(&RequestRow) -> i64| -> Vec<i64> { requests.iter().map(value).collect() };
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(upsert))
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
            requests
                .iter()
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
    let inserted: i64 = query
        .bind(column(|request| i64::from(request.n_db_calls)))
        .bind(column(|request| request.last_block_id))
        .bind(column(|request| request.resource_id))
        .fetch_one(conn)
        .await?;
    Ok(inserted)
}
