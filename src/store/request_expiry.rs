//! Requests expire with the blocks they were analysed from, and blocks go by receive time. A
//! request's own start is the exporter's clock: a slow clock would lose its requests long before
//! its spans, and a clock in the future (accepted up to 2262) would keep them for ever. A request
//! row names the newest block its analysis saw (`last_block_id`); once that block is gone, so are
//! all the blocks the request was analysed from, and the request goes too.
//!
//! Invariant: a request goes only once its newest analysed block is gone, never by its start.

/// SQLite: the requests whose newest analysed block is older than every stored block, a batch
/// at a time (`$1` rows). Block ids grow in receive order there (one writer), so that is "gone",
/// and the range is read from `requests_by_block`.
pub(super) const SQLITE_EXPIRED_REQUESTS: &str = "DELETE FROM requests WHERE rowid IN \
     (SELECT rowid FROM requests WHERE last_block_id < \
     (SELECT COALESCE(MIN(id), 9223372036854775807) FROM span_blocks) LIMIT $1)";

/// PostgreSQL: the rows of the DEFAULT partition (a start outside every day partition: a clock
/// far off, or old data replayed) whose newest analysed block is gone, `$1` rows at a time.
/// Block ids come from a shared sequence, not in receive order, so each is looked up.
pub(super) const POSTGRES_EXPIRED_DEFAULT_REQUESTS: &str = "DELETE FROM requests_default \
     WHERE ctid IN (SELECT ctid FROM requests_default r WHERE NOT EXISTS \
     (SELECT 1 FROM span_blocks b WHERE b.id = r.last_block_id) LIMIT $1)";
