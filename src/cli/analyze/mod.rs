//! `bottleneck analyze FILE…`: the analysis on captured traces, no server. Reads OTLP captures
//! (`capture`), analyses them as the server would (`endpoints`), prints the endpoint table with
//! breakdowns and findings (`text`, or `json` in the API's shapes, or `sarif` for code
//! scanning), judges the `[[budget]]`s of `--config` as `check` does, and with `--baseline`
//! compares the two captures per endpoint (`baseline`).
//!
//! Exit codes: 0 all well, 1 a budget is broken, 2 an error (unreadable capture or config),
//! 3 the capture regressed against its baseline (and no budget is broken).
//!
//! Invariant: reads files and writes to stdout only; no store, no network.

mod baseline;
mod capture;
mod endpoints;
mod json;
mod sarif;
mod text;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use self::capture::Capture;
use self::endpoints::CaptureAnalysis;
use crate::alert::budget::Observed;
use crate::analysis::AnalysisConfig;
use crate::analysis::aggregate;
use crate::cli::Outcome;
use crate::cli::check::{self, Observations, Row};
use crate::store::Window;

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Text,
    /// The API's JSON shapes.
    Json,
    /// SARIF 2.1.0: findings with a code location, for code scanning.
    Sarif,
}

/// `analyze`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Capture files: OTLP JSON lines as the Collector's file exporter writes them, its
    /// length-prefixed protobuf, or one OTLP protobuf export per file; gzip or zstd allowed.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A capture of the code before the change: compare per endpoint, exit 3 on a regression.
    /// Repeat for a baseline of several files.
    #[arg(long, value_name = "FILE")]
    pub baseline: Vec<PathBuf>,
    /// A TOML file with `[[budget]]` tables to judge (and `[analysis]` thresholds to apply).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// For SARIF: the directory code paths are relative to (a prefix stripped from
    /// `code.file.path`), usually the checkout the application ran from.
    #[arg(long, value_name = "DIR")]
    pub source_root: Option<PathBuf>,
}

/// A capture, analysed, with where its spans came from.
pub struct Analysed {
    /// The files read.
    pub files: Vec<PathBuf>,
    /// What reading them found.
    pub capture_stats: CaptureStats,
    /// The analysis.
    pub analysis: CaptureAnalysis,
    /// From the first span's start to the last span's end.
    pub window: Window,
}

/// The counts of a capture, kept after its spans went into the analysis.
#[derive(Debug, Clone, Copy)]
pub struct CaptureStats {
    /// Exports read.
    pub exports: u64,
    /// Spans kept.
    pub spans: u64,
    /// Spans dropped as invalid.
    pub rejected_spans: u64,
}

fn analyse_files(files: &[PathBuf], config: &AnalysisConfig) -> anyhow::Result<Analysed> {
    let capture = Capture::read_files(files)?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    capture::require_spans(&capture, &names.join(", "))?;
    let (from_unix_ns, to_unix_ns) = capture.time_range_ns();
    let capture_stats = CaptureStats {
        exports: capture.exports,
        spans: capture.spans.len() as u64,
        rejected_spans: capture.rejected_spans,
    };
    Ok(Analysed {
        files: files.to_vec(),
        capture_stats,
        analysis: endpoints::analyse(capture.spans, config),
        window: Window {
            from_unix_ns,
            to_unix_ns: to_unix_ns.max(from_unix_ns + 1),
        },
    })
}

impl Analysed {
    /// How long the capture spans, for the budget table.
    fn duration(&self) -> Duration {
        Duration::from_nanos(self.window.to_unix_ns - self.window.from_unix_ns)
    }

    /// Each endpoint's numbers, in the units budgets are written in.
    fn observations(&self) -> Observations {
        self.analysis
            .endpoints
            .iter()
            .filter_map(|((service, endpoint), captured)| {
                let stats = aggregate::summarize(&captured.rollup, endpoint)?;
                Some((
                    service.clone(),
                    endpoint.clone(),
                    Observed::from_stats(&stats),
                ))
            })
            .collect()
    }
}

/// Runs the analysis.
pub async fn run(args: AnalyzeArgs) -> anyhow::Result<Outcome> {
    // Reading and analysing is CPU work on files: off the async workers.
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("the analysis thread failed")?
}

fn run_blocking(args: AnalyzeArgs) -> anyhow::Result<Outcome> {
    let file_config = args
        .config
        .as_deref()
        .map(crate::config::read_file)
        .transpose()?;
    let analysis_config = file_config
        .as_ref()
        .map(|file| file.analysis_config())
        .unwrap_or_default();
    let candidate = analyse_files(&args.files, &analysis_config)?;
    let baseline = if args.baseline.is_empty() {
        None
    } else {
        Some(analyse_files(&args.baseline, &analysis_config).context("reading the baseline")?)
    };
    let budgets: Vec<Row> = match &file_config {
        Some(file) => {
            let rules = file.alert_rules();
            let observations = candidate.observations();
            rules
                .budgets
                .iter()
                .flat_map(|budget| check::judge(budget, candidate.duration(), &observations))
                .collect()
        }
        None => Vec::new(),
    };
    let diff = baseline
        .as_ref()
        .map(|baseline| self::baseline::diff(&baseline.analysis, &candidate.analysis));

    let out = match args.format {
        Format::Text => text::report(&candidate, &budgets, diff.as_ref()),
        Format::Json => {
            let report = crate::web::api::dto::CaptureReportDto {
                files: args.files.iter().map(|f| f.display().to_string()).collect(),
                exports: candidate.capture_stats.exports,
                spans: candidate.capture_stats.spans,
                rejected_spans: candidate.capture_stats.rejected_spans,
                traces: candidate.analysis.traces,
                endpoints: json::endpoints(&candidate.analysis, candidate.window),
                budgets: json::budgets(&budgets),
                baseline: match (&diff, &baseline) {
                    (Some(diff), Some(baseline)) => {
                        Some(json::baseline(diff, baseline, &candidate))
                    }
                    _ => None,
                },
            };
            let mut text = serde_json::to_string_pretty(&report).context("writing json")?;
            text.push('\n');
            text
        }
        Format::Sarif => {
            let log = sarif::log(&candidate.analysis, args.source_root.as_deref());
            let mut text = serde_json::to_string_pretty(&log).context("writing sarif")?;
            text.push('\n');
            text
        }
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing the report")?;
    if budgets.iter().any(|row| row.broken) {
        Ok(Outcome::OverBudget)
    } else if diff
        .as_ref()
        .is_some_and(self::baseline::BaselineDiff::regressed)
    {
        Ok(Outcome::Regressed)
    } else {
        Ok(Outcome::Ok)
    }
}
