//! The SQLite backend: one file in WAL mode, the embedded default.
//!
//! Writes are few and large: one statement per block, multi-row statements for index and request
//! rows (sqlx hands every statement to the connection's worker thread, so per-row statements
//! would cost a thread round trip each).
//!
//! Invariant: every multi-row write runs inside one transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use collector::model::{Span, TraceId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Sqlite};

use super::migrator::Migrations;
use super::portable::{Portable, ROWS_PER_STATEMENT, SQLITE};
use super::requests::duration_band;
use super::rows::{REQUEST_COLUMNS, StoredRequest, trace_id};
use super::settings::SqliteSynchronous as SqliteSynchronousSetting;
use super::{
    AnalysisCommit, EncodedBlock, RequestRow, RetentionReport, StoreError, StoreStats, block, ns,
    unsigned,
};

mod hot_trace;
mod recent_traces;

use recent_traces::{MERGE_ROWS, MERGE_TRANSACTION_ROWS, RecentTraces, trace_key};

#[derive(Debug, Clone)]
pub(super) struct SqliteStore {
    /// Readers: in WAL mode they never wait for the writer.
    pool: SqlitePool,
    /// The one connection that writes. SQLite has one write lock, and a connection that finds it
    /// taken polls with sleeps of up to 100 ms (the busy handler); waiting for this connection
    /// instead hands the lock over the moment the other writer commits. It alone has a larger page
    /// cache than SQLite's default of 2 MiB, with which most pages of the request indexes were read
    /// back from the OS on every commit.
    writer: SqlitePool,
    path: PathBuf,
    _checkpointer: Arc<Checkpointer>,
    /// Trace index rows not yet in `trace_index`.
    recent_traces: Arc<Mutex<RecentTraces>>,
    /// Set while a task writes the held trace index rows to the table.
    merging: Arc<AtomicBool>,
}

/// Page cache of the writing connection, in KiB (SQLite's negative `cache_size`). The request
/// indexes grow at their ends, so a small cache holds the pages writes touch: a larger one writes
/// no faster and each MiB more is a MiB of RSS, a much smaller one writes slower
/// (docs/benchmarks-history.md).
const WRITER_CACHE_KIB: u32 = 8 * 1024;

/// Pool settings shared by the writer and the readers. A connection whose transaction is still
/// counted open when it comes back is closed, not reused: after SQLITE_FULL or an I/O error SQLite
/// may roll the transaction back by itself, the ROLLBACK that sqlx then issues fails, and sqlx,
/// which counts transaction depth on its own, refused every later BEGIN on that connection.
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().after_release(|conn, _| {
        Box::pin(async move {
            // The rollback a dropped transaction queued runs before the ping answers.
            conn.ping().await?;
            Ok(!conn.is_in_transaction())
        })
    })
}

/// How often the write-ahead log is copied back into the database file. At full ingest the WAL
/// grows by tens of megabytes a second; a checkpoint every half second keeps it to a few
/// checkpoints' worth of pages.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL frames (pages) past which the writing connection checkpoints after its commit, as SQLite
/// does by itself past 1,000. The checkpointer task's PASSIVE checkpoints copy pages but never
/// rewind the log: SQLite rewinds it only when a write begins after a checkpoint that copied every
/// frame, which a task beside a writer that never pauses does not see (with that task alone the
/// WAL grows without bound under steady load). The writer's own checkpoint, right after its commit,
/// finds most pages copied already and lets the next write start the log over: 64 MiB of pages
/// in a new file, 16 MiB in one made with 4 KiB pages.
const WRITER_CHECKPOINT_FRAMES: u32 = 64 * 1024 * 1024 / PAGE_SIZE;

/// Page size of a new database file, in bytes (SQLite's default is 4 KiB; a file keeps the size
/// it was made with). A block of spans is 40 KB compressed, which on 4 KiB pages is a chain of
/// ten overflow pages, each its own WAL frame with its own header and checksum, written again at
/// the checkpoint; and the tail pages of the append-only request indexes are rewritten whole at
/// every commit however few rows it adds. 16 KiB pages store and analyse clearly more spans a
/// second than 4 KiB, and 32 KiB no more than 16 (docs/benchmarks-history.md).
const PAGE_SIZE: u32 = 16 * 1024;

/// The checkpoint task, stopped when the last handle to the store is dropped.
#[derive(Debug)]
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checkpoints the WAL beside the writers until the pool closes, so that commits never wait for
/// a checkpoint, which inside the commits costs a large part of the stored rate
/// (docs/benchmarks-history.md). PASSIVE never waits for a lock: what a busy moment leaves
/// behind, the next checkpoint copies.
async fn checkpoint_until_closed(pool: SqlitePool) {
    const CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        match sqlx::query(CHECKPOINT).execute(&pool).await {
            Ok(_) => failing = false,
            Err(_) if pool.is_closed() => return,
            Err(err) => {
                // Once per run of failures: the WAL keeps every commit meanwhile, nothing is lost.
                if !failing {
                    tracing::warn!(error = %err, "checkpointing the SQLite WAL failed; retrying");
                }
                failing = true;
            }
        }
    }
}

