//! Analysed request rows: the reads both backends run alike, written once (see `portable`),
//! with SQLite's index hints as the dialect's words. Where a backend reads differently (SQLite
//! finds a trace's rows through its trace index and the slowest of a long window by duration
//! band) the read stays with the backend, behind the same `Store` method.
//!
//! Invariant: every selection is bounded by a limit or a window and endpoints, and every value
//! is bound, never written into the statement.

use std::collections::HashMap;

use collector::model::TraceId;
use sqlx::QueryBuilder;

use super::portable::{ROWS_PER_STATEMENT, push_integers};
use super::rows::{CountAndBreakdown, REQUEST_COLUMNS, StoredRequest, count_and_breakdown};
use super::{Backend, RequestRow, Store, StoreError, Window, ns};
use crate::analysis::Breakdown;
use collector::category::Category;

/// The filter and order of [`Store::newest_requests`], after `FROM requests` and a backend's
/// index hint; the binds are the endpoint, the window, the two durations and the limit.
const NEWEST_REQUESTS: &str = "WHERE endpoint_id = $1 \
     AND start_unix_ns >= $2 AND start_unix_ns < $3 AND duration_ns >= $4 AND duration_ns <= $5 \
     ORDER BY start_unix_ns DESC LIMIT $6";

/// The duration band of a request row (see `Dialect::duration_bands`): its number of decimal
/// digits, then its first digit (nine bands a decade; 10 for 0). SQLite's migration 8 computes the
/// same in SQL for rows stored before it.
pub(super) fn duration_band(duration_ns: u64) -> i64 {
    let digits = duration_ns.checked_ilog10().map_or(1, |log| log + 1);
    let first_digit = duration_ns / 10u64.pow(digits - 1);
    i64::from(digits) * 10 + first_digit as i64
}

/// The bands that hold durations from `min_ns` to `max_ns`, lowest first.
fn duration_bands(min_ns: u64, max_ns: u64) -> std::ops::RangeInclusive<i64> {
    duration_band(min_ns)..=duration_band(max_ns.min(i64::MAX as u64))
}

/// The index of request rows by endpoint and duration band (see `Dialect::duration_bands`).
const BY_BAND: Option<&str> = Some("requests_by_band");

impl Store {
    /// For those of `trace_ids` that were analysed before, the newest block that analysis saw.
    pub async fn analysed_traces(
        &self,
        trace_ids: &[TraceId],
    ) -> Result<HashMap<TraceId, i64>, StoreError> {
        dispatch!(self.analysed_traces(trace_ids))
    }

    /// The request rows of one trace.
    pub async fn trace_requests(&self, trace_id: TraceId) -> Result<Vec<RequestRow>, StoreError> {
        dispatch!(self.trace_requests(trace_id))
    }
}

portable_impl! {
    /// `SELECT {columns} FROM requests`, read by `index` where the dialect takes a hint, of the
    /// rows that started in `window` and took at least `min_duration_ns`; more conditions follow.
    fn requests_where(
        &self,
        columns: &str,
        index: Option<&str>,
        window: Window,
        min_duration_ns: u64,
    ) -> QueryBuilder<DB> {
        let hint = index.map_or_else(String::new, |index| self.dialect.index_hint(index));
        let mut select = QueryBuilder::new(format!(
            "SELECT {columns} FROM requests{hint} WHERE duration_ns >= "
        ));
        select
            .push_bind(ns(min_duration_ns))
            .push(" AND start_unix_ns >= ")
            .push_bind(ns(window.from_unix_ns))
            .push(" AND start_unix_ns < ")
            .push_bind(ns(window.to_unix_ns));
        select
    }

    /// The `limit` slowest requests of the endpoints `ids` in `window`, at least
    /// `min_duration_ns` long: the rows of each duration band in the window, highest band
    /// first, until a band brings the count to `limit`. Exact: every row of a lower band is
    /// faster than every row read.
    async fn slowest_by_band(
        &self,
        window: Window,
        ids: &[i64],
        min_duration_ns: u64,
        limit: i64,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let Some(top) = self.highest_band(ids).await? else {
            return Ok(Vec::new());
        };
        let limit_rows = usize::try_from(limit).unwrap_or(0);
        let mut slowest = Vec::new();
        for band in (duration_band(min_duration_ns)..=top).rev() {
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                let mut select =
                    self.requests_where(REQUEST_COLUMNS, BY_BAND, window, min_duration_ns);
                select
                    .push(" AND duration_band = ")
                    .push_bind(band)
                    .push(" AND endpoint_id IN (");
                push_integers(&mut select, chunk.iter().copied());
                select
                    .push(" ORDER BY duration_ns DESC LIMIT ")
                    .push_bind(limit);
                let rows: Vec<StoredRequest> = select.build_query_as().fetch_all(self.reader).await?;
                for row in rows {
                    slowest.push(row.decode()?);
                }
            }
            if slowest.len() >= limit_rows {
                break;
            }
        }
        slowest.sort_by_key(|row| std::cmp::Reverse(row.duration_ns));
        slowest.truncate(limit_rows);
        Ok(slowest)
    }

    /// The highest duration band any request of the endpoints `ids` was ever in (one index
    /// seek per endpoint), or `None` when they have no requests.
    async fn highest_band(&self, ids: &[i64]) -> Result<Option<i64>, StoreError> {
        // SQLite allows 500 terms in a compound SELECT.
        const ENDPOINTS_PER_STATEMENT: usize = 400;
        let mut highest = None;
        for chunk in ids.chunks(ENDPOINTS_PER_STATEMENT) {
            let mut select = QueryBuilder::<DB>::new("SELECT MAX(band) FROM (");
            for (n, id) in chunk.iter().enumerate() {
                if n > 0 {
                    select.push(" UNION ALL ");
                }
                select
                    .push(format!(
                        "SELECT (SELECT MAX(duration_band) FROM requests{} WHERE endpoint_id = ",
                        self.dialect.index_hint("requests_by_band")
                    ))
                    .push_bind(*id)
                    .push(") AS band");
            }
            select.push(")");
            let band: Option<i64> = select.build_query_scalar().fetch_one(self.reader).await?;
            highest = highest.max(band);
        }
        Ok(highest)
    }
}

