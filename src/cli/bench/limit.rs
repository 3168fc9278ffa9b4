//! `bench --limit`: this machine's raw limit, measured in the same run before the server starts,
//! so that the server's figures read as a fraction of what the hardware allows right now (a
//! shared machine's load moves both alike).
//!
//! "Raw limit" is two figures, both over the run's own pre-built protobuf exports:
//! - **decode only**: prost decodes the exports from bytes on one thread per core, and does
//!   nothing else with them. No server can accept OTLP faster than it can decode it.
//! - **decode + bare insert**: the same decode on all cores but one (at least one), turning each
//!   span into a row (ids, name, start and end, its attributes re-encoded as one protobuf blob),
//!   and one thread inserting the rows into an empty SQLite table with no secondary index, in WAL
//!   mode with synchronous=NORMAL, one transaction per export, 100 rows per statement, statements
//!   prepared once (rusqlite, the fastest way measured to write SQLite from Rust). SQLite has one
//!   writer, so this is what any design that decodes and durably stores every span could reach
//!   here: no HTTP, no normalising, no compression, no trace index, no analysis.
//!
//! The server does all of those too, so it reaches a fraction of the second figure; the goal is
//! half. The figures also give the CPU-seconds each phase spent per million spans, the floor
//! the server's own CPU cost compares with.
//!
//! Invariant: writes only its own scratch file, which it removes. The SQL here is not the store's
//! (src/store keeps all of that); this table measures the machine, not the schema.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rusqlite::{Connection, ToSql};

use super::process;

/// How long each phase runs: long enough for the WAL to grow past its first checkpoints, short
/// enough that `--limit` adds seconds, not minutes.
const PHASE: Duration = Duration::from_secs(4);

/// Rows per INSERT: with 7 columns, 700 parameters, well under SQLite's limit of 32,766, and
/// about where larger multi-row inserts stop gaining.
const ROWS_PER_STATEMENT: usize = 100;

const COLUMNS: usize = 7;

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE spans (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_span_id BLOB NOT NULL,
    name TEXT NOT NULL,
    start_unix_ns INTEGER NOT NULL,
    end_unix_ns INTEGER NOT NULL,
    attributes BLOB NOT NULL
);";

/// What the two phases measured.
#[derive(Debug, Clone)]
pub(super) struct RawLimit {
    pub(super) decode_threads: usize,
    pub(super) decode_spans_per_sec: f64,
    pub(super) decode_cpu_secs_per_million: Option<f64>,
    pub(super) insert_decode_threads: usize,
    pub(super) insert_spans_per_sec: f64,
    pub(super) insert_cpu_secs_per_million: Option<f64>,
}

/// One phase's count and cost.
struct Phase {
    spans: u64,
    elapsed: Duration,
    cpu_secs: Option<f64>,
}

impl Phase {
    fn spans_per_sec(&self) -> f64 {
        self.spans as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_secs_per_million(&self) -> Option<f64> {
        Some(self.cpu_secs? / (self.spans.max(1) as f64 / 1e6))
    }
}

/// Runs both phases over `bodies` (encoded `ExportTraceServiceRequest`s), with the scratch
/// database in `dir`. Blocks for about twice [`PHASE`].
pub(super) fn measure(bodies: &[Vec<u8>], dir: &Path) -> anyhow::Result<RawLimit> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let decode = timed(|| decode_only(bodies, cores))?;
    let db = dir.join("bench-limit.db");
    let insert_decode_threads = cores.saturating_sub(1).max(1);
    let insert = timed(|| decode_and_insert(bodies, insert_decode_threads, &db));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let insert = insert?;
    Ok(RawLimit {
        decode_threads: cores,
        decode_spans_per_sec: decode.spans_per_sec(),
        decode_cpu_secs_per_million: decode.cpu_secs_per_million(),
        insert_decode_threads,
        insert_spans_per_sec: insert.spans_per_sec(),
        insert_cpu_secs_per_million: insert.cpu_secs_per_million(),
    })
}

/// Runs `phase`, which returns the spans it handled, and measures its wall and CPU time.
fn timed(phase: impl FnOnce() -> anyhow::Result<u64>) -> anyhow::Result<Phase> {
    let me = std::process::id();
    let cpu_before = process::cpu_secs(me);
    let started = Instant::now();
    let spans = phase()?;
    let elapsed = started.elapsed();
    let cpu_secs = process::cpu_secs(me)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    Ok(Phase {
        spans,
        elapsed,
        cpu_secs,
    })
}

fn n_spans(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len() as u64)
        .sum()
}

fn decode(body: &[u8]) -> anyhow::Result<ExportTraceServiceRequest> {
    ExportTraceServiceRequest::decode(body).context("decoding a pre-built export")
}

