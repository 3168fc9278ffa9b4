//! The rollup tables, minute and hourly, each with its operations and findings: reads written
//! once for both backends (see `portable`), and the windows they cover. An analysis commit's
//! writes are `rollup_write`'s, which reads its rows back here inside its transaction.
//!
//! Invariant: a read never returns a row with no requests (PostgreSQL's commits keep rows at
//! zero, see `rollup_write`); nothing here changes a row's sums, retention only deletes whole
//! rows.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use collector::category::Category;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::portable::{RowsAffected, push_integers};
use super::rows::{
    FINDING_COLUMNS, FindingRow, LocationVotesRow, OPERATION_COLUMNS, OperationRow, ROLLUP_SELECT,
    RollupTuple, SummedDetailRow, finding_of_row, rollup_row, stored_location,
};
use super::{
    Backend, Granularity, LONG_WINDOW_MINUTES, RetentionReport, RollupKey, Store, StoreError,
    Window, eviction, minute_of, unsigned,
};
use crate::analysis::FindingKind;
use crate::analysis::aggregate::{OperationSums, Rollup};
use crate::time::now_unix_ns;

/// The rollup rows that cover a window, as (granularity, first and last minute) ranges: hourly
/// rows for its whole hours and minute rows for the rest.
fn covering_rows(window: Window) -> Vec<(Granularity, [i64; 2])> {
    let (mut first, last) = window.minutes();
    // A window of six hours or more starts at the top of its first hour: at most 1/6 more
    // data, for the many minute rows the partial hour would cost.
    if last - first + 1 >= LONG_WINDOW_MINUTES {
        first = Granularity::Hour.row_start(first);
    }
    // Whole hours inside [first, last]: from the first hour start at or after `first` to the
    // last hour end at or before `last + 1`. A window that ends now also takes its current
    // hour whole: nothing after now has been counted in it yet.
    let ends_now = last >= minute_of(now_unix_ns()) - 1;
    let first_hour = first + (60 - first.rem_euclid(60)) % 60;
    let end_hour = if ends_now {
        Granularity::Hour.row_start(last) + 60
    } else {
        (last + 1) - (last + 1).rem_euclid(60)
    };
    if end_hour - first_hour < 60 || last - first + 1 < 60 {
        return vec![(Granularity::Minute, [first, last])];
    }
    let mut ranges = vec![(Granularity::Hour, [first_hour, end_hour - 1])];
    for edge in [[first, first_hour - 1], [end_hour, last]] {
        if edge[0] <= edge[1] {
            ranges.push((Granularity::Minute, edge));
        }
    }
    ranges
}

/// The rollup, operation and finding tables of one granularity; fixed names, never user input.
pub(super) fn rollup_tables(granularity: Granularity) -> [&'static str; 3] {
    match granularity {
        Granularity::Minute => ["rollups", "rollup_operations", "rollup_findings"],
        Granularity::Hour => [
            "hourly_rollups",
            "hourly_rollup_operations",
            "hourly_rollup_findings",
        ],
    }
}

/// The selects of operations and findings summed per (endpoint, version), up to their WHERE
/// clause, each sum saturating (`Dialect::saturating_sum`).
fn detail_sums_selects(
    granularity: Granularity,
    saturating_sum: impl Fn(&str) -> String,
) -> [String; 2] {
    let [_, operation_table, finding_table] = rollup_tables(granularity);
    [
        (
            operation_table,
            "category",
            ["calls", "total_ns", "critical_ns"],
        ),
        (finding_table, "kind", ["requests", "count", "saving_ns"]),
    ]
    .map(|(table, label, sums)| {
        let [a, b, c] = sums.map(&saturating_sum);
        format!("SELECT endpoint_id, version, {label}, name, {a}, {b}, {c} FROM {table}")
    })
}

/// The select of finding locations' votes summed per (endpoint, version, kind, name, location),
/// up to its WHERE clause, which [`LOCATION_VOTES_GROUP`] follows.
fn location_votes_select(
    granularity: Granularity,
    saturating_sum: impl Fn(&str) -> String,
) -> String {
    let [_, _, finding_table] = rollup_tables(granularity);
    let votes = saturating_sum("location_votes");
    format!(
        "SELECT endpoint_id, version, kind, name, location_file, location_line, \
         location_function, {votes} FROM {finding_table}"
    )
}

/// Ends [`location_votes_select`] after its WHERE clause.
const LOCATION_VOTES_GROUP: &str = " AND (location_file IS NOT NULL OR location_function IS NOT NULL) \
     GROUP BY endpoint_id, version, 3, 4, 5, 6, 7";