/// The migrations, in order: (version, description, SQL). Never edit one that has shipped.
const MIGRATIONS: &Migrations = migrations!("sqlite":
    1 "init" "0001_init",
    2 "alerts" "0002_alerts",
    3 "regressions" "0003_regressions",
    4 "request indexes" "0004_request_indexes",
    5 "hourly rollups" "0005_hourly_rollups",
    6 "retention" "0006_retention",
    7 "requests by rowid" "0007_requests_rowid",
    8 "append-only request indexes" "0008_append_only_request_indexes",
    9 "recent trace index" "0009_recent_trace_index",
    10 "integer trace index" "0010_integer_trace_index",
    11 "untraced" "0011_untraced",
    12 "regression episodes" "0012_regression_episodes",
    13 "eviction" "0013_eviction",
    14 "finding locations" "0014_finding_locations",
    15 "alert evaluation" "0015_alert_evaluation",
);

/// The migrations up to version `last`.
fn migrator_through(last: i64) -> sqlx::migrate::Migrator {
    super::migrator::migrator(MIGRATIONS, last)
}

/// Pushes the join from traces to their request rows: `FROM t CROSS JOIN requests r`, with `t`
/// the (trace, block) rows of `trace_ids`, those of `trace_index` and those `recent` holds. A
/// request row is indexed by the newest block its analysis saw (a block of its trace), not by
/// trace id; each row matches one row of `t`, as UNION leaves a (trace, block) pair once (it can
/// be in both for the moment between a merge's commit and its release). The index is keyed by
/// [`trace_key`], which two traces may share: the request rows' full trace id tells them apart.
fn push_trace_requests_join(
    query: &mut QueryBuilder<Sqlite>,
    trace_ids: &[TraceId],
    recent: &[(TraceId, i64)],
) {
    query.push("FROM (SELECT wanted.column1 AS trace_id, i.block_id FROM (");
    query.push_values(trace_ids, |mut row, trace| {
        row.push_bind(trace.0.to_vec()).push_bind(trace_key(trace));
    });
    query.push(") wanted CROSS JOIN trace_index i ON i.trace_key = wanted.column2");
    if !recent.is_empty() {
        query.push(" UNION SELECT column1, column2 FROM (");
        query.push_values(recent, |mut row, (trace, block_id)| {
            row.push_bind(trace.0.to_vec()).push_bind(*block_id);
        });
        query.push(")");
    }
    // CROSS JOIN keeps `t` the outer loop, so each of its rows is one index lookup.
    query.push(
        ") t CROSS JOIN requests r INDEXED BY requests_by_block \
         ON r.last_block_id = t.block_id AND r.trace_id = t.trace_id",
    );
}

/// Read connections of one store (pool), and of the web's own pool.
const READER_CONNECTIONS: u32 = 4;

/// How every connection to the file is opened, readers and the writer alike.
fn connect_options(
    path: &Path,
    synchronous: SqliteSynchronousSetting,
) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .page_size(PAGE_SIZE)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL by default: an export is acknowledged once its commit is on the disk, which a
        // power loss cannot take back (NORMAL would sync only at checkpoints).
        .synchronous(match synchronous {
            SqliteSynchronousSetting::Full => SqliteSynchronous::Full,
            SqliteSynchronousSetting::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(Duration::from_secs(10))
        .pragma("auto_vacuum", "INCREMENTAL")
        // Checkpoints run in a task of their own (`checkpoint_until_closed`), not inside the
        // commit that crosses 1,000 WAL pages, where every writer waited behind them; the
        // writer's own only rewinds the log (`WRITER_CHECKPOINT_FRAMES`).
        .pragma("wal_autocheckpoint", "0")
        // A WAL that grew during a burst goes back to this size once it is checkpointed.
        .pragma("journal_size_limit", "67108864"))
}

