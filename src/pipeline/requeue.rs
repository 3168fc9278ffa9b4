//! The blocks of failed analysis commits, to be analysed again without a restart (SQLite; with
//! PostgreSQL a failed commit leaves its claims to expire instead).
//!
//! A failed commit loses its analysis, not its spans: the assembler's source of due traces
//! (`assembled`) notes the floor below the failed batch's blocks, and the assembler, once a
//! [`REQUEUE_INTERVAL`] has passed, reads the blocks after that floor back from the store and
//! holds their traces again, as it does on start. Traces among them that a later commit did analyse are recognised by the store and
//! re-analysed in place, so nothing is counted twice.
//!
//! Invariant: a floor leaves here only when the assembler holds the blocks after it again; until
//! then `assembled` keeps the watermark below it.

use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::time::Duration;

/// The least time between two reads of failed blocks: a store that keeps failing is retried at
/// this pace rather than every tick.
pub const REQUEUE_INTERVAL: Duration = Duration::from_secs(1);

const NONE: i64 = i64::MAX;

/// The lowest floor of the failed commits not yet requeued.
#[derive(Debug)]
pub struct FailedBlocks(AtomicI64);

impl Default for FailedBlocks {
    fn default() -> Self {
        FailedBlocks(AtomicI64::new(NONE))
    }
}

impl FailedBlocks {
    /// Notes that every block after `floor` must be analysed again.
    pub fn note(&self, floor: i64) {
        self.0.fetch_min(floor, SeqCst);
    }

    /// The lowest floor noted and not taken yet.
    pub fn pending(&self) -> Option<i64> {
        let floor = self.0.load(SeqCst);
        (floor != NONE).then_some(floor)
    }

    /// Takes the lowest floor noted, for the assembler to read the blocks after it again.
    pub fn take(&self) -> Option<i64> {
        let floor = self.0.swap(NONE, SeqCst);
        (floor != NONE).then_some(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_floor_is_kept_until_taken() {
        let failed = FailedBlocks::default();
        assert_eq!(failed.take(), None);
        failed.note(40);
        failed.note(12);
        failed.note(30);
        assert_eq!(failed.pending(), Some(12));
        assert_eq!(failed.take(), Some(12));
        assert_eq!(failed.pending(), None);
    }
}
