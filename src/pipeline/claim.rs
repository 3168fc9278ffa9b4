//! The shared-database analysis loop: with PostgreSQL, traces wait for their grace period in the
//! database (`pending_traces`, written with their blocks), and every instance's loop claims due
//! ones, analyses them from the stored spans and releases the claims in the analysis commit.
//!
//! Any instance may receive any span of any trace; the claim makes one instance analyse the whole
//! trace once, and a claim of an instance that died expires and is taken by another.
//!
//! Invariant: nothing is analysed from memory here; a trace is analysed only while its claim is
//! held, and a commit whose claim was lost writes nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::warn;

use super::analyze::Analyzer;
use crate::store::Store;

/// How often due traces are claimed: as often as the in-memory assembler looks for them.
const TICK: Duration = Duration::from_millis(250);

/// Most traces claimed per tick, so one commit stays small.
const MAX_TRACES_PER_CLAIM: i64 = 5_000;

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Claims and analyses due traces every tick until `stop`, holding each claim for at most
/// `claim_lease`. Traces not yet due stay in the
/// database for this or another instance.
pub async fn run(
    store: Store,
    mut analyzer: Analyzer,
    grace_period: Duration,
    claim_lease: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        loop {
            let now = now_unix_ns();
            // A token per claim: a commit proves it still holds exactly this claim.
            let claim = rand::random::<i64>();
            let claimed = match store
                .claim_due_traces(
                    claim,
                    now.saturating_sub(grace_period.as_nanos() as u64),
                    now,
                    now + claim_lease.as_nanos() as u64,
                    MAX_TRACES_PER_CLAIM,
                )
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    warn!(error = %err, "claiming due traces failed; retrying next tick");
                    break;
                }
            };
            let full = claimed.len() as i64 >= MAX_TRACES_PER_CLAIM;
            analyzer.process_claimed(claimed).await;
            if !full || *stop.borrow() {
                break;
            }
        }
    }
}
