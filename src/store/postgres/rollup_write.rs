//! A commit's rollup changes applied to the stored rows in a fixed number of statements per
//! granularity, however many rows it touches: the rows are made to exist, locked and read
//! together, merged with the changes in memory, and written back as arrays.
//!
//! Invariant: rows are locked in one order by every commit (minute rows before hour rows, each
//! table's by key as the server sorts them), so concurrent commits wait for each other and never
//! deadlock; a row is only ever updated in place, never deleted, so a commit waiting for its lock
//! finds it.

use std::collections::{BTreeMap, HashMap};

use collector::category::Category;
use sqlx::Postgres;

use crate::analysis::FindingKind;
use crate::analysis::aggregate::{LatencySketch, OperationSums, Rollup};
use crate::store::rollups::rollup_tables;
use crate::store::rows::{
    FindingRow, OperationRow, ROLLUP_COLUMNS, ROLLUP_SELECT, RollupTuple, finding_of_row,
    rollup_row,
};
use crate::store::{Granularity, RollupChange, RollupKey, StoreError, ns, operation_cap, unsigned};

type Tx<'a> = sqlx::Transaction<'a, Postgres>;

/// The keys of the rows, as three arrays joined back together by `unnest` in each statement.
struct Keys {
    endpoint_ids: Vec<i64>,
    versions: Vec<String>,
    minutes: Vec<i64>,
}

impl Keys {
    fn of<'a>(keys: impl Iterator<Item = &'a RollupKey>) -> Keys {
        let mut out = Keys {
            endpoint_ids: Vec::new(),
            versions: Vec::new(),
            minutes: Vec::new(),
        };
        for key in keys {
            out.endpoint_ids.push(key.endpoint_id);
            out.versions.push(key.version.clone());
            out.minutes.push(key.minute);
        }
        out
    }
}

/// The rows `$1, $2, $3` name.
const KEYS: &str = "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])";

/// Applies `changes` to the stored rows, with at most `cap` operation names per row besides
/// `other`; returns how many names were counted under `other`.
pub(super) async fn apply(
    tx: &mut Tx<'_>,
    changes: &[RollupChange],
    cap: Option<usize>,
) -> Result<u64, StoreError> {
    let mut folded = 0;
    for granularity in [Granularity::Minute, Granularity::Hour] {
        // Sorted, so that rows new to the table are inserted in one order by every commit.
        let mut by_key: BTreeMap<&RollupKey, Vec<&RollupChange>> = BTreeMap::new();
        for change in changes.iter().filter(|c| c.key.granularity == granularity) {
            by_key.entry(&change.key).or_default().push(change);
        }
        if by_key.is_empty() {
            continue;
        }
        let keys = Keys::of(by_key.keys().copied());
        let mut rows = lock_and_read(tx, granularity, &keys).await?;
        let mut written = Vec::with_capacity(by_key.len());
        for (key, key_changes) in by_key {
            let mut row = rows.remove(key).unwrap_or_else(Rollup::new);
            for change in key_changes {
                folded += operation_cap::apply(&mut row, change, cap);
            }
            written.push((key, row));
        }
        write(tx, granularity, &keys, &written).await?;
    }
    Ok(folded)
}

