//! `bottleneck serve`: resolve the config, build the app, run until SIGINT or SIGTERM.

use crate::app::App;
use crate::cli::Outcome;
use crate::config::{Config, ServeFlags};

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

/// Runs the server until a signal.
pub async fn run(flags: ServeFlags) -> anyhow::Result<Outcome> {
    let config = Config::resolve(&flags)?;
    let app = App::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(Outcome::Ok)
}
