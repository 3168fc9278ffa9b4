//! The clocks a span is measured on: the CPU clock of an OS thread, and the clock of one
//! [`CpuTimed`](crate::CpuTimed) future, which adds up the thread CPU time of the future's polls
//! on whatever thread each of them runs.
//!
//! Both read in nanoseconds and include what was [`charge`]d to them. A task clock can only be
//! read during one of its polls: the poll in progress is the only place where its current value
//! is known. Each thread therefore keeps the polls in progress on it, innermost last.
//!
//! Invariant: a reading is only ever compared with a later reading of the same clock, and a clock
//! that cannot be read here and now gives `None`, never an estimate.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// CPU time the calling thread has consumed so far, in nanoseconds, or `None` where the platform
/// has no per-thread CPU clock.
#[cfg(unix)]
pub fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant the platform
    // defines; clock_gettime writes nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// CPU time the calling thread has consumed so far, in nanoseconds, or `None` where the platform
/// has no per-thread CPU clock.
#[cfg(not(unix))]
pub fn thread_cpu_ns() -> Option<u64> {
    None
}

/// Counts `cpu_ns` of CPU time that was spent elsewhere on behalf of the calling code, typically
/// measured inside a `spawn_blocking` closure, as if the calling thread had spent it.
///
/// Call it from the code that waited for that work, after it finished: every span open on the
/// calling thread's clock, or on the clock of the [`CpuTimed`](crate::CpuTimed) future being
/// polled, then includes it, exactly like CPU time spent inline. Called anywhere else (a task
/// that is not measured), it changes no span's value.
pub fn charge(cpu_ns: u64) {
    // During thread teardown there is nothing left to charge.
    let _ = THREAD.try_with(|thread| {
        thread
            .charged_ns
            .set(thread.charged_ns.get().saturating_add(cpu_ns));
    });
}

/// One clock: a thread's, or one `CpuTimed` future's. Ids come from one counter and are never
/// reused, so a reading can never be mistaken for a reading of another clock, even one created
/// after the first was gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockId(u64);

/// The next clock id; 0 is never handed out.
static NEXT_CLOCK: AtomicU64 = AtomicU64::new(1);

impl ClockId {
    /// A clock id not used before.
    pub(crate) fn next() -> ClockId {
        ClockId(NEXT_CLOCK.fetch_add(1, Relaxed))
    }

    /// The id as a span attribute value.
    pub(crate) fn as_i64(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }

    /// The id from a span attribute value.
    pub(crate) fn from_i64(id: i64) -> Option<ClockId> {
        u64::try_from(id).ok().map(ClockId)
    }
}

/// A reading of one clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The clock read.
    pub clock: ClockId,
    /// Its value, in nanoseconds of CPU time.
    pub ns: u64,
}

/// A poll of a `CpuTimed` future in progress on this thread.
#[derive(Debug, Clone, Copy)]
struct Running {
    /// The future's clock.
    clock: ClockId,
    /// The future's clock when the poll began.
    task_ns: u64,
    /// This thread's clock when the poll began.
    thread_ns: u64,
}

impl Running {
    /// The future's clock, given this thread's clock now.
    fn task_now(&self, thread_now: u64) -> Option<u64> {
        self.task_ns
            .checked_add(thread_now.checked_sub(self.thread_ns)?)
    }
}

/// What a thread knows about its clocks.
struct ThreadClocks {
    /// This thread's clock.
    clock: ClockId,
    /// CPU time charged to this thread so far (see [`charge`]).
    charged_ns: Cell<u64>,
    /// Polls of `CpuTimed` futures in progress, outermost first.
    running: RefCell<Vec<Running>>,
}

impl ThreadClocks {
    /// This thread's clock: its CPU time and what was charged to it.
    fn now(&self) -> Option<u64> {
        thread_cpu_ns()?.checked_add(self.charged_ns.get())
    }
}

thread_local! {
    static THREAD: ThreadClocks = ThreadClocks {
        clock: ClockId::next(),
        charged_ns: Cell::new(0),
        running: RefCell::new(Vec::new()),
    };
}