/// Operations and findings summed per (endpoint, version) over some rollup rows.
#[derive(Debug, Default)]
struct DetailSums {
    operations: Vec<SummedDetailRow>,
    findings: Vec<SummedDetailRow>,
    locations: Vec<LocationVotesRow>,
}

impl DetailSums {
    /// Adds the sums to the merged rollups of their (endpoint, version); sums of a pair with no
    /// rollup, or of a category or kind this build does not know, are left out.
    fn add_to(self, merged: &mut BTreeMap<(i64, String), Rollup>) {
        for (endpoint_id, version, category, name, calls, total, critical) in self.operations {
            let (Some(rollup), Some(category)) = (
                merged.get_mut(&(endpoint_id, version)),
                Category::parse(&category),
            ) else {
                continue;
            };
            let sums = rollup.operations.entry((category, name)).or_default();
            sums.calls = sums.calls.saturating_add(unsigned(calls));
            sums.total_ns = sums.total_ns.saturating_add(unsigned(total));
            sums.critical_ns = sums.critical_ns.saturating_add(unsigned(critical));
        }
        for (endpoint_id, version, kind, name, requests, count, saving) in self.findings {
            let (Some(rollup), Some(kind)) = (
                merged.get_mut(&(endpoint_id, version)),
                FindingKind::parse(&kind),
            ) else {
                continue;
            };
            let sums = rollup.findings.entry((kind, name)).or_default();
            sums.requests = sums.requests.saturating_add(unsigned(requests));
            sums.count = sums.count.saturating_add(unsigned(count));
            sums.saving_ns = sums.saving_ns.saturating_add(unsigned(saving));
        }
        // Each row's location is voted for with its votes, as `Rollup::merge` would.
        for (endpoint_id, version, kind, name, file, line, function, votes) in self.locations {
            let (Some(rollup), Some(kind)) = (
                merged.get_mut(&(endpoint_id, version)),
                FindingKind::parse(&kind),
            ) else {
                continue;
            };
            if let Some(sums) = rollup.findings.get_mut(&(kind, name)) {
                let location = stored_location(file, line, function);
                sums.vote(location.as_ref(), unsigned(votes));
            }
        }
    }
}

impl Store {
    /// One stored rollup, with its operations and findings.
    pub async fn rollup(&self, key: &RollupKey) -> Result<Option<Rollup>, StoreError> {
        let rows = portable!(self.rollup_rows(
            key.granularity,
            [key.minute, key.minute],
            Some(&[key.endpoint_id]),
            Some(&key.version),
            true
        ))?;
        Ok(rows.into_iter().next().map(|(_, rollup)| rollup))
    }

    /// Rollups covering a window, optionally of some endpoints only, without operations and
    /// findings: hourly rows for the window's whole hours and minute rows for the rest, so a long
    /// window reads few rows. Keys of both granularities come back; merge them.
    pub async fn rollups(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
    ) -> Result<Vec<(RollupKey, Rollup)>, StoreError> {
        self.covering_rollups(window, endpoint_ids, None).await
    }

    async fn covering_rollups(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
        version: Option<&str>,
    ) -> Result<Vec<(RollupKey, Rollup)>, StoreError> {
        let mut rows = Vec::new();
        for (granularity, minutes) in covering_rows(window) {
            rows.extend(portable!(self.rollup_rows(
                granularity,
                minutes,
                endpoint_ids,
                version,
                false
            ))?);
        }
        Ok(rows)
    }

    /// The rollups covering a window (as [`Store::rollups`]) merged per (endpoint, version),
    /// optionally of one version only, with their operations and findings. The database sums
    /// the operations and findings: a rollup row has about ten of them, and every row read
    /// costs a hand-off between threads, so a day's overview would read ten times the rows.
    pub async fn merged_rollups(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
        version: Option<&str>,
    ) -> Result<BTreeMap<(i64, String), Rollup>, StoreError> {
        let mut merged: BTreeMap<(i64, String), Rollup> = BTreeMap::new();
        for (granularity, minutes) in covering_rows(window) {
            let rows =
                portable!(self.rollup_rows(granularity, minutes, endpoint_ids, version, false))?;
            if rows.is_empty() {
                continue;
            }
            for (key, rollup) in rows {
                match merged.entry((key.endpoint_id, key.version)) {
                    Entry::Vacant(slot) => {
                        slot.insert(rollup);
                    }
                    Entry::Occupied(mut slot) => slot.get_mut().merge(&rollup),
                }
            }
            let sums = portable!(self.detail_sums(granularity, minutes, endpoint_ids, version))?;
            sums.add_to(&mut merged);
        }
        Ok(merged)
    }

