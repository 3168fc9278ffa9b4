//! OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, gzip accepted.
//!
//! Answers as the OTLP/HTTP specification says: 200 with an `ExportTraceServiceResponse` in the
//! request's encoding (with `partial_success` when single spans were dropped), 400 for a body that
//! cannot be decoded, 413 over the size limits (wire, decoded, or inflation ratio: see
//! [`crate::otlp::body`]), 408 for a body not received within its deadline, 415 for another
//! content type or encoding, and 429/503 with `Retry-After` when the server cannot take the spans
//! now (a full queue, or the budget of body bytes in flight spent), 401 without an accepted bearer
//! token when tokens are configured. Error bodies are a `google.rpc.Status` in the request's
//! encoding.
//!
//! Invariant: never a 500 for bad client data, and never a 200 before the spans are committed.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use crate::auth::Tokens;
use crate::otlp::body::{self, BodyError, BodyPermit, Coding, Intake};
use crate::otlp::decode;
use crate::sink::{ExportRefused, IngestError, SpanSink, Transport};

/// The path OTLP exporters post traces to.
pub const TRACES_PATH: &str = "/v1/traces";

/// What the handler needs: where spans go, and how bodies may be read.
#[derive(Debug, Clone)]
struct Receiver {
    sink: SpanSink,
    intake: Intake,
}

/// A router answering `POST /v1/traces`, feeding `sink`, reading bodies under `intake`'s limits
/// and budget; with `tokens` enabled, only requests carrying one of them as a bearer token get
/// past the check, before the body is read.
pub fn router(sink: SpanSink, intake: Intake, tokens: Tokens) -> Router {
    let stats = sink.stats().clone();
    Router::new()
        .route(TRACES_PATH, post(traces_post))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let tokens = tokens.clone();
            let stats = stats.clone();
            async move {
                if !tokens.is_enabled()
                    || tokens.accepts_bearer(
                        request
                            .headers()
                            .get(header::AUTHORIZATION)
                            .map(HeaderValue::as_bytes),
                    )
                {
                    return next.run(request).await;
                }
                stats
                    .unauthenticated_requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let encoding =
                    Encoding::from_headers(request.headers()).unwrap_or(Encoding::Protobuf);
                let mut response = error_response(
                    encoding,
                    StatusCode::UNAUTHORIZED,
                    tonic::Code::Unauthenticated,
                    "a valid bearer token is required",
                    None,
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }))
        .with_state(Receiver { sink, intake })
}

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Self::Protobuf),
            "application/json" => Some(Self::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    fn receive(
        self,
        body: Bytes,
        budget: BodyPermit,
    ) -> Result<super::Received, decode::DecodeError> {
        match self {
            Self::Protobuf => super::Received::protobuf(body, budget),
            Self::Json => super::Received::json(&body, budget),
        }
    }

    fn body<M: Message + serde::Serialize>(self, message: &M) -> Vec<u8> {
        match self {
            Self::Protobuf => message.encode_to_vec(),
            Self::Json => serde_json::to_vec(message).expect("OTLP messages always serialize"),
        }
    }
}

async fn traces_post(State(receiver): State<Receiver>, request: Request) -> Response {
    let Receiver { sink, intake } = receiver;
    let stats = sink.stats();
    let (parts, body) = request.into_parts();
    let Some(encoding) = Encoding::from_headers(&parts.headers) else {
        stats.record_request(Transport::Http, 0);
        ExportRefused {
            reason: "unsupported_media_type",
            message: "content type must be application/x-protobuf or application/json".into(),
        }
        .emit(stats);
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/x-protobuf or application/json",
        )
            .into_response();
    };
    let read = match read_body(&parts.headers, body, &intake).await {
        Ok(read) => read,
        Err(err) => {
            stats.record_request(Transport::Http, 0);
            ExportRefused {
                reason: err.reason(),
                message: err.to_string(),
            }
            .emit(stats);
            return body_error_response(encoding, &err);
        }
    };
    stats.record_request(Transport::Http, read.wire_bytes as u64);
    let received = match encoding.receive(read.bytes, read.permit) {
        Ok(received) => received,
        Err(err) => {
            ExportRefused {
                reason: "undecodable",
                message: err.to_string(),
            }
            .emit(stats);
            return error_response(
                encoding,
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                &err.to_string(),
                None,
            );
        }
    };
    let partial_success = match super::ingest(&sink, received).await {
        Ok(partial_success) => partial_success,
        Err(err) => return ingest_error_response(encoding, &err),
    };
    let response = ExportTraceServiceResponse { partial_success };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        encoding.body(&response),
    )
        .into_response()
}

/// Reads the body as its headers describe it: declared length, gzip or not.
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    intake: &Intake,
) -> Result<body::ReadBody, BodyError> {
    let coding = Coding::parse(
        headers
            .get(header::CONTENT_ENCODING)
            .map(|value| value.to_str().unwrap_or("(not text)")),
    )?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    body::read(body, declared, coding, intake).await
}

