//! Thread CPU time, and real CPU work to spend it on.
//!
//! `cpu.time_ns` on a span is the CPU time of the span's own synchronous sections. A tokio task can
//! move to another worker thread at every `.await`, so the thread CPU clock is only read around
//! code that cannot be moved: a closure measured by [`CpuMeter::measure`] or a [`burn`] on one
//! blocking thread.
//!
//! Invariant: a measurement starts and ends on the same thread; nothing here ever spans an
//! `.await`, and nothing here panics when the platform has no thread CPU clock (the time is then
//! simply not reported).

use std::hint::black_box;
use std::time::{Duration, Instant};

/// CPU time the calling thread has consumed so far, or `None` where there is no such clock.
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
    Some(secs * 1_000_000_000 + nanos)
}

/// CPU time the calling thread has consumed so far, or `None` where there is no such clock.
#[cfg(not(unix))]
pub fn thread_cpu_ns() -> Option<u64> {
    None
}

/// The CPU time of one span, summed over its synchronous sections.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuMeter {
    total_ns: u64,
    /// Whether every section could be measured; a span without a clock gets no attribute rather
    /// than a wrong zero.
    unmeasured: bool,
}

impl CpuMeter {
    /// Runs `work` on this thread and adds the CPU time it took.
    pub fn measure<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let before = thread_cpu_ns();
        let out = work();
        match (before, thread_cpu_ns()) {
            (Some(before), Some(after)) => self.total_ns += after.saturating_sub(before),
            _ => self.unmeasured = true,
        }
        out
    }

    /// Adds a section measured elsewhere (on a blocking thread, see [`burn`]).
    pub fn add(&mut self, cpu_ns: Option<u64>) {
        match cpu_ns {
            Some(ns) => self.total_ns += ns,
            None => self.unmeasured = true,
        }
    }

    /// The value for `cpu.time_ns`, if every section was measured.
    pub fn total_ns(&self) -> Option<u64> {
        (!self.unmeasured).then_some(self.total_ns)
    }
}

/// Iterations between two clock reads: about 50 µs of work, so the clock costs nothing and a
/// burn overshoots its target by at most that.
const ITERATIONS_PER_CHECK: u32 = 20_000;

/// Does real arithmetic (an FNV-1a style hash chain, as a signature's digest would) on this
/// thread until it has used `target` of CPU time; returns the CPU time used.
///
/// Without a thread CPU clock the loop stops after `target` of wall time instead and returns
/// `None`.
pub fn burn(target: Duration, seed: u64) -> Option<u64> {
    let target_ns = u64::try_from(target.as_nanos()).unwrap_or(u64::MAX);
    let started_cpu = thread_cpu_ns();
    let started_wall = Instant::now();
    let mut digest = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    loop {
        for idx in 0..ITERATIONS_PER_CHECK {
            digest ^= u64::from(idx);
            digest = digest.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
        }
        black_box(digest);
        let done = match (started_cpu, thread_cpu_ns()) {
            (Some(before), Some(now)) => now.saturating_sub(before) >= target_ns,
            _ => started_wall.elapsed() >= target,
        };
        if done {
            break;
        }
    }
    Some(thread_cpu_ns()?.saturating_sub(started_cpu?))
}

/// [`burn`] on a blocking thread, so CPU-heavy work never stalls the runtime's workers (which
/// also run the exporters); the thread is measured from inside, so the CPU time is exact.
pub async fn spend(target: Duration, seed: u64) -> Option<u64> {
    tokio::task::spawn_blocking(move || burn(target, seed))
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn burn_spends_at_least_its_target_of_cpu() {
        let cpu_ns = burn(Duration::from_millis(5), 1).expect("unix has a thread cpu clock");
        assert!(cpu_ns >= 5_000_000, "{cpu_ns}");
    }

    #[cfg(unix)]
    #[test]
    fn meter_counts_work_but_not_sleep() {
        let mut meter = CpuMeter::default();
        meter.measure(|| std::thread::sleep(Duration::from_millis(20)));
        meter.measure(|| burn(Duration::from_millis(2), 2));
        let total = meter.total_ns().expect("unix has a thread cpu clock");
        assert!((2_000_000..15_000_000).contains(&total), "{total}");
    }
}
