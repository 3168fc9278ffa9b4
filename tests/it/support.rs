//! Starting the real application for a test, and small clients for its interfaces.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use bottleneck::app::App;
use bottleneck::config::{Config, DatabaseUrl, ServeFlags};
use bottleneck::store::Store;
use bottleneck::store::scratch::ScratchDatabase;
use tokio::sync::oneshot;

/// A running application.
pub struct TestApp {
    pub ui_url: String,
    pub otlp_http_url: String,
    pub otlp_grpc_url: String,
    pub store: Store,
    /// The SQLite file (unused on PostgreSQL).
    pub db_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    scratch: Option<ScratchDatabase>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// reqwest is built without a default TLS provider; install one once per test process.
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub fn http_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain client builds")
}

/// The config a test app runs with: everything on 127.0.0.1:0, a fresh database, a short grace
/// period so analysis results show up quickly.
pub fn test_config(db_path: &std::path::Path) -> Config {
    let flags = ServeFlags {
        database_url: Some(db_path.display().to_string()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        otlp_http: Some("127.0.0.1:0".parse().unwrap()),
        otlp_grpc: Some("127.0.0.1:0".parse().unwrap()),
        config: None,
        insecure: false,
    };
    let mut config = Config::from_parts(&flags, Default::default()).expect("test flags are valid");
    config.pipeline.grace_period = Duration::from_millis(300);
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Whether the tests that run on either store run on PostgreSQL (`BOTTLENECK_TEST_STORE=postgres`,
/// with `DATABASE_URL` naming a server where databases may be created).
pub fn on_postgres() -> bool {
    std::env::var("BOTTLENECK_TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// The server PostgreSQL tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("PostgreSQL tests need DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/test")
}

/// A fresh database for one test: a SQLite file in a temp dir, or a scratch PostgreSQL database
/// when [`on_postgres`]. Dropping it removes either.
pub struct TestDatabase {
    pub url: DatabaseUrl,
    /// The SQLite file, or a path nobody uses on PostgreSQL.
    pub path: PathBuf,
    scratch: Option<ScratchDatabase>,
    _dir: tempfile::TempDir,
}

impl TestDatabase {
    /// A fresh database on the store the tests run on (see [`on_postgres`]), for tests that
    /// restart the app on it.
    pub async fn fresh() -> TestDatabase {
        if on_postgres() {
            return Self::postgres().await;
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("bottleneck.db");
        TestDatabase {
            url: DatabaseUrl::Sqlite(path.clone()),
            path,
            scratch: None,
            _dir: dir,
        }
    }

    /// A scratch PostgreSQL database, whatever [`on_postgres`] says.
    pub async fn postgres() -> TestDatabase {
        let dir = tempfile::tempdir().expect("a temp dir");
        let scratch = ScratchDatabase::create(&pg_admin_url())
            .await
            .expect("creating a scratch database");
        TestDatabase {
            url: DatabaseUrl::Postgres(scratch.url.clone()),
            path: dir.path().join("unused.db"),
            scratch: Some(scratch),
            _dir: dir,
        }
    }

    /// The URL as the command line takes it.
    pub fn cli_url(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(path) => path.display().to_string(),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(scratch) = self.scratch.take() {
            drop_scratch(scratch);
        }
    }
}

/// Drops a scratch database from synchronous code (a `Drop`), on a thread of its own.
fn drop_scratch(scratch: ScratchDatabase) {
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the cleanup");
        runtime.block_on(scratch.drop_now())
    })
    .join();
    if !matches!(dropped, Ok(Ok(()))) {
        eprintln!("could not drop a scratch database");
    }
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    if on_postgres() {
        let mut db = TestDatabase::postgres().await;
        let url = db.url.clone();
        let mut app = spawn_app_on(&db.path, |config| {
            config.database_url = url;
            adjust(config);
        })
        .await;
        app.scratch = db.scratch.take();
        return app;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let db_path = dir.path().join("bottleneck.db");
    let mut app = spawn_app_on(&db_path, adjust).await;
    app._dir = Some(dir);
    app
}

/// An app on an existing (or new) database file that outlives it: for restarts.
pub async fn spawn_app_on(db_path: &Path, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(db_path);
    adjust(&mut config);
    let app = App::build(config).await.expect("the app builds");
    let ui_url = format!("http://{}", app.ui_addr());
    let otlp_http_url = format!("http://{}", app.otlp_http_addr());
    let otlp_grpc_url = format!("http://{}", app.otlp_grpc_addr());
    let store = app.store();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        ui_url,
        otlp_http_url,
        otlp_grpc_url,
        store,
        db_path: db_path.to_owned(),
        stop: Some(stop),
        scratch: None,
        task: Some(task),
        _dir: None,
    }
}

impl TestApp {
    /// The app's database as `--database-url` takes it: the scratch PostgreSQL database the app
    /// runs on, or its SQLite file.
    pub fn cli_database_url(&self) -> String {
        match &self.scratch {
            Some(scratch) => scratch.url.clone(),
            None => self.db_path.display().to_string(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(scratch) = self.scratch.take() {
            drop_scratch(scratch);
        }
    }
}

impl TestApp {
    /// Stops the app cleanly and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("app task joins")
                .expect("app stops cleanly");
        }
    }

    /// Polls `check` until it returns `Some`, for at most `limit` — for results the pipeline
    /// produces asynchronously (analysis after the grace period).
    pub async fn eventually<T, F, Fut>(&self, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl TestApp {
    /// The `/metrics` page as text.
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.ui_url);
        http_client()
            .get(url)
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics are text")
    }

    /// A counter of `/metrics`, 0 if absent.
    pub async fn counter(&self, name: &str) -> u64 {
        (self.metrics().await.lines())
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Sends one OTLP/HTTP protobuf export, which must be acknowledged.
    pub async fn export(&self, body: Vec<u8>) {
        export_to(&self.otlp_http_url, body).await;
    }
}

/// Sends one OTLP/HTTP protobuf export to `otlp_http_url`, which must be acknowledged.
pub async fn export_to(otlp_http_url: &str, body: Vec<u8>) {
    let res = http_client()
        .post(format!("{otlp_http_url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(res.status(), 200);
}

/// The JSON a GET of `url` answers, if it answers JSON.
pub async fn json_at(url: String) -> Option<serde_json::Value> {
    http_client().get(url).send().await.ok()?.json().await.ok()
}

/// One gRPC call opened over plain h2 on `io` (TCP or TLS), without a gRPC client library, for
/// tests that send what no exporter would.
pub struct RawGrpcCall {
    pub response: h2::client::ResponseFuture,
    pub send: h2::SendStream<hyper::body::Bytes>,
    /// Kept so the connection stays open for the call.
    _client: h2::client::SendRequest<hyper::body::Bytes>,
}

impl RawGrpcCall {
    /// Starts a POST of `uri` (the server's URL and the method's path) with gRPC's headers.
    pub async fn open<T>(io: T, uri: String) -> RawGrpcCall
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (client, connection) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::post(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, send) = client.send_request(request, false).unwrap();
        RawGrpcCall {
            response,
            send,
            _client: client,
        }
    }
}

/// A gRPC message frame, uncompressed: the length it declares, then `payload` (which a test may
/// make shorter than declared).
pub fn grpc_frame(declared_len: usize, payload: &[u8]) -> hyper::body::Bytes {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(declared_len).unwrap().to_be_bytes());
    frame.extend_from_slice(payload);
    frame.into()
}

/// The demo's SDK pipeline (batch processor, OTLP/HTTP protobuf exporter to `otlp_http_url`) for
/// a service `shop` at `version` without CPU measurement, and the exporter's counters: for tests
/// that build the spans of a shop by hand.
pub fn shop_exporter(
    version: &'static str,
    otlp_http_url: &str,
) -> (
    opentelemetry_sdk::trace::SdkTracerProvider,
    std::sync::Arc<bottleneck::demo::telemetry::ExportStats>,
) {
    use bottleneck::demo::telemetry::{self, CpuTime, ExportStats, Identity, Transport};
    let stats = std::sync::Arc::new(ExportStats::default());
    let identity = Identity {
        name: "shop",
        version,
        instance_id: "shop-1".into(),
    };
    let provider = telemetry::provider(
        &identity,
        Transport::Http,
        otlp_http_url,
        CpuTime::Unmeasured,
        std::sync::Arc::clone(&stats),
    )
    .expect("the exporter builds");
    (provider, stats)
}
