//! The text report of `analyze`: per endpoint its latency, its critical-path breakdown, its
//! database calls, the bottleneck sentence and the findings with their code locations; then
//! the budget table of `check`, then the baseline comparison.
//!
//! Invariant: formats values it is given; computes nothing the JSON report does not hold.

use collector::category::Category;

use super::Analysed;
use super::baseline::BaselineDiff;
use crate::analysis::aggregate::{self, format_ms};
use crate::cli::check::{self, Row};

/// The whole report.
pub fn report(candidate: &Analysed, budgets: &[Row], diff: Option<&BaselineDiff>) -> String {
    let stats = candidate.capture_stats;
    let analysis = &candidate.analysis;
    let mut out = format!(
        "{} exports, {} spans ({} dropped as invalid), {} traces, {} endpoints\n",
        stats.exports,
        stats.spans,
        stats.rejected_spans,
        analysis.traces,
        analysis.endpoints.len()
    );
    let mut endpoints: Vec<_> = analysis
        .endpoints
        .iter()
        .filter_map(|(name, captured)| {
            Some((
                name,
                captured,
                aggregate::summarize(&captured.rollup, &name.1)?,
            ))
        })
        .collect();
    endpoints.sort_by(|a, b| {
        (b.2.mean_ns * b.2.requests as f64).total_cmp(&(a.2.mean_ns * a.2.requests as f64))
    });
    for (name, captured, summary) in endpoints {
        let (service, endpoint) = name;
        out.push_str(&format!(
            "\n{service} {endpoint}: {} requests, {} errors\n",
            summary.requests, summary.errors
        ));
        out.push_str(&format!(
            "  latency    mean {}  p50 {}  p95 {}  p99 {}\n",
            format_ms(summary.mean_ns),
            format_ms(summary.p50_ns),
            format_ms(summary.p95_ns),
            format_ms(summary.p99_ns)
        ));
        let parts: Vec<String> = Category::ALL
            .into_iter()
            .filter(|c| summary.breakdown_mean_ns[c.index()] > 0.0)
            .map(|c| {
                let ns = summary.breakdown_mean_ns[c.index()];
                let share = if summary.mean_ns > 0.0 {
                    ns / summary.mean_ns * 100.0
                } else {
                    0.0
                };
                format!("{} {} ({share:.0}%)", c.as_str(), format_ms(ns))
            })
            .collect();
        out.push_str(&format!("  breakdown  {}\n", parts.join("  ")));
        out.push_str(&format!(
            "  db calls   {:.2} per request\n",
            summary.db_calls_per_request
        ));
        out.push_str(&format!("  {}\n", summary.bottleneck_summary));
        let findings = aggregate::findings(&captured.rollup);
        if !findings.is_empty() {
            out.push_str("  findings:\n");
        }
        for finding in findings {
            out.push_str(&format!("    - {}\n", finding.summary));
            if let Some(at) = &finding.location {
                let (preposition, place) = at.phrase();
                out.push_str(&format!("      {preposition} {place}\n"));
            }
        }
    }
    if !budgets.is_empty() {
        out.push('\n');
        out.push_str(&check::render(budgets));
        let broken = budgets.iter().filter(|r| r.broken).count();
        if broken > 0 {
            out.push_str(&format!(
                "{broken} of {} budget checks broken\n",
                budgets.len()
            ));
        } else {
            out.push_str(&format!("all {} budget checks hold\n", budgets.len()));
        }
    }
    if let Some(diff) = diff {
        out.push_str("\ncompared with the baseline:\n");
        for name in &diff.new_endpoints {
            out.push_str(&format!("  new endpoint {} {}\n", name.0, name.1));
        }
        for name in &diff.gone_endpoints {
            out.push_str(&format!("  endpoint {} {} is gone\n", name.0, name.1));
        }
        for endpoint in &diff.endpoints {
            for sentence in &endpoint.sentences {
                out.push_str(&format!("  {sentence}\n"));
            }
        }
        let regressed: Vec<String> = diff
            .endpoints
            .iter()
            .filter(|e| e.regressed())
            .map(|e| format!("{} {}", e.endpoint.0, e.endpoint.1))
            .collect();
        if regressed.is_empty() {
            out.push_str("no endpoint regressed\n");
        } else {
            out.push_str(&format!("regressed: {}\n", regressed.join(", ")));
        }
    }
    out
}
