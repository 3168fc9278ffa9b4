//! `--hostile`, the idle connections: HTTP/2 connections to a listener that each send one
//! request without a token (answered 401, or UNAUTHENTICATED on gRPC) and then nothing, kept at
//! a fixed number for the whole run: when the server closes one, it is counted with how long it
//! had been idle, and another takes its place.
//!
//! Invariant: a connection counts as closed by the server only when its connection task ends
//! while this side still holds it; every connection still open at the deadline is counted as
//! such and dropped.

use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The listener a connection goes to, and the one request it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    OtlpHttp,
    OtlpGrpc,
}

impl Listener {
    pub(super) fn label(self) -> &'static str {
        match self {
            Listener::OtlpHttp => "OTLP/HTTP",
            Listener::OtlpGrpc => "OTLP/gRPC",
        }
    }

    fn request(self, base_url: &str) -> hyper::Request<axum::body::Body> {
        let builder = hyper::Request::post(match self {
            Listener::OtlpHttp => format!("{base_url}/v1/traces"),
            Listener::OtlpGrpc => {
                format!("{base_url}/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            }
        });
        let builder = match self {
            Listener::OtlpHttp => builder.header("content-type", "application/x-protobuf"),
            Listener::OtlpGrpc => builder
                .header("content-type", "application/grpc")
                .header("te", "trailers"),
        };
        builder
            .body(axum::body::Body::empty())
            .expect("a request of constant parts")
    }
}

/// How a listener's idle connections fared.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Figures {
    pub(super) opened: u64,
    /// How long each connection the server closed had been idle: from its answer to its end.
    pub(super) closed_after: Vec<Duration>,
    pub(super) open_at_end: u64,
    /// Connections that failed before their one answer (refused, reset, no handshake).
    pub(super) failed: u64,
}

impl Figures {
    fn add(&mut self, other: Figures) {
        self.opened += other.opened;
        self.closed_after.extend(other.closed_after);
        self.open_at_end += other.open_at_end;
        self.failed += other.failed;
    }
}

/// A pause after a connection failed, so that a listener at its cap is not hammered.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Holds `n` idle connections to `base_url` (`http://host:port`) until `deadline`.
pub(super) async fn hold(
    listener: Listener,
    base_url: String,
    n: usize,
    deadline: Instant,
) -> Figures {
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..n {
        slots.spawn(slot(listener, base_url.clone(), deadline));
    }
    let mut figures = Figures::default();
    while let Some(slot) = slots.join_next().await {
        figures.add(slot.expect("an idle connection's task does not panic"));
    }
    figures.closed_after.sort_unstable();
    figures
}

/// One place among the idle connections, refilled whenever the server closes it.
async fn slot(listener: Listener, base_url: String, deadline: Instant) -> Figures {
    let mut figures = Figures::default();
    let host = base_url.trim_start_matches("http://").to_owned();
    while Instant::now() < deadline {
        figures.opened += 1;
        let Some(mut idle) = open(listener, &base_url, &host).await else {
            figures.failed += 1;
            tokio::time::sleep_until(deadline.min(Instant::now() + AFTER_FAILURE)).await;
            continue;
        };
        tokio::select! {
            _ = &mut idle.connection => figures.closed_after.push(idle.answered.elapsed()),
            _ = tokio::time::sleep_until(deadline) => {
                figures.open_at_end += 1;
                idle.connection.abort();
            }
        }
    }
    figures
}

/// A connection that has had its one answer.
struct Open {
    /// Ends when the server closes the connection.
    connection: tokio::task::JoinHandle<()>,
    /// Held while the connection idles: a client that drops its last handle closes it itself.
    _sender: http2::SendRequest<axum::body::Body>,
    answered: Instant,
}

/// Connects, sends the one request and reads its answer.
async fn open(listener: Listener, base_url: &str, host: &str) -> Option<Open> {
    let tcp = TcpStream::connect(host).await.ok()?;
    let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let answered = async {
        sender.ready().await.ok()?;
        sender
            .send_request(listener.request(base_url))
            .await
            .ok()
            .map(drop)
    }
    .await;
    match answered {
        Some(()) => Some(Open {
            connection,
            _sender: sender,
            answered: Instant::now(),
        }),
        None => {
            connection.abort();
            None
        }
    }
}
