//! The store: span blocks, analysed requests, endpoints and per-minute rollups.
//!
//! `Store` is what every other module talks to; its methods are named by use case. SQLite is the
//! embedded default for one instance; PostgreSQL lets several instances share one database (the
//! analysis then claims its work in the database, see [`Store::claim_due_traces`]).
//!
//! Invariant: the only module with SQL or sqlx types. Rows become model and analysis types here
//! and never leave as rows.

mod eviction;
pub mod hot_trace;
pub mod operation_cap;
mod postgres;
mod request_expiry;
pub mod retention;
pub mod scratch;
pub mod settings;
mod sqlite;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use collector::category::Category;
use collector::model::{Event, Span, SpanId, TraceId};

use self::settings::DatabaseUrl;
use crate::analysis::aggregate::{FindingSums, Rollup};
use crate::analysis::location::CodeLocation;
use crate::analysis::{Breakdown, FindingKind};

/// Spans are stored in the collector's block form: compressed OTLP, as the receivers packed it.
pub use collector::block::{self, EncodedBlock};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored block could not be read back.
    #[error(transparent)]
    Block(#[from] block::BlockError),
    /// A stored value was not what the schema promises.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The configured backend is not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// An analysis commit released a claim another instance had taken over; nothing was written.
    #[error("a claimed trace was taken over by another instance")]
    ClaimLost,
    /// A read would cost more than its caller allows; the message says what to narrow.
    #[error("{0}")]
    ReadTooLarge(String),
}

/// A half-open time range in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub from_unix_ns: u64,
    /// Exclusive end.
    pub to_unix_ns: u64,
}

impl Window {
    /// The minutes (since the epoch) the window touches.
    pub fn minutes(&self) -> (i64, i64) {
        (
            minute_of(self.from_unix_ns),
            minute_of(self.to_unix_ns.saturating_sub(1)),
        )
    }
}

/// Windows at least this long (in minutes) are aligned to the hour at their start.
pub const LONG_WINDOW_MINUTES: i64 = 6 * 60;

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The minute (since the epoch) an instant falls in: the rollup bucket.
pub fn minute_of(unix_ns: u64) -> i64 {
    (unix_ns / 60_000_000_000) as i64
}

/// How much time one rollup row covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    /// One minute: the rows time series and short windows read.
    Minute,
    /// One hour: the rows long windows read for their whole hours.
    Hour,
}

impl Granularity {
    /// The first minute of the row `minute` falls in.
    pub fn row_start(self, minute: i64) -> i64 {
        match self {
            Self::Minute => minute,
            Self::Hour => minute - minute.rem_euclid(60),
        }
    }
}

/// The identity of a rollup row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    /// Interned (service, endpoint).
    pub endpoint_id: i64,
    /// `service.version`, empty when unknown.
    pub version: String,
    /// The row's first minute since the epoch.
    pub minute: i64,
    /// Whether the row covers a minute or an hour.
    pub granularity: Granularity,
}

/// An analysed request as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    /// Its trace.
    pub trace_id: TraceId,
    /// The request span.
    pub span_id: SpanId,
    /// Interned (service, endpoint).
    pub endpoint_id: i64,
    /// `service.version`.
    pub version: String,
    /// Start of the request span.
    pub start_unix_ns: u64,
    /// Its duration.
    pub duration_ns: u64,
    /// Whether it failed.
    pub error: bool,
    /// Critical-path breakdown.
    pub breakdown: Breakdown,
    /// Database calls.
    pub n_db_calls: u32,
    /// Newest block the analysis saw: one holding spans of this trace (SQLite finds a trace's
    /// request rows through it).
    pub last_block_id: i64,
    /// Interned resource of the request span; 0 when unknown.
    pub resource_id: i64,
}

/// Traces read whole by [`Store::traces_with_events`].
#[derive(Debug, Default)]
pub struct TracesRead {
    /// Each trace found: its spans ordered by start, and their events.
    pub traces: HashMap<TraceId, block::SpansWithEvents>,
    /// Bytes of the stored (compressed) blocks read for them.
    pub block_bytes: u64,
}

