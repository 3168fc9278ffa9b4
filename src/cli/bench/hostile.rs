//! `--hostile`, the inputs: a steady trickle of what broken or hostile clients send, one input
//! every [`EVERY`], round robin over the [`Kind`]s, beside the normal load for the whole run.
//! Each input is sent on its own and its answer tallied by kind: the status, the gRPC code, a
//! connection closed without an answer, or no answer at all.
//!
//! Invariant: every input is one the server must refuse (the unit tests check each against the
//! receivers' own decoders); an input answered 2xx or OK is counted as such, never retried or
//! hidden.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::transport::Endpoint;

use super::payload::{self, kv, text};
use super::send;
use crate::time::now_unix_ns;

/// How often a hostile input goes out: a trickle beside the load, not a flood.
pub(super) const EVERY: Duration = Duration::from_millis(200);

/// Zeros in the gzip bomb: past the inflation ratio whatever the wire size, and under the
/// decoded cap, so that only the ratio check stops it.
const BOMB_ZEROS: usize = 16 << 20;

/// The bomb's slow client: a piece of its wire bytes at a time, with a pause after each.
const BOMB_PIECE: usize = 1024;
const BOMB_PAUSE: Duration = Duration::from_millis(10);

/// The attribute that makes the gRPC bomb: one letter repeated compresses a thousandfold.
const GRPC_BOMB_BYTES: usize = 4 << 20;

/// What the oversized and stalled bodies declare.
const OVERSIZED_DECLARED: u64 = 1 << 30;
const STALLED_DECLARED: u64 = 1 << 20;

/// The longest any input may wait for its answer: the server answers a silent body after its
/// 30 s pause limit and a trickling one at its 60 s deadline by default; past this the input
/// counts as unanswered.
const ANSWER_WITHIN: Duration = Duration::from_secs(90);

/// What a hostile client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    ChunkedGzipBomb,
    GrpcGzipBomb,
    TruncatedProtobuf,
    GarbageProtobuf,
    GarbageGrpc,
    JsonWrongTypes,
    OversizedBody,
    BadToken,
    BadTokenGrpc,
    StalledBody,
    StalledHead,
}

impl Kind {
    pub(super) const ALL: [Kind; 11] = [
        Kind::ChunkedGzipBomb,
        Kind::GrpcGzipBomb,
        Kind::TruncatedProtobuf,
        Kind::GarbageProtobuf,
        Kind::GarbageGrpc,
        Kind::JsonWrongTypes,
        Kind::OversizedBody,
        Kind::BadToken,
        Kind::BadTokenGrpc,
        Kind::StalledBody,
        Kind::StalledHead,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::ChunkedGzipBomb => {
                "gzip bomb, chunked HTTP/1.1 without a length, 1 KiB every 10 ms (16 MiB of zeros)"
            }
            Kind::GrpcGzipBomb => "gRPC message gzip-compressed a thousandfold (4 MiB attribute)",
            Kind::TruncatedProtobuf => "protobuf export cut 3 bytes short",
            Kind::GarbageProtobuf => "4 KiB of random bytes as protobuf",
            Kind::GarbageGrpc => "4 KiB of random bytes as a gRPC message",
            Kind::JsonWrongTypes => "JSON with wrong types (`\"resourceSpans\": 7`)",
            Kind::OversizedBody => "body declaring 1 GiB",
            Kind::BadToken => "OTLP/HTTP export with a wrong token",
            Kind::BadTokenGrpc => "OTLP/gRPC export with a wrong token",
            Kind::StalledBody => "stalled body: 4 of 1 MiB declared, then silence",
            Kind::StalledHead => "stalled request head (slow-loris)",
        }
    }
}

/// How the server answered an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Reply {
    Http(u16),
    /// A gRPC status code.
    Grpc(i32),
    /// The server closed the connection without an answer.
    Closed,
    /// No answer within [`ANSWER_WITHIN`], or the client failed.
    NoAnswer,
}

impl Reply {
    /// The server took the input: a failure of the run.
    pub(super) fn accepted(self) -> bool {
        match self {
            Reply::Http(status) => (200..300).contains(&status),
            Reply::Grpc(code) => code == tonic::Code::Ok as i32,
            Reply::Closed | Reply::NoAnswer => false,
        }
    }

