//! `bottleneck demo`: starts the server on a fresh SQLite file and runs the built-in instrumented
//! workload against its own OTLP ports, the same path a user's application takes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::app::App;
use crate::cli::Outcome;
use crate::cli::serve::shutdown_signal;
use crate::config::{Config, ServeFlags};
use crate::demo::{self, WorkloadConfig};

/// The demo's budgets (see the file for why each is there).
pub const DEMO_CONFIG: &str = include_str!("demo.toml");

/// Options of `bottleneck demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long to run (e.g. 90s, 10m); until Ctrl-C when not given.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Logins per second; the other endpoints follow in proportion.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Seed of every random choice, for a repeatable run.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// When `auth` is redeployed as 1.1 with a hidden 300 ms wait on /login.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub regress_after: Duration,
    /// SQLite file to use (default: a fresh file in the temporary directory).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The listener flags of `serve`.
    #[command(flatten)]
    pub serve: ServeFlags,
}

/// Runs the server and the workload until the duration ends or Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<Outcome> {
    let mut flags = args.serve.clone();
    let db = args.db.clone().unwrap_or_else(|| {
        let stamp = crate::time::now_unix_ns() / 1_000_000_000;
        std::env::temp_dir().join(format!("bottleneck-demo-{stamp}.db"))
    });
    flags.database_url = Some(db.display().to_string());
    if flags.config.is_none() {
        // Written beside the database so a user can read, edit and reload it like any config.
        let path = db.with_extension("toml");
        std::fs::write(&path, DEMO_CONFIG)
            .with_context(|| format!("writing {}", path.display()))?;
        flags.config = Some(path);
    }
    let config = Config::resolve(&flags)?;
    let app = App::build(config)
        .await
        .context("starting the demo server")?;
    let ui = format!("http://{}", app.ui_addr());
    let workload = WorkloadConfig {
        otlp_http_endpoint: format!("http://{}", app.otlp_http_addr()),
        otlp_grpc_endpoint: format!("http://{}", app.otlp_grpc_addr()),
        rate_per_sec: args.rate,
        seed: args.seed,
        regress_after: args.regress_after,
        duration: args.duration,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let wait_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(app.run_until_stopped(wait_stop(stop_rx.clone())));
    println!("Bottleneck demo: storing into {}", db.display());
    println!("  dashboard:                      {ui}/");
    println!("  endpoints, slowest total first: {ui}/api/v1/endpoints");
    println!(
        "  the login in detail:            {ui}/api/v1/endpoint?service=auth&endpoint=POST%20/login"
    );
    println!(
        "  alerts (budgets in {}): {ui}/alerts",
        flags
            .config
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string())
    );
    println!("  metrics:                        {ui}/metrics");
    println!(
        "auth is redeployed as 1.1 with a hidden 300 ms wait after {}.",
        humantime::format_duration(args.regress_after)
    );
    let report = demo::run(workload, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    server.await.context("joining the demo server")??;
    let report = report?;
    println!("{report}");
    Ok(Outcome::Ok)
}
