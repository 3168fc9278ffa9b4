//! `bottleneck migrate`: applies the store's migrations and exits, for operators who apply
//! schema changes before rolling out new instances. `serve` applies them at start as well.

use anyhow::Context;
use tracing::info;

use crate::cli::Outcome;
use crate::config::{Config, ServeFlags};
use crate::store::Store;

/// Applies every pending migration to the configured database.
pub async fn run(flags: ServeFlags) -> anyhow::Result<Outcome> {
    let config = Config::resolve(&flags)?;
    Store::migrate(&config.database_url)
        .await
        .with_context(|| format!("migrating {}", config.database_url))?;
    info!("migrations applied");
    println!("migrations applied");
    Ok(Outcome::Ok)
}