fn decode_only(bodies: &[Vec<u8>], threads: usize) -> anyhow::Result<u64> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    let started = Instant::now();
                    let (mut spans, mut idx) = (0, thread);
                    while started.elapsed() < PHASE {
                        spans +=
                            n_spans(&std::hint::black_box(decode(&bodies[idx % bodies.len()])?));
                        idx += threads;
                    }
                    anyhow::Ok(spans)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a decode thread does not panic"))
            .sum()
    })
}

/// One span as the bare table stores it.
struct Row {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    start_unix_ns: i64,
    end_unix_ns: i64,
    attributes: Vec<u8>,
}

fn rows(request: ExportTraceServiceRequest) -> Vec<Row> {
    let mut rows = Vec::new();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                let mut attributes = Vec::new();
                for attribute in &span.attributes {
                    attribute
                        .encode_length_delimited(&mut attributes)
                        .expect("a Vec grows as needed");
                }
                rows.push(Row {
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    name: span.name,
                    start_unix_ns: span.start_time_unix_nano as i64,
                    end_unix_ns: span.end_time_unix_nano as i64,
                    attributes,
                });
            }
        }
    }
    rows
}

fn insert_sql(n_rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; n_rows].join(", ");
    format!(
        "INSERT INTO spans (trace_id, span_id, parent_span_id, name, start_unix_ns, \
         end_unix_ns, attributes) VALUES {values}"
    )
}

fn insert_export(connection: &mut Connection, rows: &[Row]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(ROWS_PER_STATEMENT * COLUMNS);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        params.clear();
        for row in chunk {
            params.extend([
                &row.trace_id as &dyn ToSql,
                &row.span_id,
                &row.parent_span_id,
                &row.name,
                &row.start_unix_ns,
                &row.end_unix_ns,
                &row.attributes,
            ]);
        }
        // Two statements at most (full chunks and the rest), both kept in rusqlite's cache.
        transaction
            .prepare_cached(&insert_sql(chunk.len()))?
            .execute(params.as_slice())?;
    }
    transaction.commit()
}

/// Decoders feed rows to this thread, which inserts them until [`PHASE`] is over.
fn decode_and_insert(bodies: &[Vec<u8>], decoders: usize, db: &Path) -> anyhow::Result<u64> {
    let mut connection =
        Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
    connection
        .execute_batch(SCHEMA)
        .context("creating the bare table")?;
    let stop = AtomicBool::new(false);
    // Two exports per decoder in flight: enough that the writer never waits on a decoder that
    // keeps up, small enough to hold little memory.
    let (sender, receiver) = mpsc::sync_channel::<Vec<Row>>(2 * decoders);
    std::thread::scope(|scope| {
        for thread in 0..decoders {
            let (sender, stop) = (sender.clone(), &stop);
            scope.spawn(move || {
                let mut idx = thread;
                while !stop.load(Relaxed) {
                    let Ok(request) = decode(&bodies[idx % bodies.len()]) else {
                        break;
                    };
                    if sender.send(rows(request)).is_err() {
                        break;
                    }
                    idx += decoders;
                }
            });
        }
        drop(sender);
        let started = Instant::now();
        let mut inserted = 0;
        let result = loop {
            if started.elapsed() >= PHASE {
                break Ok(inserted);
            }
            let Ok(rows) = receiver.recv() else {
                break Err(anyhow::anyhow!("the decode threads stopped early"));
            };
            if let Err(err) = insert_export(&mut connection, &rows) {
                break Err(err).context("inserting into the bare table");
            }
            inserted += rows.len() as u64;
        };
        // Unblocks decoders waiting on a full channel, then stops them.
        stop.store(true, Relaxed);
        drop(receiver);
        result
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::cli::bench::payload::payload;

    #[test]
    fn insert_sql_has_a_placeholder_per_column_and_row() {
        let sql = insert_sql(3);
        assert_eq!(sql.matches('?').count(), 3 * COLUMNS);
        assert!(
            sql.ends_with("(?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?)")
        );
    }

    #[test]
    fn an_export_becomes_one_row_per_span() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let request = payload(
            &mut SmallRng::seed_from_u64(1),
            250,
            1_700_000_000_000_000_000,
        );
        let rows = rows(request.clone());
        assert_eq!(rows.len(), 250);
        let mut connection = Connection::open(dir.path().join("t.db")).expect("opens");
        connection.execute_batch(SCHEMA).expect("schema");
        insert_export(&mut connection, &rows).expect("inserts");
        let (count, parents): (i64, i64) = connection
            .query_row(
                "SELECT count(*), count(*) FILTER (WHERE length(parent_span_id) = 8) FROM spans",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("counts");
        assert_eq!((count, parents), (250, 225));
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        let stored: Vec<u8> = connection
            .query_row("SELECT attributes FROM spans WHERE rowid = 1", [], |row| {
                row.get(0)
            })
            .expect("first row");
        let mut expected = Vec::new();
        for attribute in &span.attributes {
            attribute
                .encode_length_delimited(&mut expected)
                .expect("encodes");
        }
        assert_eq!(stored, expected);
    }
}