/// The endpoint every endpoint past a service's cap is folded into. Retention never evicts it:
/// it holds the requests of every endpoint that found its service at the cap.
pub const OTHER_ENDPOINT: &str = "other";

/// An interned resource: the full attribute set one process reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    /// Its id.
    pub id: i64,
    /// `service.name`.
    pub service: String,
    /// Its attributes, sorted by key.
    pub attributes: Vec<(String, String)>,
}

/// The canonical text of a resource's attributes: `key=value` lines sorted by key, the form the
/// store interns. A backslash, a newline, and `=` in a key are escaped with a backslash, so any
/// attribute reads back as sent.
pub fn canonical_attributes(attributes: &[(String, String)]) -> String {
    fn escape(text: &str, is_key: bool) -> String {
        let mut out = String::with_capacity(text.len());
        for ch in text.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '=' if is_key => out.push_str("\\="),
                c => out.push(c),
            }
        }
        out
    }
    let mut lines: Vec<String> = attributes
        .iter()
        .map(|(key, value)| format!("{}={}", escape(key, true), escape(value, false)))
        .collect();
    lines.sort();
    lines.dedup();
    lines.join("\n")
}

/// Reads [`canonical_attributes`] back.
fn parse_canonical(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let (mut key, mut value) = (String::new(), String::new());
        let mut in_value = false;
        let mut chars = line.chars();
        while let Some(ch) = chars.next() {
            let target = if in_value { &mut value } else { &mut key };
            match ch {
                '\\' => match chars.next() {
                    Some('n') => target.push('\n'),
                    Some(other) => target.push(other),
                    None => {}
                },
                '=' if !in_value => in_value = true,
                c => target.push(c),
            }
        }
        out.push((key, value));
    }
    out
}

/// An interned endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointRef {
    /// Its id.
    pub id: i64,
    /// `service.name`.
    pub service: String,
    /// The endpoint name.
    pub endpoint: String,
}

/// How one analysis tick changes one rollup row: requests added, and requests of a previous
/// analysis taken back. The store applies the change to the row as stored, under the row's lock,
/// so two instances updating one row both count.
#[derive(Debug, Clone)]
pub struct RollupChange {
    /// The row.
    pub key: RollupKey,
    /// Requests added.
    pub added: Rollup,
    /// Requests of a previous analysis, taken back.
    pub removed: Rollup,
}

/// A trace an analyzer claimed in the database (PostgreSQL), with every stored span.
#[derive(Debug, Clone)]
pub struct ClaimedTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// The claim's token: the commit that releases the claim must present it.
    pub claim: i64,
    /// When the spans of `new_blocks` were first stored.
    pub first_seen_unix_ns: u64,
    /// The blocks of the trace not analysed yet; every other stored block of the trace was seen
    /// by a previous analysis.
    pub new_blocks: Vec<i64>,
    /// Every stored span with the id of its block; none for a hot trace.
    pub spans: Vec<(i64, Span)>,
    /// Analysed before and past [`hot_trace::MAX_BLOCKS_PER_TRACE`] blocks: its spans were not
    /// read, and its new blocks are not analysed.
    pub hot: bool,
}

/// A claim given back by an analysis commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRelease {
    /// The trace.
    pub trace_id: TraceId,
    /// The token it was claimed with.
    pub claim: i64,
    /// The blocks the analysis saw: a trace with other blocks pending stays pending.
    pub analysed_blocks: Vec<i64>,
}

/// The names behind the interned ids an analysis commit writes under. Retention may evict an id
/// after the analyzer looked it up; the commit then interns the name again and writes under the
/// new id (see `store/eviction.rs`).
#[derive(Debug, Clone, Default)]
pub struct InternedNames {
    /// (service, endpoint) by endpoint id.
    pub endpoints: HashMap<i64, (String, String)>,
    /// (service, attributes in [`canonical_attributes`] form) by resource id.
    pub resources: HashMap<i64, (String, String)>,
}

