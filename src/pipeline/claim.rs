//! The shared-database analysis loop: with PostgreSQL, traces wait for their grace period in the
//! database (`pending_traces`, written with their blocks), and every instance's loop claims due
//! ones, analyses them from the stored spans and releases the claims in the analysis commit.
//!
//! Any instance may receive any span of any trace; the claim makes one instance analyse the whole
//! trace once, and a claim of an instance that died expires and is taken by another.
//!
//! When the database goes away (down, unreachable, restarting), the loop logs it once, keeps
//! trying every tick, and gives back the claims whose analysis failed once the database answers
//! again, so their traces are analysed again soon after the outage rather than when their leases
//! expire.
//!
//! Invariant: nothing is analysed from memory here; a trace is analysed only while its claim is
//! held, and a commit whose claim was lost writes nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::analyze::{AnalysisStats, Analyzer};
use crate::store::{ClaimedTrace, Store, StoreError};

/// How often due traces are claimed: as often as the in-memory assembler looks for them.
const TICK: Duration = Duration::from_millis(250);

/// Most traces claimed per tick, so one commit stays small.
const MAX_TRACES_PER_CLAIM: i64 = 5_000;

/// How long after a failed analysis its claims are given back. Long enough that a trace whose
/// analysis keeps failing is not retried every tick, far shorter than a lease (60 s by default).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(5);

/// Claims whose analysis failed, given back together once [`RETRY_FAILED_AFTER`] has passed
/// since the first of them and the database answers.
#[derive(Default)]
struct FailedClaims {
    tokens: Vec<i64>,
    release_at: Option<Instant>,
}

impl FailedClaims {
    fn push(&mut self, claim: i64) {
        self.tokens.push(claim);
        self.release_at
            .get_or_insert_with(|| Instant::now() + RETRY_FAILED_AFTER);
    }

    /// Releases the claims if it is time; false while the database does not answer.
    async fn release(&mut self, store: &Store) -> bool {
        if self.release_at.is_none_or(|at| Instant::now() < at) {
            return true;
        }
        match store.release_claims(&self.tokens).await {
            Ok(n_traces) => {
                info!(
                    n_traces,
                    "gave back the claims of failed analyses; their traces are analysed again"
                );
                *self = FailedClaims::default();
                true
            }
            Err(err) => {
                debug!(error = %err, "giving back claims failed; retrying next tick");
                false
            }
        }
    }
}

pub(super) fn now_unix_ns() -> u64 {
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
    stats: Arc<AnalysisStats>,
    grace_period: Duration,
    claim_lease: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = FailedClaims::default();
    // Since when claiming fails: logged when it starts and when it ends, not every tick.
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if !failed.release(&store).await {
            continue;
        }
        let mut claimed = claim_due(&store, grace_period, claim_lease).await;
        loop {
            let (claim, traces) = claimed;
            let traces = match traces {
                Ok(traces) => {
                    if let Some(since) = failing_since.take() {
                        let down_for = Duration::from_secs(since.elapsed().as_secs());
                        info!(?down_for, "claiming due traces works again");
                    }
                    traces
                }
                Err(err) => {
                    // The claim may have been taken before loading the spans failed.
                    failed.push(claim);
                    if failing_since.is_none() {
                        warn!(error = %err, "claiming due traces failed; retrying every tick");
                        failing_since = Some(Instant::now());
                    } else {
                        debug!(error = %err, "claiming due traces failed again");
                    }
                    break;
                }
            };
            let full = traces.len() as i64 >= MAX_TRACES_PER_CLAIM;
            let failures_before = stats.failed_commits.load(Relaxed);
            // More are due: the next claim is taken and its spans read while this one is
            // analysed and committed, so the database and the analysis work at the same time.
            let next = if full && !*stop.borrow() {
                let (_, next) = tokio::join!(
                    analyzer.process_claimed(traces),
                    claim_due(&store, grace_period, claim_lease)
                );
                Some(next)
            } else {
                analyzer.process_claimed(traces).await;
                None
            };
            if stats.failed_commits.load(Relaxed) != failures_before {
                failed.push(claim);
            }
            match next {
                Some(next) => claimed = next,
                None => break,
            }
        }
    }
}

/// Claims the traces due now under a new token (a commit proves it still holds exactly this
/// claim); returns the token with the traces.
async fn claim_due(
    store: &Store,
    grace_period: Duration,
    claim_lease: Duration,
) -> (i64, Result<Vec<ClaimedTrace>, StoreError>) {
    let now = now_unix_ns();
    let claim = rand::random::<i64>();
    let claimed = store
        .claim_due_traces(
            claim,
            now.saturating_sub(grace_period.as_nanos() as u64),
            now,
            now + claim_lease.as_nanos() as u64,
            MAX_TRACES_PER_CLAIM,
        )
        .await;
    (claim, claimed)
}