impl SqliteStore {
    pub(super) fn portable(&self) -> Portable<'_, Sqlite> {
        Portable::new(&self.pool, &self.writer, SQLITE)
    }

    pub(super) async fn open(
        path: &Path,
        synchronous: SqliteSynchronousSetting,
    ) -> Result<Self, StoreError> {
        let options = connect_options(path, synchronous)?;
        let writer = pool_options()
            .max_connections(1)
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_FRAMES.to_string()),
            )
            .await?;
        migrator_through(i64::MAX).run(&writer).await?;
        let pool = pool_options()
            .max_connections(READER_CONNECTIONS)
            .connect_with(options)
            .await?;
        let checkpointer = Checkpointer(tokio::spawn(checkpoint_until_closed(pool.clone())));
        let store = Self {
            pool,
            writer,
            path: path.to_owned(),
            _checkpointer: Arc::new(checkpointer),
            recent_traces: Arc::default(),
            merging: Arc::default(),
        };
        store.recover_recent_traces().await?;
        Ok(store)
    }

    fn recent_traces(&self) -> MutexGuard<'_, RecentTraces> {
        self.recent_traces
            .lock()
            .expect("no panics while holding the recent trace index")
    }

    /// Holds again the trace index rows of the blocks stored after the last rows written to
    /// `trace_index`, read from the blocks themselves.
    async fn recover_recent_traces(&self) -> Result<(), StoreError> {
        const THROUGH: &str = "SELECT value FROM meta WHERE key = 'trace_index_through'";
        let mut after: i64 = sqlx::query_scalar(THROUGH)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0);
        loop {
            let blocks = self.portable().blocks_after(after, 64).await?;
            let Some((last, _)) = blocks.last() else {
                break;
            };
            after = *last;
            for (block_id, data) in blocks {
                let trace_ids = block::trace_ids(&data)?;
                self.recent_traces().add(block_id, &trace_ids);
            }
        }
        if self.recent_traces().len() >= MERGE_ROWS {
            self.merge_recent_traces().await?;
        }
        Ok(())
    }

    /// Writes every held trace index row to `trace_index`, sorted, the last transaction with
    /// the newest block they cover. Each transaction takes the next range of trace keys, so its
    /// rows share pages as those of one large transaction would, while the writes of blocks
    /// wait for one range at a time: in one transaction, exports would wait behind the whole
    /// merge. Rows written before a crash are written again after it; the table ignores them.
    async fn merge_recent_traces(&self) -> Result<(), StoreError> {
        let (rows, Some(through)) = self.recent_traces().sorted_rows() else {
            return Ok(());
        };
        let ranges: Vec<_> = rows.chunks(MERGE_TRANSACTION_ROWS).collect();
        for (n, range) in ranges.iter().enumerate() {
            let mut tx = self.writer.begin().await?;
            for chunk in range.chunks(ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::<Sqlite>::new(
                    "INSERT OR IGNORE INTO trace_index (trace_key, block_id) ",
                );
                insert.push_values(chunk, |mut row, (key, id)| {
                    row.push_bind(*key).push_bind(*id);
                });
                insert.build().execute(&mut *tx).await?;
            }
            if n + 1 == ranges.len() {
                (self.portable())
                    .raise_meta(&mut tx, "trace_index_through", through)
                    .await?;
            }
            tx.commit().await?;
        }
        self.recent_traces().release_through(through);
        Ok(())
    }

    /// Starts writing the held trace index rows when there are enough of them, unless a write
    /// is already running. It runs beside the caller: the exports just committed are answered
    /// meanwhile, and the next write of blocks waits for the connection.
    fn merge_recent_traces_when_due(&self) {
        if self.recent_traces().len() < MERGE_ROWS || self.merging.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            match store.merge_recent_traces().await {
                Ok(()) => {}
                // Closed for shutdown: the next open reads the rows back from the blocks.
                Err(_) if store.writer.is_closed() => {}
                // The rows stay held; the next commit of blocks tries again.
                Err(err) => {
                    tracing::warn!(error = %err, "writing the trace index failed; retrying")
                }
            }
            store.merging.store(false, Ordering::Release);
        });
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// A copy whose readers are a pool of their own; the writer and the held trace index rows
    /// are shared, so its reads see what the original wrote.
    pub(super) async fn with_own_readers(&self) -> Result<Self, StoreError> {
        let pool = pool_options()
            .max_connections(READER_CONNECTIONS)
            .connect_with(connect_options(
                &self.path,
                SqliteSynchronousSetting::default(),
            )?)
            .await?;
        Ok(Self {
            pool,
            ..self.clone()
        })
    }

    pub(super) async fn close_readers(&self) {
        self.pool.close().await;
    }

    pub(super) async fn insert_blocks(
        &self,
        blocks: &[EncodedBlock],
    ) -> Result<Vec<i64>, StoreError> {
        const INSERT_BLOCK: &str = "INSERT INTO span_blocks (received_unix_ns, min_start_unix_ns, n_spans, data) \
             VALUES ($1, $2, $3, $4) RETURNING id";
        let mut tx = self.writer.begin().await?;
        let mut ids = Vec::with_capacity(blocks.len());
        for block in blocks {
            let id: i64 = sqlx::query_scalar(INSERT_BLOCK)
                .bind(ns(block.received_unix_ns))
                .bind(ns(block.min_start_unix_ns))
                .bind(i64::from(block.n_spans))
                .bind(&block.data)
                .fetch_one(&mut *tx)
                .await?;
            ids.push(id);
        }
        tx.commit().await?;
        {
            let mut recent = self.recent_traces();
            for (block, id) in blocks.iter().zip(&ids) {
                recent.add(*id, &block.trace_ids);
            }
        }
        self.merge_recent_traces_when_due();
        Ok(ids)
    }

    pub(super) async fn trace_spans(
        &self,
        trace: TraceId,
    ) -> Result<Option<Vec<(i64, Span)>>, StoreError> {
        let mut spans = Vec::new();
        for (id, data) in self.trace_blocks(trace).await? {
            // A block found through a key the trace shares with another may hold none of its
            // spans.
            spans.extend(
                block::decode(&data)?
                    .into_iter()
                    .filter(|span| span.trace_id == trace)
                    .map(|span| (id, span)),
            );
        }
        Ok((!spans.is_empty()).then_some(spans))
    }

    /// The stored blocks that may hold spans of `trace`, by id.
    pub(super) async fn trace_blocks(
        &self,
        trace: TraceId,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let recent = self.recent_traces().blocks_of(&trace).to_vec();
        let mut select = QueryBuilder::<Sqlite>::new(
            "SELECT id, data FROM span_blocks WHERE id IN \
             (SELECT block_id FROM trace_index WHERE trace_key = ",
        );
        select.push_bind(trace_key(&trace));
        if !recent.is_empty() {
            select.push(" UNION SELECT column1 FROM (");
            select.push_values(&recent, |mut row, block_id| {
                row.push_bind(*block_id);
            });
            select.push(")");
        }
        select.push(") ORDER BY id");
        Ok(select.build_query_as().fetch_all(&self.pool).await?)
    }

    pub(super) async fn trace_requests(
        &self,
        trace: TraceId,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let recent = self.recent_traces().rows_of(&[trace]);
        let mut select = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE rowid IN (SELECT r.rowid "
        ));
        push_trace_requests_join(&mut select, &[trace], &recent);
        select.push(") ORDER BY start_unix_ns");
        let rows: Vec<StoredRequest> = select.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(StoredRequest::decode).collect()
    }

    pub(super) async fn analysed_traces(
        &self,
        trace_ids: &[TraceId],
    ) -> Result<HashMap<TraceId, i64>, StoreError> {
        let mut found = HashMap::new();
        for chunk in trace_ids.chunks(ROWS_PER_STATEMENT) {
            let recent = self.recent_traces().rows_of(chunk);
            let mut select =
                QueryBuilder::<Sqlite>::new("SELECT t.trace_id, MAX(r.last_block_id) ");
            push_trace_requests_join(&mut select, chunk, &recent);
            select.push(" GROUP BY t.trace_id");
            let rows: Vec<(Vec<u8>, i64)> = select.build_query_as().fetch_all(&self.pool).await?;
            for (trace, last) in rows {
                found.insert(trace_id(&trace)?, last);
            }
        }
        Ok(found)
    }
}

