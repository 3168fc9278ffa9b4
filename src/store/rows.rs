//! The rows both backends read, as sqlx decodes them, and what they become: the one place a
//! stored column list or a row's shape is written.
//!
//! Invariant: rows never leave `store`; each becomes a model or analysis type here.

use collector::category::Category;
use collector::model::{SpanId, TraceId};

use super::{Granularity, RequestRow, RollupKey, StoreError, unsigned};
use crate::analysis::Breakdown;
use crate::analysis::aggregate::{FindingSums, LatencySketch, Rollup};
use crate::analysis::location::CodeLocation;

/// The columns of a request row, in the order [`StoredRequest`] reads them.
pub(super) const REQUEST_COLUMNS: &str = "trace_id, span_id, endpoint_id, version, start_unix_ns, \
     duration_ns, error, db_ns, cache_ns, network_ns, messaging_ns, cpu_ns, wait_ns, untraced_ns, \
     n_db_calls, last_block_id, resource_id";

/// The columns of a rollup row but its sum of squares, which a read casts.
macro_rules! rollup_sum_columns {
    () => {
        "endpoint_id, version, minute, requests, errors, duration_sum_ns, sketch, db_ns, \
         cache_ns, network_ns, messaging_ns, cpu_ns, wait_ns, untraced_ns, db_calls"
    };
}

/// The columns of a rollup row, as a write names them.
pub(super) const ROLLUP_COLUMNS: &str = concat!(rollup_sum_columns!(), ", duration_sq_sum");

/// [`ROLLUP_COLUMNS`] as a read selects them, in the order of [`RollupTuple`]: the sum of
/// squares (NUMERIC on PostgreSQL, text on SQLite) as text.
pub(super) const ROLLUP_SELECT: &str =
    concat!(rollup_sum_columns!(), ", CAST(duration_sq_sum AS TEXT)");

/// A stored trace id back.
pub(super) fn trace_id(bytes: &[u8]) -> Result<TraceId, StoreError> {
    TraceId::parse(bytes).map_err(|e| StoreError::Corrupt(format!("trace id: {e}")))
}

/// `N` consecutive columns of `row`, from the one at `first`.
pub(super) fn columns<'r, R, T, const N: usize>(
    row: &'r R,
    first: usize,
) -> Result<[T; N], sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut values = Vec::with_capacity(N);
    for idx in first..first + N {
        values.push(row.try_get(idx)?);
    }
    let mut values = values.into_iter();
    Ok(std::array::from_fn(|_| {
        values.next().expect("N columns read")
    }))
}

/// A request row as both backends select it ([`REQUEST_COLUMNS`]), read by position: seventeen
/// columns are more than sqlx decodes into a tuple.
pub(super) struct StoredRequest {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    endpoint_id: i64,
    version: String,
    start_unix_ns: i64,
    duration_ns: i64,
    error: bool,
    breakdown: [i64; Category::COUNT],
    n_db_calls: i64,
    last_block_id: i64,
    resource_id: i64,
}

impl<'r, R> sqlx::FromRow<'r, R> for StoredRequest
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let breakdown = columns(row, 7)?;
        let after = 7 + Category::COUNT;
        Ok(Self {
            trace_id: row.try_get(0)?,
            span_id: row.try_get(1)?,
            endpoint_id: row.try_get(2)?,
            version: row.try_get(3)?,
            start_unix_ns: row.try_get(4)?,
            duration_ns: row.try_get(5)?,
            error: row.try_get(6)?,
            breakdown,
            n_db_calls: row.try_get(after)?,
            last_block_id: row.try_get(after + 1)?,
            resource_id: row.try_get(after + 2)?,
        })
    }
}

impl StoredRequest {
    /// The row with its ids checked.
    pub(super) fn decode(self) -> Result<RequestRow, StoreError> {
        Ok(RequestRow {
            trace_id: TraceId::parse(&self.trace_id)
                .map_err(|e| StoreError::Corrupt(format!("trace id: {e}")))?,
            span_id: SpanId::parse(&self.span_id)
                .map_err(|e| StoreError::Corrupt(format!("span id: {e}")))?,
            endpoint_id: self.endpoint_id,
            version: self.version,
            start_unix_ns: unsigned(self.start_unix_ns),
            duration_ns: unsigned(self.duration_ns),
            error: self.error,
            breakdown: Breakdown(self.breakdown.map(unsigned)),
            n_db_calls: u32::try_from(self.n_db_calls).unwrap_or(0),
            last_block_id: self.last_block_id,
            resource_id: self.resource_id,
        })
    }
}

