//! The on-disk form of a span block: the spans as an OTLP `ExportTraceServiceRequest` in
//! protobuf, compressed with zstd. Standard OTLP inside means the data outlives this code, and
//! decoding a block reuses the collector's decoder (so normalization is re-derived, never stored).
//!
//! Invariant: `decode(encode(spans)) == spans`.

use collector::model::{Span, TraceId};
use collector::otlp::{decode, encode};
use prost::Message;

/// zstd level 3: measured (BENCHMARKS.md) as the knee of ratio against cost on span blocks.
const ZSTD_LEVEL: i32 = 3;

/// A block ready for the store.
#[derive(Debug, Clone)]
pub struct EncodedBlock {
    /// When the export was received.
    pub received_unix_ns: u64,
    /// Earliest span start in the block, for retention.
    pub min_start_unix_ns: u64,
    /// Spans in the block.
    pub n_spans: u32,
    /// Distinct traces in the block, each indexed to it.
    pub trace_ids: Vec<TraceId>,
    /// zstd(OTLP protobuf).
    pub data: Vec<u8>,
}

/// Encodes one export's spans, consuming them.
pub fn encode(spans: Vec<Span>, received_unix_ns: u64) -> EncodedBlock {
    let mut trace_ids: Vec<TraceId> = spans.iter().map(|span| span.trace_id).collect();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    let min_start_unix_ns = spans
        .iter()
        .map(|span| span.start_unix_ns)
        .min()
        .unwrap_or(received_unix_ns);
    let n_spans = u32::try_from(spans.len()).unwrap_or(u32::MAX);
    let protobuf = encode::request(spans).encode_to_vec();
    let data =
        zstd::bulk::compress(&protobuf, ZSTD_LEVEL).expect("zstd compresses any in-memory buffer");
    EncodedBlock {
        received_unix_ns,
        min_start_unix_ns,
        n_spans,
        trace_ids,
        data,
    }
}

/// Why a stored block could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The zstd frame was damaged.
    #[error("decompressing span block: {0}")]
    Decompress(#[from] std::io::Error),
    /// The protobuf inside was damaged.
    #[error("decoding span block: {0}")]
    Decode(#[from] decode::DecodeError),
}

/// Decodes a stored block back into spans.
pub fn decode(data: &[u8]) -> Result<Vec<Span>, BlockError> {
    let protobuf = zstd::stream::decode_all(data)?;
    Ok(decode::spans(decode::protobuf(&protobuf)?).spans)
}
