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
