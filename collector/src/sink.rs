//! The hand-off from the receivers to the next consumer: a bounded queue of exports, each with a
//! one-shot reply that says when (and whether) its spans were durably committed.
//!
//! Invariant: a receiver never blocks on the queue and never drops silently. A full queue is an
//! immediate, retryable [`IngestError::Busy`], counted in [`IngestStats`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::block::EncodedBlock;

/// One accepted export on its way to the store.
#[derive(Debug)]
pub struct Export {
    /// The export's accepted spans, packed.
    pub block: EncodedBlock,
    /// Answered once the spans are committed (or could not be).
    pub reply: oneshot::Sender<Result<(), CommitError>>,
}

/// Why a queued export was not committed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct CommitError(pub String);

/// Why an export was not accepted or not committed; none of these is the client's fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// The write queue is full: retry after a short pause.
    #[error("write queue is full, retry later")]
    Busy,
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The store could not commit the spans; nothing was acknowledged.
    #[error("{0}")]
    Store(#[from] CommitError),
}

impl IngestError {
    /// Whether retrying the same export can never succeed. All ingest errors are transient: the
    /// permanent ones (undecodable bodies) are decode errors, answered before the queue.
    pub fn is_permanent(&self) -> bool {
        false
    }

    /// How long a client should wait before retrying.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Busy => Duration::from_secs(1),
            Self::ShuttingDown | Self::Store(_) => Duration::from_secs(5),
        }
    }

    /// The label this error is counted under in `spans_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Busy => "queue_full",
            Self::ShuttingDown => "shutting_down",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// The receivers' end of the queue.
#[derive(Debug, Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<Export>,
    stats: Arc<IngestStats>,
}

/// The consumer's end of the queue.
pub type ExportReceiver = mpsc::Receiver<Export>;

/// What a receiver awaits after a successful `try_send`: the commit of its spans.
#[derive(Debug)]
pub struct Committed(oneshot::Receiver<Result<(), CommitError>>);

impl Committed {
    /// Waits until the spans are durable. A dropped reply means the consumer went away.
    pub async fn wait(self) -> Result<(), IngestError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(IngestError::Store(err)),
            Err(_) => Err(IngestError::ShuttingDown),
        }
    }
}

impl SpanSink {
    /// A queue holding at most `capacity` exports.
    pub fn channel(capacity: usize, stats: Arc<IngestStats>) -> (SpanSink, ExportReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (SpanSink { tx, stats }, rx)
    }

    /// The counters this sink and its receivers update.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// Exports waiting in the queue right now.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues a block without waiting; the returned [`Committed`] resolves once it is durable.
    pub fn try_send(&self, block: EncodedBlock) -> Result<Committed, IngestError> {
        let n_spans = u64::from(block.n_spans);
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                let err = IngestError::Busy;
                SpansRejected {
                    n_spans,
                    reason: err.reason(),
                }
                .emit(&self.stats);
                return Err(err);
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                let err = IngestError::ShuttingDown;
                SpansRejected {
                    n_spans,
                    reason: err.reason(),
                }
                .emit(&self.stats);
                return Err(err);
            }
        };
        let (reply, committed) = oneshot::channel();
        self.stats.spans_accepted.fetch_add(n_spans, Relaxed);
        permit.send(Export { block, reply });
        Ok(Committed(committed))
    }
}

/// Upper bounds (seconds) of the commit latency histogram buckets.
pub const COMMIT_LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Reasons spans or whole exports are rejected, each its own `spans_rejected_total` and
/// `exports_refused_total` series.
pub const REJECT_REASONS: [&str; 9] = [
    "invalid_span",
    "undecodable",
    "too_large",
    "unsupported_media_type",
    "queue_full",
    "shutting_down",
    "store_unavailable",
    "body_budget",
    "body_incomplete",
];

