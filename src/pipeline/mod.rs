//! From accepted exports to analysed requests:
//! `writer` commits exports in groups and acknowledges them; `assemble` gathers committed spans
//! by trace and waits out the grace period, holding as many block bytes as `held_bound` allows;
//! `analyze` runs the pure analysis (`work`: decoding and analysing a batch over the cores) and
//! writes request rows and rollups under the endpoint and resource ids `intern` caches and caps,
//! (a request starting far ahead of our clock counted when it is analysed: `skew`),
//! and `delay` counts how long each trace waited for that; `requeue` hands the blocks of a failed
//! analysis commit back to the assembler. With a shared (PostgreSQL) store, `claim` takes the assembler's place:
//! traces wait in the database and any instance claims them.
//!
//! Invariant: the store is the truth and memory is a cache. Anything held here can be rebuilt
//! from stored blocks (the analysis watermark says from where), so a crash loses nothing
//! acknowledged and counts nothing twice.

pub mod analyze;
pub mod assemble;
pub mod claim;
pub mod delay;
mod held_bound;
pub mod intern;
pub mod requeue;
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
