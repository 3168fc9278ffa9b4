//! Figures of a process read from Linux's `/proc`: CPU time, resident memory, open files,
//! threads. Another platform gets `None`, which the report shows as "-".
//!
//! Invariant: read-only, and a process that has gone away is `None`, never an error.

/// Clock ticks per second, the unit of `utime` and `stime` in `/proc/<pid>/stat`.
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a configuration value and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // Linux has used 100 on every architecture for decades; a failed call gets that.
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User plus system CPU time, in clock ticks, from the text of `/proc/<pid>/stat`.
///
/// The second field is the executable's name in parentheses, and that name may itself contain
/// spaces and parentheses, so the fields are counted from the last `)`: after it come field 3
/// (state) onwards, and utime and stime are fields 14 and 15.
pub(super) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds `pid` has used so far, user and system.
pub(super) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_cpu_ticks(&stat)? as f64 / clock_ticks_per_sec())
}

/// The value of a `Name: value` line of `/proc/<pid>/status`, as a number.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// Resident memory of `pid`.
pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    Some(status_field(&status(pid)?, "VmRSS")? * 1024)
}

/// OS threads of `pid`.
pub(super) fn threads(pid: u32) -> Option<u64> {
    status_field(&status(pid)?, "Threads")
}

/// Open file descriptors of `pid`: sockets, database files, pipes.
pub(super) fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The sum of `figure` over `pids`, `None` if it is unknown for any of them.
pub(super) fn sum(pids: &[u32], figure: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    pids.iter().map(|&pid| figure(pid)).sum()
}

/// CPU seconds used by `pids` together.
pub(super) fn cpu_secs_sum(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&pid| cpu_secs(pid)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime() {
        let stat = "4242 (bottleneck) S 1 4242 4242 0 -1 4194560 12345 0 7 0 250 31 0 0 20 0 \
                    12 0 987654 123456789 2345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 \
                    17 1 0 0 0 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "77 (a (b) c) d) R 1 77 77 0 -1 0 0 0 0 0 1000 2000 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(3000));
        let stat = "78 ()) R 1 78 78 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(7));
    }

    #[test]
    fn a_truncated_or_garbled_stat_is_none() {
        assert_eq!(
            parse_cpu_ticks("77 (x) R 1 77 77 0 -1 0 0 0 0 0 1000"),
            None
        );
        assert_eq!(parse_cpu_ticks("77 x R 1"), None);
        assert_eq!(
            parse_cpu_ticks("77 (x) R 1 77 77 0 -1 0 0 0 0 0 ten 2000 0"),
            None
        );
    }

    #[test]
    fn status_fields_are_found_by_exact_name() {
        let status = "Name:\tbottleneck\nVmRSSMax:\t1 kB\nVmRSS:\t  61440 kB\nThreads:\t9\n";
        assert_eq!(status_field(status, "VmRSS"), Some(61440));
        assert_eq!(status_field(status, "Threads"), Some(9));
        assert_eq!(status_field(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_used_cpu_and_holds_memory() {
        let me = std::process::id();
        assert!(cpu_secs(me).is_some_and(|secs| secs >= 0.0));
        assert!(rss_bytes(me).is_some_and(|bytes| bytes > 1_000_000));
        assert!(threads(me).is_some_and(|n| n >= 1));
        assert!(open_fds(me).is_some_and(|n| n >= 3));
    }
}