/// Everything one analysis tick writes, committed in one transaction so that requests, rollups
/// and the watermark (or the claims) never disagree after a crash.
#[derive(Debug, Clone, Default)]
pub struct AnalysisCommit {
    /// Traces whose previous request rows are replaced.
    pub replace_traces: Vec<TraceId>,
    /// The new request rows.
    pub requests: Vec<RequestRow>,
    /// Changes to rollup rows.
    pub rollups: Vec<RollupChange>,
    /// Every block up to this id has been analysed (single-instance SQLite path).
    pub watermark: Option<i64>,
    /// Claims the analysis is done with (shared-database path). If any of them is no longer held
    /// with its token (it expired and another instance took it), nothing is written and the
    /// commit fails with [`StoreError::ClaimLost`].
    pub claims: Vec<ClaimRelease>,
    /// The names of the endpoints the new requests are counted under and of their resources.
    /// Ids without a name here (those only taken back from) are not interned again if evicted.
    pub names: InternedNames,
    /// Operation names kept per rollup row; the rest count as `other` (`operation_cap`).
    /// `None`: every name is kept.
    pub max_operations_per_rollup: Option<usize>,
}

impl AnalysisCommit {
    /// Adds the writes of `later`, a commit of other traces, as if the two were committed one
    /// after the other: changes to one rollup row are summed into one.
    pub fn absorb(&mut self, later: AnalysisCommit) {
        self.replace_traces.extend(later.replace_traces);
        self.requests.extend(later.requests);
        let mut row_of: HashMap<RollupKey, usize> = (self.rollups.iter().enumerate())
            .map(|(index, change)| (change.key.clone(), index))
            .collect();
        for change in later.rollups {
            match row_of.get(&change.key) {
                Some(&index) => {
                    self.rollups[index].added.merge(&change.added);
                    self.rollups[index].removed.merge(&change.removed);
                }
                None => {
                    row_of.insert(change.key.clone(), self.rollups.len());
                    self.rollups.push(change);
                }
            }
        }
        self.watermark = self.watermark.max(later.watermark);
        self.claims.extend(later.claims);
        self.names.endpoints.extend(later.names.endpoints);
        self.names.resources.extend(later.names.resources);
        self.max_operations_per_rollup =
            (self.max_operations_per_rollup).or(later.max_operations_per_rollup);
    }
}

/// A task only one of the instances sharing a database runs at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaderRole {
    /// Alert evaluation and webhook delivery.
    Alerts,
    /// The regression finder.
    Regressions,
    /// Retention and partition maintenance.
    Maintenance,
}

impl LeaderRole {
    /// The PostgreSQL advisory lock key of the role: fixed, and unlikely to meet another
    /// application's keys ("BN" in the high bytes).
    fn lock_key(self) -> i64 {
        0x424e_0000_0000
            + match self {
                Self::Alerts => 1,
                Self::Regressions => 2,
                Self::Maintenance => 3,
            }
    }
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Span blocks deleted (dropped partitions count their rows).
    pub blocks: u64,
    /// Request rows deleted.
    pub requests: u64,
    /// Rollup rows (minute and hourly) deleted.
    pub rollups: u64,
    /// Whole partitions dropped (PostgreSQL).
    pub partitions: u64,
    /// Endpoints evicted: no request, rollup or regression row referred to them any more.
    pub endpoints: u64,
    /// Resources evicted: every request of them was gone.
    pub resources: u64,
}

/// What the store holds, for `/metrics`, benchmarks and the UI's "data since".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Spans stored.
    pub n_spans: u64,
    /// Blocks stored.
    pub n_blocks: u64,
    /// Requests analysed.
    pub n_requests: u64,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// The store. Cheap to clone: it wraps a connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(store) => store.$method($($arg),*).await,
            Backend::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