/// Makes sure every row exists, locks them, and reads them with their operations and findings.
/// A row at zero requests (all taken back) is read as a new one.
async fn lock_and_read(
    tx: &mut Tx<'_>,
    granularity: Granularity,
    keys: &Keys,
) -> Result<HashMap<RollupKey, Rollup>, StoreError> {
    let [rollup_table, operation_table, finding_table] = rollup_tables(granularity);
    let ensure = format!(
        "INSERT INTO {rollup_table} ({}) \
         SELECT k.*, 0, 0, 0, $4, 0, 0, 0, 0, 0, 0, 0, 0, 0 FROM ({KEYS}) k ON CONFLICT DO NOTHING",
        ROLLUP_COLUMNS
    );
    sqlx::query(sqlx::AssertSqlSafe(ensure))
        .bind(&keys.endpoint_ids)
        .bind(&keys.versions)
        .bind(&keys.minutes)
        .bind(LatencySketch::new().to_bytes())
        .execute(&mut **tx)
        .await?;
    let lock = format!(
        "SELECT {ROLLUP_SELECT} FROM {rollup_table} \
         WHERE (endpoint_id, version, minute) IN ({KEYS}) \
         ORDER BY endpoint_id, version, minute FOR UPDATE"
    );
    let stored: Vec<RollupTuple> = sqlx::query_as(sqlx::AssertSqlSafe(lock))
        .bind(&keys.endpoint_ids)
        .bind(&keys.versions)
        .bind(&keys.minutes)
        .fetch_all(&mut **tx)
        .await?;
    let mut rows = HashMap::with_capacity(stored.len());
    for row in stored {
        let (key, rollup) = rollup_row(granularity, row)?;
        if rollup.requests > 0 {
            rows.insert(key, rollup);
        }
    }
    let operations = format!(
        "SELECT endpoint_id, version, minute, category, name, calls, total_ns, critical_ns \
         FROM {operation_table} WHERE (endpoint_id, version, minute) IN ({KEYS})"
    );
    let operations: Vec<OperationRow> = sqlx::query_as(sqlx::AssertSqlSafe(operations))
        .bind(&keys.endpoint_ids)
        .bind(&keys.versions)
        .bind(&keys.minutes)
        .fetch_all(&mut **tx)
        .await?;
    for (endpoint_id, version, minute, category, name, calls, total, critical) in operations {
        let key = RollupKey {
            endpoint_id,
            version,
            minute,
            granularity,
        };
        let (Some(row), Some(category)) = (rows.get_mut(&key), Category::parse(&category)) else {
            continue;
        };
        row.operations.insert(
            (category, name),
            OperationSums {
                calls: unsigned(calls),
                total_ns: unsigned(total),
                critical_ns: unsigned(critical),
            },
        );
    }
    let findings = format!(
        "SELECT endpoint_id, version, minute, kind, name, requests, count, saving_ns, \
         location_file, location_line, location_function, location_votes \
         FROM {finding_table} WHERE (endpoint_id, version, minute) IN ({KEYS})"
    );
    let findings: Vec<FindingRow> = sqlx::query_as(sqlx::AssertSqlSafe(findings))
        .bind(&keys.endpoint_ids)
        .bind(&keys.versions)
        .bind(&keys.minutes)
        .fetch_all(&mut **tx)
        .await?;
    for (endpoint_id, version, minute, kind, name, sums) in findings.into_iter().map(finding_of_row)
    {
        let key = RollupKey {
            endpoint_id,
            version,
            minute,
            granularity,
        };
        let (Some(row), Some(kind)) = (rows.get_mut(&key), FindingKind::parse(&kind)) else {
            continue;
        };
        row.findings.insert((kind, name), sums);
    }
    Ok(rows)
}

