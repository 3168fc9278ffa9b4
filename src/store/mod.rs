//! The store: span blocks, analysed requests, endpoints and per-minute rollups.
//!
//! `Store` is what every other module talks to; its methods are named by use case. SQLite is the
//! embedded default for one instance; PostgreSQL lets several instances share one database (the
//! analysis then claims its work in the database, see [`Store::claim_due_traces`]).
//!
//! Invariant: the only module with SQL or sqlx types. Rows become model and analysis types here
//! and never leave as rows.

pub mod hot_trace;
#[macro_use]
mod migrator;
pub mod operation_cap;
mod postgres;
mod request_expiry;
pub mod retention;
pub mod scratch;
pub mod settings;
mod sqlite;

use std::collections::HashMap;

use collector::model::{Span, SpanId, TraceId};

use self::settings::DatabaseUrl;
use crate::analysis::Breakdown;
use crate::analysis::aggregate::Rollup;

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
    /// Every span stored before the claim was taken, with the id of its block (blocks stored
    /// since wait for the next claim); none for a hot trace.
    pub spans: Vec<(i64, Span)>,
    /// Analysed before and past [`hot_trace::MAX_BLOCKS_PER_TRACE`] blocks: its spans were not
    /// read, and its new blocks are not analysed.
    pub hot: bool,
}

/// Which traces a claim takes and for how long (see [`Store::claim_due_traces`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLease {
    /// Traces whose first spans were stored at or before this are due.
    pub cutoff_unix_ns: u64,
    /// Now: a claim that expired before it may be taken over.
    pub now_unix_ns: u64,
    /// The claim holds until this.
    pub until_unix_ns: u64,
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

/// A count as the databases store it (BIGINT), saturating.
fn ns(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored count back; a negative one (never written) reads as zero.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[macro_use]
mod portable;
mod alert;
mod blocks;
mod catalog;
mod eviction;
mod regression;
mod requests;
mod rollup_write;
mod rollups;
mod rows;

pub use alert::{
    AlertCommit, AlertEvaluation, AlertTransition, DeliveryAttempt, DeliveryRecord,
    DueNotification, EvaluatedAlert, EvaluatedBurn, NewNotification, StoredAlert,
};
pub use blocks::TracesRead;
pub use catalog::{EndpointRef, OTHER_ENDPOINT, ResourceRef, canonical_attributes};
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

    /// Claims up to `limit` traces due under `lease` that nobody holds, and loads their spans.
    /// Only a shared store has claims; SQLite returns nothing (its analysis follows the
    /// watermark).
    pub async fn claim_due_traces(
        &self,
        claim: i64,
        lease: ClaimLease,
        limit: i64,
    ) -> Result<Vec<ClaimedTrace>, StoreError> {
        let ClaimLease {
            cutoff_unix_ns,
            now_unix_ns,
            until_unix_ns,
        } = lease;
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(store) => {
                (store.claim_due_traces(claim, cutoff_unix_ns, now_unix_ns, until_unix_ns, limit))
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

    /// Applies the migrations only (`bottleneck migrate`); [`Store::open`] does this too.
    pub async fn migrate(url: &DatabaseUrl) -> Result<(), StoreError> {
        let store = Store::open(url).await?;
        store.close().await;
        Ok(())
    }

    /// Writes one analysis tick atomically.
    pub async fn commit_analysis(&self, commit: &AnalysisCommit) -> Result<u64, StoreError> {
        dispatch!(self.commit_analysis(commit))
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

    /// Counts of what is stored.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        dispatch!(self.stats())
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
