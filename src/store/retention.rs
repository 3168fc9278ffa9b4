//! The retention task: on one instance at a time, periodically makes sure the coming days'
//! partitions exist and removes data past its retention, then the interned endpoints and
//! resources nothing refers to any more (`eviction`), which frees their slots under the caps.
//!
//! Invariant: never removes data younger than its configured retention, and never holds the
//! database for long: PostgreSQL drops whole partitions, SQLite deletes in bounded batches with
//! a pause between them.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::settings::RetentionConfig;
use super::{LeaderRole, RetentionReport, Store, StoreError};
use crate::time::now_unix_ns;

/// Rows per delete statement. 5,000 rows take a few milliseconds in SQLite, so an ingest commit
/// waiting for the write lock waits no longer than that.
pub const BATCH_ROWS: i64 = 5_000;

/// The pause between two delete batches, in which ingest takes the write lock.
pub const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// One pass at `now_unix_ns`: partitions ahead, then retention.
pub async fn apply(
    store: &Store,
    config: &RetentionConfig,
    now_unix_ns: u64,
) -> Result<RetentionReport, StoreError> {
    store.maintain_partitions(now_unix_ns).await?;
    let before = |keep: Duration| now_unix_ns.saturating_sub(keep.as_nanos() as u64);
    store
        .apply_retention(before(config.spans), before(config.rollups))
        .await
}

/// Runs a pass every `config.interval` while this instance holds the maintenance role, until
/// `stop`.
pub async fn run(store: Store, config: RetentionConfig, mut stop: watch::Receiver<bool>) {
    loop {
        if store.lead(LeaderRole::Maintenance).await {
            match apply(&store, &config, now_unix_ns()).await {
                Ok(report) if report != RetentionReport::default() => info!(
                    blocks = report.blocks,
                    requests = report.requests,
                    rollups = report.rollups,
                    partitions = report.partitions,
                    endpoints_evicted = report.endpoints,
                    resources_evicted = report.resources,
                    "retention removed expired data"
                ),
                Ok(_) => {}
                Err(err) => warn!(error = %err, "retention failed; retrying next interval"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
