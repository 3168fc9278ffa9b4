//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` through tonic.
//!
//! Status codes as the OTLP specification prescribes: INVALID_ARGUMENT never happens for a
//! decodable request (bad single spans go into `partial_success`); a full queue is
//! RESOURCE_EXHAUSTED with a `RetryInfo` detail, which makes it retryable for the exporters;
//! shutting down or a failing store is UNAVAILABLE.
//!
//! Invariant: success is answered only after the spans are committed.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::sink::{IngestError, SpanSink, Transport};

/// The gRPC trace receiver.
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    sink: SpanSink,
}

/// The tonic service for `sink`, accepting gzip and messages up to `max_message_bytes`.
pub fn service(sink: SpanSink, max_message_bytes: usize) -> TraceServiceServer<GrpcReceiver> {
    TraceServiceServer::new(GrpcReceiver { sink })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes)
}

fn to_status(err: &IngestError) -> Status {
    match err {
        IngestError::Busy => Status::with_error_details(
            Code::ResourceExhausted,
            err.to_string(),
            ErrorDetails::with_retry_info(Some(err.retry_after())),
        ),
        IngestError::ShuttingDown | IngestError::Store(_) => Status::unavailable(err.to_string()),
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        let stats = self.sink.stats();
        stats.record_request(Transport::Grpc, request.encoded_len() as u64);
        let partial_success = super::ingest(&self.sink, request)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}
