//! What can go wrong between due traces and their committed analysis: the store failing, or a
//! task of the analysis (a part of a batch on a blocking thread, a commit in the background)
//! failing to finish.
//!
//! Invariant: the analysis' own errors are never dressed up as store errors, so a log line
//! says which of the two failed.

use crate::store::StoreError;

/// An analysis that could not be committed; its traces are analysed again (see `due`).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The store refused a read or the commit.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task of the analysis panicked or was cancelled.
    #[error("analysis task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
