//! Starting the real application for a test, and small clients for its interfaces.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use bottleneck::app::App;
use bottleneck::config::{Config, ServeFlags};
use bottleneck::store::Store;
use tokio::sync::oneshot;

/// A running application.
pub struct TestApp {
    pub ui_url: String,
    pub otlp_http_url: String,
    pub otlp_grpc_url: String,
    pub store: Store,
    /// The SQLite file.
    pub db_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
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

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
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
        task: Some(task),
        _dir: None,
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
}