portable_api! {
    /// Every request of some endpoints in a window, optionally of one version, unordered: for
    /// selections by resource attribute, which rollups do not record. More than `max_rows` rows
    /// is [`StoreError::ReadTooLarge`]: at most `max_rows + 1` are read.
    pub async fn selected_requests(
        &self,
        window: Window,
        endpoint_ids: &[i64],
        version: Option<&str>,
        max_rows: usize,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in endpoint_ids.chunks(ROWS_PER_STATEMENT) {
            if out.len() > max_rows {
                break;
            }
            let mut select = self.requests_where(REQUEST_COLUMNS, None, window, 0);
            select.push(" AND endpoint_id IN (");
            push_integers(&mut select, chunk.iter().copied());
            if let Some(version) = version {
                select.push(" AND version = ").push_bind(version.to_owned());
            }
            select
                .push(" LIMIT ")
                .push_bind(ns((max_rows + 1 - out.len()) as u64));
            let rows: Vec<StoredRequest> = select.build_query_as().fetch_all(self.reader).await?;
            for row in rows {
                out.push(row.decode()?);
            }
        }
        if out.len() > max_rows {
            return Err(StoreError::ReadTooLarge(format!(
                "more than {max_rows} requests match this selection; narrow its window or \
                 select fewer endpoints"
            )));
        }
        Ok(out)
    }

    /// Requests of some endpoints in a window, slowest first, at least `min_duration_ns` long.
    ///
    /// The slowest requests of some endpoints in a window: by start time and sorted, but for a
    /// long window where request rows have duration bands (see [`Self::slowest_by_band`]).
    pub async fn requests(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
        min_duration_ns: u64,
        limit: i64,
    ) -> Result<Vec<RequestRow>, StoreError> {
        if endpoint_ids.is_some_and(|ids| ids.is_empty()) {
            return Ok(Vec::new());
        }
        // The slowest of a long window are found fastest from the top duration bands down until
        // `limit` rows fall in the window; a short window is faster read by start time and
        // sorted. SQLite cannot tell the two apart without statistics, so we say which.
        let long_window = window.to_unix_ns - window.from_unix_ns >= 6 * 3_600_000_000_000;
        if self.dialect.duration_bands && long_window {
            let all_endpoints: Vec<i64>;
            let ids = match endpoint_ids {
                Some(ids) => ids,
                None => {
                    const SELECT: &str = "SELECT id FROM endpoints";
                    all_endpoints = sqlx::query_scalar(SELECT).fetch_all(self.reader).await?;
                    &all_endpoints
                }
            };
            return self.slowest_by_band(window, ids, min_duration_ns, limit).await;
        }
        // One endpoint's requests of a short window, not every request of it filtered by
        // endpoint: a quiet endpoint beside a busy one was read in seconds, not milliseconds.
        let index = match endpoint_ids {
            None => "requests_by_start",
            Some(_) => "requests_by_endpoint",
        };
        let mut select = self.requests_where(REQUEST_COLUMNS, Some(index), window, min_duration_ns);
        if let Some(ids) = endpoint_ids {
            select.push(" AND endpoint_id IN (");
            push_integers(&mut select, ids.iter().copied());
        }
        select
            .push(" ORDER BY duration_ns DESC LIMIT ")
            .push_bind(limit);
        let rows: Vec<StoredRequest> = select.build_query_as().fetch_all(self.reader).await?;
        rows.into_iter().map(StoredRequest::decode).collect()
    }

    /// The newest requests of one endpoint that started in a window and took between
    /// `durations_ns.0` and `durations_ns.1` (inclusive), newest first, at most `limit`: read
    /// backwards along the (endpoint, start) index, so a long window costs no more than a short one.
    pub async fn newest_requests(
        &self,
        window: Window,
        endpoint_id: i64,
        durations_ns: (u64, u64),
        limit: i64,
    ) -> Result<Vec<RequestRow>, StoreError> {
        // Read backwards along (endpoint, start), which stops after `limit` rows; SQLite's band
        // index would read every row of the window first.
        let select = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests{} {NEWEST_REQUESTS}",
            self.dialect.index_hint("requests_by_endpoint")
        );
        // The text is made of constants only; every value is bound.
        let rows: Vec<StoredRequest> = sqlx::query_as(sqlx::AssertSqlSafe(select))
            .bind(endpoint_id)
            .bind(ns(window.from_unix_ns))
            .bind(ns(window.to_unix_ns))
            .bind(ns(durations_ns.0))
            .bind(ns(durations_ns.1))
            .bind(limit)
            .fetch_all(self.reader)
            .await?;
        rows.into_iter().map(StoredRequest::decode).collect()
    }

    /// How many requests of one endpoint in a window took between `min_ns` and `max_ns`
    /// (inclusive), and their summed breakdowns: the slowest 5% beside the median ones.
    pub async fn breakdown_between(
        &self,
        window: Window,
        endpoint_id: i64,
        min_ns: u64,
        max_ns: u64,
    ) -> Result<(u64, Breakdown), StoreError> {
        let sums: Vec<String> = Category::ALL
            .iter()
            .map(|category| format!("CAST(COALESCE(SUM({}_ns), 0) AS BIGINT)", category.as_str()))
            .collect();
        let columns = format!("COUNT(*), {}", sums.join(", "));
        let mut select = self.requests_where(&columns, BY_BAND, window, min_ns);
        select
            .push(" AND endpoint_id = ")
            .push_bind(endpoint_id)
            .push(" AND duration_ns <= ")
            .push_bind(ns(max_ns));
        if self.dialect.duration_bands {
            select.push(" AND duration_band IN (");
            push_integers(&mut select, duration_bands(min_ns, max_ns));
        }
        let row: CountAndBreakdown = select.build_query_as().fetch_one(self.reader).await?;
        Ok(count_and_breakdown(row))
    }

    /// The quickest request of one endpoint in a window that took at least `min_ns`: with the
    /// median as `min_ns`, a typical request.
    pub async fn request_at_least(
        &self,
        window: Window,
        endpoint_id: i64,
        min_ns: u64,
    ) -> Result<Option<RequestRow>, StoreError> {
        // With duration bands, the first band from `min_ns` up that has a row in the window
        // holds the shortest one.
        let (bands, in_band) = if self.dialect.duration_bands {
            let Some(top) = self.highest_band(&[endpoint_id]).await? else {
                return Ok(None);
            };
            ((duration_band(min_ns)..=top).map(Some).collect(), " AND duration_band = $5")
        } else {
            (vec![None], "")
        };
        let select = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests{} WHERE endpoint_id = $1 \
             AND start_unix_ns >= $2 AND start_unix_ns < $3 AND duration_ns >= $4{in_band} \
             ORDER BY duration_ns LIMIT 1",
            self.dialect.index_hint("requests_by_band")
        );
        for band in bands {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
                .bind(endpoint_id)
                .bind(ns(window.from_unix_ns))
                .bind(ns(window.to_unix_ns))
                .bind(ns(min_ns));
            if let Some(band) = band {
                query = query.bind(band);
            }
            let row: Option<StoredRequest> = query.fetch_optional(self.reader).await?;
            if let Some(row) = row {
                return row.decode().map(Some);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_bands_are_digits_then_first_digit() {
        assert_eq!(duration_band(0), 10);
        assert_eq!(duration_band(7), 17);
        assert_eq!(duration_band(10), 21);
        assert_eq!(duration_band(399_999_999), 93);
        assert_eq!(duration_band(400_000_000), 94);
        assert_eq!(duration_band(i64::MAX as u64), 199);
        assert_eq!(duration_bands(15, u64::MAX), 21..=199);
    }
}