/// Rejections of one reason are logged at most this often; the ones in between are counted and
/// reported with the next line, so a flood of bad exports costs one line per reason and interval.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The collector's own figures, shared by the receivers and the consumer; exported at `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Export requests answered, by transport: [http, grpc].
    pub export_requests: [AtomicU64; 2],
    /// Body bytes received (as sent on the wire, before decompression).
    pub bytes_received: AtomicU64,
    /// Spans queued for the store.
    pub spans_accepted: AtomicU64,
    /// Spans committed to the store.
    pub spans_committed: AtomicU64,
    /// Spans rejected, by [`REJECT_REASONS`] index.
    pub spans_rejected: [AtomicU64; REJECT_REASONS.len()],
    /// Export requests refused before their spans were read (size, budget, deadline, decoding),
    /// by [`REJECT_REASONS`] index.
    pub exports_refused: [AtomicU64; REJECT_REASONS.len()],
    /// Which rejections are logged, and how many were not since the last line.
    pub rejection_log: RejectionLog,
    /// Attribute values cut to the maximum length.
    pub values_truncated: AtomicU64,
    /// Export requests refused for a missing or wrong token.
    pub unauthenticated_requests: AtomicU64,
    /// Commit latency histogram: counts per [`COMMIT_LATENCY_BUCKETS`] bucket, then +Inf.
    pub commit_latency_buckets: [AtomicU64; COMMIT_LATENCY_BUCKETS.len() + 1],
    /// Sum of commit latencies, in microseconds.
    pub commit_latency_sum_us: AtomicU64,
    /// Group commits that failed: the store was unreachable, full or refused the write.
    pub commit_failures: AtomicU64,
    /// Whether the last group commit failed. Cleared by the next one that succeeds, so it reads
    /// "down" from the first failure of an outage to the first commit after it.
    pub store_down: AtomicBool,
}

/// The transport an export came in on.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    /// OTLP/HTTP.
    Http,
    /// OTLP/gRPC.
    Grpc,
}

impl IngestStats {
    /// Counts one export request and its wire size.
    pub fn record_request(&self, transport: Transport, n_bytes: u64) {
        self.export_requests[transport as usize].fetch_add(1, Relaxed);
        self.bytes_received.fetch_add(n_bytes, Relaxed);
    }

    /// Records how long one group commit took.
    pub fn record_commit(&self, n_spans: u64, latency: Duration) {
        self.spans_committed.fetch_add(n_spans, Relaxed);
        self.store_down.store(false, Relaxed);
        let secs = latency.as_secs_f64();
        let bucket = COMMIT_LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(COMMIT_LATENCY_BUCKETS.len());
        self.commit_latency_buckets[bucket].fetch_add(1, Relaxed);
        self.commit_latency_sum_us
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// Records a group commit that failed; the store counts as down until one succeeds.
    pub fn record_commit_failure(&self) {
        self.commit_failures.fetch_add(1, Relaxed);
        self.store_down.store(true, Relaxed);
    }

    /// Whether the last group commit failed.
    pub fn store_down(&self) -> bool {
        self.store_down.load(Relaxed)
    }

    /// Export requests refused for `reason` so far.
    pub fn refused(&self, reason: &str) -> u64 {
        REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |idx| self.exports_refused[idx].load(Relaxed))
    }

    /// Spans rejected for `reason` so far.
    pub fn rejected(&self, reason: &str) -> u64 {
        REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |idx| self.spans_rejected[idx].load(Relaxed))
    }

    /// Appends the counters in the Prometheus text exposition format.
    pub fn write_prometheus(&self, queue_depth: usize, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP bottleneck_export_requests_total OTLP export requests received."
        );
        let _ = writeln!(out, "# TYPE bottleneck_export_requests_total counter");
        for (idx, transport) in ["http", "grpc"].iter().enumerate() {
            let _ = writeln!(
                out,
                "bottleneck_export_requests_total{{transport=\"{transport}\"}} {}",
                self.export_requests[idx].load(Relaxed)
            );
        }
        let counters = [
            (
                "bottleneck_received_bytes_total",
                "OTLP body bytes received, as sent on the wire.",
                &self.bytes_received,
            ),
            (
                "bottleneck_spans_received_total",
                "Spans accepted into the write queue.",
                &self.spans_accepted,
            ),
            (
                "bottleneck_spans_committed_total",
                "Spans durably committed to the store.",
                &self.spans_committed,
            ),
            (
                "bottleneck_attribute_values_truncated_total",
                "Attribute values cut to the maximum length.",
                &self.values_truncated,
            ),
            (
                "bottleneck_export_unauthenticated_total",
                "Export requests refused for a missing or wrong token.",
                &self.unauthenticated_requests,
            ),
            (
                "bottleneck_commit_failures_total",
                "Group commits of spans that failed; their exports were answered unavailable.",
                &self.commit_failures,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bottleneck_spans_rejected_total Spans rejected, by reason."
        );
        let _ = writeln!(out, "# TYPE bottleneck_spans_rejected_total counter");
        for (idx, reason) in REJECT_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "bottleneck_spans_rejected_total{{reason=\"{reason}\"}} {}",
                self.spans_rejected[idx].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bottleneck_exports_refused_total Export requests refused before their spans were read, by reason."
        );
        let _ = writeln!(out, "# TYPE bottleneck_exports_refused_total counter");
        for (idx, reason) in REJECT_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "bottleneck_exports_refused_total{{reason=\"{reason}\"}} {}",
                self.exports_refused[idx].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bottleneck_write_queue_depth Exports waiting for the store writer."
        );
        let _ = writeln!(
            out,
            "# TYPE bottleneck_write_queue_depth gauge\nbottleneck_write_queue_depth {queue_depth}"
        );
        let name = "bottleneck_store_up";
        let _ = writeln!(
            out,
            "# HELP {name} 1 if the last commit of spans succeeded, 0 if it failed (store down or full).\n# TYPE {name} gauge\n{name} {}",
            u8::from(!self.store_down())
        );
        let name = "bottleneck_commit_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to commit one group of exports.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (idx, le) in COMMIT_LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.commit_latency_buckets[idx].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.commit_latency_buckets[COMMIT_LATENCY_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.commit_latency_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Spans were turned away; counted by reason and logged (at most once per reason and