/// A request row as both backends select it (`REQUEST_COLUMNS`), read by position: seventeen
/// columns are more than sqlx decodes into a tuple.
pub(crate) struct StoredRequest {
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
        let mut breakdown = [0i64; Category::COUNT];
        for (idx, value) in breakdown.iter_mut().enumerate() {
            *value = row.try_get(7 + idx)?;
        }
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
    pub(crate) fn decode(self) -> Result<RequestRow, StoreError> {
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
pub(crate) type CountAndBreakdown = (i64, i64, i64, i64, i64, i64, i64, i64);

/// The count and the summed breakdown of a [`CountAndBreakdown`] row.
pub(crate) fn count_and_breakdown(row: CountAndBreakdown) -> (u64, Breakdown) {
    let (n, db, cache, network, messaging, cpu, wait, untraced) = row;
    (
        unsigned(n),
        Breakdown([db, cache, network, messaging, cpu, wait, untraced].map(unsigned)),
    )
}

/// A count as the databases store it (BIGINT), saturating.
fn ns(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored count back; a negative one (never written) reads as zero.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

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
fn rollup_tables(granularity: Granularity) -> [&'static str; 3] {
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
/// clause. `saturating_sum` writes the sum of a BIGINT column as a BIGINT that stops at its
/// maximum: a sum that overflows fails the query in both databases, and a long window of a busy
/// operation can pass 2^63 ns.
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

/// A location as stored in a finding row; a row without a file and a function has none.
fn stored_location(
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
type FindingRow = (
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
fn finding_of_row(row: FindingRow) -> (i64, String, i64, String, String, FindingSums) {
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
type LocationVotesRow = (
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
type SummedDetailRow = (i64, String, String, String, i64, i64, i64);

/// Operations and findings summed per (endpoint, version) over some rollup rows.
#[derive(Debug, Default)]
pub(crate) struct DetailSums {
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

#[macro_use]
mod portable;
mod alert;
mod regression;

pub use alert::{
    AlertCommit, AlertEvaluation, AlertTransition, DeliveryAttempt, DeliveryRecord,
    DueNotification, EvaluatedAlert, EvaluatedBurn, NewNotification, StoredAlert,
};
pub use regression::{
    NewResolution, RegressionCheck, RegressionEvaluation, RegressionRecord, RegressionResolution,
    VersionTraffic,
};

impl Store {
    /// Opens (creating if needed) the database with the default settings and applies
    /// migrations.
    pub async fn open(url: &DatabaseUrl) -> Result<Store, StoreError> {
        Self::open_with(url, &settings::StoreSettings::default()).await
    }

    /// Opens (creating if needed) the database and applies migrations.
    pub async fn open_with(
        url: &DatabaseUrl,
        settings: &settings::StoreSettings,
    ) -> Result<Store, StoreError> {
        match url {
            DatabaseUrl::Sqlite(path) => Ok(Store {
                backend: Backend::Sqlite(
                    sqlite::SqliteStore::open(path, settings.sqlite_synchronous).await?,
                ),
            }),
            DatabaseUrl::Postgres(url) => Ok(Store {
                backend: Backend::Postgres(postgres::PgStore::open(url).await?),
            }),
        }
    }

    /// Whether several instances may share this store: the analysis then claims due traces in
    /// the database ([`Store::claim_due_traces`]) instead of tracking them in memory.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Claims up to `limit` traces whose first spans were stored at or before `cutoff_unix_ns`
    /// and that nobody holds (or whose claim expired before `now_unix_ns`), until
    /// `lease_until_unix_ns`, and loads their spans. Only a shared store has claims; SQLite
    /// returns nothing (its analysis follows the watermark).
    pub async fn claim_due_traces(
        &self,
        claim: i64,
        cutoff_unix_ns: u64,
        now_unix_ns: u64,
        lease_until_unix_ns: u64,
        limit: i64,
    ) -> Result<Vec<ClaimedTrace>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(store) => {
                store
                    .claim_due_traces(
                        claim,
                        cutoff_unix_ns,
                        now_unix_ns,
                        lease_until_unix_ns,
                        limit,
                    )
                    .await
            }
        }
    }

    /// Gives up the claims with these tokens, whose analysis failed, so their traces can be
    /// claimed again at once rather than when the lease expires; returns the traces released.
    /// A claim whose commit did go through was released by it and is not touched.
    pub async fn release_claims(&self, claims: &[i64]) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(0),
            Backend::Postgres(store) => store.release_claims(claims).await,
        }
    }

    /// Traces stored but not yet analysed (claimed or not); 0 for SQLite, whose pending traces
    /// live in memory.
    pub async fn pending_traces(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(0),
            Backend::Postgres(store) => store.pending_traces().await,
        }
    }

    /// Whether this instance holds `role` (taking it if free). With SQLite there is one instance,
    /// which always does; with PostgreSQL the role is a session advisory lock held on a
    /// dedicated connection, so it passes to another instance when this one dies.
    pub async fn lead(&self, role: LeaderRole) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => true,
            Backend::Postgres(store) => store.lead(role.lock_key()).await,
        }
    }

    /// Makes sure the time partitions of the coming days exist (PostgreSQL; a no-op for SQLite).
    pub async fn maintain_partitions(&self, now_unix_ns: u64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(store) => store.maintain_partitions(now_unix_ns).await,
        }
    }

    /// Deletes span blocks received and requests started before `spans_before_unix_ns`, and
    /// rollups (minute and hourly) before `rollups_before_unix_ns`. PostgreSQL drops whole day
    /// partitions; SQLite deletes in bounded batches with a pause between them, so ingest never
    /// waits long for the write lock. Then evicts the endpoints (other than [`OTHER_ENDPOINT`])
    /// no row refers to any more, and the resources unseen since `spans_before_unix_ns` none of
    /// whose requests is left.
    pub async fn apply_retention(
        &self,
        spans_before_unix_ns: u64,
        rollups_before_unix_ns: u64,
    ) -> Result<RetentionReport, StoreError> {
        dispatch!(self.apply_retention(spans_before_unix_ns, rollups_before_unix_ns))
    }

    /// Commits blocks in one transaction; returns their ids in order.
    pub async fn insert_blocks(&self, blocks: &[EncodedBlock]) -> Result<Vec<i64>, StoreError> {
        dispatch!(self.insert_blocks(blocks))
    }

    /// Blocks with an id above `after_id`, oldest first, at most `limit`, as stored (see
    /// [`block::decode`]): replay after a restart.
    pub async fn blocks_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        dispatch!(self.blocks_after(after_id, limit))
    }