    /// Minute rollups in a window, without operations and findings: the points of a time series.
    pub async fn minute_rollups(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
    ) -> Result<Vec<(RollupKey, Rollup)>, StoreError> {
        let (first, last) = window.minutes();
        portable!(self.rollup_rows(
            Granularity::Minute,
            [first, last],
            endpoint_ids,
            None,
            false
        ))
    }

    /// Rollups of one version in a window (see [`Store::rollups`]).
    pub async fn version_rollups(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
        version: &str,
    ) -> Result<Vec<(RollupKey, Rollup)>, StoreError> {
        self.covering_rollups(window, endpoint_ids, Some(version))
            .await
    }
}

/// Which rows of one granularity a read of rollup, operation or finding rows takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum RowFilter<'a> {
    /// Rows of the minutes `[first, last]`, of some endpoints and a version if given.
    Minutes([i64; 2], Option<&'a [i64]>, Option<&'a str>),
    /// The rows of these keys. A rollup row read is locked for update with the clause given
    /// (`Dialect::lock_rollup_rows`).
    Keys(&'a [&'a RollupKey], Option<&'static str>),
}

impl RowFilter<'_> {
    /// Whether the filter can match no row.
    fn is_empty(&self) -> bool {
        match self {
            Self::Minutes(_, ids, _) => ids.is_some_and(|ids| ids.is_empty()),
            Self::Keys(keys, _) => keys.is_empty(),
        }
    }

    /// Pushes the WHERE clause; `locked` for the rollup rows themselves.
    fn push<DB>(&self, query: &mut QueryBuilder<DB>, locked: bool)
    where
        DB: Database,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> String: Encode<'q, DB> + Type<DB>,
    {
        match *self {
            Self::Minutes([first, last], ids, version) => {
                query
                    .push(" WHERE minute >= ")
                    .push_bind(first)
                    .push(" AND minute <= ")
                    .push_bind(last);
                if let Some(ids) = ids {
                    query.push(" AND endpoint_id IN (");
                    push_integers(query, ids.iter().copied());
                }
                if let Some(version) = version {
                    query.push(" AND version = ").push_bind(version.to_owned());
                }
            }
            Self::Keys(keys, lock) => {
                push_keys_filter(query, keys);
                if let (true, Some(lock)) = (locked, lock) {
                    query.push(lock);
                }
            }
        }
    }
}

/// Pushes ` WHERE` the row is one of `keys`.
pub(super) fn push_keys_filter<DB>(query: &mut QueryBuilder<DB>, keys: &[&RollupKey])
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    query.push(" WHERE (endpoint_id, version, minute) IN (");
    query.push_values(keys, |mut row, key| {
        push_key(&mut row, key);
    });
    query.push(")");
}

/// Pushes the key columns of a row of `key`.
pub(super) fn push_key<'r, 'qb, DB>(
    row: &'r mut sqlx::query_builder::Separated<'qb, DB, &'static str>,
    key: &RollupKey,
) -> &'r mut sqlx::query_builder::Separated<'qb, DB, &'static str>
where
    DB: Database,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    row.push_bind(key.endpoint_id)
        .push_bind(key.version.clone())
        .push_bind(key.minute)
}

/// Rollup rows of one granularity that `filter` takes, with their operations and findings if
/// `with_details`. A row at zero requests (all taken back) is not returned.
pub(super) async fn read_rollups<DB>(
    conn: &mut DB::Connection,
    granularity: Granularity,
    filter: RowFilter<'_>,
    with_details: bool,
) -> Result<Vec<(RollupKey, Rollup)>, StoreError>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
{
    if filter.is_empty() {
        return Ok(Vec::new());
    }
    let [rollup_table, operation_table, finding_table] = rollup_tables(granularity);
    let select_from = |columns: &str, table: &str| {
        let mut select = QueryBuilder::<DB>::new(format!("SELECT {columns} FROM {table}"));
        filter.push(&mut select, table == rollup_table);
        select
    };
    let rows: Vec<RollupTuple> = select_from(ROLLUP_SELECT, rollup_table)
        .build_query_as()
        .fetch_all(&mut *conn)
        .await?;
    let mut rollups = rows
        .into_iter()
        .map(|row| rollup_row(granularity, row))
        .collect::<Result<Vec<_>, _>>()?;
    rollups.retain(|(_, rollup)| rollup.requests > 0);
    if !with_details || rollups.is_empty() {
        return Ok(rollups);
    }
    let position: HashMap<RollupKey, usize> = rollups
        .iter()
        .enumerate()
        .map(|(idx, (key, _))| (key.clone(), idx))
        .collect();
    let key_of = |endpoint_id, version, minute| RollupKey {
        endpoint_id,
        version,
        minute,
        granularity,
    };
    let rows: Vec<OperationRow> = select_from(OPERATION_COLUMNS, operation_table)
        .build_query_as()
        .fetch_all(&mut *conn)
        .await?;
    for (endpoint_id, version, minute, category, name, calls, total, critical) in rows {
        let key = key_of(endpoint_id, version, minute);
        let (Some(idx), Some(category)) = (position.get(&key), Category::parse(&category)) else {
            continue;
        };
        rollups[*idx].1.operations.insert(
            (category, name),
            OperationSums {
                calls: unsigned(calls),
                total_ns: unsigned(total),
                critical_ns: unsigned(critical),
            },
        );
    }
    let rows: Vec<FindingRow> = select_from(FINDING_COLUMNS, finding_table)
        .build_query_as()
        .fetch_all(&mut *conn)
        .await?;
    for (endpoint_id, version, minute, kind, name, sums) in rows.into_iter().map(finding_of_row) {
        let key = key_of(endpoint_id, version, minute);
        let (Some(idx), Some(kind)) = (position.get(&key), FindingKind::parse(&kind)) else {
            continue;
        };
        rollups[*idx].1.findings.insert((kind, name), sums);
    }
    Ok(rollups)
}

