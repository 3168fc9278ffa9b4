//! The `bottleneck` binary: parse the command line, run it, print the error chain, exit.

use std::process::ExitCode;

use bottleneck::cli::{self, Cli, Outcome};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The ingest and analysis paths allocate and free millions of small strings a second, across
/// threads. glibc's allocator spent about a quarter of the server's time doing it (`perf record`,
/// BENCHMARKS.md) and kept freed memory in per-thread arenas; mimalloc does both better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (mimalloc.h), which the bindings do not name.
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// On Linux mimalloc commits its arenas whole by default, and memory it frees is then not given
/// back to the OS: at full rate with analysis on the server's RSS stood about 50 MiB above
/// what it uses (BENCHMARKS.md). Committing on demand lets freed pages go. An allocator option
/// is read when the first arena is reserved, so this runs as a constructor, before `main` and
/// before anything is allocated. Set here, it is no longer changed by
/// `MIMALLOC_ARENA_EAGER_COMMIT`.
#[cfg(target_os = "linux")]
extern "C" fn commit_allocator_arenas_on_demand() {
    // SAFETY: sets one of mimalloc's integer options to a valid value; no allocation involved.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ON_DEMAND: extern "C" fn() = commit_allocator_arenas_on_demand;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("BOTTLENECK_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(Outcome::Ok) => ExitCode::from(0),
        Ok(Outcome::OverBudget) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
