//! The future adapter that gives a task its own CPU clock: [`CpuTimeExt::with_cpu_time`].
//!
//! Invariant: the adapter changes nothing about how the future runs; it reads the thread CPU
//! clock before and after each poll and, if a reading ever fails, stops measuring rather than
//! guess.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::clock::{self, ClockId};

/// Measures a future's CPU time across threads, for spans started inside it.
pub trait CpuTimeExt: Future + Sized {
    /// Gives this future a CPU clock of its own: the thread CPU time of each of its polls (and of
    /// the futures it polls), added up on whatever thread each poll runs, plus what is
    /// [`charge`](crate::charge)d during them. A span that starts and ends inside the future's
    /// polls is measured on that clock by [`CpuTimeProcessor`](crate::CpuTimeProcessor), so its
    /// `cpu.time_ns` stays exact when the task moves between a runtime's worker threads.
    ///
    /// Wrap a whole request (the future a server spawns or serves it with), or each branch of a
    /// `join!` whose spans should not include each other's CPU.
    fn with_cpu_time(self) -> CpuTimed<Self> {
        CpuTimed {
            future: self,
            clock: ClockId::next(),
            task_ns: Some(0),
        }
    }
}

impl<F: Future> CpuTimeExt for F {}

/// A future with its own CPU clock; see [`CpuTimeExt::with_cpu_time`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct CpuTimed<F> {
    future: F,
    clock: ClockId,
    /// The clock's value after the last poll; `None` once a reading failed.
    task_ns: Option<u64>,
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is pinned structurally: it is never moved out of `self` or handed out
        // unpinned, `CpuTimed` has no `Drop` impl, and it is `Unpin` only when `F` is.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this.future` stays where it is for as long as `self` is pinned.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        let Some(task_ns) = this.task_ns else {
            return future.poll(cx);
        };
        let Some(running) = clock::enter(this.clock, task_ns) else {
            this.task_ns = None;
            return future.poll(cx);
        };
        let out = future.poll(cx);
        this.task_ns = running.exit();
        out
    }
}
