//! OTLP: decoding into the span model, normalization, encoding back (for storage), and the two
//! transport adapters. The adapters are thin: decode, push into the sink, wait for the commit.

pub mod decode;
pub mod encode;
pub mod grpc;
pub mod http;
pub mod normalize;

use std::sync::atomic::Ordering::Relaxed;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};

use crate::sink::{IngestError, SpanSink, SpansRejected};

/// What both transports do with a decoded request: validate its spans, queue the good ones, wait
/// for their commit, and say which were dropped (`None` when none were).
pub(crate) async fn ingest(
    sink: &SpanSink,
    request: ExportTraceServiceRequest,
) -> Result<Option<ExportTracePartialSuccess>, IngestError> {
    let stats = sink.stats();
    let decoded = decode::spans(request);
    if decoded.n_truncated_values > 0 {
        stats
            .values_truncated
            .fetch_add(decoded.n_truncated_values, Relaxed);
    }
    if decoded.n_rejected > 0 {
        SpansRejected {
            n_spans: decoded.n_rejected,
            reason: "invalid_span",
        }
        .emit(stats);
    }
    if !decoded.spans.is_empty() {
        sink.try_send(decoded.spans)?.wait().await?;
    }
    Ok((decoded.n_rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(decoded.n_rejected).unwrap_or(i64::MAX),
        error_message: decoded.first_rejection.unwrap_or_default(),
    }))
}