    /// The newest block id, 0 for an empty store.
    pub async fn last_block_id(&self) -> Result<i64, StoreError> {
        dispatch!(self.last_block_id())
    }

    /// Every stored span of a trace with the id of the block it came in; `None` if unknown.
    pub async fn trace_spans(
        &self,
        trace_id: TraceId,
    ) -> Result<Option<Vec<(i64, Span)>>, StoreError> {
        dispatch!(self.trace_spans(trace_id))
    }

    /// Every stored span of a trace, ordered by start.
    pub async fn trace(&self, trace_id: TraceId) -> Result<Option<Vec<Span>>, StoreError> {
        Ok(self.trace_spans(trace_id).await?.map(|spans| {
            let mut spans: Vec<Span> = spans.into_iter().map(|(_, span)| span).collect();
            spans.sort_by_key(|span| span.start_unix_ns);
            spans
        }))
    }

    /// Every stored span of a trace, ordered by start, with the events they recorded; `None` if
    /// unknown. Events are not part of [`Span`], so they are read from the blocks here.
    pub async fn trace_with_events(
        &self,
        trace_id: TraceId,
    ) -> Result<Option<(Vec<Span>, Vec<Event>)>, StoreError> {
        Ok(self
            .traces_with_events(&[trace_id])
            .await?
            .traces
            .remove(&trace_id))
    }

    /// [`Store::trace_with_events`] for several traces, each block decoded once however many
    /// of them it holds; unknown traces are absent.
    pub async fn traces_with_events(
        &self,
        trace_ids: &[TraceId],
    ) -> Result<TracesRead, StoreError> {
        let mut blocks = BTreeMap::new();
        for trace_id in trace_ids {
            for (id, data) in dispatch!(self.trace_blocks(*trace_id))? {
                blocks.entry(id).or_insert(data);
            }
        }
        let wanted: HashSet<TraceId> = trace_ids.iter().copied().collect();
        let mut read = TracesRead::default();
        for data in blocks.into_values() {
            read.block_bytes += data.len() as u64;
            for (trace_id, (spans, events)) in block::decode_traces_with_events(&data, &wanted)? {
                let (all_spans, all_events) = read.traces.entry(trace_id).or_default();
                all_spans.extend(spans);
                all_events.extend(events);
            }
        }
        for (spans, _) in read.traces.values_mut() {
            spans.sort_by_key(|span| span.start_unix_ns);
        }
        Ok(read)
    }

