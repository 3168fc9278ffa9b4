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
use super::critical_path::CriticalPath;
use super::request::template_name;
use super::span_tree::SpanTree;
use super::sql;

/// The operation name of a span.
pub fn operation_name(span: &Span) -> String {
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
pub fn operations(tree: &SpanTree<'_>, path: &CriticalPath) -> Vec<OperationStat> {
    // Calls, total and critical time by operation; the name is moved into its stat at the end.
    let mut by_key: BTreeMap<(Category, String), (u32, u64, u64)> = BTreeMap::new();
    for node in &path.nodes {
        let span = tree.spans[node.tree_idx];
        // The request span's own time is in-process work, whatever its category.
        let category = if node.parent.is_none() {
            Category::Cpu
        } else {
            span.category
        };
        let (calls, total_ns, critical_ns) =
            by_key.entry((category, operation_name(span))).or_default();
        *calls = calls.saturating_add(1);
        *total_ns = total_ns.saturating_add(node.duration_ns());
        *critical_ns = critical_ns.saturating_add(node.critical_ns);
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
