//! The application: binds every listener first (port 0 allowed, so tests read the real ports),
//! then runs the receivers, the pipeline and the web server until told to stop.
//!
//! Invariant: shutdown order is receivers first, then the write queue drains, then the
//! assembler analyses what is pending; nothing accepted is dropped on a clean stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use anyhow::Context;
use collector::otlp::body::{BodyLimits, Intake};
use collector::otlp::{grpc, http};
use collector::sink::{IngestStats, SpanSink};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::{info, warn};

use crate::alert::{self, AlertHandle, RulesFile};
use crate::config::Config;
use crate::listener::{self, ListenOptions};
use crate::pipeline::analyze::{AnalysisStats, Analyzer};
use crate::pipeline::intern::Caps;
use crate::pipeline::{assemble, claim, writer};
use crate::regress;
use crate::store::{Store, retention};
use crate::web::host::AllowedHosts;
use crate::web::{self, AppState};

/// Committed blocks waiting for the assembler. Small: when analysis falls behind, the writer
/// waits, the ingest queue fills, and exporters are told to retry, which is the backpressure
/// we want rather than unbounded memory.
const COMMITTED_QUEUE: usize = 16;

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = std::convert::Infallible;

/// Starts listening for SIGHUP. Called before the API serves: once the API answers, a SIGHUP
/// reloads instead of taking the default action, which is to terminate.
fn listen_for_hangup() -> Option<Hangup> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGHUP; reload with POST /api/v1/reload");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(unix)]
async fn hung_up(hangup: &mut Hangup) {
    hangup.recv().await;
}

#[cfg(not(unix))]
async fn hung_up(hangup: &mut Hangup) {
    match *hangup {}
}

/// Reloads the alert rules on each SIGHUP until `stop`; a bad file is logged and changes nothing.
async fn reload_on_hangup(
    alerts: AlertHandle,
    hangup: Option<Hangup>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut hangup) = hangup else {
        let _ = stop.wait_for(|stop| *stop).await;
        return;
    };
    loop {
        let signalled = tokio::select! {
            _ = hung_up(&mut hangup) => true,
            _ = stop.wait_for(|stop| *stop) => false,
        };
        if !signalled {
            return;
        }
        let handle = alerts.clone();
        match tokio::task::spawn_blocking(move || handle.reload()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => warn!(
                error = format!("{err:#}"),
                "reload failed; the previous rules stay in force"
            ),
            Err(err) => warn!(error = %err, "reload task failed"),
        }
    }
}

/// A bound, not yet running, application.
pub struct App {
    config: Config,
    listen: ListenOptions,
    store: Store,
    ui: TcpListener,
    otlp_http: TcpListener,
    otlp_grpc: TcpListener,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))
}

