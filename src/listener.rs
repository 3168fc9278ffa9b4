//! The accept loop every listener runs (UI and API, OTLP/HTTP, OTLP/gRPC): optional TLS, HTTP/1.1
//! and HTTP/2 on one port, client timeouts, and a graceful stop.
//!
//! A client gets `header_read` to finish its TLS handshake and the headers of its first request;
//! a connection that has not started a request by then is closed, which is what stops a
//! slow-loris client that trickles bytes (hyper's own header timeout then guards later HTTP/1
//! requests, and HTTP/2 pings find dead peers). Bodies are guarded per route by the routers.
//!
//! Invariant: one stalled or hostile connection never holds up the accept loop or another
//! connection; every connection is its own task, and the loop never awaits a client.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::{TimeoutConfig, TlsConfig};

/// How long a stop waits for requests in flight (an export waiting for its commit) before the
/// remaining connections are dropped.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// HTTP/2 keep-alive pings: a peer that does not answer within the timeout is gone, and its
/// connection is closed instead of lingering.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What a listener needs besides its socket and router.
#[derive(Clone)]
pub struct ListenOptions {
    /// Client timeouts.
    pub timeouts: TimeoutConfig,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
}

/// Reads the PEM certificate chain and key into an acceptor offering HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = read_certs(&config.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .with_context(|| format!("reading the TLS key {}", config.key_file.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not form a valid pair")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading the TLS certificate {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the TLS certificate file {} holds no certificate",
        path.display()
    );
    Ok(certs)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (for at most [`DRAIN_LIMIT`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ListenOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.timeouts.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let router = router.clone();
        let tls = options.tls.clone();
        let header_read = options.timeouts.header_read;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + header_read;
            match tls {
                None => {
                    connection(&builder, stream, router, deadline, watcher).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            connection(&builder, stream, router, deadline, watcher).await;
                        }
                        Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after the drain limit were dropped");
    }
}

/// Serves one connection; closes it if no request has started by `deadline`.
async fn connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    io: IO,
    router: Router,
    deadline: tokio::time::Instant,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let started = Arc::clone(&started);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            started.store(true, Relaxed);
            router.clone().oneshot(request.map(axum::body::Body::new))
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let conn = watcher.watch(conn.into_owned());
    tokio::pin!(conn);
    tokio::select! {
        result = &mut conn => {
            if let Err(err) = result {
                debug!(error = %err, "connection ended with an error");
            }
            return;
        }
        _ = tokio::time::sleep_until(deadline) => {}
    }
    if !started.load(Relaxed) {
        debug!("no request within the header timeout; connection closed");
        return;
    }
    if let Err(err) = conn.await {
        debug!(error = %err, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            cert_file: dir.path().join("missing.pem"),
            key_file: dir.path().join("key.pem"),
        };
        let err = format!("{:#}", tls_acceptor(&missing).err().unwrap());
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = format!(
            "{:#}",
            tls_acceptor(&TlsConfig {
                cert_file: empty,
                key_file: dir.path().join("key.pem"),
            })
            .err()
            .unwrap()
        );
        assert!(err.contains("holds no certificate"), "{err}");
    }
}
