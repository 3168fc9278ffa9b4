//! The PostgreSQL backend: one database shared by any number of instances.
//!
//! Span blocks, their trace index and request rows are partitioned by day (see the migration);
//! retention drops whole partitions. Ingest writes each group's blocks, index rows and pending
//! traces in one transaction; analyzers claim pending traces with `FOR UPDATE SKIP LOCKED`, and
//! apply rollup changes to the rows as stored, under their row locks, so instances never
//! overwrite each other's counts.
//!
//! Invariant: every multi-row write runs inside one transaction, and rows are locked in key
//! order (pending traces by trace id, rollups by key) so concurrent commits cannot deadlock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, UNIX_EPOCH};

use collector::model::{Span, TraceId};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::eviction::EVICTION_LOCK_KEY;
use super::migrator::{Migrations, migrator};
use super::portable::{POSTGRES, Portable, ROWS_PER_STATEMENT};
use super::rows::{REQUEST_COLUMNS, StoredRequest, trace_id};
use super::{
    AnalysisCommit, ClaimedTrace, EncodedBlock, RequestRow, RetentionReport, StoreError,
    StoreStats, block, ns, unsigned,
};
use crate::time::now_unix_ns;

mod claim_release;
mod counts;
mod hot_trace;
mod partition;
mod request_write;

/// The day partitions created ahead of today, so a write near midnight never waits for one.
const DAYS_AHEAD: i64 = 2;

/// The tables partitioned by day, with the column they are partitioned on.
const PARTITIONED: [(&str, &str); 3] = [
    ("span_blocks", "received_unix_ns"),
    ("trace_blocks", "received_unix_ns"),
    ("requests", "start_unix_ns"),
];

const DAY_NS: i64 = 86_400_000_000_000;

/// Starts an analysis commit: takes `eviction::EVICTION_LOCK_KEY` shared until the transaction ends, and
/// lets the transaction commit without waiting for its WAL to reach the disk. That is safe for an
/// analysis commit alone: everything it writes is derived from committed blocks and goes together
/// with its claims' release, so a server crash that loses it loses the release too and the traces
/// are analysed again; the WAL is flushed in order, so no later commit survives without it. Span
/// blocks, whose commit is what an export's acknowledgement promises, are written durably.
const BEGIN_ANALYSIS_COMMIT: &str = "SELECT pg_advisory_xact_lock_shared($1), \
     set_config('synchronous_commit', 'off', true)";

/// How long a query waits for a pooled connection, connecting included. While the server is down
/// or unreachable, a group commit gives up after this and its exports are refused as unavailable:
/// well within the 10 s an OpenTelemetry exporter waits for an answer by default, so the exporter
/// gets a retryable answer instead of timing out. (A healthy pool never makes a query wait this
/// long: 16 connections against one writer, one analyzer and a few readers.)
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening the store waits for a server that refuses connections: one started at the
/// same time as this instance is given time to come up.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(super) struct PgStore {
    pool: PgPool,
    /// Shared: only leader connections are made from it, and it is large.
    options: Arc<PgConnectOptions>,
    /// Leader roles held: each an advisory lock on its own connection, which must stay open for
    /// the lock to stay held.
    leaders: Arc<Mutex<HashMap<i64, PgConnection>>>,
    /// Whether the last connection for a leader role failed: every role retries every interval
    /// while the server is away, and that is logged once.
    leader_connect_failing: Arc<AtomicBool>,
}

/// The migrations, in order: (version, description, SQL). Never edit one that has shipped.
const MIGRATIONS: &Migrations = migrations!("postgres":
    1 "init" "0001_init",
    2 "untraced" "0002_untraced",
    3 "regression episodes" "0003_regression_episodes",
    4 "eviction" "0004_eviction",
    5 "resource key hash" "0005_resource_key_hash",
    6 "finding locations" "0006_finding_locations",
    7 "alert evaluation" "0007_alert_evaluation",
    8 "store counts" "0008_store_counts",
    9 "pending fillfactor" "0009_pending_fillfactor",
);

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    // The migrator holds an advisory lock while it runs: instances starting together apply
    // each migration once.
    migrator(MIGRATIONS, i64::MAX).run(pool).await?;
    Ok(())
}