    pub(super) fn label(self) -> String {
        match self {
            Reply::Http(status) => status.to_string(),
            Reply::Grpc(code) => format!("{:?}", tonic::Code::from_i32(code)),
            Reply::Closed => "closed without an answer".to_owned(),
            Reply::NoAnswer => "no answer".to_owned(),
        }
    }
}

/// Every input's answer, by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tally {
    pub(super) replies: BTreeMap<Kind, BTreeMap<Reply, u64>>,
}

impl Tally {
    pub(super) fn record(&mut self, kind: Kind, reply: Reply) {
        *self
            .replies
            .entry(kind)
            .or_default()
            .entry(reply)
            .or_default() += 1;
    }

    fn count(&self, which: impl Fn(Reply) -> bool) -> u64 {
        self.replies
            .values()
            .flat_map(|replies| replies.iter())
            .filter(|(reply, _)| which(**reply))
            .map(|(_, n)| n)
            .sum()
    }

    pub(super) fn sent(&self) -> u64 {
        self.count(|_| true)
    }

    pub(super) fn accepted(&self) -> u64 {
        self.count(Reply::accepted)
    }

    pub(super) fn unanswered(&self) -> u64 {
        self.count(|reply| reply == Reply::NoAnswer)
    }
}

/// Where the inputs go and the bodies they carry, built once before the run.
pub(super) struct Inputs {
    /// `host:port` of the OTLP/HTTP listener, for the inputs written byte by byte.
    pub(super) http_host: String,
    pub(super) http_url: String,
    pub(super) grpc_url: String,
    /// The ingest token the server accepts: every input but the bad-token ones carries it, so
    /// that it reaches the check it is meant for.
    pub(super) token: String,
    client: reqwest::Client,
    gzip_bomb: Vec<u8>,
    grpc_bomb: Vec<u8>,
    truncated: Vec<u8>,
    garbage: Vec<u8>,
    export: Vec<u8>,
}

impl Inputs {
    pub(super) fn build(http_url: &str, grpc_url: &str, token: &str) -> anyhow::Result<Inputs> {
        Ok(Inputs {
            http_host: http_url.trim_start_matches("http://").to_owned(),
            http_url: http_url.to_owned(),
            grpc_url: grpc_url.to_owned(),
            token: token.to_owned(),
            client: reqwest::Client::builder().timeout(ANSWER_WITHIN).build()?,
            gzip_bomb: gzip_bomb(),
            grpc_bomb: compressible_export(GRPC_BOMB_BYTES),
            truncated: truncated_export(),
            garbage: garbage(),
            export: export(),
        })
    }
}

/// gzip of [`BOMB_ZEROS`] zeros.
fn gzip_bomb() -> Vec<u8> {
    payload::gzipped(&vec![0; BOMB_ZEROS], flate2::Compression::best())
}

/// A small valid export, like the normal load's.
fn export() -> Vec<u8> {
    payload::payload(&mut SmallRng::seed_from_u64(31), 10, now_unix_ns()).encode_to_vec()
}

/// A valid export with one attribute of `n_bytes` of the same letter.
fn compressible_export(n_bytes: usize) -> Vec<u8> {
    let mut request = payload::payload(&mut SmallRng::seed_from_u64(37), 10, now_unix_ns());
    request.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(kv("padding", text(&"a".repeat(n_bytes))));
    request.encode_to_vec()
}

/// An export cut short: the length of its outer message now runs past the end.
fn truncated_export() -> Vec<u8> {
    let mut body = export();
    body.truncate(body.len() - 3);
    body
}

/// Random bytes, the same each run.
fn garbage() -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(41);
    (0..4096).map(|_| rng.random()).collect()
}

const JSON_WRONG_TYPES: &str = r#"{"resourceSpans": 7}"#;

