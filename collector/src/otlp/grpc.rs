//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` through tonic.
//!
//! Status codes as the OTLP specification prescribes: INVALID_ARGUMENT only for a message that
//! does not decode (bad single spans go into `partial_success`); a full queue is
//! RESOURCE_EXHAUSTED with a `RetryInfo` detail, which makes it retryable for the exporters;
//! shutting down or a failing store is UNAVAILABLE; with tokens configured, a request without an
//! accepted bearer token in its `authorization` metadata is UNAUTHENTICATED.
//!
//! The request body is read and a gzip message inflated here, under the same limits and budget
//! as OTLP/HTTP bodies ([`crate::otlp::body`]), before tonic sees it: tonic would inflate a
//! compressed message up to the message size limit whatever its size on the wire. Over a limit
//! is RESOURCE_EXHAUSTED (with `RetryInfo` only when the budget of bytes in flight is spent, the
//! one case where retrying helps); a body not received in time is DEADLINE_EXCEEDED.
//!
//! Invariant: success is answered only after the spans are committed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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
use crate::otlp::body::{self, BodyError, BodyLimits, BodyPermit, Coding, Intake};
use crate::sink::{ExportRefused, IngestError, SpanSink, Transport};

/// The one method served.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC trace receiver: `TraceService/Export` served with tonic's own gRPC machinery
/// (framing, gzip, message size limit, status trailers) but a codec that hands over the message
/// as received, so that its bytes are stored as they came, as OTLP/HTTP's are. The generated
/// `TraceServiceServer` would decode it into an `ExportTraceServiceRequest` that must then be
/// encoded again for the block, a large extra cost per export (docs/benchmarks-history.md).
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    sink: SpanSink,
    intake: Intake,
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

/// The tonic service for `sink`, accepting gzip and reading messages under `intake`'s limits and
/// budget, and with `tokens` enabled only requests that carry one of them.
pub fn service(
    sink: SpanSink,
    intake: Intake,
    tokens: Tokens,
) -> InterceptedService<GrpcReceiver, TokenCheck> {
    let receiver = GrpcReceiver {
        sink: sink.clone(),
        intake,
    };
    InterceptedService::new(receiver, TokenCheck { tokens, sink })
}

