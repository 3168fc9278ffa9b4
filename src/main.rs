//! The `bottleneck` binary: parse the command line, run it, print the error chain, exit.

use std::process::ExitCode;

use bottleneck::cli::{self, Cli, Outcome};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The ingest and analysis paths allocate and free millions of small strings a second, across
/// threads. glibc's allocator is slow at that and keeps freed memory in per-thread arenas;
/// mimalloc does both better (docs/benchmarks-history.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` and `mi_option_purge_delay` (mimalloc.h, v3),
/// which the bindings do not name.
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
#[cfg(target_os = "linux")]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays committed before mimalloc gives it back, in milliseconds: a trade
/// of memory for CPU. The default of one second holds more RSS at full rate for no CPU saved; a
/// much shorter delay holds less but costs CPU on every span (docs/benchmarks-history.md).
#[cfg(target_os = "linux")]
const PURGE_DELAY_MS: std::ffi::c_long = 250;

/// On Linux mimalloc commits its arenas whole by default, and memory it frees is then not given
/// back to the OS, so the server's RSS stays well above what it uses. Committing on demand lets
/// freed pages go, after [`PURGE_DELAY_MS`]. An allocator option is read when the first arena is
/// reserved, so this runs as a constructor, before `main` and before anything is allocated. Set
/// here, the two are no longer changed by `MIMALLOC_ARENA_EAGER_COMMIT` and `MIMALLOC_PURGE_DELAY`.
#[cfg(target_os = "linux")]
extern "C" fn commit_allocator_arenas_on_demand() {
    // SAFETY: sets two of mimalloc's integer options to valid values; no allocation involved.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
    }
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ON_DEMAND: extern "C" fn() = commit_allocator_arenas_on_demand;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            bottleneck::config::log_filter()
                .and_then(|directives| EnvFilter::try_new(directives).ok())
                .unwrap_or_else(|| EnvFilter::new("info")),
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
        Ok(Outcome::Regressed) => ExitCode::from(3),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