/// A count of request rows and their breakdown summed, as both backends select it.
pub(super) type CountAndBreakdown = (i64, i64, i64, i64, i64, i64, i64, i64);

/// The count and the summed breakdown of a [`CountAndBreakdown`] row.
pub(super) fn count_and_breakdown(row: CountAndBreakdown) -> (u64, Breakdown) {
    let (n, db, cache, network, messaging, cpu, wait, untraced) = row;
    (
        unsigned(n),
        Breakdown([db, cache, network, messaging, cpu, wait, untraced].map(unsigned)),
    )
}

/// A location as stored in a finding row; a row without a file and a function has none.
pub(super) fn stored_location(
    file: Option<String>,
    line: Option<i64>,
    function: Option<String>,
) -> Option<CodeLocation> {
    (file.is_some() || function.is_some()).then(|| CodeLocation {
        file,
        line: line.and_then(|line| u32::try_from(line).ok()),
        function,
    })
}

/// A finding row of one rollup: endpoint id, version, minute, kind, name, its three sums, then
/// its location's file, line, function and votes.
pub(super) type FindingRow = (
    i64,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
);

/// A finding row as (endpoint id, version, minute, kind, name, sums).
pub(super) fn finding_of_row(row: FindingRow) -> (i64, String, i64, String, String, FindingSums) {
    let (
        endpoint_id,
        version,
        minute,
        kind,
        name,
        requests,
        count,
        saving,
        file,
        line,
        function,
        votes,
    ) = row;
    let sums = FindingSums {
        requests: unsigned(requests),
        count: unsigned(count),
        saving_ns: unsigned(saving),
        location: stored_location(file, line, function),
        location_votes: unsigned(votes),
    };
    (endpoint_id, version, minute, kind, name, sums)
}

/// One location's summed votes for a finding of an (endpoint, version): endpoint id, version,
/// finding kind, name, file, line, function, votes.
pub(super) type LocationVotesRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
);

/// One summed operation or finding of an (endpoint, version): endpoint id, version, category or
/// finding kind, name, and its three sums in the order of [`OperationSums`] or [`FindingSums`].
pub(super) type SummedDetailRow = (i64, String, String, String, i64, i64, i64);

/// A rollup row as read by [`ROLLUP_SELECT`].
pub(super) type RollupTuple = (
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    Vec<u8>,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
);

/// A rollup row of one granularity as its key and sums (without operations and findings).
pub(super) fn rollup_row(
    granularity: Granularity,
    row: RollupTuple,
) -> Result<(RollupKey, Rollup), StoreError> {
    let (
        endpoint_id,
        version,
        minute,
        requests,
        errors,
        duration_sum,
        sketch,
        db,
        cache,
        network,
        messaging,
        cpu,
        wait,
        untraced,
        db_calls,
        sq_sum,
    ) = row;
    let sketch = LatencySketch::from_bytes(&sketch)
        .ok_or_else(|| StoreError::Corrupt("latency sketch".into()))?;
    let mut rollup = Rollup::with_sketch(sketch);
    rollup.requests = unsigned(requests);
    rollup.errors = unsigned(errors);
    rollup.duration_sum_ns = unsigned(duration_sum);
    rollup.breakdown_sum =
        Breakdown([db, cache, network, messaging, cpu, wait, untraced].map(unsigned));
    rollup.db_calls = unsigned(db_calls);
    rollup.duration_sq_sum = sq_sum
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("sum of squares {sq_sum:?}")))?;
    Ok((
        RollupKey {
            endpoint_id,
            version,
            minute,
            granularity,
        },
        rollup,
    ))
}

/// The columns of an operation row, in the order of [`OperationRow`].
pub(super) const OPERATION_COLUMNS: &str =
    "endpoint_id, version, minute, category, name, calls, total_ns, critical_ns";

/// The columns of a finding row, in the order of [`FindingRow`].
pub(super) const FINDING_COLUMNS: &str = "endpoint_id, version, minute, kind, name, requests, \
     count, saving_ns, location_file, location_line, location_function, location_votes";

/// An operation row: (endpoint, version, minute, category, name, calls, total, critical).
pub(super) type OperationRow = (i64, String, i64, String, String, i64, i64, i64);