/// Writes the locked rows back (`rows` in the order of `keys`), replacing their operations and
/// findings.
async fn write(
    tx: &mut Tx<'_>,
    granularity: Granularity,
    keys: &Keys,
    rows: &[(&RollupKey, Rollup)],
) -> Result<(), StoreError> {
    let [rollup_table, operation_table, finding_table] = rollup_tables(granularity);
    let update = format!(
        "UPDATE {rollup_table} r SET requests = u.requests, errors = u.errors, \
         duration_sum_ns = u.duration_sum_ns, sketch = u.sketch, db_ns = u.db_ns, \
         cache_ns = u.cache_ns, network_ns = u.network_ns, messaging_ns = u.messaging_ns, \
         cpu_ns = u.cpu_ns, wait_ns = u.wait_ns, untraced_ns = u.untraced_ns, \
         db_calls = u.db_calls, duration_sq_sum = u.duration_sq_sum::numeric \
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
             $6::bigint[], $7::bytea[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
             $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::text[]) \
         AS u(endpoint_id, version, minute, requests, errors, duration_sum_ns, sketch, db_ns, \
             cache_ns, network_ns, messaging_ns, cpu_ns, wait_ns, untraced_ns, db_calls, \
             duration_sq_sum) \
         WHERE r.endpoint_id = u.endpoint_id AND r.version = u.version AND r.minute = u.minute"
    );
    let column = |value: fn(&Rollup) -> u64| -> Vec<i64> {
        rows.iter().map(|(_, rollup)| ns(value(rollup))).collect()
    };
    let breakdown = |category: usize| -> Vec<i64> {
        (rows.iter())
            .map(|(_, rollup)| ns(rollup.breakdown_sum.0[category]))
            .collect()
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(update))
        .bind(&keys.endpoint_ids)
        .bind(&keys.versions)
        .bind(&keys.minutes)
        .bind(column(|rollup| rollup.requests))
        .bind(column(|rollup| rollup.errors))
        .bind(column(|rollup| rollup.duration_sum_ns))
        .bind(
            (rows.iter())
                .map(|(_, rollup)| rollup.sketch.to_bytes())
                .collect::<Vec<_>>(),
        );
    for category in 0..Category::COUNT {
        query = query.bind(breakdown(category));
    }
    query
        .bind(column(|rollup| rollup.db_calls))
        .bind(
            (rows.iter())
                .map(|(_, rollup)| rollup.duration_sq_sum.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await?;
    for table in [operation_table, finding_table] {
        let delete =
            format!("DELETE FROM {table} WHERE (endpoint_id, version, minute) IN ({KEYS})");
        sqlx::query(sqlx::AssertSqlSafe(delete))
            .bind(&keys.endpoint_ids)
            .bind(&keys.versions)
            .bind(&keys.minutes)
            .execute(&mut **tx)
            .await?;
    }
    insert_operations(tx, operation_table, rows).await?;
    insert_findings(tx, finding_table, rows).await
}

async fn insert_operations(
    tx: &mut Tx<'_>,
    table: &str,
    rows: &[(&RollupKey, Rollup)],
) -> Result<(), StoreError> {
    let mut keys = Keys::of(std::iter::empty());
    let (mut categories, mut names, mut calls, mut totals, mut criticals) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, rollup) in rows {
        for ((category, name), sums) in &rollup.operations {
            if sums.calls == 0 {
                continue;
            }
            keys.endpoint_ids.push(key.endpoint_id);
            keys.versions.push(key.version.clone());
            keys.minutes.push(key.minute);
            categories.push(category.as_str());
            names.push(name.as_str());
            calls.push(ns(sums.calls));
            totals.push(ns(sums.total_ns));
            criticals.push(ns(sums.critical_ns));
        }
    }
    if calls.is_empty() {
        return Ok(());
    }
    let insert = format!(
        "INSERT INTO {table} (endpoint_id, version, minute, category, name, calls, total_ns, critical_ns) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::bigint[])"
    );
    sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(&keys.endpoint_ids)
        .bind(&keys.versions)
        .bind(&keys.minutes)
        .bind(categories)
        .bind(names)
        .bind(calls)
        .bind(totals)
        .bind(criticals)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_findings(
    tx: &mut Tx<'_>,
    table: &str,
    rows: &[(&RollupKey, Rollup)],
) -> Result<(), StoreError> {
    let mut keys = Keys::of(std::iter::empty());
    let (mut kinds, mut names, mut requests, mut counts, mut savings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut files, mut lines, mut functions, mut votes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, rollup) in rows {
        for ((kind, name), sums) in &rollup.findings {
            if sums.requests == 0 {
                continue;
            }
            keys.endpoint_ids.push(key.endpoint_id);
            keys.versions.push(key.version.clone());
            keys.minutes.push(key.minute);
            kinds.push(kind.as_str());
            names.push(name.as_str());
            requests.push(ns(sums.requests));
            counts.push(ns(sums.count));
            savings.push(ns(sums.saving_ns));
            let location = sums.location.as_ref();
            files.push(location.and_then(|at| at.file.clone()));
            lines.push(location.and_then(|at| at.line).map(i64::from));
            functions.push(location.and_then(|at| at.function.clone()));
            votes.push(ns(sums.location_votes));
        }
    }
    if requests.is_empty() {
        return Ok(());
    }
    let insert = format!(
        "INSERT INTO {table} (endpoint_id, version, minute, kind, name, requests, count, saving_ns, \
             location_file, location_line, location_function, location_votes) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], $11::text[], \
             $12::bigint[])"
    );
    sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(&keys.endpoint_ids)
        .bind(&keys.versions)
        .bind(&keys.minutes)
        .bind(kinds)
        .bind(names)
        .bind(requests)
        .bind(counts)
        .bind(savings)
        .bind(files)
        .bind(lines)
        .bind(functions)
        .bind(votes)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