    /// The analysis watermark: every block up to it has been analysed.
    pub async fn analysis_watermark(&self) -> Result<i64, StoreError> {
        dispatch!(self.analysis_watermark())
    }

    /// For those of `trace_ids` that were analysed before, the newest block that analysis saw.
    pub async fn analysed_traces(
        &self,
        trace_ids: &[TraceId],
    ) -> Result<HashMap<TraceId, i64>, StoreError> {
        dispatch!(self.analysed_traces(trace_ids))
    }

    /// How many retention passes evicted endpoints or resources, or removed rollups: a cache of
    /// the interned ids (and of the versions rollups hold) that was read at another generation
    /// may hold evicted ids and count evicted rows.
    pub async fn eviction_generation(&self) -> Result<i64, StoreError> {
        dispatch!(self.eviction_generation())
    }

    /// Every interned endpoint.
    pub async fn endpoints(&self) -> Result<Vec<EndpointRef>, StoreError> {
        dispatch!(self.endpoints())
    }

    /// Every (service, version) the hourly rollups hold: the versions the analyzer's cap counts,
    /// which leave with their rollups.
    pub async fn service_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self.service_versions())
    }

    /// The id of (service, endpoint), interning it if new.
    pub async fn intern_endpoint(&self, service: &str, endpoint: &str) -> Result<i64, StoreError> {
        dispatch!(self.intern_endpoint(service, endpoint))
    }

    /// Applies the migrations only (`bottleneck migrate`); [`Store::open`] does this too.
    pub async fn migrate(url: &DatabaseUrl) -> Result<(), StoreError> {
        let store = Store::open(url).await?;
        store.close().await;
        Ok(())
    }

    /// One stored rollup, with its operations and findings.
    pub async fn rollup(&self, key: &RollupKey) -> Result<Option<Rollup>, StoreError> {
        dispatch!(self.rollup(key))
    }

    /// Writes one analysis tick atomically.
    pub async fn commit_analysis(&self, commit: &AnalysisCommit) -> Result<u64, StoreError> {
        dispatch!(self.commit_analysis(commit))
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
            rows.extend(dispatch!(self.rollup_rows(
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
                dispatch!(self.rollup_rows(granularity, minutes, endpoint_ids, version, false))?;
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
            let sums = dispatch!(self.detail_sums(granularity, minutes, endpoint_ids, version))?;
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
        dispatch!(self.rollup_rows(
            Granularity::Minute,
            [first, last],
            endpoint_ids,
            None,
            false
        ))
    }

    /// Requests of some endpoints in a window, slowest first, at least `min_duration_ns` long.
    pub async fn requests(
        &self,
        window: Window,
        endpoint_ids: Option<&[i64]>,
        min_duration_ns: u64,
        limit: i64,
    ) -> Result<Vec<RequestRow>, StoreError> {
        dispatch!(self.requests(window, endpoint_ids, min_duration_ns, limit))
    }

    /// The filter and order of [`Store::newest_requests`], after `FROM requests` and a backend's
    /// index hint; the binds are the endpoint, the window, the two durations and the limit.
    pub(crate) const NEWEST_REQUESTS: &str = "WHERE endpoint_id = $1 \
         AND start_unix_ns >= $2 AND start_unix_ns < $3 AND duration_ns >= $4 AND duration_ns <= $5 \
         ORDER BY start_unix_ns DESC LIMIT $6";

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
        dispatch!(self.newest_requests(window, endpoint_id, durations_ns, limit))
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
        let rows = dispatch!(self.selected_requests(window, endpoint_ids, version, max_rows))?;
        if rows.len() > max_rows {
            return Err(StoreError::ReadTooLarge(format!(
                "more than {max_rows} requests match this selection; narrow its window or \
                 select fewer endpoints"
            )));
        }
        Ok(rows)
    }

    /// The same store with a pool of read connections of its own, for the web: a heavy page
    /// then waits for these connections only, never for those the analysis reads with. On
    /// PostgreSQL the server stops each of its statements after `statement_timeout`.
    pub async fn with_own_readers(
        &self,
        statement_timeout: std::time::Duration,
    ) -> Result<Store, StoreError> {
        let backend = match &self.backend {
            Backend::Sqlite(store) => Backend::Sqlite(store.with_own_readers().await?),
            Backend::Postgres(store) => {
                Backend::Postgres(store.with_own_readers(statement_timeout))
            }
        };
        Ok(Store { backend })
    }

    /// Closes the read connections of a store from [`Store::with_own_readers`], and nothing
    /// else: the writer is the original store's to close.
    pub async fn close_readers(&self) {
        match &self.backend {
            Backend::Sqlite(store) => store.close_readers().await,
            Backend::Postgres(store) => store.close_readers().await,
        }
    }

    /// Every interned resource.
    pub async fn resources(&self) -> Result<Vec<ResourceRef>, StoreError> {
        dispatch!(self.resources())
    }

    /// The id of a resource given in [`canonical_attributes`] form, interning it if new.
    pub async fn intern_resource(&self, service: &str, canonical: &str) -> Result<i64, StoreError> {
        dispatch!(self.intern_resource(service, canonical))
    }

    /// Counts of what is stored.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        dispatch!(self.stats())
    }

    /// When the oldest stored span arrived: how far back span data goes after retention.
    pub async fn data_since(&self) -> Result<Option<u64>, StoreError> {
        dispatch!(self.data_since())
    }

    /// Bytes the database occupies on disk (SQLite: the file and its WAL).
    pub async fn disk_bytes(&self) -> Result<u64, StoreError> {
        dispatch!(self.disk_bytes())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(store) => store.close().await,
            Backend::Postgres(store) => store.close().await,
        }
    }
}

