//! The shared-database source of due traces: with PostgreSQL, traces wait for their grace period
//! in the database (`pending_traces`, written with their blocks), and every instance claims due
//! ones and hands them to the analysis (`analyze`) whole, read from the stored spans, with the
//! releases of their claims for the analysis commit.
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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Interval;
use tracing::{debug, info, warn};

use super::analyze::{self, AnalysisStats, Analyzer};
use super::due::{Completion, DueBatch, DueTraces, Redo};
use super::error::PipelineError;
use super::scheduler::CommitScheduler;
use super::work::{Batch, Work};
use crate::store::{ClaimLease, ClaimRelease, ClaimedTrace, Store, StoreError};

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
    analyzer: Analyzer,
    stats: Arc<AnalysisStats>,
    grace_period: Duration,
    claim_lease: Duration,
    stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let claims = Claims {
        store,
        stats,
        grace_period,
        claim_lease,
        stop,
        tick,
        failed: FailedClaims::default(),
        failing_since: None,
        ahead: None,
    };
    analyze::run(claims, analyzer).await;
}

/// Due traces claimed in the shared store, as a source for the analysis.
struct Claims {
    store: Store,
    stats: Arc<AnalysisStats>,
    grace_period: Duration,
    claim_lease: Duration,
    stop: watch::Receiver<bool>,
    tick: Interval,
    failed: FailedClaims,
    /// Since when claiming fails: logged when it starts and when it ends, not every tick.
    failing_since: Option<Instant>,
    /// The next claim, taken and its spans read while this one is analysed and committed, so
    /// the database and the analysis work at the same time: set when the last claim was full
    /// (more are due), and taken without waiting for the tick.
    ahead: Option<(i64, ClaimTask)>,
}

/// A claim taken in the background: its traces with their spans.
type ClaimTask = JoinHandle<Result<Vec<ClaimedTrace>, StoreError>>;

/// What a claim needs: the store, and how long traces wait and claims last.
struct Claiming {
    store: Store,
    grace_period: Duration,
    claim_lease: Duration,
}

/// Claims the traces due now under the token `claim`, with their spans.
async fn claim_due(claiming: Claiming, claim: i64) -> Result<Vec<ClaimedTrace>, StoreError> {
    let now = now_unix_ns();
    let lease = ClaimLease {
        cutoff_unix_ns: now.saturating_sub(claiming.grace_period.as_nanos() as u64),
        now_unix_ns: now,
        until_unix_ns: now + claiming.claim_lease.as_nanos() as u64,
    };
    (claiming.store)
        .claim_due_traces(claim, lease, MAX_TRACES_PER_CLAIM)
        .await
}

/// The tokens of claims whose analysis was not committed, to give back.
pub struct ClaimTokens(Vec<i64>);

impl Redo for ClaimTokens {
    fn absorb(&mut self, later: Self) {
        self.0.extend(later.0);
    }
}

impl DueTraces for Claims {
    type Redo = ClaimTokens;

    /// A commit whose claim was lost writes nothing: merged with others, it would lose their
    /// analyses too.
    const OVERLAPPING_COMMITS: bool = false;

    async fn next(
        &mut self,
        commits: &mut CommitScheduler<ClaimTokens>,
    ) -> Option<DueBatch<ClaimTokens>> {
        loop {
            let (claim, claimed) = match self.ahead.take() {
                Some((claim, ahead)) => (claim, ahead.await.map_err(PipelineError::from)),
                None => {
                    tokio::select! {
                        _ = self.tick.tick() => {}
                        _ = self.stop.wait_for(|stop| *stop) => return None,
                    }
                    if !self.failed.release(&self.store).await {
                        continue;
                    }
                    // A token per claim: a commit proves it still holds exactly this claim.
                    let claim = rand::random::<i64>();
                    let claimed = claim_due(self.claiming(), claim).await;
                    (claim, Ok(claimed))
                }
            };
            let claimed = match claimed.and_then(|claimed| Ok(claimed?)) {
                Ok(claimed) => {
                    if let Some(since) = self.failing_since.take() {
                        let down_for = Duration::from_secs(since.elapsed().as_secs());
                        info!(?down_for, "claiming due traces works again");
                    }
                    claimed
                }
                Err(err) => {
                    // The claim may have been taken before loading the spans failed.
                    self.failed.push(claim);
                    if self.failing_since.is_none() {
                        warn!(error = %err, "claiming due traces failed; retrying every tick");
                        self.failing_since = Some(Instant::now());
                    } else {
                        debug!(error = %err, "claiming due traces failed again");
                    }
                    continue;
                }
            };
            if claimed.len() as i64 >= MAX_TRACES_PER_CLAIM && !*self.stop.borrow() {
                let claim = rand::random::<i64>();
                let next = tokio::spawn(claim_due(self.claiming(), claim));
                self.ahead = Some((claim, next));
            }
            if claimed.is_empty() {
                continue;
            }
            match self.batch_of(claimed).await {
                Ok((batch, releases, arrivals)) => {
                    return Some(DueBatch {
                        batch,
                        completion: Completion::Claims(releases),
                        arrivals,
                        redo: ClaimTokens(vec![claim]),
                    });
                }
                Err(err) => commits.failed(self, ClaimTokens(vec![claim]), &err.into()),
            }
        }
    }