/// Sends the inputs until `deadline`, and every kind at least once however short the run, then
/// waits for the answers of those in flight.
pub(super) async fn run(inputs: Arc<Inputs>, deadline: Instant) -> Tally {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(EVERY);
    for (n_sent, &kind) in Kind::ALL.iter().cycle().enumerate() {
        ticks.tick().await;
        if Instant::now() >= deadline && n_sent >= Kind::ALL.len() {
            break;
        }
        let inputs = Arc::clone(&inputs);
        in_flight.spawn(async move {
            let reply = tokio::time::timeout(ANSWER_WITHIN, send_one(kind, &inputs))
                .await
                .unwrap_or(Reply::NoAnswer);
            (kind, reply)
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = in_flight.join_next().await {
        match done {
            Ok((kind, reply)) => tally.record(kind, reply),
            Err(err) => panic!("a hostile input's task failed: {err}"),
        }
    }
    tally
}

async fn send_one(kind: Kind, inputs: &Inputs) -> Reply {
    let token = Some(inputs.token.as_str());
    match kind {
        Kind::ChunkedGzipBomb => chunked_gzip_bomb(inputs).await,
        Kind::GrpcGzipBomb => grpc(inputs, inputs.grpc_bomb.clone(), token, true).await,
        Kind::TruncatedProtobuf => http(inputs, PROTOBUF, inputs.truncated.clone(), token).await,
        Kind::GarbageProtobuf => http(inputs, PROTOBUF, inputs.garbage.clone(), token).await,
        Kind::GarbageGrpc => grpc(inputs, inputs.garbage.clone(), token, false).await,
        Kind::JsonWrongTypes => http(inputs, JSON, JSON_WRONG_TYPES.into(), token).await,
        Kind::OversizedBody => {
            let head = request_head(
                &inputs.token,
                &format!("Content-Length: {OVERSIZED_DECLARED}"),
            );
            raw(inputs, head + "0123", None).await
        }
        Kind::BadToken => http(inputs, PROTOBUF, inputs.export.clone(), Some("wrong")).await,
        Kind::BadTokenGrpc => grpc(inputs, inputs.export.clone(), Some("wrong"), false).await,
        Kind::StalledBody => {
            let head = request_head(
                &inputs.token,
                &format!("Content-Length: {STALLED_DECLARED}"),
            );
            raw(inputs, head + "0123", None).await
        }
        Kind::StalledHead => {
            raw(
                inputs,
                "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-".into(),
                None,
            )
            .await
        }
    }
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

async fn http(inputs: &Inputs, content_type: &str, body: Vec<u8>, token: Option<&str>) -> Reply {
    let mut request = inputs
        .client
        .post(format!("{}/v1/traces", inputs.http_url))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) => Reply::Http(response.status().as_u16()),
        Err(_) => Reply::NoAnswer,
    }
}

async fn grpc(inputs: &Inputs, body: Vec<u8>, token: Option<&str>, gzip: bool) -> Reply {
    let Ok(endpoint) = Endpoint::from_shared(inputs.grpc_url.clone()) else {
        return Reply::NoAnswer;
    };
    let Ok(channel) = endpoint.connect().await else {
        return Reply::NoAnswer;
    };
    let mut client = tonic::client::Grpc::new(channel);
    if gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    match send::export(&mut client, body, token).await {
        Ok(()) => Reply::Grpc(tonic::Code::Ok as i32),
        Err(status) => Reply::Grpc(status.code() as i32),
    }
}

/// The head of an OTLP/HTTP protobuf export carrying `token`, with one more header line.
fn request_head(token: &str, header: &str) -> String {
    format!(
        "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-protobuf\r\n{header}\r\n\r\n"
    )
}

/// Writes `text` on a connection of its own, then `pieces` with a pause after each until the
/// server answers, and reads the answer's status.
async fn raw(inputs: &Inputs, text: String, pieces: Option<&[u8]>) -> Reply {
    let Ok(stream) = TcpStream::connect(&inputs.http_host).await else {
        return Reply::NoAnswer;
    };
    let (mut reader, mut writer) = stream.into_split();
    if writer.write_all(text.as_bytes()).await.is_err() {
        return Reply::Closed;
    }
    let answer = tokio::spawn(async move { response_status(&mut reader).await });
    if let Some(pieces) = pieces {
        for piece in pieces.chunks(BOMB_PIECE) {
            if answer.is_finished() {
                break;
            }
            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
            framed.extend_from_slice(piece);
            framed.extend_from_slice(b"\r\n");
            if writer.write_all(&framed).await.is_err() {
                break;
            }
            tokio::time::sleep(BOMB_PAUSE).await;
        }
        if !answer.is_finished() {
            let _ = writer.write_all(b"0\r\n\r\n").await;
        }
    }
    // The writing half stays open until the answer: closing it would end a stalled input.
    let reply = answer.await.unwrap_or(Reply::NoAnswer);
    drop(writer);
    reply
}

/// A chunked upload of the gzip bomb by a slow client.
async fn chunked_gzip_bomb(inputs: &Inputs) -> Reply {
    let head = request_head(
        &inputs.token,
        "Content-Encoding: gzip\r\nTransfer-Encoding: chunked",
    );
    raw(inputs, head, Some(&inputs.gzip_bomb)).await
}

/// The status of an HTTP/1.1 answer, read up to its status line.
async fn response_status(reader: &mut OwnedReadHalf) -> Reply {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|pair| pair == b"\r\n") {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return Reply::Closed,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    status_of(&head).map_or(Reply::Closed, Reply::Http)
}

fn status_of(head: &[u8]) -> Option<u16> {
    std::str::from_utf8(head)
        .ok()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use collector::otlp::body::DEFAULT_MAX_INFLATION_RATIO;
    use collector::otlp::{check, decode};

    use super::*;

    /// Decoded bytes the server lets a gzip body of `wire` bytes reach.
    fn ratio_allows(wire: usize) -> usize {
        DEFAULT_MAX_INFLATION_RATIO * wire + (1 << 20)
    }

    #[test]
    fn the_gzip_bomb_inflates_past_the_ratio_and_stays_under_the_decoded_cap() {
        let bomb = gzip_bomb();
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&bomb[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated.len(), BOMB_ZEROS);
        assert!(
            inflated.len() > ratio_allows(bomb.len()),
            "{} B",
            bomb.len()
        );
        // The default decoded cap: 4 times the 20 MiB wire limit.
        assert!(inflated.len() < 80 << 20);
    }

    #[test]
    fn the_grpc_bomb_is_a_valid_export_that_gzip_shrinks_past_the_ratio() {
        let body = compressible_export(GRPC_BOMB_BYTES);
        assert!(check::accept(&body).is_ok());
        let compressed = payload::gzipped(&body, flate2::Compression::default());
        assert!(
            body.len() > ratio_allows(compressed.len()),
            "{} B",
            compressed.len()
        );
    }

    #[test]
    fn the_broken_bodies_are_refused_by_the_receivers_decoders() {
        assert!(check::accept(&export()).is_ok());
        assert!(check::accept(&truncated_export()).is_err());
        assert!(check::accept(&garbage()).is_err());
        assert!(decode::json(JSON_WRONG_TYPES.as_bytes()).is_err());
    }

    #[test]
    fn only_2xx_and_ok_count_as_accepted() {
        let mut tally = Tally::default();
        for (kind, reply) in [
            (Kind::OversizedBody, Reply::Http(413)),
            (Kind::OversizedBody, Reply::Http(413)),
            (
                Kind::BadTokenGrpc,
                Reply::Grpc(tonic::Code::Unauthenticated as i32),
            ),
            (Kind::StalledHead, Reply::Closed),
            (Kind::StalledBody, Reply::NoAnswer),
            (Kind::JsonWrongTypes, Reply::Http(200)),
            (Kind::GarbageGrpc, Reply::Grpc(tonic::Code::Ok as i32)),
        ] {
            tally.record(kind, reply);
        }
        assert_eq!(tally.sent(), 7);
        assert_eq!(tally.accepted(), 2);
        assert_eq!(tally.unanswered(), 1);
        assert_eq!(tally.replies[&Kind::OversizedBody][&Reply::Http(413)], 2);
        assert_eq!(
            Reply::Grpc(tonic::Code::Unauthenticated as i32).label(),
            "Unauthenticated"
        );
    }

    #[test]
    fn the_status_is_read_from_the_status_line() {
        assert_eq!(status_of(b"HTTP/1.1 413 Payload Too Large\r\n"), Some(413));
        assert_eq!(
            status_of(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n"),
            Some(408)
        );
        assert_eq!(status_of(b"garbage\r\n"), None);
    }
}