/// `YYYYMMDD` of a day since the epoch (UTC): the partition name suffix. Days are of this
/// instance's clock, never before the epoch.
fn day_name(day: i64) -> String {
    let midnight = UNIX_EPOCH + Duration::from_secs(u64::try_from(day).unwrap_or(0) * 86_400);
    let date = humantime::format_rfc3339_seconds(midnight).to_string();
    date[..10].replace('-', "")
}

/// The exclusive upper bound of a range partition, from `pg_get_expr(relpartbound)` text such as
/// `FOR VALUES FROM ('0') TO ('86400000000000')`; `None` for the default partition.
fn upper_bound(bound: &str) -> Option<i64> {
    let (_, upper) = bound.split_once(" TO (")?;
    upper.trim_end_matches(')').trim_matches('\'').parse().ok()
}

/// Every stored span of some traces, with the ids of their blocks; each block is read and
/// decoded once however many of the traces it holds.
async fn traces_spans(
    conn: &mut PgConnection,
    traces: &[TraceId],
) -> Result<HashMap<TraceId, Vec<(i64, Span)>>, StoreError> {
    let mut out = HashMap::new();
    let wanted: HashSet<TraceId> = traces.iter().copied().collect();
    for chunk in traces.chunks(ROWS_PER_STATEMENT * 4) {
        keep_spans(blocks_of(conn, chunk).await?, &wanted, &mut out)?;
    }
    Ok(out)
}

/// The spans of the `wanted` traces in the blocks `ids`, with the ids of their blocks.
async fn spans_in_blocks(
    conn: &mut PgConnection,
    ids: &[i64],
    wanted: &HashSet<TraceId>,
) -> Result<HashMap<TraceId, Vec<(i64, Span)>>, StoreError> {
    let mut out = HashMap::new();
    // Blocks are large: a bounded number per read keeps each result small.
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        keep_spans(blocks_by_id(conn, chunk).await?, wanted, &mut out)?;
    }
    Ok(out)
}

/// Adds the spans of the `wanted` traces in `blocks` to `out`.
fn keep_spans(
    blocks: Vec<(i64, Vec<u8>)>,
    wanted: &HashSet<TraceId>,
    out: &mut HashMap<TraceId, Vec<(i64, Span)>>,
) -> Result<(), StoreError> {
    for (id, data) in blocks {
        for span in block::decode(&data)? {
            if wanted.contains(&span.trace_id) {
                out.entry(span.trace_id).or_default().push((id, span));
            }
        }
    }
    Ok(())
}

/// The stored blocks that hold spans of `traces`, by id.
async fn blocks_of(
    conn: &mut PgConnection,
    traces: &[TraceId],
) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    // Two steps, so each is an index lookup: the blocks of the traces from the trace index, then
    // those blocks by id (the primary key of every day partition).
    const BLOCK_IDS: &str = "SELECT DISTINCT block_id FROM trace_blocks WHERE trace_id = ANY($1)";
    let keys: Vec<Vec<u8>> = traces.iter().map(|trace| trace.0.to_vec()).collect();
    let ids: Vec<i64> = sqlx::query_scalar(BLOCK_IDS)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await?;
    blocks_by_id(conn, &ids).await
}

async fn blocks_by_id(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    const SELECT: &str = "SELECT id, data FROM span_blocks WHERE id = ANY($1) ORDER BY id";
    Ok(sqlx::query_as(SELECT)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?)
}

/// The blocks stored for each of the `claimed` traces (id, blocks pending when claimed) since
/// their claim `claim` was taken.
async fn blocks_since_claim(
    conn: &mut PgConnection,
    claim: i64,
    claimed: &[(TraceId, Vec<i64>, i64)],
) -> Result<HashMap<TraceId, HashSet<i64>>, StoreError> {
    const PENDING: &str = "SELECT trace_id, block_ids FROM pending_traces \
         WHERE trace_id = ANY($1) AND claim = $2";
    let keys: Vec<Vec<u8>> = (claimed.iter())
        .map(|(trace, ..)| trace.0.to_vec())
        .collect();
    let rows: Vec<(Vec<u8>, Vec<i64>)> = sqlx::query_as(PENDING)
        .bind(keys)
        .bind(claim)
        .fetch_all(&mut *conn)
        .await?;
    let claimed_with: HashMap<TraceId, &Vec<i64>> = (claimed.iter())
        .map(|(trace, blocks, _)| (*trace, blocks))
        .collect();
    let mut late = HashMap::new();
    for (trace, pending) in rows {
        let trace = trace_id(&trace)?;
        let Some(when_claimed) = claimed_with.get(&trace) else {
            continue;
        };
        let since: HashSet<i64> = (pending.into_iter())
            .filter(|block| !when_claimed.contains(block))
            .collect();
        if !since.is_empty() {
            late.insert(trace, since);
        }
    }
    Ok(late)
}

