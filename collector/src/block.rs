//! The compact form of accepted spans, as queued for the store and stored: one export's spans as
//! an OTLP `ExportTraceServiceRequest` in protobuf, compressed with zstd. Standard OTLP inside
//! means the data outlives this code, and reading a block back reuses [`crate::otlp::decode`]
//! (so normalization and validation are re-derived, never stored).
//!
//! A received protobuf export is packed as it came: the exporter's bytes are already that form,
//! and turning decoded spans back into protobuf costs about as much CPU as decoding them. Packing
//! happens in the receiver, so only compressed bytes wait in the queue.
//!
//! Invariants: `decode(pack(p, decode::accept(p)))` gives back the spans decoding `p` keeps
//! (decoding is a pure function of the bytes, so spans dropped at ingest are dropped again);
//! `decode(encode(spans)) == spans`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use prost::Message;

use crate::model::{Event, Span, TraceId};
use crate::otlp::{check, decode, encode, sparse};

/// zstd level 1 rather than the default 3: packing is on the ingest path, and the higher level
/// saves only a little disk for noticeably more CPU per block (docs/benchmarks-history.md).
const ZSTD_LEVEL: i32 = 1;

/// A block ready for the store.
#[derive(Debug, Clone, Default)]
pub struct EncodedBlock {
    /// When the export was received.
    pub received_unix_ns: u64,
    /// Earliest span start in the block, for retention.
    pub min_start_unix_ns: u64,
    /// Spans in the block that decoding accepts.
    pub n_spans: u32,
    /// Distinct traces in the block, each indexed to it.
    pub trace_ids: Vec<TraceId>,
    /// zstd(OTLP protobuf).
    pub data: Vec<u8>,
}

/// Packs a received export: `protobuf` is its OTLP protobuf and `accepted` what decoding it keeps.
pub fn pack(protobuf: &[u8], accepted: decode::Accepted, received_unix_ns: u64) -> EncodedBlock {
    EncodedBlock {
        received_unix_ns,
        min_start_unix_ns: accepted.min_start_unix_ns.unwrap_or(received_unix_ns),
        n_spans: u32::try_from(accepted.n_spans).unwrap_or(u32::MAX),
        trace_ids: accepted.trace_ids,
        data: compress(protobuf),
    }
}

/// The largest output buffer a thread keeps between exports: room for a 4 MiB export, far more
/// than exporters' batches; a larger one is let go after its export.
const MAX_KEPT_BUFFER: usize = 4 << 20;

thread_local! {
    /// Each thread's zstd context and output buffer, reused: a new context allocates and clears
    /// about a megabyte of tables, too much to pay for every export.
    static COMPRESSOR: RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> =
        const { RefCell::new(None) };
}

/// zstd of `protobuf`, holding no more memory than its length. The compressor writes into room
/// for the worst case (about the input's size, eight times what span blocks compress to), and
/// blocks are held for the grace period, so the result is copied out at its own size: held at
/// the worst case's size, the held blocks would take several times the memory their bound allows.
fn compress(protobuf: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|reused| {
        let (compressor, buffer) = reused.get_or_insert_with(|| {
            let compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .expect("zstd makes a context at a valid level");
            (compressor, Vec::new())
        });
        buffer.clear();
        buffer.reserve(zstd::zstd_safe::compress_bound(protobuf.len()));
        compressor
            .compress_to_buffer(protobuf, buffer)
            .expect("zstd compresses any in-memory buffer into its bound");
        let data = buffer.as_slice().to_vec();
        if buffer.capacity() > MAX_KEPT_BUFFER {
            *buffer = Vec::new();
        }
        data
    })
}

/// Encodes spans made here (the demo, tests), consuming them.
pub fn encode(spans: Vec<Span>, received_unix_ns: u64) -> EncodedBlock {
    let empty = describe(&spans, received_unix_ns, Vec::new());
    let protobuf = encode::request(spans).encode_to_vec();
    EncodedBlock {
        data: compress(&protobuf),
        ..empty
    }
}

