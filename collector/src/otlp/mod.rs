//! OTLP: decoding into the span model (whole, or `sparse`ly for readers of a few attributes),
//! checking exports without building them (`check`), normalization, encoding back (for storage),
//! and the two transport adapters. The adapters are thin: check, push into the sink, wait for the
//! commit.

pub mod body;
pub mod check;
pub mod decode;
pub mod encode;
pub mod grpc;
pub mod http;
pub mod normalize;
pub mod sparse;
mod wire;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
use prost::Message;

use crate::block;
use crate::otlp::body::BodyPermit;
use crate::sink::{IngestError, SpanSink, SpansRejected};

/// An export as received, ready to queue: its OTLP protobuf, what decoding it keeps, and the
/// share of the body budget its bytes hold until they are packed.
pub(crate) struct Received {
    protobuf: Bytes,
    accepted: decode::Accepted,
    budget: BodyPermit,
}

impl Received {
    /// An export received as OTLP protobuf (over HTTP or gRPC): checked, not built, and kept as
    /// the bytes received.
    pub(crate) fn protobuf(body: Bytes, budget: BodyPermit) -> Result<Self, decode::DecodeError> {
        Ok(Received {
            accepted: check::accept(&body)?,
            protobuf: body,
            budget,
        })
    }

    /// An export received as OTLP/JSON, encoded once as protobuf for storage.
    pub(crate) fn json(body: &[u8], budget: BodyPermit) -> Result<Self, decode::DecodeError> {
        let request = decode::json(body)?;
        Ok(Received {
            accepted: decode::accept(&request),
            protobuf: request.encode_to_vec().into(),
            budget,
        })
    }
}

/// What both transports do with a received export: queue its good spans packed in a block, wait
/// for their commit, and say which were dropped (`None` when none were). Only the compact block
/// is held while the commit is awaited: the body's bytes and their budget are given back first.
pub(crate) async fn ingest(
    sink: &SpanSink,
    received: Received,
) -> Result<Option<ExportTracePartialSuccess>, IngestError> {
    let stats = sink.stats();
    let received_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let Received {
        protobuf,
        accepted,
        budget,
    } = received;
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
        drop(budget);
        sink.try_send(block)?.wait().await?;
    }
    Ok((n_rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(n_rejected).unwrap_or(i64::MAX),
        error_message: first_rejection.unwrap_or_default(),
    }))
}
