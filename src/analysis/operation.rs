//! Operations: what a span does, named so that repeated work shares one name, and summed per
//! request.
//!
//! A database or cache span with a statement is its normalized statement; an HTTP client call is
//! `"{METHOD} {host}"`; anything else is its span name with ids templated.
//!
//! Invariant: pure; names have low cardinality (no literals, no ids).

use std::collections::BTreeMap;

use collector::category::Category;
use collector::model::Span;

use super::OperationStat;
use super::critical_path::{CriticalPath, self_category};
use super::gap::{GAP_MARK, Gap};
use super::request::template_name;
use super::span_tree::SpanTree;
use super::sql;

/// The operation name of a span.
pub fn operation_name(span: &Span) -> String {
    let name = span_operation_name(span);
    // A gap's operation name starts with this mark; no span's may look like one.
    if name.contains(GAP_MARK) {
        name.replace(GAP_MARK, " ")
    } else {
        name
    }
}

fn span_operation_name(span: &Span) -> String {
    let sem = &span.semantics;
    match span.category {
        Category::Db | Category::Cache => {
            if let Some(statement) = &sem.db_statement {
                return sql::scan_shared(statement).normalized.clone();
            }
        }
        Category::Network => {
            if let Some(method) = &sem.http_method {
                let host = sem
                    .server_address
                    .clone()
                    .or_else(|| sem.url_full.as_deref().and_then(url_host));
                if let Some(host) = host {
                    return format!("{method} {host}");
                }
            }
        }
        _ => {}
    }
    template_name(&span.name)
}

/// The host of a URL, without user info or port.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host_port.starts_with('[') {
        // An IPv6 literal keeps its brackets; the port follows them.
        host_port
            .split_once(']')
            .map_or(host_port.to_owned(), |(h, _)| format!("{h}]"))
    } else {
        host_port.split(':').next().unwrap_or_default().to_owned()
    };
    (!host.is_empty()).then_some(host)
}

/// Operations of one request's subtree, largest critical time first.
///
/// Each span counts as one call of its operation under its own category (in-process spans under
/// `cpu` where they measured their CPU and `untraced` where they did not). Critical time goes
/// where it was spent: a gap's to the gap's operation, a measured span's self time to `cpu` and
/// `wait` in its proportions, the rest to the category of each stretch; so the critical times of
/// all operations sum to the request's duration, category by category.
pub fn operations(tree: &SpanTree<'_>, path: &CriticalPath, gaps: &[Gap]) -> Vec<OperationStat> {
    // Calls, total and critical time by operation; the name is moved into its stat at the end.
    let mut by_key: BTreeMap<(Category, String), (u32, u64, u64)> = BTreeMap::new();
    let mut add = |key: (Category, String), calls: u32, total_ns: u64, critical: u64| {
        let (c, t, k) = by_key.entry(key).or_default();
        *c = c.saturating_add(calls);
        *t = t.saturating_add(total_ns);
        *k = k.saturating_add(critical);
    };
    let mut in_gap = vec![false; path.segments.len()];
    // Critical time of each node that no gap took, by category (self time in the node's own
    // fields, which the gaps' parts are taken out of).
    let mut parts = vec![[0u64; Category::COUNT]; path.nodes.len()];
    for (idx, node) in path.nodes.iter().enumerate() {
        parts[idx][Category::Cpu.index()] = node.cpu_critical_ns;
        parts[idx][Category::Wait.index()] = node.wait_critical_ns;
        parts[idx][Category::Untraced.index()] = node.untraced_critical_ns;
    }
    for gap in gaps {
        in_gap[gap.segments.clone()].fill(true);
        let name = gap.operation();
        for (category, ns) in gap.parts() {
            if ns > 0 {
                let left = &mut parts[gap.node][category.index()];
                *left = left.saturating_sub(ns);
                add((category, name.clone()), 1, ns, ns);
            }
        }
    }
    for (seg, _) in path
        .segments
        .iter()
        .zip(&in_gap)
        .filter(|(_, in_gap)| !**in_gap)
    {
        if !matches!(seg.category, Category::Cpu | Category::Untraced) {
            parts[seg.node][seg.category.index()] += seg.end_ns - seg.start_ns;
        }
    }
    for (idx, node) in path.nodes.iter().enumerate() {
        let span = tree.spans[node.tree_idx];
        let own = self_category(span, node.parent.is_none());
        let name = operation_name(span);
        for category in Category::ALL {
            let critical = parts[idx][category.index()];
            if category == own {
                add((category, name.clone()), 1, node.duration_ns(), critical);
            } else if critical > 0 {
                add((category, name.clone()), 1, critical, critical);
            }
        }
    }
    let mut ops: Vec<OperationStat> = by_key
        .into_iter()
        .map(
            |((category, name), (calls, total_ns, critical_ns))| OperationStat {
                category,
                name,
                calls,
                total_ns,
                critical_ns,
            },
        )
        .collect();
    ops.sort_by(|a, b| {
        b.critical_ns
            .cmp(&a.critical_ns)
            .then(b.total_ns.cmp(&a.total_ns))
    });
    ops
}