/// The answer to a body that was not read: 413 over a size limit, 429 when the budget of bytes
/// in flight is spent, 408 past the deadline or after too long a pause, 415 for an unknown encoding, 400 otherwise.
fn body_error_response(encoding: Encoding, err: &BodyError) -> Response {
    let (status, code, retry_after) = match err {
        BodyError::WireTooLarge { .. }
        | BodyError::DecodedTooLarge { .. }
        | BodyError::InflationRatio { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
            None,
        ),
        BodyError::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
            Some(err.retry_after().as_secs()),
        ),
        BodyError::Deadline { .. } | BodyError::Stalled { .. } => (
            StatusCode::REQUEST_TIMEOUT,
            tonic::Code::DeadlineExceeded,
            None,
        ),
        BodyError::UnsupportedEncoding(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            None,
        ),
        BodyError::Corrupt | BodyError::Read(_) | BodyError::Malformed(_) => {
            (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, None)
        }
    };
    error_response(encoding, status, code, &err.to_string(), retry_after)
}

fn ingest_error_response(encoding: Encoding, err: &IngestError) -> Response {
    let (status, code) = match err {
        IngestError::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
        ),
        IngestError::ShuttingDown | IngestError::Store(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
        }
    };
    error_response(
        encoding,
        status,
        code,
        &err.to_string(),
        Some(err.retry_after().as_secs()),
    )
}

fn error_response(
    encoding: Encoding,
    status: StatusCode,
    code: tonic::Code,
    message: &str,
    retry_after_secs: Option<u64>,
) -> Response {
    let body = tonic_types::Status {
        code: code as i32,
        message: message.to_owned(),
        details: Vec::new(),
    };
    let body = match encoding {
        Encoding::Protobuf => body.encode_to_vec(),
        // tonic_types::Status has no serde; the JSON form of google.rpc.Status is this.
        Encoding::Json => serde_json::json!({ "code": body.code, "message": body.message })
            .to_string()
            .into_bytes(),
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use tower::ServiceExt;

    use super::*;
    use crate::otlp::body::BodyLimits;
    use crate::sink::IngestStats;

    fn one_span() -> Vec<u8> {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        };
        let scope_spans = vec![ScopeSpans {
            spans: vec![span],
            ..Default::default()
        }];
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans,
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn export() -> Request<Body> {
        Request::post(TRACES_PATH)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Body::from(one_span()))
            .unwrap()
    }

    const LIMITS: BodyLimits = BodyLimits {
        max_wire_bytes: 1 << 20,
        max_decoded_bytes: 1 << 20,
        max_inflation_ratio: 100,
        deadline: std::time::Duration::from_secs(10),
        max_pause: std::time::Duration::from_secs(10),
    };

    fn intake(limits: BodyLimits) -> Intake {
        Intake::new(limits, 64 << 20)
    }

    #[tokio::test]
    async fn full_queue_is_429_with_retry_after() {
        let (sink, mut exports) = SpanSink::channel(1, Arc::new(IngestStats::default()));
        let app = router(sink.clone(), intake(LIMITS), Tokens::default());
        // The first export takes the only slot and waits for a commit that has not happened yet.
        let first = tokio::spawn(app.clone().oneshot(export()));
        let queued = exports.recv().await.expect("the first export is queued");
        // Put it back in the queue's place: a second export finds the queue full.
        let blocker = sink
            .try_send(Default::default())
            .expect("the slot is free again");
        let res = app.clone().oneshot(export()).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(sink.stats().rejected("queue_full"), 1);
        // Once the store answers, the first export succeeds.
        queued.reply.send(Ok(())).unwrap();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        drop(blocker);
    }

    #[tokio::test]
    async fn store_failure_is_503_with_retry_after() {
        let (sink, mut exports) = SpanSink::channel(4, Arc::new(IngestStats::default()));
        let app = router(sink, intake(LIMITS), Tokens::default());
        let pending = tokio::spawn(app.oneshot(export()));
        let queued = exports.recv().await.unwrap();
        queued
            .reply
            .send(Err(crate::sink::CommitError("disk full".into())))
            .unwrap();
        let res = pending.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key(header::RETRY_AFTER));
    }

    #[tokio::test]
    async fn a_body_inflating_past_the_ratio_is_413() {
        use std::io::Write;
        let (sink, _exports) = SpanSink::channel(4, Arc::new(IngestStats::default()));
        let limits = BodyLimits {
            max_decoded_bytes: 64 << 20,
            ..LIMITS
        };
        let app = router(sink, intake(limits), Tokens::default());
        // 8 MiB of zeros: far under the absolute decoded limit, but a thousandfold inflation.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 8 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        let request = Request::post(TRACES_PATH)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::CONTENT_ENCODING, "gzip")
            .header(header::CONTENT_LENGTH, bomb.len())
            .body(Body::from(bomb))
            .unwrap();
        let res = app.oneshot(request).await.unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn without_an_accepted_token_is_401_before_the_body_is_read() {
        let (sink, _exports) = SpanSink::channel(4, Arc::new(IngestStats::default()));
        let app = router(
            sink.clone(),
            intake(LIMITS),
            Tokens::new(["t0ken".to_owned()]),
        );
        for authorization in [None, Some("Bearer wrong"), Some("Basic dDBrZW4=")] {
            let mut request = export();
            if let Some(value) = authorization {
                request
                    .headers_mut()
                    .insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            }
            let res = app.clone().oneshot(request).await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{authorization:?}");
            assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let body = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            let status = tonic_types::Status::decode(body).unwrap();
            assert_eq!(status.code, tonic::Code::Unauthenticated as i32);
        }
        assert_eq!(sink.queue_depth(), 0, "nothing was queued");
        assert_eq!(
            sink.stats()
                .unauthenticated_requests
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }
}
