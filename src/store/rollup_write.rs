//! A commit's rollup changes applied to the stored rows, written once for both backends: the
//! rows of each granularity are read together (made to exist and locked first where the
//! database has row locks), merged with the changes in memory (`operation_cap`), and written
//! back in multi-row statements of up to `ROWS_PER_STATEMENT` rows each.
//!
//! Invariant: with row locks (PostgreSQL), every commit makes its rows exist and locks them in
//! one order (minute rows before hour rows, each table's by key), so concurrent commits wait for
//! each other and never deadlock; a row is only ever updated in place, never deleted, so a commit
//! waiting for its lock finds it. SQLite's commit holds the write lock from its start instead.

use std::collections::{BTreeMap, HashMap};

use sqlx::query_builder::Separated;
use sqlx::{Database, QueryBuilder};

use super::portable::ROWS_PER_STATEMENT;
use super::rollups::{RowFilter, push_key, push_keys_filter, read_rollups, rollup_tables};
use super::rows::{FINDING_COLUMNS, OPERATION_COLUMNS, ROLLUP_COLUMNS};
use super::{AnalysisCommit, Granularity, RollupChange, RollupKey, StoreError, ns, operation_cap};
use crate::analysis::aggregate::Rollup;

portable_impl! {
    /// Writes what both backends write alike in an analysis commit, after its request rows:
    /// the resources marked seen, the rollup changes and the watermark. Returns how many
    /// operation names were counted under `other`.
    pub(in crate::store) async fn write_rollups_and_marks(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        commit: &AnalysisCommit,
    ) -> Result<u64, StoreError> {
        self.mark_resources_seen(tx, commit).await?;
        let cap = commit.max_operations_per_rollup;
        let folded = self.apply_rollup_changes(tx, &commit.rollups, cap).await?;
        if let Some(watermark) = commit.watermark {
            self.raise_meta(tx, "analysis_watermark", watermark).await?;
        }
        Ok(folded)
    }

    /// Applies `changes` to the stored rows inside the commit's transaction, with at most `cap`
    /// operation names per row besides `other`; returns how many names were counted under
    /// `other`.
    async fn apply_rollup_changes(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        changes: &[RollupChange],
        cap: Option<usize>,
    ) -> Result<u64, StoreError> {
        let mut folded = 0;
        for granularity in [Granularity::Minute, Granularity::Hour] {
            // Sorted: the one order in which every commit makes rows exist and locks them.
            let mut by_key: BTreeMap<&RollupKey, Vec<&RollupChange>> = BTreeMap::new();
            for change in changes.iter().filter(|c| c.key.granularity == granularity) {
                by_key.entry(&change.key).or_default().push(change);
            }
            let keys: Vec<&RollupKey> = by_key.keys().copied().collect();
            let lock = self.dialect.lock_rollup_rows;
            if lock.is_some() {
                let zero = Rollup::new();
                for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                    let rows: Vec<_> = chunk.iter().map(|key| (*key, &zero)).collect();
                    self.upsert_rows(tx, granularity, &rows, " DO NOTHING").await?;
                }
            }
            let mut stored = HashMap::with_capacity(keys.len());
            for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                let filter = RowFilter::Keys(chunk, lock);
                stored.extend(read_rollups(&mut **tx, granularity, filter, true).await?);
            }
            let mut rows = Vec::with_capacity(keys.len());
            for (key, key_changes) in by_key {
                let mut row = stored.remove(key).unwrap_or_else(Rollup::new);
                for change in key_changes {
                    folded += operation_cap::apply(&mut row, change, cap);
                }
                rows.push((key, row));
            }
            let update = update_all_but_key();
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                // A row whose requests were all taken back stays at zero where another commit may
                // be waiting for its lock; SQLite, without row locks, deletes it.
                let (written, emptied): (Vec<_>, Vec<_>) = (chunk.iter())
                    .map(|(key, row)| (*key, row))
                    .partition(|(_, row)| row.requests > 0 || lock.is_some());
                self.upsert_rows(tx, granularity, &written, &update).await?;
                if !emptied.is_empty() {
                    let [rollup_table, _, _] = rollup_tables(granularity);
                    let keys: Vec<&RollupKey> = emptied.iter().map(|(key, _)| *key).collect();
                    let mut delete = QueryBuilder::<DB>::new(format!("DELETE FROM {rollup_table}"));
                    push_keys_filter(&mut delete, &keys);
                    delete.build().execute(&mut **tx).await?;
                }
                let rows: Vec<_> = chunk.iter().map(|(key, row)| (*key, row)).collect();
                self.replace_details(tx, granularity, &rows).await?;
            }
        }
        Ok(folded)
    }

    /// Inserts the rollup rows, doing `on_conflict` (after `ON CONFLICT (key)`) where one
    /// exists.
    async fn upsert_rows(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        granularity: Granularity,
        rows: &[(&RollupKey, &Rollup)],
        on_conflict: &str,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let [rollup_table, _, _] = rollup_tables(granularity);
        let insert_rows = self.dialect.insert_rows;
        let mut upsert =
            QueryBuilder::<DB>::new(format!("{insert_rows} {rollup_table} ({ROLLUP_COLUMNS}) "));
        upsert.push_values(rows, |mut row, (key, rollup)| {
            push_key(&mut row, key)
                .push_bind(ns(rollup.requests))
                .push_bind(ns(rollup.errors))
                .push_bind(ns(rollup.duration_sum_ns))
                .push_bind(rollup.sketch.to_bytes());
            for value in rollup.breakdown_sum.0 {
                row.push_bind(ns(value));
            }
            row.push_bind(ns(rollup.db_calls))
                .push("CAST(")
                .push_bind_unseparated(rollup.duration_sq_sum.to_string())
                .push_unseparated(format!(" AS {})", self.dialect.decimal));
        });
        upsert.push(" ON CONFLICT (endpoint_id, version, minute)");
        upsert.push(on_conflict);
        upsert.build().execute(&mut **tx).await?;
        Ok(())
    }

    /// Replaces the operation and finding rows of the rollup rows with theirs; a row at zero
    /// requests keeps none.
    async fn replace_details(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        granularity: Granularity,
        rows: &[(&RollupKey, &Rollup)],
    ) -> Result<(), StoreError> {
        let [_, operation_table, finding_table] = rollup_tables(granularity);
        let keys: Vec<&RollupKey> = rows.iter().map(|(key, _)| *key).collect();
        for table in [operation_table, finding_table] {
            let mut delete = QueryBuilder::<DB>::new(format!("DELETE FROM {table}"));
            push_keys_filter(&mut delete, &keys);
            delete.build().execute(&mut **tx).await?;
        }
        let insert_rows = self.dialect.insert_rows;
        let insert = |table: &str, columns: &str| format!("{insert_rows} {table} ({columns}) ");
        let rows: Vec<_> = (rows.iter()).filter(|(_, rollup)| rollup.requests > 0).collect();
        let operations: Vec<_> = (rows.iter())
            .flat_map(|(key, rollup)| rollup.operations.iter().map(move |op| (*key, op)))
            .filter(|(_, (_, sums))| sums.calls > 0)
            .collect();
        let into = insert(operation_table, OPERATION_COLUMNS);
        insert_chunked(tx, &into, &operations, |row, (key, ((category, name), sums))| {
            push_key(row, key)
                .push_bind(category.as_str().to_owned())
                .push_bind(name.clone())
                .push_bind(ns(sums.calls))
                .push_bind(ns(sums.total_ns))
                .push_bind(ns(sums.critical_ns));
        })
        .await?;
        let findings: Vec<_> = (rows.iter())
            .flat_map(|(key, rollup)| rollup.findings.iter().map(move |finding| (*key, finding)))
            .filter(|(_, (_, sums))| sums.requests > 0)
            .collect();
        let into = insert(finding_table, FINDING_COLUMNS);
        insert_chunked(tx, &into, &findings, |row, (key, ((kind, name), sums))| {
            let location = sums.location.as_ref();
            push_key(row, key)
                .push_bind(kind.as_str().to_owned())
                .push_bind(name.clone())
                .push_bind(ns(sums.requests))
                .push_bind(ns(sums.count))
                .push_bind(ns(sums.saving_ns))
                .push_bind(location.and_then(|at| at.file.clone()))
                .push_bind(location.and_then(|at| at.line).map(i64::from))
                .push_bind(location.and_then(|at| at.function.clone()))
                .push_bind(ns(sums.location_votes));
        })
        .await
    }
}

/// ` DO UPDATE SET` every column of a rollup row but its key to the value written.
fn update_all_but_key() -> String {
    let columns: Vec<String> = (ROLLUP_COLUMNS.split(", ").skip(3))
        .map(|column| format!("{column} = excluded.{column}"))
        .collect();
    format!(" DO UPDATE SET {}", columns.join(", "))
}

/// Runs `insert` (up to `VALUES`) for `items`, [`ROWS_PER_STATEMENT`] rows a statement, each
/// row's values pushed by `push_row`.
async fn insert_chunked<DB, T>(
    tx: &mut sqlx::Transaction<'_, DB>,
    insert: &str,
    items: &[T],
    mut push_row: impl FnMut(&mut Separated<'_, DB, &'static str>, &T),
) -> Result<(), StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<DB>::new(insert);
        query.push_values(chunk, |mut row, item| push_row(&mut row, item));
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}
