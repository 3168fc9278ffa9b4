//! The subcommands. Each returns an [`Outcome`] that `main` maps to an exit code.

pub mod analyze;
pub mod bench;
pub mod check;
pub mod demo;
pub mod migrate;
pub mod reload;
pub mod serve;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::ServeFlags;

/// Bottleneck: where does a request's time really go?
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, after_help = env_help())]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive OTLP traces, analyse them and serve the dashboard and API.
    Serve(ServeFlags),
    /// Start the server on a fresh file and feed it a built-in, instrumented multi-service workload.
    Demo(demo::DemoArgs),
    /// Judge the budgets of a config file against a server or database: exit 0 when all hold,
    /// 1 when one is broken, 2 on a usage, config or connection error.
    Check(check::CheckArgs),
    /// Analyse captured OTLP trace files without a server: the endpoint table, breakdowns and
    /// findings, the config's budgets (exit 1 when one is broken) and, with `--baseline`, what
    /// a change did per endpoint (exit 3 when it regressed); 2 on an error.
    Analyze(analyze::AnalyzeArgs),
    /// Ask a running server to re-read its config file's budgets, SLOs and webhooks.
    Reload(reload::ReloadArgs),
    /// Measure ingest: a load generator against a fresh server process on this machine.
    Bench(bench::BenchArgs),
    /// Apply the database migrations and exit (`serve` applies them at start too).
    Migrate(ServeFlags),
}

/// How a command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything as expected: exit 0.
    Ok,
    /// A check found a broken budget: exit 1.
    OverBudget,
    /// A capture regressed against its baseline: exit 3.
    Regressed,
}

/// An HTTP client for the server's API that sends the bearer token read from `token_file`, if
/// given. A file, not a flag, so the token never shows in the process list.
pub(crate) fn api_client(token_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    crate::alert::notify::install_crypto();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(path) = token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .with_context(|| format!("the token in {} is not a header value", path.display()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .context("building the HTTP client")
}

fn env_help() -> String {
    let mut help =
        String::from("Environment variables (flags and the config file take precedence):\n");
    for (name, what) in crate::config::ENV_VARS {
        help.push_str(&format!("  {name:<26} {what}\n"));
    }
    help
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Serve(flags) => serve::run(flags).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Analyze(args) => analyze::run(args).await,
        Command::Reload(args) => reload::run(args).await,
        Command::Migrate(flags) => migrate::run(flags).await,
    }
}