    fn failed(&mut self, redo: ClaimTokens, err: &PipelineError) {
        for claim in redo.0 {
            self.failed.push(claim);
        }
        warn!(error = %err, "analysis commit failed; the claimed traces are analysed again once their claims are given back");
    }
}

impl Claims {
    fn claiming(&self) -> Claiming {
        Claiming {
            store: self.store.clone(),
            grace_period: self.grace_period,
            claim_lease: self.claim_lease,
        }
    }

    /// The claimed traces as a batch of whole traces, each with the spans its previous analysis
    /// saw, the releases of their claims, and when each trace's spans were first stored.
    async fn batch_of(
        &self,
        claimed: Vec<ClaimedTrace>,
    ) -> Result<(Batch, Vec<ClaimRelease>, Vec<tokio::time::Instant>), StoreError> {
        // Only a trace with a stored block that is not new can have been analysed before: every
        // analysis saw at least one block, and a block leaves a trace's new ones only through an
        // analysis. (Requests whose blocks retention dropped count as gone: `request_expiry`.)
        // A trace seen for the first time, nearly every one, needs no look at its request rows.
        let seen_before: Vec<_> = (claimed.iter())
            .filter(|trace| {
                let new_blocks: HashSet<i64> = trace.new_blocks.iter().copied().collect();
                (trace.spans.iter()).any(|(block, _)| !new_blocks.contains(block))
            })
            .map(|trace| trace.trace_id)
            .collect();
        // The delay counts from when the spans were first stored, by the wall clock any
        // instance may have read: taken back from now onto this process's monotonic clock.
        let (now, now_unix_ns) = (tokio::time::Instant::now(), now_unix_ns());
        let arrivals = claimed
            .iter()
            .map(|trace| {
                let since =
                    Duration::from_nanos(now_unix_ns.saturating_sub(trace.first_seen_unix_ns));
                now.checked_sub(since).unwrap_or(now)
            })
            .collect();
        let prior = if seen_before.is_empty() {
            HashMap::new()
        } else {
            self.store.analysed_traces(&seen_before).await?
        };
        let mut work = Vec::with_capacity(claimed.len());
        let mut releases = Vec::with_capacity(claimed.len());
        for trace in claimed {
            if trace.hot {
                self.stats.hot_trace_skips.fetch_add(1, Relaxed);
            }
            let new_blocks: HashSet<i64> = trace.new_blocks.iter().copied().collect();
            releases.push(ClaimRelease {
                trace_id: trace.trace_id,
                claim: trace.claim,
                analysed_blocks: trace.new_blocks,
            });
            let newest = trace
                .spans
                .iter()
                .map(|(block, _)| *block)
                .max()
                .unwrap_or(0);
            let has_new = trace
                .spans
                .iter()
                .any(|(block, _)| new_blocks.contains(block));
            if !has_new {
                continue; // its new blocks are gone (retention), or were analysed already
            }
            let old_spans = prior.contains_key(&trace.trace_id).then(|| {
                trace
                    .spans
                    .iter()
                    .filter(|(block, _)| !new_blocks.contains(block))
                    .map(|(_, span)| span.clone())
                    .collect()
            });
            work.push(Work {
                trace_id: trace.trace_id,
                spans: trace.spans.into_iter().map(|(_, span)| span).collect(),
                old_spans,
                last_block_id: newest,
            });
        }
        let batch = Batch {
            at_hand: work,
            ..Batch::default()
        };
        Ok((batch, releases, arrivals))
    }
}