/// The block's summary of `spans`, around its compressed data.
fn describe(spans: &[Span], received_unix_ns: u64, data: Vec<u8>) -> EncodedBlock {
    let mut trace_ids: Vec<TraceId> = spans.iter().map(|span| span.trace_id).collect();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    let min_start_unix_ns = spans
        .iter()
        .map(|span| span.start_unix_ns)
        .min()
        .unwrap_or(received_unix_ns);
    EncodedBlock {
        received_unix_ns,
        min_start_unix_ns,
        n_spans: u32::try_from(spans.len()).unwrap_or(u32::MAX),
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

/// Decodes a block into the spans it holds, each with only the attributes `keep` accepts by key
/// (see [`crate::otlp::sparse`]): for readers of a few attributes, such as the analysis.
pub fn decode_keeping(data: &[u8], keep: impl Fn(&[u8]) -> bool) -> Result<Vec<Span>, BlockError> {
    Ok(with_protobuf(data, |protobuf| sparse::spans_keeping(protobuf, keep))??.spans)
}

/// [`decode_keeping`], handing each span to `take` as it is decoded.
pub fn each_span_keeping(
    data: &[u8],
    keep: impl Fn(&[u8]) -> bool,
    take: impl FnMut(Span),
) -> Result<(), BlockError> {
    with_protobuf(data, |protobuf| {
        sparse::each_span_keeping(protobuf, keep, take)
    })??;
    Ok(())
}

/// The distinct traces of the spans a block holds, sorted, as packing it recorded them: for
/// readers that need nothing else, such as a replay after a restart.
pub fn trace_ids(data: &[u8]) -> Result<Vec<TraceId>, BlockError> {
    Ok(with_protobuf(data, check::accept)??.trace_ids)
}

/// Decodes a block back into the spans it holds.
pub fn decode(data: &[u8]) -> Result<Vec<Span>, BlockError> {
    let request = with_protobuf(data, decode::protobuf)??;
    Ok(decode::spans(request).spans)
}

/// Spans of one trace, with the events they recorded (which spans do not keep).
pub type SpansWithEvents = (Vec<Span>, Vec<Event>);

/// Decodes the spans of one trace a block holds, with the events they recorded: for showing a
/// trace whole.
pub fn decode_trace_with_events(
    data: &[u8],
    trace: TraceId,
) -> Result<SpansWithEvents, BlockError> {
    let mut found = decode_traces_with_events(data, &HashSet::from([trace]))?;
    Ok(found.remove(&trace).unwrap_or_default())
}

/// [`decode_trace_with_events`] for several traces with one decode of the block, by trace;
/// traces the block does not hold are absent.
pub fn decode_traces_with_events(
    data: &[u8],
    traces: &HashSet<TraceId>,
) -> Result<HashMap<TraceId, SpansWithEvents>, BlockError> {
    let mut request = with_protobuf(data, decode::protobuf)??;
    let wanted =
        |raw: &[u8]| <[u8; 16]>::try_from(raw).is_ok_and(|id| traces.contains(&TraceId(id)));
    // A block holds an export's traces; only the wanted ones' spans are worth building.
    for resource_spans in &mut request.resource_spans {
        for scope_spans in &mut resource_spans.scope_spans {
            scope_spans.spans.retain(|span| wanted(&span.trace_id));
        }
    }
    let mut out: HashMap<TraceId, SpansWithEvents> = HashMap::new();
    for trace in traces {
        let events = decode::events(&request, *trace);
        if !events.is_empty() {
            out.entry(*trace).or_default().1 = events;
        }
    }
    for span in decode::spans(request).spans {
        out.entry(span.trace_id).or_default().0.push(span);
    }
    // Events of a span the decoder dropped belong to no span: a trace with no span is absent.
    out.retain(|_, (spans, _)| !spans.is_empty());
    Ok(out)
}

/// Largest decompressed size taken from a frame's header in one allocation: 64 MiB, near the
/// largest decoded export body the receivers accept by default (80 MiB); a larger one grows as
/// it decodes.
const MAX_SIZED_BYTES: u64 = 64 * 1024 * 1024;

thread_local! {
    /// Each thread's zstd decompression context and protobuf buffer, reused: the analysis reads
    /// hundreds of blocks a second, and a context and a buffer made for each one would be
    /// allocated, touched and freed per block.
    static DECOMPRESSOR: RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> =
        const { RefCell::new(None) };
}

/// Runs `read` over the protobuf of a block, decompressed into this thread's buffer in one go
/// at the size its frame header states (`compress` writes it), because stream decoding grows its
/// buffer step by step, copying it each time. A frame without a size, or claiming more than
/// `MAX_SIZED_BYTES`, is stream-decoded.
///
/// `read` must not read another block: the buffer is this call's until it returns.
fn with_protobuf<T>(data: &[u8], read: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    DECOMPRESSOR.with_borrow_mut(|reused| {
        let (decompressor, buffer) = reused.get_or_insert_with(|| {
            let decompressor =
                zstd::bulk::Decompressor::new().expect("zstd makes a decompression context");
            (decompressor, Vec::new())
        });
        buffer.clear();
        let decompressed = match zstd::zstd_safe::get_frame_content_size(data) {
            Ok(Some(size)) if size <= MAX_SIZED_BYTES => {
                buffer.reserve(size as usize);
                decompressor.decompress_to_buffer(data, buffer).map(drop)
            }
            _ => zstd::stream::copy_decode(data, &mut *buffer),
        };
        let result = decompressed.map(|()| read(buffer));
        if buffer.capacity() > MAX_KEPT_BUFFER {
            *buffer = Vec::new();
        }
        result
    })
}
