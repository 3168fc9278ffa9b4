//! OTLP: decoding into the span model (whole, or `sparse`ly for readers of a few attributes),
//! normalization, encoding back (for storage), and the two
//! transport adapters. The adapters are thin: decode, push into the sink, wait for the commit.

pub mod decode;
pub mod encode;
pub mod grpc;
pub mod http;
pub mod normalize;
pub mod sparse;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use prost::Message;

use crate::block;
use crate::sink::{IngestError, SpanSink, SpansRejected};

/// What both transports do with a decoded request: validate its spans, queue the good ones packed
/// in a block, wait for their commit, and say which were dropped (`None` when none were).
/// `protobuf` is the request as received when it came as OTLP protobuf (over HTTP or gRPC);
/// otherwise (JSON) the request is encoded here. Both are let go once packed, so only the compact
/// block is held while the commit is awaited.
pub(crate) async fn ingest(
    sink: &SpanSink,
    request: ExportTraceServiceRequest,
    protobuf: Option<Bytes>,
) -> Result<Option<ExportTracePartialSuccess>, IngestError> {
    let stats = sink.stats();
    let received_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let protobuf = protobuf.unwrap_or_else(|| request.encode_to_vec().into());
    let accepted = decode::accept(&request);
    drop(request);
    let n_rejected = accepted.n_rejected;
    let first_rejection = accepted.first_rejection.clone();
    if accepted.n_truncated_values > 0 {
        stats
            .values_truncated
            .fetch_add(accepted.n_truncated_values, Relaxed);
    }
    if n_rejected > 0 {
        SpansRejected {
            n_spans: n_rejected,
            reason: "invalid_span",
        }
        .emit(stats);
    }
    if accepted.n_spans > 0 {
        let block = block::pack(&protobuf, accepted, received_unix_ns);
        drop(protobuf);
        sink.try_send(block)?.wait().await?;
    }
    Ok((n_rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(n_rejected).unwrap_or(i64::MAX),
        error_message: first_rejection.unwrap_or_default(),
    }))
}