/// Whether other tasks may run on this thread between two readings of its clock without any poll
/// of a `CpuTimed` future in progress: true on a tokio runtime's threads.
fn shared_thread() -> bool {
    #[cfg(feature = "tokio")]
    {
        tokio::runtime::Handle::try_current().is_ok()
    }
    #[cfg(not(feature = "tokio"))]
    {
        false
    }
}

/// The clock a span starting now is measured on, read: the innermost `CpuTimed` poll in progress
/// on this thread, else this thread's own clock unless the thread is shared by tasks.
pub(crate) fn start() -> Option<Reading> {
    THREAD
        .try_with(|thread| {
            let innermost = thread.running.borrow().last().copied();
            match innermost {
                Some(poll) => Some(Reading {
                    clock: poll.clock,
                    ns: poll.task_now(thread.now()?)?,
                }),
                None if shared_thread() => None,
                None => Some(Reading {
                    clock: thread.clock,
                    ns: thread.now()?,
                }),
            }
        })
        .ok()
        .flatten()
}

/// CPU time on the clock of `since` from that reading until now, if that clock can be read here:
/// it is this thread's clock, or the clock of a `CpuTimed` future being polled on this thread.
pub(crate) fn elapsed(since: Reading) -> Option<u64> {
    THREAD
        .try_with(|thread| {
            let thread_now = thread.now()?;
            let now = if since.clock == thread.clock {
                thread_now
            } else {
                let running = thread.running.borrow();
                let poll = running.iter().rev().find(|it| it.clock == since.clock)?;
                poll.task_now(thread_now)?
            };
            now.checked_sub(since.ns)
        })
        .ok()
        .flatten()
}

/// Marks the poll of the future with clock `clock`, which reads `task_ns` now, as running on this
/// thread until the guard is dropped. `None` if this thread's clock cannot be read.
pub(crate) fn enter(clock: ClockId, task_ns: u64) -> Option<PollGuard> {
    THREAD
        .try_with(|thread| {
            let thread_ns = thread.now()?;
            thread.running.borrow_mut().push(Running {
                clock,
                task_ns,
                thread_ns,
            });
            Some(PollGuard {
                _same_thread: PhantomData,
            })
        })
        .ok()
        .flatten()
}

/// A poll in progress, ended when dropped (also when the poll panics).
#[derive(Debug)]
pub(crate) struct PollGuard {
    /// The guard belongs to the thread whose list it was pushed on.
    _same_thread: PhantomData<*const ()>,
}

impl PollGuard {
    /// Ends the poll; returns the future's clock now, or `None` if it can no longer be read.
    pub(crate) fn exit(self) -> Option<u64> {
        THREAD
            .try_with(|thread| {
                let thread_now = thread.now()?;
                let running = thread.running.borrow();
                running.last()?.task_now(thread_now)
            })
            .ok()
            .flatten()
        // `self` drops here and pops the poll.
    }
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        // Polls nest, so the innermost one is this guard's.
        let _ = THREAD.try_with(|thread| thread.running.borrow_mut().pop());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_charge_counts_on_the_thread_clock() {
        let before = start().expect("a plain test thread has a clock");
        charge(7_000_000);
        let elapsed = elapsed(before).expect("same thread");
        assert!((7_000_000..8_000_000).contains(&elapsed), "{elapsed}");
    }

    #[cfg(unix)]
    #[test]
    fn another_threads_reading_cannot_be_compared() {
        let reading = std::thread::spawn(|| start().expect("a plain thread has a clock"))
            .join()
            .expect("no panic");
        assert_eq!(elapsed(reading), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_task_clock_is_read_only_during_its_polls() {
        let clock = ClockId::next();
        let poll = enter(clock, 1_000).expect("a clock");
        let reading = start().expect("the poll's clock");
        assert_eq!(reading.clock, clock);
        assert!(reading.ns >= 1_000);
        let task_ns = poll.exit().expect("a clock");
        assert!(task_ns >= reading.ns);
        assert_eq!(elapsed(reading), None, "not being polled any more");
        let poll = enter(clock, task_ns).expect("a clock");
        assert!(elapsed(reading).is_some());
        drop(poll);
    }
}
