//! Real CPU work for the simulated services to spend their time on.
//!
//! The services' spans get `cpu.time_ns` from the `cputime` crate: its processor measures each
//! request task's clock, which follows the task across worker threads. Work done on a blocking
//! thread ([`spend`]) is not on that clock, so it is charged to it once done.
//!
//! Invariant: CPU burned on a blocking thread counts for the caller exactly as if it had been
//! burned inline, and nothing here panics when the platform has no thread CPU clock (the work
//! then runs for wall time instead and nothing is charged).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cputime::thread_cpu_ns;

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
/// also run the exporters). The thread is measured from inside and the time charged to the
/// caller's clock (see `cputime::charge`), so every span open in the calling task includes it
/// exactly.
pub async fn spend(target: Duration, seed: u64) {
    let spent = tokio::task::spawn_blocking(move || burn(target, seed)).await;
    if let Ok(Some(cpu_ns)) = spent {
        cputime::charge(cpu_ns);
    }
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
}
