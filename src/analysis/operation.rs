//! Operations: what a span does, named so that repeated work shares one name, and summed per
//! request.
//!
//! A database or cache span with a statement is its normalized statement (a cache's command with
//! its key templated: `GET session:?`); an HTTP client call is `"{METHOD} {host}"`; anything
//! else is its span name with ids templated.
//!
//! Invariant: pure; names have low cardinality (no literals, no ids).

use std::rc::Rc;

use collector::category::Category;
use collector::model::Span;

use super::OperationStat;
use super::critical_path::CriticalPath;
use super::gap::{GAP_MARK, Gap};
use super::request::template_name;
use super::span_tree::SpanTree;
use super::sql::{self, Scanned};

/// What the analysis of one request asks of its nodes more than once: the scan of each database
/// and cache statement (taken once here, as the operation names, the findings and the effects of
/// calls all read it) and each node's operation name, computed when first asked for.
pub struct NodeNames {
    names: Vec<Option<String>>,
    scans: Vec<Option<Rc<Scanned>>>,
}

impl NodeNames {
    /// The statement scans of `path`'s nodes; no name computed yet.
    pub fn new(tree: &SpanTree<'_>, path: &CriticalPath) -> Self {
        let scans = path
            .nodes
            .iter()
            .map(|node| statement_scan(tree.spans[node.tree_idx]))
            .collect();
        Self {
            names: vec![None; path.nodes.len()],
            scans,
        }
    }

    /// The scan of each node's statement, by node: for database and cache spans that carry one
    /// (in the language of their category).
    pub fn scans(&self) -> &[Option<Rc<Scanned>>] {
        &self.scans
    }

    /// The operation name of node `idx`.
    pub fn get(&mut self, tree: &SpanTree<'_>, path: &CriticalPath, idx: usize) -> &str {
        let scan = self.scans[idx].as_deref();
        self.names[idx].get_or_insert_with(|| {
            scanned_operation_name(tree.spans[path.nodes[idx].tree_idx], scan)
        })
    }

    /// The name of node `idx`, computed before by [`NodeNames::get`].
    pub fn peek(&self, idx: usize) -> &str {
        self.names[idx]
            .as_deref()
            .expect("the name was computed before")
    }
}

/// The scan of a database or cache span's statement, in the language of its category.
fn statement_scan(span: &Span) -> Option<Rc<Scanned>> {
    if !matches!(span.category, Category::Db | Category::Cache) {
        return None;
    }
    let statement = span.semantics.db_statement.as_deref()?;
    Some(sql::scan_shared_as(
        statement,
        sql::Language::of(span.category),
    ))
}

/// Where a contribution's operation name is: a gap's, or a node's.
enum Name {
    Gap(usize),
    Node(usize),
}

/// The operation name of a span.
pub fn operation_name(span: &Span) -> String {
    scanned_operation_name(span, statement_scan(span).as_deref())
}

/// The operation name of a span whose statement was scanned (if it has one).
fn scanned_operation_name(span: &Span, scan: Option<&Scanned>) -> String {
    let name = match scan {
        Some(scanned) => scanned.normalized.clone(),
        None => unscanned_operation_name(span),
    };
    // A gap's operation name starts with this mark; no span's may look like one.
    if name.contains(GAP_MARK) {
        name.replace(GAP_MARK, " ")
    } else {
        name
    }
}