impl SqliteStore {
    pub(super) async fn commit_analysis(&self, commit: &AnalysisCommit) -> Result<u64, StoreError> {
        // IMMEDIATE: the rollup rows are read and written back in this transaction; taking the
        // write lock first means no other writer commits between the read and the write, and no
        // retention pass evicts an interned id between its check here and the commit.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let remapped = self.portable().resolve_evicted(&mut tx, commit).await?;
        let commit = remapped.as_ref().unwrap_or(commit);
        for chunk in commit.replace_traces.chunks(ROWS_PER_STATEMENT) {
            let recent = self.recent_traces().rows_of(chunk);
            let mut delete =
                QueryBuilder::<Sqlite>::new("DELETE FROM requests WHERE rowid IN (SELECT r.rowid ");
            push_trace_requests_join(&mut delete, chunk, &recent);
            delete.push(")");
            delete.build().execute(&mut *tx).await?;
        }
        for chunk in commit.requests.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(format!(
                "{} requests ({REQUEST_COLUMNS}, duration_band) ",
                SQLITE.insert_rows
            ));
            insert.push_values(chunk, |mut row, request| {
                row.push_bind(request.trace_id.0.to_vec())
                    .push_bind(request.span_id.0.to_vec())
                    .push_bind(request.endpoint_id)
                    .push_bind(request.version.clone())
                    .push_bind(ns(request.start_unix_ns))
                    .push_bind(ns(request.duration_ns))
                    .push_bind(request.error);
                for value in request.breakdown.0 {
                    row.push_bind(ns(value));
                }
                row.push_bind(i64::from(request.n_db_calls))
                    .push_bind(request.last_block_id)
                    .push_bind(request.resource_id)
                    .push_bind(duration_band(request.duration_ns));
            });
            insert.build().execute(&mut *tx).await?;
        }
        let operations_folded = self
            .portable()
            .write_rollups_and_marks(&mut tx, commit)
            .await?;
        tx.commit().await?;
        Ok(operations_folded)
    }

    pub(super) async fn stats(&self) -> Result<StoreStats, StoreError> {
        const BLOCKS: &str = "SELECT COUNT(*), COALESCE(SUM(n_spans), 0) FROM span_blocks";
        const REQUESTS: &str = "SELECT COUNT(*) FROM requests";
        let (n_blocks, n_spans): (i64, i64) = sqlx::query_as(BLOCKS).fetch_one(&self.pool).await?;
        let n_requests: i64 = sqlx::query_scalar(REQUESTS).fetch_one(&self.pool).await?;
        Ok(StoreStats {
            n_spans: unsigned(n_spans),
            n_blocks: unsigned(n_blocks),
            n_requests: unsigned(n_requests),
        })
    }

    pub(super) async fn apply_retention(
        &self,
        spans_before_unix_ns: u64,
        rollups_before_unix_ns: u64,
    ) -> Result<RetentionReport, StoreError> {
        // One write transaction per batch: the blocks to delete are chosen under the write lock,
        // so the batch sees every committed block.
        const DELETE_BLOCKS: &str = "DELETE FROM span_blocks WHERE id IN \
             (SELECT id FROM span_blocks WHERE received_unix_ns < $1 ORDER BY id LIMIT $2) RETURNING id";
        const DELETE_INDEX: &str = "DELETE FROM trace_index WHERE block_id >= $1 AND block_id <= $2 \
             AND block_id NOT IN (SELECT id FROM span_blocks WHERE id >= $1 AND id <= $2)";
        let mut report = RetentionReport::default();
        let before = ns(spans_before_unix_ns);
        let batch = super::retention::BATCH_ROWS;
        loop {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let ids: Vec<i64> = sqlx::query_scalar(DELETE_BLOCKS)
                .bind(before)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
            let (Some(first), Some(last)) = (ids.iter().min().copied(), ids.iter().max().copied())
            else {
                break;
            };
            sqlx::query(DELETE_INDEX)
                .bind(first)
                .bind(last)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            self.recent_traces().forget(&ids);
            report.blocks += ids.len() as u64;
            if ids.len() < batch as usize {
                break;
            }
            tokio::time::sleep(super::retention::BATCH_PAUSE).await;
        }
        loop {
            let done = sqlx::query(super::request_expiry::SQLITE_EXPIRED_REQUESTS)
                .bind(batch)
                .execute(&self.writer)
                .await?
                .rows_affected();
            report.requests += done;
            if done < batch as u64 {
                break;
            }
            tokio::time::sleep(super::retention::BATCH_PAUSE).await;
        }
        let portable = self.portable();
        (portable.remove_rollups(rollups_before_unix_ns, &mut report)).await?;
        (portable.evict_unreferenced(before, &mut report)).await?;
        // Give the freed pages back to the file system, a bounded number at a time.
        const VACUUM: &str = "PRAGMA incremental_vacuum(2000)";
        sqlx::query(VACUUM).execute(&self.writer).await?;
        Ok(report)
    }

    pub(super) async fn disk_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            total += tokio::fs::metadata(&path)
                .await
                .map(|meta| meta.len())
                .unwrap_or(0);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Breakdown, fixture};
    use crate::store::{AnalysisCommit, RequestRow};

    const TRACE: &str = "auth: POST /login 0..300 server http.route=/login
  SELECT tenants 10..30 client db.system=postgresql db.statement=\"SELECT 1\"
  idp: POST /saml 60..160 client http.request.method=POST server.address=idp";

    fn request_row(trace_id: TraceId, endpoint_id: i64, last_block_id: i64) -> RequestRow {
        RequestRow {
            trace_id,
            span_id: collector::model::SpanId([1; 8]),
            endpoint_id,
            version: String::new(),
            start_unix_ns: 1,
            duration_ns: 300,
            error: false,
            breakdown: Breakdown::default(),
            n_db_calls: 1,
            last_block_id,
            resource_id: 0,
        }
    }

    /// Commits the analysis of one request of `trace_id` that saw blocks up to `last_block_id`.
    async fn commit_request(store: &SqliteStore, trace_id: TraceId, last_block_id: i64) {
        let endpoint_id = store
            .portable()
            .intern_endpoint("auth", "POST /login")
            .await
            .unwrap();
        store
            .commit_analysis(&AnalysisCommit {
                requests: vec![request_row(trace_id, endpoint_id, last_block_id)],
                ..AnalysisCommit::default()
            })
            .await
            .unwrap();
    }

    /// A pool on a new WAL file with SQLite's defaults, as an older release made its files.
    async fn plain_wal_pool(path: &Path) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        SqlitePool::connect_with(options).await.unwrap()
    }

    /// What the trace index answers for one trace: its spans' blocks, the newest block its
    /// analysis saw, and its request rows.
    async fn lookups(store: &SqliteStore, trace_id: TraceId) -> (Vec<i64>, Option<i64>, usize) {
        let blocks = store
            .trace_spans(trace_id)
            .await
            .unwrap()
            .unwrap_or_default()
            .into_iter()
            .map(|(block_id, _)| block_id)
            .collect();
        let analysed = store.analysed_traces(&[trace_id]).await.unwrap();
        let requests = store.trace_requests(trace_id).await.unwrap();
        (blocks, analysed.get(&trace_id).copied(), requests.len())
    }

    #[tokio::test]
    async fn trace_index_rows_are_held_written_sorted_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let store = SqliteStore::open(&path, Default::default()).await.unwrap();
        let spans = fixture::parse(TRACE);
        let trace_id = spans[0].trace_id;
        let first = store
            .insert_blocks(&[
                block::encode(spans[..2].to_vec(), 1),
                block::encode(spans[2..].to_vec(), 2),
            ])
            .await
            .unwrap();
        commit_request(&store, trace_id, first[1]).await;
        let expected = (vec![first[0], first[0], first[1]], Some(first[1]), 1);
        assert_eq!(store.recent_traces().len(), 2, "held, not yet written");
        assert_eq!(lookups(&store, trace_id).await, expected);

        // A pair in the table and still held, as between a merge's commit and its release, is
        // one pair to every reader.
        let (rows, _) = store.recent_traces().sorted_rows();
        for (key, block_id) in rows {
            sqlx::query("INSERT INTO trace_index (trace_key, block_id) VALUES ($1, $2)")
                .bind(key)
                .bind(block_id)
                .execute(&store.writer)
                .await
                .unwrap();
        }
        assert_eq!(lookups(&store, trace_id).await, expected);

        store.merge_recent_traces().await.unwrap();
        assert_eq!(store.recent_traces().len(), 0);
        assert_eq!(lookups(&store, trace_id).await, expected);

        // A late span's block is held; a restart finds it again from the block itself.
        let late = store
            .insert_blocks(&[block::encode(spans[..1].to_vec(), 3)])
            .await
            .unwrap();
        store.close().await;
        let store = SqliteStore::open(&path, Default::default()).await.unwrap();
        assert_eq!(store.recent_traces().len(), 1, "only the unwritten block");
        assert_eq!(
            lookups(&store, trace_id).await,
            (
                vec![first[0], first[0], first[1], late[0]],
                Some(first[1]),
                1
            )
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_web_reads_through_connections_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("readers.db"), Default::default())
            .await
            .unwrap();
        let web = store.with_own_readers().await.unwrap();
        // Every web reader busy, as under heavy pages: the analysis still reads, ingest writes.
        let mut busy = Vec::new();
        for _ in 0..READER_CONNECTIONS {
            busy.push(web.pool.acquire().await.unwrap());
        }
        let limit = Duration::from_secs(5);
        tokio::time::timeout(limit, store.stats())
            .await
            .expect("the analysis's readers are not the web's")
            .unwrap();
        store
            .insert_blocks(&[block::encode(fixture::parse(TRACE), 1)])
            .await
            .unwrap();
        drop(busy);
        assert_eq!(
            web.stats().await.unwrap().n_blocks,
            1,
            "the web sees the writes"
        );
        web.close_readers().await;
        store.close().await;
    }

    #[tokio::test]
    async fn commits_wait_for_the_disk_unless_configured_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        // PRAGMA synchronous: 1 is NORMAL, 2 is FULL; every connection, writer and readers.
        let synchronous = |pool: SqlitePool| async move {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&pool)
                .await
                .unwrap();
            level
        };
        let path = dir.path().join("durable.db");
        let store = SqliteStore::open(&path, Default::default()).await.unwrap();
        assert_eq!(synchronous(store.writer.clone()).await, 2);
        assert_eq!(synchronous(store.pool.clone()).await, 2);
        store.close().await;
        let store = SqliteStore::open(&path, SqliteSynchronousSetting::Normal)
            .await
            .unwrap();
        assert_eq!(synchronous(store.writer.clone()).await, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn new_files_get_large_pages_and_old_files_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |pool: SqlitePool| async move {
            let size: i64 = sqlx::query_scalar("PRAGMA page_size")
                .fetch_one(&pool)
                .await
                .unwrap();
            size
        };
        let store = SqliteStore::open(&dir.path().join("new.db"), Default::default())
            .await
            .unwrap();
        assert_eq!(page_size(store.pool.clone()).await, i64::from(PAGE_SIZE));
        store.close().await;

        let old = dir.path().join("old.db");
        let pool = plain_wal_pool(&old).await;
        sqlx::query("CREATE TABLE made_before (x)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let store = SqliteStore::open(&old, Default::default()).await.unwrap();
        assert_eq!(page_size(store.pool.clone()).await, 4096);
        store
            .insert_blocks(&[block::encode(fixture::parse(TRACE), 1)])
            .await
            .unwrap();
        assert_eq!(store.stats().await.unwrap().n_blocks, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn traces_sharing_a_key_are_told_apart_by_their_full_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("shared-key.db"), Default::default())
            .await
            .unwrap();
        let spans = fixture::parse(TRACE);
        let trace_id = spans[0].trace_id;
        // Both halves flipped by the same mask: the XOR of the halves, the key, is the same.
        let mut other = trace_id.0;
        other.iter_mut().for_each(|byte| *byte ^= 0x5a);
        let other = TraceId(other);
        assert_eq!(trace_key(&other), trace_key(&trace_id));
        let blocks = store
            .insert_blocks(&[block::encode(spans.clone(), 1)])
            .await
            .unwrap();
        commit_request(&store, trace_id, blocks[0]).await;
        for merged in [false, true] {
            if merged {
                store.merge_recent_traces().await.unwrap();
            }
            assert_eq!(lookups(&store, other).await, (vec![], None, 0), "{merged}");
            assert_eq!(
                lookups(&store, trace_id).await,
                (vec![blocks[0]; spans.len()], Some(blocks[0]), 1),
                "{merged}"
            );
        }
        assert_eq!(store.trace_spans(other).await.unwrap(), None);
        store.close().await;
    }

    #[tokio::test]
    async fn a_store_indexed_by_full_trace_ids_finds_its_traces_after_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("before.db");
        let pool = plain_wal_pool(&path).await;
        migrator_through(9).run(&pool).await.unwrap();
        let spans = fixture::parse(TRACE);
        let trace_id = spans[0].trace_id;
        let block = block::encode(spans.clone(), 1);
        // What the release before the integer key wrote: the block, its trace index row by
        // full trace id, and the meta row saying the index holds it.
        let block_id: i64 = sqlx::query_scalar(
            "INSERT INTO span_blocks (received_unix_ns, min_start_unix_ns, n_spans, data) \
             VALUES (1, 1, $1, $2) RETURNING id",
        )
        .bind(i64::from(block.n_spans))
        .bind(&block.data)
        .fetch_one(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO trace_blocks (trace_id, block_id) VALUES ($1, $2)")
            .bind(trace_id.0.to_vec())
            .bind(block_id)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE meta SET value = $1 WHERE key = 'trace_index_through'")
            .bind(block_id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let store = SqliteStore::open(&path, Default::default()).await.unwrap();
        assert_eq!(
            store.recent_traces().len(),
            0,
            "read from the table, not the block"
        );
        commit_request(&store, trace_id, block_id).await;
        assert_eq!(
            lookups(&store, trace_id).await,
            (vec![block_id; spans.len()], Some(block_id), 1)
        );
        store.close().await;
    }

    // Files from before eviction: their ids are kept, the largest is never handed out again once
    // evicted, and their resources count as seen until just after the newest request.
    #[tokio::test]
    async fn upgraded_files_never_hand_an_evicted_id_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("before.db");
        let pool = plain_wal_pool(&path).await;
        migrator_through(11).run(&pool).await.unwrap();
        for statement in [
            "INSERT INTO endpoints (id, service, endpoint) VALUES (1, 'auth', 'GET /a'), (2, 'auth', 'GET /b')",
            "INSERT INTO resources (id, service, attributes) VALUES (3, 'auth', 'host.name=a')",
            "INSERT INTO requests (trace_id, span_id, endpoint_id, version, start_unix_ns, duration_ns, \
             error, db_ns, cache_ns, network_ns, messaging_ns, cpu_ns, wait_ns, n_db_calls, \
             last_block_id, resource_id) VALUES (x'01', x'01', 1, '', 5000, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3)",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;

        let store = SqliteStore::open(&path, Default::default()).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT seen_until_unix_ns FROM resources WHERE id = 3")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(seen, 5001);
        let mut report = RetentionReport::default();
        (store.portable())
            .evict_unreferenced(0, &mut report)
            .await
            .unwrap();
        assert_eq!(
            (report.endpoints, report.resources),
            (1, 0),
            "GET /b had no rows"
        );
        let id = store
            .portable()
            .intern_endpoint("auth", "GET /c")
            .await
            .unwrap();
        assert_eq!(id, 3, "2 was evicted, and is not handed out again");
        store.close().await;
    }

    #[tokio::test]
    async fn regressions_raised_before_episodes_stay_open_and_their_pairs_are_evaluated_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("before.db");
        let pool = plain_wal_pool(&path).await;
        migrator_through(11).run(&pool).await.unwrap();
        // What the release that evaluated each pair once wrote: an endpoint evaluated for
        // 1.0 -> 1.1, with the event it raised.
        sqlx::raw_sql(
            "INSERT INTO endpoints (id, service, endpoint) VALUES (3, 'auth', 'POST /login'); \
             INSERT INTO regression_checks VALUES (3, '1.0', '1.1', 5); \
             INSERT INTO regressions (id, detected_unix_ns, endpoint_id, baseline, candidate, \
             metric, baseline_ns, candidate_ns, baseline_requests, candidate_requests, \
             mean_delta_ns, mean_delta_low_ns, mean_delta_high_ns, summary) VALUES \
             (7, 5, 3, '1.0', '1.1', 'p50', 100, 400, 50, 60, 300, 290, 310, 'slower')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = SqliteStore::open(&path, Default::default()).await.unwrap();
        let events = store.portable().regressions(0, 10, None).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].id, events[0].resolution.clone()), (7, None));
        assert_eq!(events[0].baseline_interval_ns, None);
        let open = store
            .portable()
            .open_regressions("auth", "1.0", "1.1")
            .await
            .unwrap();
        assert_eq!(open.len(), 1, "the event is open");
        let checks = store
            .portable()
            .regression_checks(&[3], "1.0", "1.1")
            .await
            .unwrap();
        assert_eq!(checks[&3].candidate_requests, 0, "due again on any traffic");
        store.close().await;
    }

    #[tokio::test]
    async fn the_migration_keys_traces_as_inserts_do() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let migration = MIGRATIONS
            .iter()
            .find(|(version, ..)| *version == 10)
            .unwrap()
            .2;
        // The migration's own statement, run on a stand-in for the table it reads.
        let (_, from_create) = migration.split_once("WITH hexed").unwrap();
        let (insert, _) = from_create.split_once("DROP TABLE").unwrap();
        sqlx::raw_sql(
            "CREATE TABLE trace_blocks (trace_id BLOB, block_id INTEGER); \
             CREATE TABLE trace_index (trace_key INTEGER, block_id INTEGER)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let ids = [
            [0; 16],
            [0xff; 16],
            *b"\x80\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02",
            *b"\x12\x34\x56\x78\x9a\xbc\xde\xf0\x0f\xed\xcb\xa9\x87\x65\x43\x21",
            *b"\0\0\0\0\0\0\0\0\xfe\xdc\xba\x98\x76\x54\x32\x10",
        ];
        for (block_id, id) in ids.iter().enumerate() {
            sqlx::query("INSERT INTO trace_blocks VALUES ($1, $2)")
                .bind(id.to_vec())
                .bind(block_id as i64)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("WITH hexed{insert}")))
            .execute(&pool)
            .await
            .unwrap();
        let keys: Vec<(i64, i64)> =
            sqlx::query_as("SELECT block_id, trace_key FROM trace_index ORDER BY block_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        let expected: Vec<(i64, i64)> = ids
            .iter()
            .enumerate()
            .map(|(block_id, id)| (block_id as i64, trace_key(&TraceId(*id))))
            .collect();
        assert_eq!(keys, expected);
    }

    #[tokio::test]
    async fn a_traces_request_rows_are_found_by_index_lookups_not_scans() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("plan.db"), Default::default())
            .await
            .unwrap();
        let trace = TraceId([7; 16]);
        let mut explain = QueryBuilder::<Sqlite>::new("EXPLAIN QUERY PLAN SELECT r.rowid ");
        push_trace_requests_join(&mut explain, &[trace], &[(trace, 1), (trace, 2)]);
        let plan: Vec<(i64, i64, i64, String)> = explain
            .build_query_as()
            .fetch_all(&store.pool)
            .await
            .unwrap();
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            details.iter().any(|step| step.starts_with("SEARCH r")
                && step.contains("requests_by_block (last_block_id=? AND trace_id=?)")),
            "{details:?}"
        );
        assert!(
            details
                .iter()
                .any(|step| step.contains("SEARCH i USING PRIMARY KEY (trace_key=?)")),
            "{details:?}"
        );
        assert!(
            !details
                .iter()
                .any(|step| step.starts_with("SCAN r") || step.starts_with("SCAN i")),
            "{details:?}"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_migration_bands_durations_as_inserts_do() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        // The expression migration 8 applies to rows stored before it.
        const EXPRESSION: &str =
            "length(duration_ns) * 10 + CAST(substr(duration_ns, 1, 1) AS INTEGER)";
        let migration = MIGRATIONS
            .iter()
            .find(|(version, ..)| *version == 8)
            .unwrap();
        assert!(migration.2.contains(EXPRESSION));
        let select = format!("SELECT {}", EXPRESSION.replace("duration_ns", "$1"));
        for duration in [0, 1, 9, 10, 55, 99, 100, 123_456_789, 999_999_999, i64::MAX] {
            let band: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(select.clone()))
                .bind(duration)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(band, duration_band(duration as u64), "{duration} ns");
        }
    }
}
