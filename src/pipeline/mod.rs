//! From accepted exports to analysed requests:
//! `writer` commits exports in groups and acknowledges them; `assemble` gathers committed spans
//! by trace and waits out the grace period; `analyze` runs the pure analysis and writes request
//! rows and rollups. With a shared (PostgreSQL) store, `claim` takes the assembler's place:
//! traces wait in the database and any instance claims them.
//!
//! Invariant: the store is the truth and memory is a cache. Anything held here can be rebuilt
//! from stored blocks (the analysis watermark says from where), so a crash loses nothing
//! acknowledged and counts nothing twice.

pub mod analyze;
pub mod assemble;
pub mod claim;
pub mod writer;

use collector::model::Span;

/// Spans durably committed in one block.
#[derive(Debug)]
pub struct CommittedBlock {
    /// The block's id in the store.
    pub block_id: i64,
    /// Its spans.
    pub spans: Vec<Span>,
}