/// The name of a span without a statement: the called host of an HTTP client call, or its
/// templated span name.
fn unscanned_operation_name(span: &Span) -> String {
    let sem = &span.semantics;
    if span.category == Category::Network
        && let Some(method) = &sem.http_method
    {
        if let Some(host) = &sem.server_address {
            return format!("{method} {host}");
        }
        if let Some(host) = sem.url_full.as_deref().and_then(url_host) {
            return format!("{method} {host}");
        }
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
/// Each call counts once under its own category (in-process spans under `cpu` where they
/// measured their CPU and `untraced` where they did not); a span inside or beside the call it is
/// part of adds only its time. Critical time goes
/// where it was spent: a gap's to the gap's operation, a measured span's self time to `cpu` and
/// `wait` in its proportions, the rest to the category of each stretch; so the critical times of
/// all operations sum to the request's duration, category by category.
pub fn operations(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    gaps: &[Gap],
    names: &mut NodeNames,
) -> Vec<OperationStat> {
    // Each contribution names its operation by reference (a gap's name, or a node's); the
    // contributions are merged by (category, name) once, and each name is copied once, into its
    // stat: this runs for every request.
    let gap_names: Vec<String> = gaps.iter().map(Gap::operation).collect();
    let mut contributions: Vec<(Category, Name, u32, u64, u64)> =
        Vec::with_capacity(path.nodes.len() + 2 * gaps.len());
    let mut in_gap = vec![false; path.segments.len()];
    // Critical time of each node that no gap took, by category (self time in the node's own
    // fields, which the gaps' parts are taken out of).
    let mut parts = vec![[0u64; Category::COUNT]; path.nodes.len()];
    for (idx, node) in path.nodes.iter().enumerate() {
        parts[idx][Category::Cpu.index()] = node.cpu_critical_ns;
        parts[idx][Category::Wait.index()] = node.wait_critical_ns;
        parts[idx][Category::Untraced.index()] = node.untraced_critical_ns;
    }
    for (gap_idx, gap) in gaps.iter().enumerate() {
        in_gap[gap.segments.clone()].fill(true);
        for (category, ns) in gap.parts() {
            if ns > 0 {
                let left = &mut parts[gap.node][category.index()];
                *left = left.saturating_sub(ns);
                contributions.push((category, Name::Gap(gap_idx), 1, ns, ns));
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
    // A span that is part of another's call (a driver's span under or beside an ORM's) adds its
    // time to that call's operation and is not a call of its own.
    for (idx, node) in path.nodes.iter().enumerate() {
        let call = node.counted_as;
        let is_call = call == idx;
        for category in Category::ALL {
            let critical = parts[idx][category.index()];
            if is_call && category == node.category {
                contributions.push((category, Name::Node(call), 1, node.duration_ns(), critical));
            } else if critical > 0 {
                // A part of a call's time (its wait, a nested span's) adds to its critical time;
                // the call's own duration already covers it.
                let total = if is_call { critical } else { 0 };
                contributions.push((
                    category,
                    Name::Node(call),
                    u32::from(is_call),
                    total,
                    critical,
                ));
            }
        }
    }
    for (_, name, ..) in &contributions {
        if let Name::Node(node) = name {
            names.get(tree, path, *node);
        }
    }
    let text = |name: &Name| -> &str {
        match name {
            Name::Gap(gap) => &gap_names[*gap],
            Name::Node(node) => names.peek(*node),
        }
    };
    // Sorted by keys taken out once: a comparison then reads two slices, not two names.
    let mut order: Vec<(Category, &str, usize)> = contributions
        .iter()
        .enumerate()
        .map(|(idx, (category, name, ..))| (*category, text(name), idx))
        .collect();
    order.sort_unstable();
    let mut ops: Vec<OperationStat> = Vec::with_capacity(contributions.len());
    for (category, name, calls, total_ns, critical_ns) in
        order.iter().map(|(.., idx)| &contributions[*idx])
    {
        match ops.last_mut() {
            Some(last) if last.category == *category && last.name == text(name) => {
                last.calls = last.calls.saturating_add(*calls);
                last.total_ns = last.total_ns.saturating_add(*total_ns);
                last.critical_ns = last.critical_ns.saturating_add(*critical_ns);
            }
            _ => ops.push(OperationStat {
                category: *category,
                name: text(name).to_owned(),
                calls: *calls,
                total_ns: *total_ns,
                critical_ns: *critical_ns,
            }),
        }
    }
    ops.sort_by(|a, b| {
        b.critical_ns
            .cmp(&a.critical_ns)
            .then(b.total_ns.cmp(&a.total_ns))
    });
    ops
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::operation_name;
    use crate::analysis::fixture;

    /// Renders each fixture span's operation name.
    #[track_caller]
    fn check(fixture_text: &str, expect: Expect) {
        let names: Vec<String> = fixture::parse(fixture_text)
            .iter()
            .map(|span| format!("{}\n", operation_name(span)))
            .collect();
        expect.assert_eq(&names.concat());
    }

    #[test]
    fn cache_operations_do_not_grow_per_user() {
        check(
            r#"
GET /a 0..10 server
  q 1..2 client db.system=redis db.statement="GET session:8f3a9c2e41d07b65"
  q 2..3 client db.system=redis db.statement="GET session:550e8400-e29b-41d4-a716-446655440000"
  q 3..4 client db.system=redis db.statement="HMSET user:42 name ann email ann@acme.example"
  q 4..5 client db.system=memcached db.statement="set user_42 0 3600 5"
  q 5..6 client db.system=postgresql db.statement="SELECT * FROM users WHERE id = @__id_0"
"#,
            expect![[r#"
                GET /a
                GET session:?
                GET session:?
                HMSET user:?
                set ?
                SELECT * FROM users WHERE id = ?
            "#]],
        );
    }
}