impl App {
    /// Opens the store (applying migrations) and binds the three listeners.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let tls = config
            .tls
            .as_ref()
            .map(listener::tls_acceptor)
            .transpose()
            .context("setting up TLS")?;
        let listen = ListenOptions {
            timeouts: config.timeouts.clone(),
            connections: config.connections.clone(),
            tls,
        };
        listener::warn_if_descriptors_short(&config.connections, 3);
        let exposed = config.exposed_without_auth();
        if !exposed.is_empty() {
            warn!(
                listeners = exposed.join(", "),
                "--insecure: listening beyond loopback without authentication"
            );
        }
        let in_clear = config.tokens_in_clear();
        if !in_clear.is_empty() {
            // Not refused: TLS is often ended by a proxy or mesh in front of the listener.
            warn!(
                listeners = in_clear.join(", "),
                "tokens travel in clear text: listening beyond loopback with tokens but without \
                 [tls]; anyone on the path can read and replay them unless a TLS proxy is in front"
            );
        }
        let store = Store::open_with(&config.database_url, &config.store)
            .await
            .with_context(|| format!("opening the store {}", config.database_url))?;
        let ui = bind(config.listen.ui, "UI").await?;
        let otlp_http = bind(config.listen.otlp_http, "OTLP/HTTP").await?;
        let otlp_grpc = bind(config.listen.otlp_grpc, "OTLP/gRPC").await?;
        Ok(App {
            config,
            listen,
            store,
            ui,
            otlp_http,
            otlp_grpc,
        })
    }

    /// The UI and API address actually bound.
    pub fn ui_addr(&self) -> SocketAddr {
        self.ui
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The OTLP/HTTP address actually bound.
    pub fn otlp_http_addr(&self) -> SocketAddr {
        self.otlp_http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The OTLP/gRPC address actually bound.
    pub fn otlp_grpc_addr(&self) -> SocketAddr {
        self.otlp_grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The store, for tests and benchmarks that look at what was written.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Serves until `shutdown` resolves, then stops in order and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            config,
            listen,
            store,
            ui,
            otlp_http,
            otlp_grpc,
        } = self;
        info!(ui = %ui.local_addr()?, otlp_http = %otlp_http.local_addr()?, otlp_grpc = %otlp_grpc.local_addr()?, "bottleneck listening");
        let ingest = Arc::new(IngestStats::default());
        let analysis_stats = Arc::new(AnalysisStats::default());
        let (sink, exports) = SpanSink::channel(config.ingest.queue_capacity, Arc::clone(&ingest));
        let (committed_tx, committed_rx) = mpsc::channel(COMMITTED_QUEUE);
        let writer = tokio::spawn(writer::run(
            exports,
            store.clone(),
            Arc::clone(&ingest),
            committed_tx,
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let assembler = if config.pipeline.analysis_enabled {
            let analyzer = Analyzer::load(
                store.clone(),
                config.pipeline.analysis.clone(),
                Caps {
                    endpoints_per_service: config.pipeline.max_endpoints_per_service,
                    services: config.pipeline.max_services,
                    versions_per_service: config.pipeline.max_versions_per_service,
                    resources: config.pipeline.max_resources,
                    operations_per_rollup: config.pipeline.max_operations_per_rollup,
                },
                config.pipeline.max_clock_skew,
                Arc::clone(&analysis_stats),
            )
            .await
            .context("loading endpoints for the analyzer")?;
            if store.is_shared() {
                // Traces wait in the database, where every instance sharing it can claim them.
                drop(committed_rx);
                Some(tokio::spawn(claim::run(
                    store.clone(),
                    analyzer,
                    Arc::clone(&analysis_stats),
                    config.pipeline.grace_period,
                    config.pipeline.claim_lease,
                    stop_rx.clone(),
                )))
            } else {
                Some(tokio::spawn(assemble::run(
                    committed_rx,
                    store.clone(),
                    analyzer,
                    config.pipeline.grace_period,
                )))
            }
        } else {
            info!("analysis is off: spans are stored, not analysed");
            drop(committed_rx);
            None
        };

        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        // One budget of body bytes for both receivers.
        let intake = Intake::new(
            BodyLimits {
                max_wire_bytes: config.ingest.max_body_bytes,
                max_decoded_bytes: config.ingest.max_decoded_body_bytes,
                max_inflation_ratio: config.ingest.max_inflation_ratio,
                deadline: config.timeouts.body_total,
                max_pause: config.timeouts.body_read,
            },
            config.ingest.max_bytes_in_flight,
        );
        // A client that stops sending its body is cut off after `body_read` of silence, by the
        // body reader itself (`BodyLimits::max_pause`), which answers it 408.
        let http_router = http::router(
            sink.clone(),
            intake.clone(),
            config.auth.ingest_tokens.clone(),
        );
        let http_server = listener::serve(
            otlp_http,
            http_router,
            listen.clone(),
            stopped(stop_rx.clone()),
        );
        let grpc_router = grpc::router(
            sink.clone(),
            intake,
            config.auth.ingest_tokens.clone(),
            config.timeouts.grpc_request,
        );
        let grpc_server = listener::serve(
            otlp_grpc,
            grpc_router,
            listen.clone(),
            stopped(stop_rx.clone()),
        );
        let rules_file = config.alerts.config_file.clone().map(|path| RulesFile {
            path,
            read: crate::config::read_alert_rules,
        });
        let alerts = AlertHandle::new(config.alerts.rules.clone(), rules_file);
        let alert_task = tokio::spawn(alert::run(store.clone(), alerts.clone(), stop_rx.clone()));
        let hangup_task = tokio::spawn(reload_on_hangup(
            alerts.clone(),
            listen_for_hangup(),
            stop_rx.clone(),
        ));
        let ready = Arc::new(AtomicBool::new(true));
        // The web reads through connections of its own, so a heavy page never holds those the
        // analysis needs (SQLite: the readers; PostgreSQL: the pool, with a statement timeout).
        let web_store = store
            .with_own_readers(config.reads.timeout)
            .await
            .context("opening the web's read connections")?;
        let state = AppState {
            alerts,
            store: web_store.clone(),
            reads: config.reads.clone(),
            ingest: Arc::clone(&ingest),
            sink: Some(sink.clone()),
            analysis_stats,
            analysis: Arc::new(config.pipeline.analysis.clone()),
            regression_thresholds: config.regression.thresholds,
            ready: Arc::clone(&ready),
        };
        let regress_task = tokio::spawn(regress::run(
            store.clone(),
            config.regression.clone(),
            stop_rx.clone(),
        ));
        let retention_task = tokio::spawn(retention::run(
            store.clone(),
            config.retention,
            stop_rx.clone(),
        ));
        let allowed_hosts = AllowedHosts::new(ui.local_addr()?, &config.allowed_hosts);
        let ui_router = web::host::require(
            web::auth::require(web::router(state), &config.auth),
            allowed_hosts,
        )
        .layer(RequestBodyTimeoutLayer::new(config.timeouts.body_read));
        let ui_server = listener::serve(ui, ui_router, listen, stopped(stop_rx.clone()));
        let http_task = tokio::spawn(http_server);
        let grpc_task = tokio::spawn(grpc_server);
        let ui_task = tokio::spawn(ui_server);
        drop(sink);

        shutdown.await;
        info!("stopping: receivers first, then the write queue, then pending analysis");
        ready.store(false, Relaxed);
        let _ = stop_tx.send(true);
        http_task.await.context("OTLP/HTTP server task")?;
        grpc_task.await.context("OTLP/gRPC server task")?;
        ui_task.await.context("UI server task")?;
        regress_task.await.context("regression finder task")?;
        retention_task.await.context("retention task")?;
        writer.await.context("store writer task")?;
        if let Some(assembler) = assembler {
            assembler.await.context("assembler task")?;
        }
        alert_task.await.context("alert task")?;
        hangup_task.await.context("SIGHUP task")?;
        web_store.close_readers().await;
        store.close().await;
        info!("stopped");
        Ok(())
    }
}
