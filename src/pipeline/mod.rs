//! From accepted exports to analysed requests, in one shape whichever the store:
//! `writer` commits exports in groups and acknowledges them. A source of due traces (`due`)
//! feeds the analysis: with one process (SQLite), `assemble` gathers committed spans by trace
//! and waits out the grace period, holding as many block bytes as `held_bound` allows, and
//! `assembled` hands its batches on with the watermark to commit (`requeue`: the blocks of a
//! failed commit read back); with a shared (PostgreSQL) store, traces wait in the database and
//! `claim` hands on those this instance claimed, with the claims to release. `analyze` runs the
//! pure analysis (`work`: decoding and analysing a batch over the cores), decides where each
//! request counts (ids `intern` caches and caps; a request starting far ahead of our clock
//! counted when it is analysed: `skew`), builds the commit (`rows`) and hands it to
//! `scheduler`, which merges and writes commits in order; `delay` counts how long each trace
//! waited for that, and `error` says what failed.
//!
//! Invariant: the store is the truth and memory is a cache. Anything held here can be rebuilt
//! from stored blocks (the analysis watermark says from where), so a crash loses nothing
//! acknowledged and counts nothing twice.

pub mod analyze;
pub mod assemble;
mod assembled;
pub mod claim;
pub mod delay;
pub mod due;
pub mod error;
mod held_bound;
pub mod intern;
pub mod requeue;
mod rows;
pub mod scheduler;
pub mod settings;
pub mod skew;
pub mod work;
pub mod writer;

use std::sync::Arc;

use collector::model::TraceId;

/// Spans durably committed in one block, in their stored (compressed) form: a pending span costs
/// about 40 bytes of memory this way instead of about a kilobyte decoded.
#[derive(Debug)]
pub struct CommittedBlock {
    /// The block's id in the store.
    pub block_id: i64,
    /// The block as stored; `collector::block::decode` gives its spans.
    pub data: Arc<Vec<u8>>,
    /// The distinct traces with spans in it.
    pub trace_ids: Vec<TraceId>,
}