/// [`REJECTION_LOG_INTERVAL`]).
pub struct SpansRejected {
    /// How many.
    pub n_spans: u64,
    /// One of [`REJECT_REASONS`].
    pub reason: &'static str,
}

impl SpansRejected {
    /// Counts and logs the event.
    pub fn emit(self, stats: &IngestStats) {
        self.count(stats);
        if let Some(not_logged) = stats.rejection_log.admit(self.reason) {
            warn!(
                n_spans = self.n_spans,
                reason = self.reason,
                not_logged,
                "spans rejected"
            );
        }
    }

    /// Counts the event without logging it, for a caller that logs the cause once itself (the
    /// store writer logs an outage, not each group it refuses).
    pub fn count(&self, stats: &IngestStats) {
        if let Some(idx) = REJECT_REASONS.iter().position(|r| *r == self.reason) {
            stats.spans_rejected[idx].fetch_add(self.n_spans, Relaxed);
        }
    }
}

/// A whole export request was refused before its spans were read: too large, out of budget, too
/// slow, or not decodable. Counted by reason and logged like [`SpansRejected`].
pub struct ExportRefused {
    /// One of [`REJECT_REASONS`].
    pub reason: &'static str,
    /// What the client was told.
    pub message: String,
}

impl ExportRefused {
    /// Counts and logs the event.
    pub fn emit(self, stats: &IngestStats) {
        if let Some(idx) = REJECT_REASONS.iter().position(|r| *r == self.reason) {
            stats.exports_refused[idx].fetch_add(1, Relaxed);
        }
        if let Some(not_logged) = stats.rejection_log.admit(self.reason) {
            warn!(
                reason = self.reason,
                error = self.message,
                not_logged,
                "export refused"
            );
        }
    }
}

/// Rate limit of the rejection warnings: per reason, the first rejection is logged, then at most
/// one per [`REJECTION_LOG_INTERVAL`], carrying the number of rejections not logged before it.
#[derive(Debug, Default)]
pub struct RejectionLog {
    /// Per reason: when the next line may be written, in ms since the Unix epoch.
    next_unix_ms: [AtomicU64; REJECT_REASONS.len()],
    /// Per reason: rejections not logged since the last line.
    not_logged: [AtomicU64; REJECT_REASONS.len()],
}

impl RejectionLog {
    /// Whether a rejection for `reason` is logged now; if so, how many were not since the last.
    pub fn admit(&self, reason: &str) -> Option<u64> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.admit_at(reason, now_ms)
    }

    fn admit_at(&self, reason: &str, now_ms: u64) -> Option<u64> {
        let Some(idx) = REJECT_REASONS.iter().position(|r| *r == reason) else {
            return Some(0);
        };
        let next = self.next_unix_ms[idx].load(Relaxed);
        let interval_ms = REJECTION_LOG_INTERVAL.as_millis() as u64;
        if now_ms >= next
            && self.next_unix_ms[idx]
                .compare_exchange(next, now_ms + interval_ms, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.not_logged[idx].swap(0, Relaxed));
        }
        self.not_logged[idx].fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_rejections_is_logged_once_per_interval_with_the_count() {
        let log = RejectionLog::default();
        let start = 1_700_000_000_000;
        assert_eq!(log.admit_at("too_large", start), Some(0));
        for ms in 1..1000 {
            assert_eq!(log.admit_at("too_large", start + ms), None);
        }
        // Another reason has its own line.
        assert_eq!(log.admit_at("body_budget", start + 5), Some(0));
        assert_eq!(log.admit_at("too_large", start + 10_000), Some(999));
        assert_eq!(log.admit_at("too_large", start + 10_001), None);
    }
}
