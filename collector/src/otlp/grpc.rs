//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` through tonic.
//!
//! Status codes as the OTLP specification prescribes: INVALID_ARGUMENT never happens for a
//! decodable request (bad single spans go into `partial_success`); a full queue is
//! RESOURCE_EXHAUSTED with a `RetryInfo` detail, which makes it retryable for the exporters;
//! shutting down or a failing store is UNAVAILABLE; with tokens configured, a request without an
//! accepted bearer token in its `authorization` metadata is UNAUTHENTICATED.
//!
//! Invariant: success is answered only after the spans are committed.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::Tokens;
use crate::sink::{IngestError, SpanSink, Transport};

/// The gRPC trace receiver.
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    sink: SpanSink,
}

/// The token check in front of the receiver; it runs before the message is decoded.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    tokens: Tokens,
    sink: SpanSink,
}

impl Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.tokens.is_enabled()
            || self.tokens.accepts_bearer(
                request
                    .metadata()
                    .get("authorization")
                    .map(|value| value.as_bytes()),
            )
        {
            return Ok(request);
        }
        self.sink
            .stats()
            .unauthenticated_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(Status::unauthenticated("a valid bearer token is required"))
    }
}

/// The tonic service for `sink`, accepting gzip and messages up to `max_message_bytes`, and with
/// `tokens` enabled only requests that carry one of them.
pub fn service(
    sink: SpanSink,
    max_message_bytes: usize,
    tokens: Tokens,
) -> InterceptedService<TraceServiceServer<GrpcReceiver>, TokenCheck> {
    let server = TraceServiceServer::new(GrpcReceiver { sink: sink.clone() })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes);
    InterceptedService::new(server, TokenCheck { tokens, sink })
}

/// The receiver as an axum router, for serving beside the other listeners: an export still
/// running after `deadline` (a client that sent half a message and stalled) is answered
/// DEADLINE_EXCEEDED, which ends the stream and frees what it held.
pub fn router(
    sink: SpanSink,
    max_message_bytes: usize,
    tokens: Tokens,
    deadline: Duration,
) -> axum::Router {
    tonic::service::Routes::new(service(sink, max_message_bytes, tokens))
        .into_axum_router()
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(deadline, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => Status::deadline_exceeded("the export took too long")
                        .into_http::<axum::body::Body>(),
                }
            },
        ))
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
        let partial_success = super::ingest(&self.sink, request, None)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}