portable_impl! {
    async fn rollup_rows(
        &self,
        granularity: Granularity,
        minutes: [i64; 2],
        endpoint_ids: Option<&[i64]>,
        version: Option<&str>,
        with_details: bool,
    ) -> Result<Vec<(RollupKey, Rollup)>, StoreError> {
        let filter = RowFilter::Minutes(minutes, endpoint_ids, version);
        let mut conn = self.reader.acquire().await?;
        read_rollups(&mut *conn, granularity, filter, with_details).await
    }

    /// Deletes the rollup rows (minute and hourly, with their operations and findings) before
    /// the minute of `before_unix_ns`, in batches with a pause between them, counting the
    /// rollup rows in `report`.
    pub(in crate::store) async fn remove_rollups(
        &self,
        before_unix_ns: u64,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        let minute = minute_of(before_unix_ns);
        let batch = super::retention::BATCH_ROWS;
        let row_id = self.dialect.rollup_row_id;
        for granularity in [Granularity::Minute, Granularity::Hour] {
            let [rollup_table, operation_table, finding_table] = rollup_tables(granularity);
            for table in [rollup_table, operation_table, finding_table] {
                let delete = format!(
                    "DELETE FROM {table} WHERE {row_id} IN \
                     (SELECT {} FROM {table} WHERE minute < $1 LIMIT $2)",
                    row_id.trim_matches(['(', ')'])
                );
                loop {
                    let done = sqlx::query(sqlx::AssertSqlSafe(delete.clone()))
                        .bind(minute)
                        .bind(batch)
                        .execute(self.writer)
                        .await?
                        .rows_affected();
                    if table == rollup_table {
                        report.rollups += done;
                    }
                    if done < batch as u64 {
                        break;
                    }
                    tokio::time::sleep(super::retention::BATCH_PAUSE).await;
                }
            }
        }
        if report.rollups > 0 {
            // Versions leave with their rollups: the analyzers read their caps' counts again.
            sqlx::query(eviction::BUMP_GENERATION)
                .execute(self.writer)
                .await?;
        }
        Ok(())
    }

    async fn detail_sums(
        &self,
        granularity: Granularity,
        minutes: [i64; 2],
        endpoint_ids: Option<&[i64]>,
        version: Option<&str>,
    ) -> Result<DetailSums, StoreError> {
        let mut summed = DetailSums::default();
        if endpoint_ids.is_some_and(|ids| ids.is_empty()) {
            return Ok(summed);
        }
        let mut conn = self.reader.acquire().await?;
        let saturating_sum = self.dialect.saturating_sum;
        let [operations, findings] = detail_sums_selects(granularity, saturating_sum);
        let grouped = |select_from: String, group_by: &str| {
            let mut select = QueryBuilder::<DB>::new(select_from);
            RowFilter::Minutes(minutes, endpoint_ids, version).push(&mut select, false);
            select.push(group_by);
            select
        };
        for (select_from, rows) in [
            (operations, &mut summed.operations),
            (findings, &mut summed.findings),
        ] {
            let mut select = grouped(select_from, " GROUP BY endpoint_id, version, 3, 4");
            *rows = select.build_query_as().fetch_all(&mut *conn).await?;
        }
        let votes = location_votes_select(granularity, saturating_sum);
        summed.locations = grouped(votes, LOCATION_VOTES_GROUP)
            .build_query_as()
            .fetch_all(&mut *conn)
            .await?;
        Ok(summed)
    }
}