/// Block rows and their index rows as multi-row INSERTs, which store spans about three times as
/// fast as binary COPY (`PgConnection::copy_in_raw`) does here (docs/scaling.md).
async fn insert_block_rows(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    blocks: &[EncodedBlock],
    ids: &[i64],
    index: &[(&TraceId, i64, i64)],
) -> Result<(), StoreError> {
    let rows: Vec<_> = blocks.iter().zip(ids).collect();
    // Blocks are large (tens of kilobytes): a few per statement keep statements small.
    for chunk in rows.chunks(16) {
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO span_blocks (id, received_unix_ns, min_start_unix_ns, n_spans, data) ",
        );
        insert.push_values(chunk, |mut row, (block, id)| {
            row.push_bind(**id)
                .push_bind(ns(block.received_unix_ns))
                .push_bind(ns(block.min_start_unix_ns))
                .push_bind(i64::from(block.n_spans))
                .push_bind(block.data.as_slice());
        });
        insert.build().execute(&mut **tx).await?;
    }
    for chunk in index.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO trace_blocks (trace_id, block_id, received_unix_ns) ",
        );
        insert.push_values(chunk, |mut row, (trace, id, received)| {
            row.push_bind(trace.0.as_slice())
                .push_bind(*id)
                .push_bind(*received);
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Opens a first connection, waiting up to [`STARTUP_WAIT`] while the server refuses them (the
/// pool itself gives up after [`ACQUIRE_TIMEOUT`]). Any other error, such as a wrong password or
/// database, ends the wait at once.
async fn wait_for_server(pool: &PgPool) -> Result<(), StoreError> {
    let deadline = Instant::now() + STARTUP_WAIT;
    loop {
        match pool.acquire().await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::PoolTimedOut) if Instant::now() < deadline => {}
            Err(err) => return Err(err.into()),
        }
    }
}

impl PgStore {
    pub(super) fn portable(&self) -> Portable<'_, Postgres> {
        Portable::new(&self.pool, &self.pool, POSTGRES)
    }

    pub(super) async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            // Ingest holds one connection per group commit, the analyzer one per tick, the web
            // reads a few: 16 leaves room for all of them without exhausting a default server
            // (100 connections) with a handful of instances.
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // After the server restarted, every idle connection is dead: the ping before each
            // use finds it and a new one is opened, so no commit fails on a stale connection.
            .test_before_acquire(true)
            .connect_lazy_with(options.clone());
        wait_for_server(&pool).await?;
        migrate(&pool).await?;
        let store = Self {
            pool,
            options: Arc::new(options),
            leaders: Arc::new(Mutex::new(HashMap::new())),
            leader_connect_failing: Arc::new(AtomicBool::new(false)),
        };
        store.maintain_partitions(now_unix_ns()).await?;
        Ok(store)
    }

    /// A copy whose reads go through a pool of their own, whose statements the server stops
    /// after `statement_timeout`. Writes through it share nothing with the original's pool.
    pub(super) fn with_own_readers(&self, statement_timeout: Duration) -> Self {
        let options = (*self.options).clone().options([(
            "statement_timeout",
            statement_timeout.as_millis().max(1).to_string(),
        )]);
        let pool = PgPoolOptions::new()
            // The web's reads only: a few heavy pages at once, the rest wait their turn.
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Self {
            pool,
            ..self.clone()
        }
    }

    pub(super) async fn close_readers(&self) {
        self.pool.close().await;
    }

    pub(super) async fn close(&self) {
        let mut leaders = self.leaders.lock().await;
        for (_, conn) in leaders.drain() {
            let _ = conn.close().await;
        }
        self.pool.close().await;
    }

    pub(super) async fn insert_blocks(
        &self,
        blocks: &[EncodedBlock],
    ) -> Result<Vec<i64>, StoreError> {
        const NEXT_IDS: &str = "SELECT nextval('span_blocks_id_seq') FROM generate_series(1, $1)";
        if blocks.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(NEXT_IDS)
            .bind(i64::try_from(blocks.len()).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        let mut index: Vec<(&TraceId, i64, i64)> = Vec::new();
        // Pending traces: the newest block of each trace in this group, in trace id order so that
        // concurrent groups lock the rows in one order.
        let mut pending: BTreeMap<&TraceId, (i64, Vec<i64>)> = BTreeMap::new();
        for (block, id) in blocks.iter().zip(&ids) {
            let received = ns(block.received_unix_ns);
            for trace in &block.trace_ids {
                index.push((trace, *id, received));
                pending
                    .entry(trace)
                    .or_insert((received, Vec::new()))
                    .1
                    .push(*id);
            }
        }
        insert_block_rows(&mut tx, blocks, &ids, &index).await?;
        let pending: Vec<_> = pending.into_iter().collect();
        for chunk in pending.chunks(ROWS_PER_STATEMENT) {
            let mut upsert = QueryBuilder::<Postgres>::new(
                "INSERT INTO pending_traces (trace_id, first_seen_unix_ns, block_ids) ",
            );
            upsert.push_values(chunk, |mut row, (trace, (received, ids))| {
                row.push_bind(trace.0.as_slice())
                    .push_bind(*received)
                    .push_bind(ids.clone());
            });
            upsert.push(
                " ON CONFLICT (trace_id) DO UPDATE SET \
                 block_ids = pending_traces.block_ids || EXCLUDED.block_ids",
            );
            upsert.build().execute(&mut *tx).await?;
        }
        // Last: the counts' rows are shared with other writers, so they are held the least.
        let spans: u64 = blocks.iter().map(|block| u64::from(block.n_spans)).sum();
        let added = counts::Counts {
            blocks: blocks.len() as i64,
            spans: ns(spans),
            ..counts::Counts::default()
        };
        counts::add(&mut tx, added).await?;
        tx.commit().await?;
        Ok(ids)
    }

    pub(super) async fn trace_spans(
        &self,
        trace: TraceId,
    ) -> Result<Option<Vec<(i64, Span)>>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut found = traces_spans(&mut conn, &[trace]).await?;
        Ok(found.remove(&trace))
    }

    pub(super) async fn trace_blocks(
        &self,
        trace: TraceId,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        blocks_of(&mut conn, &[trace]).await
    }

    pub(super) async fn claim_due_traces(
        &self,
        claim: i64,
        cutoff_unix_ns: u64,
        now_unix_ns: u64,
        lease_until_unix_ns: u64,
        limit: i64,
    ) -> Result<Vec<ClaimedTrace>, StoreError> {
        // The rows locked are updated by their address, not found again through the key: a
        // lock returns the address of the version it locked. (A version committed after this
        // statement began is not visible to it and is left unclaimed, for the next claim.)
        const CLAIM: &str = "UPDATE pending_traces SET claim = $1, claimed_until = $2 \
             WHERE ctid = ANY(ARRAY(SELECT ctid FROM pending_traces \
                 WHERE first_seen_unix_ns <= $3 AND (claimed_until IS NULL OR claimed_until < $4) \
                 ORDER BY first_seen_unix_ns LIMIT $5 FOR UPDATE SKIP LOCKED)) \
             RETURNING trace_id, block_ids, first_seen_unix_ns";
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<(Vec<u8>, Vec<i64>, i64)> = sqlx::query_as(CLAIM)
            .bind(claim)
            .bind(ns(lease_until_unix_ns))
            .bind(ns(cutoff_unix_ns))
            .bind(ns(now_unix_ns))
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for (trace, new_blocks, first_seen) in rows {
            claimed.push((trace_id(&trace)?, new_blocks, first_seen));
        }
        let new: Vec<(TraceId, usize)> = (claimed.iter())
            .map(|(trace, new_blocks, _)| (*trace, new_blocks.len()))
            .collect();
        let (blocks, hot) = hot_trace::blocks_and_hot(&mut conn, &new, ns(now_unix_ns)).await?;
        let wanted: HashSet<TraceId> = (claimed.iter().map(|(trace, ..)| *trace))
            .filter(|trace| !hot.contains(trace))
            .collect();
        let mut spans = spans_in_blocks(&mut conn, &blocks, &wanted).await?;
        // A block stored since the claim was taken may be in the index read above. Its spans
        // wait for the next claim: analysed now, they would be taken for spans the previous
        // analysis saw when that claim analyses the trace again, and its requests counted twice.
        // Such a block is in the pending row too (one transaction writes both), which is read
        // after the index.
        for (trace_id, late) in blocks_since_claim(&mut conn, claim, &claimed).await? {
            if let Some(spans) = spans.get_mut(&trace_id) {
                spans.retain(|(block, _)| !late.contains(block));
            }
        }
        Ok(claimed
            .into_iter()
            .map(|(trace_id, new_blocks, first_seen)| ClaimedTrace {
                trace_id,
                claim,
                first_seen_unix_ns: unsigned(first_seen),
                new_blocks,
                spans: spans.remove(&trace_id).unwrap_or_default(),
                hot: hot.contains(&trace_id),
            })
            .collect())
    }

    pub(super) async fn release_claims(&self, claims: &[i64]) -> Result<u64, StoreError> {
        const RELEASE: &str = "UPDATE pending_traces SET claim = NULL, claimed_until = NULL \
             WHERE claim = ANY($1)";
        let done = sqlx::query(RELEASE)
            .bind(claims)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn pending_traces(&self) -> Result<u64, StoreError> {
        const COUNT: &str = "SELECT COUNT(*) FROM pending_traces";
        let n: i64 = sqlx::query_scalar(COUNT).fetch_one(&self.pool).await?;
        Ok(unsigned(n))
    }

    pub(super) async fn lead(&self, key: i64) -> bool {
        const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
        const ALIVE: &str = "SELECT 1";
        let mut leaders = self.leaders.lock().await;
        if let Some(conn) = leaders.get_mut(&key) {
            let alive: Result<i32, _> = sqlx::query_scalar(ALIVE).fetch_one(&mut *conn).await;
            if alive.is_ok() {
                return true;
            }
            // The connection died and the lock with it: try to take it again below.
            leaders.remove(&key);
        }
        let mut conn = match PgConnection::connect_with(&self.options).await {
            Ok(conn) => conn,
            Err(err) => {
                if !self.leader_connect_failing.swap(true, Relaxed) {
                    warn!(error = %err, "cannot connect to take a leader lock; trying again every interval");
                }
                return false;
            }
        };
        self.leader_connect_failing.store(false, Relaxed);
        match sqlx::query_scalar::<_, bool>(TRY_LOCK)
            .bind(key)
            .fetch_one(&mut conn)
            .await
        {
            Ok(true) => {
                info!(lock = key, "this instance took a leader role");
                leaders.insert(key, conn);
                true
            }
            Ok(false) => {
                let _ = conn.close().await;
                false
            }
            Err(err) => {
                warn!(error = %err, "taking a leader lock failed");
                false
            }
        }
    }

    pub(super) async fn maintain_partitions(&self, now_unix_ns: u64) -> Result<(), StoreError> {
        let today = ns(now_unix_ns).div_euclid(DAY_NS);
        for day in today..=today + DAYS_AHEAD {
            for (table, column) in PARTITIONED {
                if self
                    .table_exists(&format!("{table}_d{}", day_name(day)))
                    .await?
                {
                    continue;
                }
                let create = format!(
                    "CREATE TABLE IF NOT EXISTS {table}_d{} PARTITION OF {table} \
                     FOR VALUES FROM ({}) TO ({})",
                    day_name(day),
                    day * DAY_NS,
                    (day + 1) * DAY_NS
                );
                if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(create))
                    .execute(&self.pool)
                    .await
                {
                    // Another instance created it at the same moment, or the default partition
                    // holds rows of that day (a clock ahead): those move into the new partition.
                    let exists = format!("{table}_d{}", day_name(day));
                    if self.table_exists(&exists).await? {
                        continue;
                    }
                    let (from, to) = (day * DAY_NS, (day + 1) * DAY_NS);
                    match partition::attach_with_default_rows(
                        &self.pool, table, column, &exists, from, to,
                    )
                    .await
                    {
                        Ok(moved) => info!(
                            partition = exists,
                            moved, "a day partition took its rows from the default partition"
                        ),
                        Err(moved_err) => warn!(
                            error = %err, moved_error = %moved_err, partition = exists,
                            "cannot create a day partition"
                        ),
                    }
                }
            }
        }
        Ok(())
    }

    async fn table_exists(&self, name: &str) -> Result<bool, StoreError> {
        const EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL";
        Ok(sqlx::query_scalar(EXISTS)
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Drops a day partition of `table` and takes its rows out of the counts, in one
    /// transaction; returns the rows it held.
    async fn drop_partition(
        &self,
        table: &str,
        partition: &str,
    ) -> Result<counts::Counts, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut dropped = counts::Counts::default();
        if table == "span_blocks" {
            let count =
                format!("SELECT COUNT(*), COALESCE(SUM(n_spans), 0)::bigint FROM {partition}");
            (dropped.blocks, dropped.spans) = sqlx::query_as(sqlx::AssertSqlSafe(count))
                .fetch_one(&mut *tx)
                .await?;
        }
        if table == "requests" {
            let count = format!("SELECT COUNT(*) FROM {partition}");
            dropped.requests = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
                .fetch_one(&mut *tx)
                .await?;
        }
        let drop = format!("DROP TABLE IF EXISTS {partition}");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut *tx)
            .await?;
        counts::add(&mut tx, dropped.negated()).await?;
        tx.commit().await?;
        Ok(dropped)
    }

    /// Deletes a batch of the rows of `table` outside every day partition that retention
    /// removes (requests once their blocks are gone: `request_expiry`), taking them out of the
    /// counts in the same transaction; returns how many it deleted.
    async fn delete_default_rows(
        &self,
        table: &str,
        column: &str,
        before: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = counts::Counts::default();
        let done = match table {
            "requests" => {
                deleted.requests =
                    sqlx::query(super::request_expiry::POSTGRES_EXPIRED_DEFAULT_REQUESTS)
                        .bind(super::retention::BATCH_ROWS)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected() as i64;
                deleted.requests
            }
            "span_blocks" => {
                const DELETE: &str = "WITH gone AS (DELETE FROM span_blocks_default WHERE ctid IN \
                     (SELECT ctid FROM span_blocks_default WHERE received_unix_ns < $1 LIMIT $2) \
                     RETURNING n_spans) SELECT COUNT(*), COALESCE(SUM(n_spans), 0)::bigint FROM gone";
                (deleted.blocks, deleted.spans) = sqlx::query_as(DELETE)
                    .bind(before)
                    .bind(super::retention::BATCH_ROWS)
                    .fetch_one(&mut *tx)
                    .await?;
                deleted.blocks
            }
            _ => {
                let delete = format!(
                    "DELETE FROM {table}_default WHERE ctid IN \
                     (SELECT ctid FROM {table}_default WHERE {column} < $1 LIMIT $2)"
                );
                sqlx::query(sqlx::AssertSqlSafe(delete))
                    .bind(before)
                    .bind(super::retention::BATCH_ROWS)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64
            }
        };
        counts::add(&mut tx, deleted.negated()).await?;
        tx.commit().await?;
        Ok(unsigned(done))
    }

    pub(super) async fn apply_retention(
        &self,
        spans_before_unix_ns: u64,
        rollups_before_unix_ns: u64,
    ) -> Result<RetentionReport, StoreError> {
        const PARTITIONS: &str = "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1";
        let mut report = RetentionReport::default();
        let before = ns(spans_before_unix_ns);
        for (table, column) in PARTITIONED {
            let partitions: Vec<(String, String)> = sqlx::query_as(PARTITIONS)
                .bind(table)
                .fetch_all(&self.pool)
                .await?;
            for (partition, bound) in partitions {
                let Some(upper) = upper_bound(&bound) else {
                    continue; // the default partition
                };
                if upper > before {
                    continue;
                }
                let dropped = self.drop_partition(table, &partition).await?;
                report.blocks += unsigned(dropped.blocks);
                report.requests += unsigned(dropped.requests);
                report.partitions += 1;
                info!(partition, "retention dropped a partition");
            }
            // Rows outside every day partition: deleted in batches, requests once their blocks
            // are gone (`request_expiry`).
            loop {
                let done = self.delete_default_rows(table, column, before).await?;
                match table {
                    "span_blocks" => report.blocks += done,
                    "requests" => report.requests += done,
                    _ => {}
                }
                if done < super::retention::BATCH_ROWS as u64 {
                    break;
                }
                tokio::time::sleep(super::retention::BATCH_PAUSE).await;
            }
        }
        // Pending traces whose blocks are gone have nothing left to analyse.
        const PENDING: &str = "DELETE FROM pending_traces WHERE first_seen_unix_ns < $1";
        sqlx::query(PENDING)
            .bind(before)
            .execute(&self.pool)
            .await?;
        let portable = self.portable();
        (portable.remove_rollups(rollups_before_unix_ns, &mut report)).await?;
        (portable.evict_unreferenced(before, &mut report)).await?;
        Ok(report)
    }

    pub(super) async fn analysed_traces(
        &self,
        trace_ids: &[TraceId],
    ) -> Result<HashMap<TraceId, i64>, StoreError> {
        // One array parameter: one round trip and one prepared statement for any number.
        const SELECT: &str = "SELECT trace_id, MAX(last_block_id) FROM requests \
             WHERE trace_id = ANY($1) GROUP BY trace_id";
        if trace_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<Vec<u8>> = trace_ids.iter().map(|trace| trace.0.to_vec()).collect();
        let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(SELECT)
            .bind(keys)
            .fetch_all(&self.pool)
            .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for (trace, last) in rows {
            found.insert(trace_id(&trace)?, last);
        }
        Ok(found)
    }
}

