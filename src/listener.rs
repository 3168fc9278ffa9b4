//! The accept loop every listener runs (UI and API, OTLP/HTTP, OTLP/gRPC): optional TLS, HTTP/1.1
//! and HTTP/2 on one port, client timeouts, a cap on connections, and a graceful stop.
//!
//! A client gets `header_read` to finish its TLS handshake and the headers of its first request;
//! a connection that has not started a request by then is closed, which is what stops a
//! slow-loris client that trickles bytes (hyper's own header timeout then guards later HTTP/1
//! requests, and HTTP/2 pings find dead peers). A connection with no request in flight for
//! `idle_timeout` is closed gracefully (a GOAWAY on HTTP/2), so live but idle peers do not keep
//! descriptors forever. Each listener serves at most `max_per_listener` connections at once; past
//! that, new ones wait in the kernel's accept queue until one closes, so one listener cannot spend
//! the descriptors the others and the store need. Bodies are guarded per route by the routers.
//!
//! Invariant: one stalled or hostile connection never holds up the accept loop or another
//! connection; every connection is its own task, and the loop never awaits a client (only a
//! free connection slot).

pub mod settings;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;
use tracing::{debug, warn};

use self::settings::{ConnectionConfig, TimeoutConfig, TlsConfig};

/// How long a stop waits for requests in flight (an export waiting for its commit) before the
/// remaining connections are dropped.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// HTTP/2 keep-alive pings: a peer that does not answer within the timeout is gone, and its
/// connection is closed instead of lingering.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How often reaching the connection cap is logged while it lasts.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Warns when `n_listeners` full of connections would not fit in the process's descriptor limit
/// with room left for the store: the caps are then no protection, and the limit should be raised
/// (`ulimit -n`, `LimitNOFILE=`) or the cap lowered.
pub fn warn_if_descriptors_short(connections: &ConnectionConfig, n_listeners: usize) {
    /// Descriptors kept for the store (SQLite files, a PostgreSQL pool) and outgoing webhooks.
    const RESERVED: u64 = 64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let needed = (connections.max_per_listener * n_listeners) as u64 + RESERVED;
    if limit.rlim_cur < needed {
        warn!(
            descriptor_limit = limit.rlim_cur,
            needed,
            "the open-file limit is below what full listeners need; raise it or lower connections.max_per_listener"
        );
    }
}

/// What a listener needs besides its socket and router.
#[derive(Clone)]
pub struct ListenOptions {
    /// Client timeouts.
    pub timeouts: TimeoutConfig,
    /// Connection cap and idle timeout.
    pub connections: ConnectionConfig,
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
    let max_connections = options
        .connections
        .max_per_listener
        .clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut last_cap_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Said once a minute at most: at the cap, every accept would say it again.
                if last_cap_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                    warn!(
                        max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                    last_cap_warning = Some(Instant::now());
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => {
                        slot.expect("the semaphore is never closed")
                    }
                    _ = &mut shutdown => break,
                }
            }
        };
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
        let limits = ConnectionLimits {
            first_request_by: Instant::now() + options.timeouts.header_read,
            idle_timeout: options.connections.idle_timeout,
            stop: stop_rx.clone(),
        };
        let router = router.clone();
        let tls = options.tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(&builder, stream, router, limits).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout_at(limits.first_request_by, handshake).await {
                        Ok(Ok(stream)) => connection(&builder, stream, router, limits).await,
                        Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all connections done.
    let all_slots = u32::try_from(max_connections).expect("clamped to u32");
    if tokio::time::timeout(DRAIN_LIMIT, slots.acquire_many(all_slots))
        .await
        .is_err()
    {
        warn!("requests still in flight after the drain limit were dropped");
    }
}

/// When one connection is closed.
struct ConnectionLimits {
    /// A connection that has started no request by then is closed.
    first_request_by: Instant,
    /// Closed after this long with no request in flight.
    idle_timeout: Duration,
    /// Turns true when the listener stops: finish what is in flight, then close.
    stop: watch::Receiver<bool>,
}

/// Requests in flight on one connection, and when the last one started or ended.
struct Activity {
    opened: Instant,
    n_started: AtomicU64,
    in_flight: AtomicUsize,
    last_change_ms: AtomicU64,
    /// Woken when a request starts or ends, so the connection's timers are set anew.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            n_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn touch(&self) {
        self.last_change_ms
            .store(self.opened.elapsed().as_millis() as u64, Relaxed);
        self.changed.notify_one();
    }

    /// When the connection will have been idle for `idle_timeout`, if nothing is in flight.
    fn idle_deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let last_change = Duration::from_millis(self.last_change_ms.load(Relaxed));
        Some(self.opened + last_change + idle_timeout)
    }
}

/// Held while one request is being answered.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.n_started.fetch_add(1, Relaxed);
        activity.in_flight.fetch_add(1, Relaxed);
        activity.touch();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Serves one connection until the client closes it, it has started no request by
/// `first_request_by`, it has been idle for `idle_timeout`, or the listener stops.
async fn connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    io: IO,
    router: Router,
    mut limits: ConnectionLimits,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::begin(&activity);
            let response = router.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    loop {
        if *limits.stop.borrow() {
            break;
        }
        let first_request = activity.n_started.load(Relaxed) == 0;
        // Before the first request the header timeout runs; then the idle timeout, which waits
        // while a request is in flight (a request starting or ending sets the timers anew).
        let wake_at = if first_request {
            Some(limits.first_request_by)
        } else {
            activity.idle_deadline(limits.idle_timeout)
        };
        let sleep = async {
            match wake_at {
                Some(wake_at) => tokio::time::sleep_until(wake_at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => return log_end(result),
            _ = sleep => {
                if first_request {
                    debug!("no request within the header timeout; connection closed");
                    return;
                }
                debug!("idle connection closed");
                break;
            }
            _ = activity.changed.notified() => {}
            _ = limits.stop.wait_for(|stop| *stop) => {}
        }
    }
    // Finishes what is in flight (an HTTP/2 GOAWAY lets open streams complete), then closes.
    conn.as_mut().graceful_shutdown();
    log_end(conn.await);
}

fn log_end<E: std::fmt::Display>(result: Result<(), E>) {
    if let Err(err) = result {
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