#[cfg(test)]
mod suite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_attributes_round_trip() {
        let attributes = vec![
            ("service.name".to_owned(), "auth".to_owned()),
            ("odd=key".to_owned(), "a\\b\nc=d ü".to_owned()),
            ("host.name".to_owned(), String::new()),
        ];
        let text = canonical_attributes(&attributes);
        assert_eq!(text.lines().count(), 3);
        let mut back = parse_canonical(&text);
        back.sort();
        let mut expected = attributes.clone();
        expected.sort();
        assert_eq!(back, expected);
    }

    fn change(minute: i64, durations_ns: &[u64], removed_ns: &[u64]) -> RollupChange {
        let rollup_of = |durations_ns: &[u64]| {
            let mut rollup = Rollup::new();
            for duration_ns in durations_ns {
                rollup.add_headline(*duration_ns, false, &Breakdown::default(), 1);
            }
            rollup
        };
        RollupChange {
            key: RollupKey {
                endpoint_id: 1,
                version: "1.0".to_owned(),
                minute,
                granularity: Granularity::Minute,
            },
            added: rollup_of(durations_ns),
            removed: rollup_of(removed_ns),
        }
    }

    #[test]
    fn an_absorbed_commit_sums_changes_to_one_row_and_keeps_the_later_watermark() {
        let mut first = AnalysisCommit {
            replace_traces: vec![TraceId([1; 16])],
            rollups: vec![change(10, &[5, 7], &[3])],
            watermark: Some(4),
            ..Default::default()
        };
        let later = AnalysisCommit {
            replace_traces: vec![TraceId([2; 16])],
            rollups: vec![change(11, &[1], &[]), change(10, &[9], &[2, 4])],
            watermark: Some(9),
            ..Default::default()
        };
        first.absorb(later);
        assert_eq!(first.replace_traces, [TraceId([1; 16]), TraceId([2; 16])]);
        assert_eq!(first.watermark, Some(9));
        assert_eq!(first.rollups.len(), 2, "one change per row");
        let minute_10 = &first.rollups[0];
        assert_eq!(minute_10.key.minute, 10);
        assert_eq!(minute_10.added, change(10, &[5, 7, 9], &[]).added);
        assert_eq!(minute_10.removed, change(10, &[], &[3, 2, 4]).removed);
        assert_eq!(first.rollups[1].added.requests, 1);
    }
}
