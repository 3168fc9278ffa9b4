//! Analysed request rows: the reads both backends run alike, written once (see `portable`),
//! with SQLite's index hints as the dialect's words. Where a backend reads differently (SQLite
//! finds a trace's rows through its trace index and the slowest of a long window by duration
//! band) the read stays with the backend, behind the same `Store` method.
//!
//! Invariant: every selection is bounded by a limit or a window and endpoints, and every value
//! is bound, never written into the statement.

use std::collections::HashMap;

use collector::model::TraceId;
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::portable::{ROWS_PER_STATEMENT, push_integers};
use super::rows::{REQUEST_COLUMNS, StoredRequest};
use super::{Backend, RequestRow, Store, StoreError, Window, ns};
use crate::analysis::Breakdown;

/// The filter and order of [`Store::newest_requests`], after `FROM requests` and a backend's
/// index hint; the binds are the endpoint, the window, the two durations and the limit.
const NEWEST_REQUESTS: &str = "WHERE endpoint_id = $1 \
     AND start_unix_ns >= $2 AND start_unix_ns < $3 AND duration_ns >= $4 AND duration_ns <= $5 \
     ORDER BY start_unix_ns DESC LIMIT $6";

/// Pushes the condition that a request row starts in `window`.
pub(super) fn push_starts_in<DB>(query: &mut QueryBuilder<DB>, window: Window)
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    query
        .push(" AND start_unix_ns >= ")
        .push_bind(ns(window.from_unix_ns))
        .push(" AND start_unix_ns < ")
        .push_bind(ns(window.to_unix_ns));
}

impl Store {
    /// For those of `trace_ids` that were analysed before, the newest block that analysis saw.
    pub async fn analysed_traces(
        &self,
        trace_ids: &[TraceId],
    ) -> Result<HashMap<TraceId, i64>, StoreError> {
        dispatch!(self.analysed_traces(trace_ids))
    }

    /// Requests of some endpoints in a window, slowest first, at least `min_duration_ns` long.
    pub async fn requests(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
        min_duration_ns: u64,
        limit: i64,
    ) -> Result<Vec<RequestRow>, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                (store.requests(window, endpoint_ids, min_duration_ns, limit)).await
            }
            Backend::Postgres(store) => {
                (store.portable())
                    .slowest_requests(window, endpoint_ids, min_duration_ns, limit)
                    .await
            }
        }
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
        portable!(self.newest_requests(window, endpoint_id, durations_ns, limit))
    }

    /// The request rows of one trace.
    pub async fn trace_requests(&self, trace_id: TraceId) -> Result<Vec<RequestRow>, StoreError> {
        dispatch!(self.trace_requests(trace_id))
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
        dispatch!(self.breakdown_between(window, endpoint_id, min_ns, max_ns))
    }

    /// The quickest request of one endpoint in a window that took at least `min_ns`: with the
    /// median as `min_ns`, a typical request.
    pub async fn request_at_least(
        &self,
        window: Window,
        endpoint_id: i64,
        min_ns: u64,
    ) -> Result<Option<RequestRow>, StoreError> {
        dispatch!(self.request_at_least(window, endpoint_id, min_ns))
    }

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
        let rows = portable!(self.selected_requests(window, endpoint_ids, version, max_rows))?;
        if rows.len() > max_rows {
            return Err(StoreError::ReadTooLarge(format!(
                "more than {max_rows} requests match this selection; narrow its window or \
                 select fewer endpoints"
            )));
        }
        Ok(rows)
    }
}

portable_impl! {
    /// The slowest requests of some endpoints in a window, by start time and sorted: the read
    /// of every window on PostgreSQL, of a short one on SQLite.
    pub(in crate::store) async fn slowest_requests(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
        min_duration_ns: u64,
        limit: i64,
    ) -> Result<Vec<RequestRow>, StoreError> {
        if endpoint_ids.is_some_and(|ids| ids.is_empty()) {
            return Ok(Vec::new());
        }
        // One endpoint's requests of a short window, not every request of it filtered by
        // endpoint: a quiet endpoint beside a busy one was read in seconds, not milliseconds.
        let index = match endpoint_ids {
            None => "requests_by_start",
            Some(_) => "requests_by_endpoint",
        };
        let mut select = QueryBuilder::<DB>::new(format!(
            "SELECT {REQUEST_COLUMNS} FROM requests{} WHERE start_unix_ns >= ",
            self.dialect.index_hint(index)
        ));
        select
            .push_bind(ns(window.from_unix_ns))
            .push(" AND start_unix_ns < ")
            .push_bind(ns(window.to_unix_ns));
        select
            .push(" AND duration_ns >= ")
            .push_bind(ns(min_duration_ns));
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

    async fn newest_requests(
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

    async fn selected_requests(
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
            let mut select = QueryBuilder::<DB>::new(format!(
                "SELECT {REQUEST_COLUMNS} FROM requests WHERE start_unix_ns >= "
            ));
            select
                .push_bind(ns(window.from_unix_ns))
                .push(" AND start_unix_ns < ")
                .push_bind(ns(window.to_unix_ns))
                .push(" AND endpoint_id IN (");
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
        Ok(out)
    }
}
