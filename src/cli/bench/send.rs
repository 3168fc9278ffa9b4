//! One keep-alive connection of the load: it sends exports, each stamped with the next sequence
//! number, until told to stop (closed loop: the next export goes out when the last is answered)
//! or, with `--rate`, at the times its [`Pacing`] gives until the deadline.
//!
//! Invariant: a send only stamps pre-built bytes, the same for HTTP and gRPC (where tonic frames
//! them and, with `--gzip`, compresses); nothing here builds or encodes a payload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prost::bytes::{Buf, BufMut};
use tokio::time::Instant;
use tonic::Status;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::pacing::Pacing;
use super::refusal::{Answer, Answered};
use super::{Protocol, Traffic};

/// The OTLP trace export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What every connection shares.
pub(super) struct Shared {
    pub(super) traffic: Arc<Traffic>,
    pub(super) sequence: AtomicU64,
    pub(super) stop: AtomicBool,
    /// Spans answered with success.
    pub(super) accepted: AtomicU64,
    /// Spans answered with an error (the server asked for a retry) or not answered.
    pub(super) refused: AtomicU64,
}

/// One connection's settings.
pub(super) struct Connection {
    pub(super) protocol: Protocol,
    pub(super) gzip: bool,
    pub(super) http_url: String,
    pub(super) grpc_url: String,
    /// Which of the connections this is: where it starts in the payloads, and its stagger.
    pub(super) worker: usize,
    /// When sending started: the schedule and the answers' times count from it.
    pub(super) started: Instant,
    /// With `--rate`: when exports are due, and the end of sending.
    pub(super) pacing: Option<(Pacing, Instant)>,
    /// The bearer token the server checks, if it checks one.
    pub(super) token: Option<String>,
}

/// What one connection saw.
pub(super) struct Sent {
    pub(super) latencies: Vec<Duration>,
    pub(super) answers: Vec<Answered>,
}

/// How long a refused export waits before the next, as an exporter told to retry would.
const BACK_OFF: Duration = Duration::from_millis(100);

/// Sends until stopped; returns each export's latency and answer.
pub(super) async fn run(connection: Connection, shared: Arc<Shared>) -> anyhow::Result<Sent> {
    let traffic = &shared.traffic;
    let n_payloads = traffic.requests.len();
    let n_spans = traffic.spans_per_export as u64;
    let http = reqwest::Client::new();
    let mut grpc = match connection.protocol {
        Protocol::Grpc => {
            let channel = Endpoint::from_shared(connection.grpc_url)?
                .connect()
                .await?;
            let client = tonic::client::Grpc::new(channel);
            Some(if connection.gzip {
                client.send_compressed(CompressionEncoding::Gzip)
            } else {
                client
            })
        }
        Protocol::Http | Protocol::Json => None,
    };
    let content_type = if connection.protocol == Protocol::Json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    let url = format!("{}/v1/traces", connection.http_url);
    let mut sent = Sent {
        latencies: Vec::new(),
        answers: Vec::new(),
    };
    let mut idx = connection.worker;
    for n_sent in 0.. {
        if shared.stop.load(Relaxed) {
            break;
        }
        if let Some((pacing, deadline)) = &connection.pacing {
            let due = connection.started + pacing.due(n_sent);
            if due >= *deadline {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        let seq = shared.sequence.fetch_add(1, Relaxed);
        let shift_ns = crate::time::now_unix_ns().saturating_sub(traffic.built_unix_ns);
        let sent_at = Instant::now();
        let body = traffic.bodies[idx % n_payloads].stamped(seq, shift_ns);
        let answer = match &mut grpc {
            Some(client) => match export(client, body, connection.token.as_deref()).await {
                Ok(()) => Answer::Acknowledged,
                Err(status) => Answer::grpc(status.code()),
            },
            None => {
                let mut request = http
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body);
                if connection.gzip {
                    request = request.header("content-encoding", "gzip");
                }
                if let Some(token) = &connection.token {
                    request = request.bearer_auth(token);
                }
                match request.send().await {
                    Ok(response) => Answer::http(
                        response.status().as_u16(),
                        response
                            .headers()
                            .get("retry-after")
                            .and_then(|value| value.to_str().ok()?.parse().ok()),
                    ),
                    Err(_) => Answer::Other,
                }
            }
        };
        sent.latencies.push(sent_at.elapsed());
        sent.answers.push(Answered {
            at: connection.started.elapsed(),
            answer,
        });
        let ok = answer == Answer::Acknowledged;
        let counter = if ok {
            &shared.accepted
        } else {
            &shared.refused
        };
        counter.fetch_add(n_spans, Relaxed);
        if !ok {
            tokio::time::sleep(BACK_OFF).await;
        }
        idx += 7;
    }
    Ok(sent)
}

/// One gRPC `Export` of an already encoded request, with `token` as its bearer token.
pub(super) async fn export(
    client: &mut tonic::client::Grpc<Channel>,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<(), Status> {
    client
        .ready()
        .await
        .map_err(|err| Status::unknown(format!("not connected: {err}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
    let mut request = tonic::Request::new(body);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("a token that cannot be a header"))?;
        request.metadata_mut().insert("authorization", value);
    }
    client.unary(request, path, PreEncoded).await.map(drop)
}

/// Sends a request's protobuf as it was encoded before the run, and reads no more of the answer
/// than its status: the client shares the machine with the server it measures, so every cycle it
/// spends per send is taken from the server.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, body: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&body);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        buf.advance(buf.remaining());
        Ok(Some(()))
    }
}