/// The receiver as an axum router, for serving beside the other listeners: an export still
/// running after `deadline` (a client that sent half a message and stalled) is answered
/// DEADLINE_EXCEEDED, which ends the stream and frees what it held.
pub fn router(sink: SpanSink, intake: Intake, tokens: Tokens, deadline: Duration) -> axum::Router {
    tonic::service::Routes::new(service(sink, intake, tokens))
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

fn body_status(err: &BodyError) -> Status {
    match err {
        BodyError::WireTooLarge { .. }
        | BodyError::DecodedTooLarge { .. }
        | BodyError::InflationRatio { .. } => Status::resource_exhausted(err.to_string()),
        BodyError::Busy => Status::with_error_details(
            Code::ResourceExhausted,
            err.to_string(),
            ErrorDetails::with_retry_info(Some(err.retry_after())),
        ),
        BodyError::Deadline { .. } | BodyError::Stalled { .. } => {
            Status::deadline_exceeded(err.to_string())
        }
        BodyError::UnsupportedEncoding(_) => Status::unimplemented(err.to_string()),
        BodyError::Corrupt | BodyError::Read(_) | BodyError::Malformed(_) => {
            Status::invalid_argument(err.to_string())
        }
    }
}

/// The 5-byte prefix of a gRPC message: a compressed flag and the length.
const FRAME_HEADER: usize = 5;

/// The budget held by a request's bytes, handed through tonic to the export in the request's
/// extensions (which must be `Clone`); the export takes it out and gives it back once packed.
#[derive(Debug, Clone, Default)]
struct HeldBudget(Arc<Mutex<Option<BodyPermit>>>);

impl HeldBudget {
    fn take(&self) -> Option<BodyPermit> {
        self.0.lock().ok()?.take()
    }
}

/// Reads the request's body whole under the limits and budget and, if its one message is gzip,
/// inflates it under the inflation ratio; tonic then gets the message uncompressed.
async fn receive_message<B>(
    request: http::Request<B>,
    intake: &Intake,
) -> Result<http::Request<Pieces>, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (mut parts, body) = request.into_parts();
    let coding = Coding::parse(
        parts
            .headers
            .get("grpc-encoding")
            .map(|value| value.to_str().unwrap_or("(not text)")),
    );
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    // The wire limit is on the message; the frame's prefix comes on top.
    let wire = Intake {
        limits: BodyLimits {
            max_wire_bytes: intake.limits.max_wire_bytes + FRAME_HEADER,
            ..intake.limits
        },
        budget: intake.budget.clone(),
    };
    let read = body::read(body, declared, Coding::Identity, &wire).await?;
    let held = HeldBudget::default();
    let bytes = read.bytes;
    let pieces = match (coding, compressed_message(&bytes)?) {
        (Ok(Coding::Gzip), Some(message)) => {
            let inflated = body::inflate(message, intake.limits, read.permit)?;
            parts.headers.remove("grpc-encoding");
            let mut header = [0u8; FRAME_HEADER];
            let len = u32::try_from(inflated.bytes.len()).expect("under the decoded limit");
            header[1..].copy_from_slice(&len.to_be_bytes());
            *held.0.lock().expect("not shared yet") = Some(inflated.permit);
            Pieces::from([Bytes::copy_from_slice(&header), inflated.bytes])
        }
        // Anything else goes to tonic as it came, and tonic answers it (an uncompressed message,
        // an unknown encoding, a cut-off frame).
        _ => {
            *held.0.lock().expect("not shared yet") = Some(read.permit);
            Pieces::from([bytes])
        }
    };
    parts.extensions.insert(held);
    Ok(http::Request::from_parts(parts, pieces))
}

/// The payload of a body whose first message has the compressed flag set and arrived whole;
/// `None` for anything tonic answers itself (no message, an uncompressed or a cut-off one).
/// More than the one message Export takes is refused, so that tonic never inflates one.
fn compressed_message(body: &[u8]) -> Result<Option<&[u8]>, BodyError> {
    let Some((header, payload)) = body.split_at_checked(FRAME_HEADER) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if payload.len() > len {
        return Err(BodyError::Malformed(
            "an Export request carries one message".into(),
        ));
    }
    Ok((header[0] == 1 && payload.len() == len).then_some(payload))
}

/// A request body already in memory, in pieces.
#[derive(Debug, Default)]
struct Pieces(VecDeque<Bytes>);

impl<const N: usize> From<[Bytes; N]> for Pieces {
    fn from(pieces: [Bytes; N]) -> Self {
        Pieces(pieces.into_iter().collect())
    }
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.0
                .pop_front()
                .map(|piece| Ok(http_body::Frame::data(piece))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl NamedService for GrpcReceiver {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for GrpcReceiver
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display + Send + 'static,
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
        let intake = self.intake.clone();
        let max_message_bytes = intake.limits.max_decoded_bytes;
        Box::pin(async move {
            let request = match receive_message(request, &intake).await {
                Ok(request) => request,
                Err(err) => {
                    let stats = export.sink.stats();
                    stats.record_request(Transport::Grpc, 0);
                    ExportRefused {
                        reason: err.reason(),
                        message: err.to_string(),
                    }
                    .emit(stats);
                    return Ok(body_status(&err).into_http());
                }
            };
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
            let budget = request
                .extensions()
                .get::<HeldBudget>()
                .and_then(HeldBudget::take)
                .expect("receive_message hands every request its budget");
            let protobuf = request.into_inner();
            let stats = sink.stats();
            stats.record_request(Transport::Grpc, protobuf.len() as u64);
            let received = super::Received::protobuf(protobuf, budget).map_err(|err| {
                ExportRefused {
                    reason: "undecodable",
                    message: err.to_string(),
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
