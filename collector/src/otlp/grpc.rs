//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` through tonic.
//!
//! Status codes as the OTLP specification prescribes: INVALID_ARGUMENT only for a message that
//! does not decode (bad single spans go into `partial_success`); a full queue is
//! RESOURCE_EXHAUSTED with a `RetryInfo` detail, which makes it retryable for the exporters;
//! shutting down or a failing store is UNAVAILABLE; with tokens configured, a request without an
//! accepted bearer token in its `authorization` metadata is UNAUTHENTICATED.
//!
//! Invariant: success is answered only after the spans are committed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::SERVICE_NAME;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::Tokens;
use crate::sink::{IngestError, SpanSink, SpansRejected, Transport};

/// The one method served.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC trace receiver: `TraceService/Export` served with tonic's own gRPC machinery
/// (framing, gzip, message size limit, status trailers) but a codec that hands over the message
/// as received. The generated `TraceServiceServer` decodes it into an
/// `ExportTraceServiceRequest`, which then had to be encoded again for the block: 40% more
/// instructions per export than OTLP/HTTP, whose bytes are stored as they came (docs/benchmarks-history.md).
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    sink: SpanSink,
    max_message_bytes: usize,
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
) -> InterceptedService<GrpcReceiver, TokenCheck> {
    let receiver = GrpcReceiver {
        sink: sink.clone(),
        max_message_bytes,
    };
    InterceptedService::new(receiver, TokenCheck { tokens, sink })
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

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl NamedService for GrpcReceiver {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for GrpcReceiver
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("only TraceService/Export is served").into_http())
            });
        }
        let export = Export {
            sink: self.sink.clone(),
        };
        let max_message_bytes = self.max_message_bytes;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(ReceivedCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max_message_bytes), None);
            Ok(grpc.unary(export, request).await)
        })
    }
}

/// One call of the Export method, on the message as received.
struct Export {
    sink: SpanSink,
}

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Result<Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let sink = self.sink.clone();
        Box::pin(async move {
            let protobuf = request.into_inner();
            let stats = sink.stats();
            stats.record_request(Transport::Grpc, protobuf.len() as u64);
            let received = super::Received::protobuf(protobuf).map_err(|err| {
                SpansRejected {
                    n_spans: 0,
                    reason: "undecodable",
                }
                .emit(stats);
                Status::invalid_argument(err.to_string())
            })?;
            let partial_success = super::ingest(&sink, received)
                .await
                .map_err(|e| to_status(&e))?;
            Ok(Response::new(ExportTraceServiceResponse {
                partial_success,
            }))
        })
    }
}

/// Answers are encoded by prost; requests are passed on as the bytes of the message.
#[derive(Debug, Clone, Copy, Default)]
struct ReceivedCodec;

impl Codec for ReceivedCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = Received;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Received
    }
}

/// The decoder that does not decode: tonic has already unframed (and unzipped) the message.
#[derive(Debug, Clone, Copy, Default)]
struct Received;

impl Decoder for Received {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}