impl PgStore {
    pub(super) async fn commit_analysis(&self, commit: &AnalysisCommit) -> Result<u64, StoreError> {
        const DELETE_REQUESTS: &str = "DELETE FROM requests WHERE trace_id = ANY($1)";
        let mut tx = self.pool.begin().await?;
        // First, before any row lock: an eviction waiting for the lock holds nothing else, so
        // no commit waits for it while holding what it needs.
        sqlx::query(BEGIN_ANALYSIS_COMMIT)
            .bind(EVICTION_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        let remapped = self.portable().resolve_evicted(&mut tx, commit).await?;
        let commit = remapped.as_ref().unwrap_or(commit);
        let held = claim_release::lock(&mut tx, &commit.claims).await?;
        let mut replaced = 0;
        if !commit.replace_traces.is_empty() {
            let keys: Vec<Vec<u8>> = commit
                .replace_traces
                .iter()
                .map(|trace| trace.0.to_vec())
                .collect();
            replaced = sqlx::query(DELETE_REQUESTS)
                .bind(keys)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64;
        }
        let added = request_write::upsert(&mut tx, &commit.requests).await?;
        // Rollup rows locked in key order: two commits touching the same rows wait, never
        // deadlock.
        let operations_folded = self
            .portable()
            .write_rollups_and_marks(&mut tx, commit)
            .await?;
        claim_release::release(&mut tx, held, ns(now_unix_ns())).await?;
        // Last: the counts' rows are shared with other writers, so they are held the least.
        let requests = added - replaced;
        counts::add(
            &mut tx,
            counts::Counts {
                requests,
                ..counts::Counts::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(operations_folded)
    }

    pub(super) async fn trace_requests(
        &self,
        trace: TraceId,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let select = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE trace_id = $1 ORDER BY start_unix_ns"
        );
        let rows: Vec<StoredRequest> = sqlx::query_as(sqlx::AssertSqlSafe(select))
            .bind(trace.0.to_vec())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredRequest::decode).collect()
    }

    pub(super) async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let (n_blocks, n_spans, n_requests) = counts::read(&mut conn).await?;
        Ok(StoreStats {
            n_spans,
            n_blocks,
            n_requests,
        })
    }

    pub(super) async fn disk_bytes(&self) -> Result<u64, StoreError> {
        const SIZE: &str = "SELECT pg_database_size(current_database())";
        let bytes: i64 = sqlx::query_scalar(SIZE).fetch_one(&self.pool).await?;
        Ok(unsigned(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_partitions_are_named_by_their_utc_date() {
        assert_eq!(day_name(0), "19700101");
        assert_eq!(day_name(19_782), "20240229");
        assert_eq!(day_name(20_795), "20261208");
        assert_eq!(
            upper_bound("FOR VALUES FROM ('0') TO ('86400000000000')"),
            Some(DAY_NS)
        );
        assert_eq!(upper_bound("DEFAULT"), None);
    }
}
