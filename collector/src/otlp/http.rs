//! OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, gzip accepted.
//!
//! Answers as the OTLP/HTTP specification says: 200 with an `ExportTraceServiceResponse` in the
//! request's encoding (with `partial_success` when single spans were dropped), 400 for a body that
//! cannot be decoded, 413 over the size limits, 415 for another content type, and 429/503 with
//! `Retry-After` when the server cannot take the spans now, 401 without an accepted bearer token
//! when tokens are configured. Error bodies are a `google.rpc.Status` in the request's encoding.
//!
//! Invariant: never a 500 for bad client data, and never a 200 before the spans are committed.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::auth::Tokens;
use crate::otlp::decode;
use crate::sink::{IngestError, SpanSink, SpansRejected, Transport};

/// Size limits of an OTLP/HTTP body.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest body accepted as sent on the wire (compressed or not).
    pub max_wire_bytes: usize,
    /// Largest body accepted after gzip is undone; this is what caps a gzip bomb.
    pub max_decoded_bytes: usize,
}

/// Most a compressed body may grow when inflated, relative to its size on the wire. Real OTLP
/// exports compress 5 to 20 times; a gzip bomb compresses a thousand times. The ratio stops a
/// small bomb long before the absolute `max_decoded_bytes`, so concurrent bombs cannot each take
/// that much memory.
pub const MAX_INFLATION_RATIO: usize = 100;

/// A decoded size no body is refused under, however small on the wire.
const MIN_INFLATION_CAP: usize = 1 << 20;

/// The inflated size allowed for one compressed request, found before decompression.
#[derive(Debug, Clone, Copy)]
struct InflationCap(usize);

/// The path OTLP exporters post traces to.
pub const TRACES_PATH: &str = "/v1/traces";

/// A router answering `POST /v1/traces`, feeding `sink`; with `tokens` enabled, only requests
/// carrying one of them as a bearer token get past the check, before the body is read.
pub fn router(sink: SpanSink, limits: HttpLimits, tokens: Tokens) -> Router {
    let stats = sink.stats().clone();
    Router::new()
        .route(TRACES_PATH, post(traces_post))
        // The decoded limit applies to the body after decompression (axum's Bytes extractor),
        // the wire limit to what the client sends; both answer 413.
        .layer(DefaultBodyLimit::max(limits.max_decoded_bytes))
        .layer(middleware::from_fn(limit_inflation))
        .layer(
            RequestDecompressionLayer::new()
                .gzip(true)
                .pass_through_unaccepted(false),
        )
        .layer(middleware::from_fn(measure_compressed))
        .layer(RequestBodyLimitLayer::new(limits.max_wire_bytes))
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
        .with_state(sink)
}

/// Before decompression: a compressed body with a known length may inflate to at most
/// [`MAX_INFLATION_RATIO`] times that length.
async fn measure_compressed(mut request: Request, next: Next) -> Response {
    let compressed = request.headers().contains_key(header::CONTENT_ENCODING);
    let wire_bytes = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let (true, Some(wire_bytes)) = (compressed, wire_bytes) {
        let cap = wire_bytes
            .saturating_mul(MAX_INFLATION_RATIO)
            .max(MIN_INFLATION_CAP);
        request.extensions_mut().insert(InflationCap(cap));
    }
    next.run(request).await
}

/// After decompression: reading past the cap fails the body, which the handler answers 413.
async fn limit_inflation(request: Request, next: Next) -> Response {
    let Some(InflationCap(cap)) = request.extensions().get::<InflationCap>().copied() else {
        return next.run(request).await;
    };
    let request =
        request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, cap)));
    next.run(request).await
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

    fn receive(self, body: Bytes) -> Result<super::Received, decode::DecodeError> {
        match self {
            Self::Protobuf => super::Received::protobuf(body),
            Self::Json => super::Received::json(&body),
        }
    }

    fn body<M: Message + serde::Serialize>(self, message: &M) -> Vec<u8> {
        match self {
            Self::Protobuf => message.encode_to_vec(),
            Self::Json => serde_json::to_vec(message).expect("OTLP messages always serialize"),
        }
    }
}

async fn traces_post(State(sink): State<SpanSink>, headers: HeaderMap, body: Bytes) -> Response {
    let stats = sink.stats();
    let wire_bytes = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(body.len() as u64);
    stats.record_request(Transport::Http, wire_bytes);
    let Some(encoding) = Encoding::from_headers(&headers) else {
        SpansRejected {
            n_spans: 0,
            reason: "unsupported_media_type",
        }
        .emit(stats);
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/x-protobuf or application/json",
        )
            .into_response();
    };
    let received = match encoding.receive(body) {
        Ok(received) => received,
        Err(err) => {
            SpansRejected {
                n_spans: 0,
                reason: "undecodable",
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

    const LIMITS: HttpLimits = HttpLimits {
        max_wire_bytes: 1 << 20,
        max_decoded_bytes: 1 << 20,
    };

    #[tokio::test]
    async fn full_queue_is_429_with_retry_after() {
        let (sink, mut exports) = SpanSink::channel(1, Arc::new(IngestStats::default()));
        let app = router(sink.clone(), LIMITS, Tokens::default());
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
        let app = router(sink, LIMITS, Tokens::default());
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
        let limits = HttpLimits {
            max_wire_bytes: 1 << 20,
            max_decoded_bytes: 64 << 20,
        };
        let app = router(sink, limits, Tokens::default());
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
        let app = router(sink.clone(), LIMITS, Tokens::new(["t0ken".to_owned()]));
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
