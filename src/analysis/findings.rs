//! Findings: what to fix in one request, and how much critical-path time the fix would save.
//!
//! Over the database and cache spans of the request's own subtree:
//! - `duplicate_query`: one reading statement run more than once with the same values. Values
//!   are the inline literals of the text (comments such as sqlcommenter's trace context left
//!   out), or the recorded parameters (`db.query.parameter.*`, `db.statement.parameters`); a
//!   statement with placeholders and no recorded parameters cannot be told apart from its
//!   siblings, so it is never a duplicate (it still counts for N+1). Writes, locking reads,
//!   calls, `nextval(..)` and transaction control are never duplicates: their first result
//!   cannot be reused. Saving: the critical time of every execution after the first.
//! - `n_plus_one`: one statement shape that accesses data (a read or a write, not a transaction's
//!   `BEGIN`/`COMMIT` or a session setting) run at least `n_plus_one_min_calls` times, with at
//!   least two different values (or unknown ones). A loop of writes is one too: they can be
//!   batched. Saving: the group's critical time less its longest execution (all collapsed into
//!   one query or one batch).
//! - `sequential_io`: reads one after another on the critical path that could plausibly have run
//!   together, not already part of the two findings above. Not plausible, so not flagged: a
//!   write among them (a write, a locking read, a call, an HTTP `PUT`/`PATCH`/`DELETE` or a
//!   `POST` that is not an RPC, a publish), a database span that says nothing of what it does
//!   (no statement or operation: a pool checkout), statements inside a transaction (from `BEGIN` to
//!   `COMMIT`/`ROLLBACK` on the request; a `COMMIT` with no `BEGIN` seen closes one opened
//!   implicitly after the previous), and cache-aside (a cache read of a key the request writes
//!   back later: what follows the read depends on it). Runs of the same operations make one
//!   finding, named by the set of operations whatever the run lengths. Saving: each run's
//!   critical time less its longest call (run together).
//! - `slow_query`: a database span at least `slow_query_ns` long. Saving: its critical time.
//! - `cpu_hotspot`: an in-process span whose critical on-CPU time is at least
//!   `cpu_hotspot_share` of the request. Saving: that time.
//! - `uninstrumented_wait`: the request's `wait` is at least `wait_share` of it. Saving: the wait.
//! - `untraced_time`: one gap of unmeasured self time (or the unmeasured self time of one
//!   in-process leaf span) is at least `untraced_share` of the request. Nobody knows whether it
//!   was CPU or I/O, so it is never called either. Saving: at most that time.
//!
//! `cpu_hotspot` needs measured CPU (`cpu.time_ns`): self time nobody measured is never taken for
//! CPU. Duplicates and N+1s are reported whenever the pattern is there, however quick the
//! queries (their saving ranks them; whether a quick query overlaps another, as an SDK's
//! millisecond timestamps make it seem, never decides it). Sequential I/O needs a saving of
//! `min_saving_ns`, and no time-based finding is reported below the noise floor
//! (`noise_floor_ns`, `noise_floor_share` of the request).
//!
//! Invariant: pure; a saving never exceeds the critical-path time of the spans it names, so the
//! savings of one finding never promise more than the request's duration.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;

use collector::category::Category;
use collector::model::{AttrValue, Span, SpanKind};

use super::critical_path::CriticalPath;
use super::gap::{Gap, gap_place};
use super::location::{CodeLocation, LocationCounts};
use super::operation::NodeNames;
use super::request::template_name;
use super::span_tree::SpanTree;
use super::sql::{Effect, Language, Scanned};
use super::{AnalysisConfig, Finding, FindingKind, sql};

/// Other work between two I/O calls that still leaves them "one after another": the glue code
/// between two awaits (building the next query, mapping rows) is rarely longer than this.
const SEQUENTIAL_GAP_NS: u64 = 1_000_000;

/// At most this many operation names spell out a sequential-I/O finding's name.
const SEQUENTIAL_NAMES: usize = 3;

/// One statement execution.
struct Query<'a> {
    node: usize,
    start_ns: u64,
    critical_ns: u64,
    span: &'a Span,
    statement: &'a str,
    scanned: &'a Scanned,
}

impl<'a> Query<'a> {
    /// What makes two executions the same: the text with its values, `None` when unknown.
    fn identity(&self) -> Option<Cow<'a, str>> {
        let text = sql::identity(self.statement, self.scanned);
        if self.scanned.n_placeholders == 0 {
            Some(text)
        } else {
            identity_by_parameters(&text, self.span).map(Cow::Owned)
        }
    }
}

/// The prefix of one recorded statement parameter (`db.query.parameter.<name>`).
const PARAMETER_PREFIX: &str = "db.query.parameter.";

/// The older attribute holding all parameters at once.
const PARAMETERS: &str = "db.statement.parameters";

/// Whether the findings read the attribute `key` (the statement's parameters).
pub fn is_read(key: &[u8]) -> bool {
    key.starts_with(PARAMETER_PREFIX.as_bytes()) || key == PARAMETERS.as_bytes()
}

/// What tells an execution of a statement with placeholders from another: the statement, a NUL,
/// then its recorded parameters as `name=value` in name order, separated by U+001F; `None` when
/// none were recorded. Built in one string, each value written into it in place: this runs for
/// every database span.
fn identity_by_parameters(statement: &str, span: &Span) -> Option<String> {
    let mut params: Vec<(&str, &AttrValue)> = span
        .attributes
        .iter()
        .filter_map(|kv| {
            kv.key
                .strip_prefix(PARAMETER_PREFIX)
                .map(|name| (name, &kv.value))
        })
        .collect();
    // Most parameterized statements come without their recorded parameters: then nothing is built.
    let all = if params.is_empty() {
        let all = span.attributes.iter().find(|kv| kv.key == PARAMETERS)?;
        if matches!(all.value, AttrValue::Empty) {
            return None;
        }
        Some(all)
    } else {
        None
    };
    let mut identity = String::with_capacity(statement.len() + 32);
    identity.push_str(statement);
    identity.push('\u{0}');
    if let Some(all) = all {
        write!(identity, "{}", all.value).expect("writing to a String cannot fail");
        return Some(identity);
    }
    // A name given twice (which no instrumentation does) is ordered by its values' text, so
    // that the identity does not depend on the attributes' order.
    params.sort_unstable_by(|(a, a_value), (b, b_value)| {
        a.cmp(b)
            .then_with(|| a_value.to_string().cmp(&b_value.to_string()))
    });
    for (n, (name, value)) in params.iter().enumerate() {
        if n > 0 {
            identity.push('\u{1f}');
        }
        identity.push_str(name);
        identity.push('=');
        match value {
            AttrValue::Str(text) => identity.push_str(text),
            value => write!(identity, "{value}").expect("writing to a String cannot fail"),
        }
    }
    Some(identity)
}

/// The findings of one request, largest saving first.
pub fn findings(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    gaps: &[Gap],
    names: &mut NodeNames,
    config: &AnalysisConfig,
) -> Vec<Finding> {
    let mut out = Vec::new();
    // Whether each node is part of a duplicate or an N+1 already.
    let mut reported = vec![false; path.nodes.len()];
    let scans = names.scans().to_vec();
    repeated_queries(tree, path, &scans, config, &mut out, &mut reported);
    sequential_io(tree, path, &scans, names, config, &mut out, &reported);
    slow_queries(tree, path, names, config, &mut out);
    cpu_hotspots(tree, path, config, &mut out);
    uninstrumented_wait(tree, path, config, &mut out);
    untraced_time(tree, path, gaps, config, &mut out);
    // Duplicates and N+1s are facts about the request, however quick the queries: they are
    // ranked by their saving, never dropped for it. Time-based findings below the noise floor
    // are noise.
    let floor = noise_floor_ns(config, path.nodes[0].duration_ns() as f64);
    out.retain(|finding| {
        matches!(
            finding.kind,
            FindingKind::DuplicateQuery | FindingKind::NPlusOne
        ) || finding.potential_saving_ns as f64 >= floor
    });
    out.sort_by(|a, b| {
        b.potential_saving_ns
            .cmp(&a.potential_saving_ns)
            .then(a.kind.cmp(&b.kind))
            .then(a.name.cmp(&b.name))
    });
    out
}

/// The spans of a finding's nodes, and the most frequent code location among them.
fn involved(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    nodes: impl IntoIterator<Item = usize>,
) -> (Vec<collector::model::SpanId>, Option<CodeLocation>) {
    let mut locations = LocationCounts::default();
    let span_ids = nodes
        .into_iter()
        .map(|node| {
            let span = tree.spans[path.nodes[node].tree_idx];
            if let Some(location) = CodeLocation::of(span) {
                locations.record(location);
            }
            span.span_id
        })
        .collect();
    (span_ids, locations.into_most_frequent())
}

/// Duplicate and N+1 queries, grouped by statement shape.
fn repeated_queries<'a>(
    tree: &SpanTree<'a>,
    path: &CriticalPath,
    scans: &'a [Option<Rc<Scanned>>],
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
    reported: &mut [bool],
) {
    let mut executions: Vec<Query<'a>> = Vec::new();
    for (node_idx, node) in path.nodes.iter().enumerate().skip(1) {
        // A span that is part of another's call (an ORM's twin, a driver's span inside) is the
        // same execution.
        if node.counted_as != node_idx {
            continue;
        }
        let span: &'a Span = tree.spans[node.tree_idx];
        let (Some(scanned), Some(statement)) = (&scans[node_idx], &span.semantics.db_statement)
        else {
            continue;
        };
        if !scanned.effect.is_data_access() {
            continue;
        }
        executions.push(Query {
            node: node_idx,
            start_ns: node.start_ns,
            critical_ns: node.critical_ns,
            span,
            statement,
            scanned,
        });
    }
    // Grouped by category and statement shape, each group in start order: one sort instead of
    // a map of vectors, as most requests repeat no statement at all.
    executions.sort_by(|a, b| {
        (a.span.category, &a.scanned.normalized, a.start_ns, a.node).cmp(&(
            b.span.category,
            &b.scanned.normalized,
            b.start_ns,
            b.node,
        ))
    });
    let same_shape = |a: &Query, b: &Query| {
        a.span.category == b.span.category && a.scanned.normalized == b.scanned.normalized
    };
    for queries in executions.chunk_by(same_shape) {
        // One execution is neither a duplicate nor a loop: most statements run once in a
        // request, and their identities are never built.
        if queries.len() < 2 {
            continue;
        }
        let scanned = queries[0].scanned;
        let shape = &scanned.normalized;
        let identities: Vec<Option<Cow<str>>> = queries.iter().map(Query::identity).collect();
        let mut same: BTreeMap<&str, Vec<&Query>> = BTreeMap::new();
        let mut n_distinct = 0u32;
        for (query, identity) in queries.iter().zip(&identities) {
            match identity {
                Some(identity) => {
                    let members = same.entry(identity.as_ref()).or_default();
                    if members.is_empty() {
                        n_distinct += 1;
                    }
                    members.push(query);
                }
                None => n_distinct += 1,
            }
        }
        // Only a read gives the same answer again; a write, a call or a lock must run each time.
        let repeatable = scanned.effect.is_repeatable();
        for members in same.values().filter(|m| repeatable && m.len() > 1) {
            let saving: u64 = members[1..].iter().map(|q| q.critical_ns).sum();
            for query in members {
                reported[query.node] = true;
            }
            let (span_ids, location) = involved(tree, path, members.iter().map(|q| q.node));
            out.push(Finding {
                kind: FindingKind::DuplicateQuery,
                name: shape.clone(),
                count: u32::try_from(members.len()).unwrap_or(u32::MAX),
                potential_saving_ns: saving,
                span_ids,
                location,
            });
        }
        // Sentry's detector counts repeated spans, not distinct values, so we do too: enough
        // executions, and not all of them the very same query (that is a duplicate alone).
        let n_executions = u32::try_from(queries.len()).unwrap_or(u32::MAX);
        if n_executions >= config.n_plus_one_min_calls && n_distinct >= 2 {
            let total: u64 = queries.iter().map(|q| q.critical_ns).sum();
            let longest = queries.iter().map(|q| q.critical_ns).max().unwrap_or(0);
            for query in queries {
                reported[query.node] = true;
            }
            let (span_ids, location) = involved(tree, path, queries.iter().map(|q| q.node));
            out.push(Finding {
                kind: FindingKind::NPlusOne,
                name: shape.clone(),
                count: u32::try_from(queries.len()).unwrap_or(u32::MAX),
                potential_saving_ns: total - longest,
                span_ids,
                location,
            });
        }
    }
}

/// What an I/O call does, as far as it tells: its statement's effect (or its database
/// operation's; a database span with neither, such as a pool checkout, is taken for a session
/// step the next statement needs); for HTTP, `GET`, `HEAD` and `OPTIONS` read, a `POST` writes
/// unless it carries an RPC, other methods write; a publish writes.
fn io_effect(span: &Span, scanned: Option<&Scanned>) -> Effect {
    let sem = &span.semantics;
    match span.category {
        Category::Db | Category::Cache => scanned.map_or_else(
            || {
                sem.db_operation
                    .as_deref()
                    .map_or(Effect::Control, |operation| {
                        sql::scan_shared_as(operation, Language::of(span.category)).effect
                    })
            },
            |scanned| scanned.effect,
        ),
        Category::Network => match sem.http_method.as_deref() {
            None | Some("GET" | "HEAD" | "OPTIONS") => Effect::Read,
            Some("POST") if sem.rpc_system.is_some() => Effect::Read,
            Some(_) => Effect::Write,
        },
        Category::Messaging if span.kind == SpanKind::Producer => Effect::Write,
        _ => Effect::Read,
    }
}

/// Nodes inside a transaction, per category (a database's and a cache's are separate), in start
/// order: from a `BEGIN` to its `COMMIT` or `ROLLBACK`, both included. A `COMMIT` with no
/// `BEGIN` seen ends a transaction the driver opened implicitly: it began after the previous end.
fn in_transaction(path: &CriticalPath, categories: &[Category], effects: &[Effect]) -> Vec<bool> {
    // Most requests run no transaction statement at all: nothing to order.
    if !effects
        .iter()
        .any(|effect| matches!(effect, Effect::Begin | Effect::End))
    {
        return vec![false; path.nodes.len()];
    }
    let mut order: Vec<usize> = (1..path.nodes.len())
        .filter(|n| matches!(categories[*n], Category::Db | Category::Cache))
        .collect();
    order.sort_by_key(|n| (path.nodes[*n].start_ns, *n));
    let mut inside = vec![false; path.nodes.len()];
    let slot = |node: usize| usize::from(categories[node] == Category::Cache);
    // Per slot: whether a transaction is open, and where in `order` the statements since the
    // last end begin.
    let mut open = [false; 2];
    let mut since = [0usize; 2];
    for (pos, &node) in order.iter().enumerate() {
        let at = slot(node);
        match effects[node] {
            Effect::Begin => {
                open[at] = true;
                inside[node] = true;
            }
            Effect::End => {
                if !open[at] {
                    for &earlier in &order[since[at]..pos] {
                        if slot(earlier) == at {
                            inside[earlier] = true;
                        }
                    }
                }
                inside[node] = true;
                open[at] = false;
                since[at] = pos + 1;
            }
            _ => inside[node] = open[at],
        }
    }
    inside
}

/// Cache reads of a key that a later cache write of the request sets again: cache-aside (`GET k`,
/// on a miss the query, then `SET k`), where what follows the read depends on its answer.
fn cache_aside_reads(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    categories: &[Category],
    effects: &[Effect],
) -> Vec<bool> {
    // Without a cache write there is no chain to find.
    if !(1..path.nodes.len())
        .any(|n| categories[n] == Category::Cache && effects[n] == Effect::Write)
    {
        return vec![false; path.nodes.len()];
    }
    let mut order: Vec<usize> = (1..path.nodes.len())
        .filter(|n| categories[*n] == Category::Cache)
        .collect();
    order.sort_by_key(|n| (path.nodes[*n].start_ns, *n));
    let mut chained = vec![false; path.nodes.len()];
    let mut last_read: HashMap<&str, usize> = HashMap::new();
    for node in order {
        let span = tree.spans[path.nodes[node].tree_idx];
        let Some(key) = span
            .semantics
            .db_statement
            .as_deref()
            .and_then(sql::command_key)
        else {
            continue;
        };
        match effects[node] {
            Effect::Read => {
                last_read.insert(key, node);
            }
            Effect::Write => {
                if let Some(read) = last_read.remove(key) {
                    chained[read] = true;
                }
            }
            _ => {}
        }
    }
    chained
}

/// The name of a sequential-I/O finding: its distinct operations in name order, at most
/// [`SEQUENTIAL_NAMES`] of them spelled out, so runs of the same operations share it.
fn sequential_name(mut names: Vec<&str>) -> String {
    names.sort_unstable();
    names.dedup();
    let shown = names.len().min(SEQUENTIAL_NAMES);
    let mut name = String::from("sequential calls: ");
    for (n, operation) in names[..shown].iter().enumerate() {
        if n > 0 {
            name.push_str(", ");
        }
        name.push_str(operation);
    }
    if names.len() > shown {
        write!(name, " and {} more", names.len() - shown).expect("writing to a String cannot fail");
    }
    name
}

/// Runs of reads one after another on the critical path, one finding per set of operations.
fn sequential_io(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    scans: &[Option<Rc<Scanned>>],
    names: &mut NodeNames,
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
    reported: &[bool],
) {
    let categories: Vec<Category> = path
        .nodes
        .iter()
        .map(|node| tree.spans[node.tree_idx].category)
        .collect();
    let effects: Vec<Effect> = path
        .nodes
        .iter()
        .zip(scans)
        .map(|(node, scanned)| io_effect(tree.spans[node.tree_idx], scanned.as_deref()))
        .collect();
    let in_transaction = in_transaction(path, &categories, &effects);
    let cache_aside = cache_aside_reads(tree, path, &categories, &effects);
    // Visits: consecutive segments of one call merged (a span inside a call is that call).
    let mut visits: Vec<(usize, u64)> = Vec::new();
    for seg in &path.segments {
        let len = seg.end_ns - seg.start_ns;
        let call = path.nodes[seg.node].counted_as;
        match visits.last_mut() {
            Some((node, total)) if *node == call => *total += len,
            _ => visits.push((call, len)),
        }
    }
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    for &(node_idx, len) in &visits {
        let node = &path.nodes[node_idx];
        let is_io = node_idx != 0 && categories[node_idx].is_io();
        // A write, a statement of a transaction or one already reported ends the run: the
        // calls around it are ordered by it.
        let plausible = is_io
            && !reported[node_idx]
            && !in_transaction[node_idx]
            && effects[node_idx].is_repeatable();
        if plausible {
            let follows = run.last().is_none_or(|prev| {
                path.nodes[*prev].end_ns <= node.start_ns && !cache_aside[*prev]
            });
            if !follows {
                runs.push(std::mem::take(&mut run));
            }
            run.push(node_idx);
        } else if is_io || len > SEQUENTIAL_GAP_NS {
            runs.push(std::mem::take(&mut run));
        }
    }
    runs.push(run);
    // Nodes and saving by finding name.
    let mut by_name: BTreeMap<String, (Vec<usize>, u64)> = BTreeMap::new();
    for run in runs.into_iter().filter(|r| r.len() >= 2) {
        let critical = run.iter().map(|n| path.nodes[*n].critical_ns);
        let saving = critical.clone().sum::<u64>() - critical.max().unwrap_or(0);
        if saving == 0 {
            continue;
        }
        for node in &run {
            names.get(tree, path, *node);
        }
        let run_names = run.iter().map(|node| names.peek(*node)).collect();
        let (nodes, total) = by_name.entry(sequential_name(run_names)).or_default();
        nodes.extend(run);
        *total += saving;
    }
    for (name, (nodes, saving)) in by_name {
        if saving < config.min_saving_ns || saving == 0 {
            continue;
        }
        let (span_ids, location) = involved(tree, path, nodes.iter().copied());
        out.push(Finding {
            kind: FindingKind::SequentialIo,
            name,
            count: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            potential_saving_ns: saving,
            span_ids,
            location,
        });
    }
}

/// Database spans slow in absolute terms, grouped by statement.
fn slow_queries(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    names: &mut NodeNames,
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
) {
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (node_idx, node) in path.nodes.iter().enumerate().skip(1) {
        let span = tree.spans[node.tree_idx];
        if span.category == Category::Db && node.duration_ns() >= config.slow_query_ns {
            by_name
                .entry(names.get(tree, path, node_idx).to_owned())
                .or_default()
                .push(node_idx);
        }
    }
    for (name, nodes) in by_name {
        let (span_ids, location) = involved(tree, path, nodes.iter().copied());
        out.push(Finding {
            kind: FindingKind::SlowQuery,
            name,
            count: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            potential_saving_ns: nodes.iter().map(|n| path.nodes[*n].critical_ns).sum(),
            span_ids,
            location,
        });
    }
}

/// Whether `part` is at least `share` of `whole`.
fn at_least_share(part: u64, whole: u64, share: f64) -> bool {
    part > 0 && part as f64 >= share * whole as f64
}

/// In-process spans (INTERNAL, unspecified, or the request itself) with much critical CPU time.
fn cpu_hotspots(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
) {
    let duration = path.nodes[0].duration_ns();
    for (node_idx, node) in path.nodes.iter().enumerate() {
        let span = tree.spans[node.tree_idx];
        let in_process = node_idx == 0
            || (span.category == Category::Cpu
                && matches!(span.kind, SpanKind::Internal | SpanKind::Unspecified));
        if in_process && at_least_share(node.cpu_critical_ns, duration, config.cpu_hotspot_share) {
            out.push(Finding {
                kind: FindingKind::CpuHotspot,
                name: template_name(&span.name),
                count: 1,
                potential_saving_ns: node.cpu_critical_ns,
                span_ids: vec![span.span_id],
                location: CodeLocation::of(span),
            });
        }
    }
}

/// A request whose self time was mostly off the CPU.
fn uninstrumented_wait(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
) {
    let wait = path.breakdown.get(Category::Wait);
    if !at_least_share(wait, path.nodes[0].duration_ns(), config.wait_share) {
        return;
    }
    let nodes = (0..path.nodes.len()).filter(|n| path.nodes[*n].wait_critical_ns > 0);
    let (span_ids, location) = involved(tree, path, nodes);
    out.push(Finding {
        kind: FindingKind::UninstrumentedWait,
        name: template_name(&tree.spans[path.nodes[0].tree_idx].name),
        count: 1,
        potential_saving_ns: wait,
        span_ids,
        location,
    });
}

/// A request's unmeasured self time in one place: a gap, or an in-process leaf span.
fn untraced_time(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    gaps: &[Gap],
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
) {
    let duration = path.nodes[0].duration_ns();
    // A request without any span below it is all self time: its endpoint already names where
    // the time is, and there is nothing to place it between.
    let childless = path.nodes.len() == 1;
    for gap in gaps.iter().filter(|gap| gap.cpu_ns.is_none() && !childless) {
        if at_least_share(gap.duration_ns, duration, config.untraced_share) {
            out.push(Finding {
                kind: FindingKind::UntracedTime,
                name: gap_place(gap.after.as_deref(), gap.before.as_deref()),
                count: 1,
                potential_saving_ns: gap.duration_ns,
                span_ids: vec![gap.span_id],
                // Time between spans: no span there says where in the code it is.
                location: None,
            });
        }
    }
    let mut is_parent = vec![false; path.nodes.len()];
    for node in &path.nodes {
        if let Some(parent) = node.parent {
            is_parent[parent] = true;
        }
    }
    for (node_idx, node) in path.nodes.iter().enumerate().skip(1) {
        if !is_parent[node_idx]
            && at_least_share(node.untraced_critical_ns, duration, config.untraced_share)
        {
            let span = tree.spans[node.tree_idx];
            out.push(Finding {
                kind: FindingKind::UntracedTime,
                name: format!("in `{}`", template_name(&span.name)),
                count: 1,
                potential_saving_ns: node.untraced_critical_ns,
                span_ids: vec![span.span_id],
                location: CodeLocation::of(span),
            });
        }
    }
}

/// The smallest saving worth a finding in a request (or an endpoint) of this mean duration.
pub fn noise_floor_ns(config: &AnalysisConfig, duration_ns: f64) -> f64 {
    (config.noise_floor_ns as f64).max(config.noise_floor_share * duration_ns)
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use crate::analysis::{AnalysisConfig, FindingKind, analyze_trace, fixture};

    /// Renders each request's findings under its header line.
    #[track_caller]
    fn check(fixture_text: &str, expect: Expect) {
        let spans = fixture::parse(fixture_text);
        let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
        let mut out = String::new();
        for req in &requests {
            out.push_str(&fixture::render_request(req));
            out.push_str(&fixture::render_gaps(req));
            out.push_str(&fixture::render_findings(req));
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn inline_literals_repeated_are_duplicates() {
        check(
            r#"
GET /a 0..100 server
  q 0..10 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1"
  q 10..20 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1"
  q 20..30 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1"
  q 30..40 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 2"
"#,
            expect![[r##"
                #1 svc: GET /a 100ms | db 40 untraced 60 | path 1 2 3 4 5
                  gap after `SELECT * FROM t WHERE id = ?`, until the end at 40 for 60 in [1]
                  untraced_time "after `SELECT * FROM t WHERE id = ?`, until the end" x1 saves 60 [1]
                  duplicate_query "SELECT * FROM t WHERE id = ?" x3 saves 20 [2 3 4]
            "##]],
        );
    }

    #[test]
    fn placeholders_compare_recorded_parameters() {
        check(
            r#"
GET /a 0..100 server
  q 0..10 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = $1" db.query.parameter.0=7
  q 10..20 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = $1" db.query.parameter.0=7
  q 20..30 client db.system=postgresql db.statement="SELECT * FROM u WHERE id = $1"
  q 30..40 client db.system=postgresql db.statement="SELECT * FROM u WHERE id = $1"
"#,
            expect![[r##"
                #1 svc: GET /a 100ms | db 40 untraced 60 | path 1 2 3 4 5
                  gap after `SELECT * FROM u WHERE id = ?`, until the end at 40 for 60 in [1]
                  untraced_time "after `SELECT * FROM u WHERE id = ?`, until the end" x1 saves 60 [1]
                  duplicate_query "SELECT * FROM t WHERE id = ?" x2 saves 10 [2 3]
                  sequential_io "sequential calls: SELECT * FROM u WHERE id = ?" x2 saves 10 [4 5]
            "##]],
        );
    }

    #[test]
    fn recorded_parameters_identify_an_execution_whatever_their_order() {
        let spans = fixture::parse(
            r#"q 0..10 client db.system=postgresql db.query.parameter.1=b db.query.parameter.0=7 db.query.parameter.0=8"#,
        );
        let mut reordered = spans[0].clone();
        reordered.attributes.reverse();
        let statement = "SELECT * FROM t WHERE id = $1 AND name = $2";
        let identity = super::identity_by_parameters(statement, &spans[0]);
        assert_eq!(
            identity.as_deref(),
            Some("SELECT * FROM t WHERE id = $1 AND name = $2\u{0}0=7\u{1f}0=8\u{1f}1=b")
        );
        assert_eq!(
            super::identity_by_parameters(statement, &reordered),
            identity
        );
        let mut without = spans[0].clone();
        without.attributes.retain(|kv| kv.key == "db.system");
        assert_eq!(super::identity_by_parameters(statement, &without), None);
    }

    #[test]
    fn n_plus_one_needs_five_executions_not_all_the_same() {
        check(
            r#"
GET /a 0..100 server
  q 0..10 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = $1"
  q 10..20 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = $1"
  q 20..30 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = $1"
  q 30..40 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = $1"
  q 40..50 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = $1"
  q 50..60 client db.system=postgresql db.statement="SELECT * FROM u WHERE id = 1"
  q 60..70 client db.system=postgresql db.statement="SELECT * FROM u WHERE id = 2"
  q 70..80 client db.system=postgresql db.statement="SELECT * FROM u WHERE id = 3"
  q 80..90 client db.system=postgresql db.statement="SELECT * FROM u WHERE id = 4"
  q 90..95 client db.system=postgresql db.statement="SELECT * FROM v WHERE id = 1"
  q 95..100 client db.system=postgresql db.statement="SELECT * FROM v WHERE id = 1"
"#,
            expect![[r##"
                #1 svc: GET /a 100ms | db 100 | path 1 2 3 4 5 6 7 8 9 10 11 12
                  n_plus_one "SELECT * FROM t WHERE id = ?" x5 saves 40 [2 3 4 5 6]
                  sequential_io "sequential calls: SELECT * FROM u WHERE id = ?" x4 saves 30 [7 8 9 10]
                  duplicate_query "SELECT * FROM v WHERE id = ?" x2 saves 5 [11 12]
            "##]],
        );
    }

    #[test]
    fn repeats_among_a_loop_are_both_n_plus_one_and_duplicate() {
        check(
            r#"
GET /a 0..100 server
  q 0..10 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1"
  q 10..20 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 2"
  q 20..30 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 3"
  q 30..40 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 4"
  q 40..50 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 4"
"#,
            expect![[r##"
                #1 svc: GET /a 100ms | db 50 untraced 50 | path 1 2 3 4 5 6
                  gap after `SELECT * FROM t WHERE id = ?`, until the end at 50 for 50 in [1]
                  untraced_time "after `SELECT * FROM t WHERE id = ?`, until the end" x1 saves 50 [1]
                  n_plus_one "SELECT * FROM t WHERE id = ?" x5 saves 40 [2 3 4 5 6]
                  duplicate_query "SELECT * FROM t WHERE id = ?" x2 saves 10 [5 6]
            "##]],
        );
    }

    #[test]
    fn loads_by_key_without_recorded_parameters_are_an_n_plus_one_in_every_dialect() {
        // EF Core (`@__id_0`), Oracle (`:1`) and SQLAlchemy over psycopg2 (`%(pk_1)s`) load one
        // row at a time and record no parameters: a loop, not one query repeated.
        check(
            r#"
GET /a 0..200 server
  q 0..10 client db.system=mssql db.statement="SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = @__id_0"
  q 10..20 client db.system=mssql db.statement="SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = @__id_0"
  q 20..30 client db.system=mssql db.statement="SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = @__id_0"
  q 30..40 client db.system=mssql db.statement="SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = @__id_0"
  q 40..50 client db.system=mssql db.statement="SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = @__id_0"
  q 50..60 client db.system=mssql db.statement="SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = @__id_0"
  q 60..70 client db.system=oracle db.statement="SELECT * FROM orders WHERE id = :1"
  q 70..80 client db.system=oracle db.statement="SELECT * FROM orders WHERE id = :1"
  q 80..90 client db.system=oracle db.statement="SELECT * FROM orders WHERE id = :1"
  q 90..100 client db.system=oracle db.statement="SELECT * FROM orders WHERE id = :1"
  q 100..110 client db.system=oracle db.statement="SELECT * FROM orders WHERE id = :1"
  q 110..120 client db.system=postgresql db.statement="SELECT users.id FROM users WHERE users.id = %(pk_1)s"
  q 120..130 client db.system=postgresql db.statement="SELECT users.id FROM users WHERE users.id = %(pk_1)s"
  q 130..140 client db.system=postgresql db.statement="SELECT users.id FROM users WHERE users.id = %(pk_1)s"
  q 140..150 client db.system=postgresql db.statement="SELECT users.id FROM users WHERE users.id = %(pk_1)s"
  q 150..160 client db.system=postgresql db.statement="SELECT users.id FROM users WHERE users.id = %(pk_1)s"
"#,
            expect![[r##"
                #1 svc: GET /a 200ms | db 160 untraced 40 | path 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17
                  gap after `SELECT users.id FROM users WHERE users.id = ?`, until the end at 160 for 40 in [1]
                  n_plus_one "SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = ?" x6 saves 50 [2 3 4 5 6 7]
                  n_plus_one "SELECT * FROM orders WHERE id = ?" x5 saves 40 [8 9 10 11 12]
                  n_plus_one "SELECT users.id FROM users WHERE users.id = ?" x5 saves 40 [13 14 15 16 17]
            "##]],
        );
    }

    #[test]
    fn writes_calls_and_locks_are_never_duplicates() {
        check(
            r#"
GET /a 0..200 server
  q 0..10 client db.system=postgresql db.statement="UPDATE carts SET total = 0 WHERE id = 7"
  q 10..20 client db.system=postgresql db.statement="UPDATE carts SET total = 0 WHERE id = 7"
  q 20..30 client db.system=postgresql db.statement="INSERT INTO audit (kind) VALUES ('login')"
  q 30..40 client db.system=postgresql db.statement="INSERT INTO audit (kind) VALUES ('login')"
  q 40..50 client db.system=postgresql db.statement="SELECT nextval('orders_id_seq')"
  q 50..60 client db.system=postgresql db.statement="SELECT nextval('orders_id_seq')"
  q 60..70 client db.system=postgresql db.statement="CALL refresh_totals(7)"
  q 70..80 client db.system=postgresql db.statement="CALL refresh_totals(7)"
  q 80..90 client db.system=postgresql db.statement="SELECT * FROM stock WHERE id = 7 FOR UPDATE"
  q 90..100 client db.system=postgresql db.statement="SELECT * FROM stock WHERE id = 7 FOR UPDATE"
  q 100..110 client db.system=postgresql db.statement="COMMIT"
  q 110..120 client db.system=postgresql db.statement="COMMIT"
  q 120..130 client db.system=redis db.statement="INCR hits:2024-05-01"
  q 130..140 client db.system=redis db.statement="INCR hits:2024-05-01"
  q 140..150 client db.system=postgresql db.statement="SELECT * FROM carts WHERE id = 7"
  q 150..160 client db.system=postgresql db.statement="SELECT * FROM carts WHERE id = 7"
"#,
            expect![[r##"
                #1 svc: GET /a 200ms | db 140 cache 20 untraced 40 | path 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17
                  gap after `SELECT * FROM carts WHERE id = ?`, until the end at 160 for 40 in [1]
                  duplicate_query "SELECT * FROM carts WHERE id = ?" x2 saves 10 [16 17]
            "##]],
        );
    }

    #[test]
    fn a_loop_of_writes_is_an_n_plus_one_to_batch_and_transaction_control_is_none() {
        check(
            r#"
POST /import 0..200 server
  q 0..10 client db.system=postgresql db.statement="BEGIN"
  q 10..20 client db.system=postgresql db.statement="INSERT INTO items (sku) VALUES ('a-1')"
  q 20..30 client db.system=postgresql db.statement="INSERT INTO items (sku) VALUES ('b-2')"
  q 30..40 client db.system=postgresql db.statement="INSERT INTO items (sku) VALUES ('c-3')"
  q 40..50 client db.system=postgresql db.statement="INSERT INTO items (sku) VALUES ('d-4')"
  q 50..60 client db.system=postgresql db.statement="INSERT INTO items (sku) VALUES ('e-5')"
  q 60..70 client db.system=postgresql db.statement="COMMIT"
  q 70..80 client db.system=postgresql db.statement="BEGIN"
  q 80..90 client db.system=postgresql db.statement="COMMIT"
  q 90..100 client db.system=postgresql db.statement="BEGIN"
  q 100..110 client db.system=postgresql db.statement="COMMIT"
  q 110..120 client db.system=postgresql db.statement="BEGIN"
  q 120..130 client db.system=postgresql db.statement="COMMIT"
  q 130..140 client db.system=postgresql db.statement="BEGIN"
  q 140..150 client db.system=postgresql db.statement="COMMIT"
"#,
            expect![[r##"
                #1 svc: POST /import 200ms | db 150 untraced 50 | path 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16
                  gap after `COMMIT`, until the end at 150 for 50 in [1]
                  untraced_time "after `COMMIT`, until the end" x1 saves 50 [1]
                  n_plus_one "INSERT INTO items (sku) VALUES (...)" x5 saves 40 [3 4 5 6 7]
            "##]],
        );
        let advice = |name: &str| {
            crate::analysis::aggregate::finding_sentence(
                crate::analysis::FindingKind::NPlusOne,
                name,
                5.0,
                40_000_000.0,
            )
        };
        expect!["N+1 query `INSERT INTO items (sku) VALUES (...)` ×5; batch them into one round trip to save ~40 ms"].assert_eq(&advice("INSERT INTO items (sku) VALUES (...)"));
        expect!["N+1 query `HSET cart:?` ×5; batch them into one round trip to save ~40 ms"]
            .assert_eq(&advice("HSET cart:?"));
        expect!["N+1 query `SELECT * FROM items WHERE id = ?` ×5; fetch them in one query to save ~40 ms"].assert_eq(&advice("SELECT * FROM items WHERE id = ?"));
        expect!["N+1 query `GET session:?` ×5; fetch them in one query to save ~40 ms"]
            .assert_eq(&advice("GET session:?"));
    }

    #[test]
    fn trace_comments_do_not_split_identities() {
        // sqlcommenter appends the trace context of each execution, with or without a space.
        check(
            r#"
GET /a 0..100 server
  q 0..10 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',controller='index'*/"
  q 10..20 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1/*traceparent='00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01',controller='index'*/"
  q 20..30 client db.system=postgresql db.statement="/*controller='index'*/ SELECT * FROM t WHERE id = 1"
"#,
            expect![[r##"
                #1 svc: GET /a 100ms | db 30 untraced 70 | path 1 2 3 4
                  gap after `SELECT * FROM t WHERE id = ?`, until the end at 30 for 70 in [1]
                  untraced_time "after `SELECT * FROM t WHERE id = ?`, until the end" x1 saves 70 [1]
                  duplicate_query "SELECT * FROM t WHERE id = ?" x3 saves 20 [2 3 4]
            "##]],
        );
    }

    #[test]
    fn cache_loads_of_many_users_are_one_loop() {
        // Six users' sessions: one operation `GET session:?`, an N+1 (MGET would fetch them).
        check(
            r#"
GET /a 0..100 server
  q 0..10 client db.system=redis db.statement="GET session:8f3a9c2e41d07b65"
  q 10..20 client db.system=redis db.statement="GET session:0b1c2d3e4f5a6b7c"
  q 20..30 client db.system=redis db.statement="GET session:550e8400-e29b-41d4-a716-446655440000"
  q 30..40 client db.system=redis db.statement="GET session:12345"
  q 40..50 client db.system=redis db.statement="GET session:67890"
  q 50..60 client db.system=redis db.statement="GET session:24680"
"#,
            expect![[r##"
                #1 svc: GET /a 100ms | cache 60 untraced 40 | path 1 2 3 4 5 6 7
                  gap after `GET session:?`, until the end at 60 for 40 in [1]
                  n_plus_one "GET session:?" x6 saves 50 [2 3 4 5 6 7]
                  untraced_time "after `GET session:?`, until the end" x1 saves 40 [1]
            "##]],
        );
    }

    #[test]
    fn statements_of_a_transaction_are_not_sequential_io() {
        // Explicit (`BEGIN` .. `COMMIT`) and implicit (a `COMMIT` alone: the driver began it)
        // transactions; only the two reads after the last `COMMIT` could run together.
        check(
            r#"
POST /a 0..200 server
  q 0..10 client db.system=postgresql db.statement="BEGIN"
  q 10..20 client db.system=postgresql db.statement="SELECT * FROM a WHERE id = 1"
  q 20..30 client db.system=postgresql db.statement="SELECT * FROM b WHERE id = 1"
  q 30..40 client db.system=postgresql db.statement="COMMIT"
  q 40..50 client db.system=postgresql db.statement="SELECT * FROM c WHERE id = 1"
  q 50..60 client db.system=postgresql db.statement="SELECT * FROM d WHERE id = 1"
  q 60..70 client db.system=postgresql db.statement="COMMIT"
  q 70..80 client db.system=postgresql db.statement="SELECT * FROM e WHERE id = 1"
  q 80..90 client db.system=postgresql db.statement="SELECT * FROM f WHERE id = 1"
"#,
            expect![[r##"
                #1 svc: POST /a 200ms | db 90 untraced 110 | path 1 2 3 4 5 6 7 8 9 10
                  gap after `SELECT * FROM f WHERE id = ?`, until the end at 90 for 110 in [1]
                  untraced_time "after `SELECT * FROM f WHERE id = ?`, until the end" x1 saves 110 [1]
                  sequential_io "sequential calls: SELECT * FROM e WHERE id = ?, SELECT * FROM f WHERE id = ?" x2 saves 10 [9 10]
            "##]],
        );
    }

    #[test]
    fn cache_aside_is_a_dependency_chain_not_sequential_io() {
        // A miss: read the key, query, write the key back. A read of another key before it
        // could still run beside the first read.
        check(
            r#"
GET /a 0..200 server
  q 0..10 client db.system=redis db.statement="GET config:site"
  q 10..20 client db.system=redis db.statement="GET user:42"
  q 20..40 client db.system=postgresql db.statement="SELECT * FROM users WHERE id = 42"
  q 40..50 client db.system=redis db.statement="SET user:42 {} EX 60"
"#,
            expect![[r##"
                #1 svc: GET /a 200ms | db 20 cache 30 untraced 150 | path 1 2 3 4 5
                  gap after `SET user:?`, until the end at 50 for 150 in [1]
                  untraced_time "after `SET user:?`, until the end" x1 saves 150 [1]
                  sequential_io "sequential calls: GET config:site, GET user:?" x2 saves 10 [2 3]
            "##]],
        );
    }

    #[test]
    fn writes_end_runs_of_reads() {
        // What a write needs was read before it; what is read after it may need the write.
        check(
            r#"
POST /a 0..200 server
  q 0..10 client db.system=postgresql db.statement="SELECT * FROM a WHERE id = 1"
  q 10..20 client db.system=postgresql db.statement="UPDATE a SET n = n + 1 WHERE id = 1"
  q 20..30 client db.system=postgresql db.statement="SELECT * FROM b WHERE id = 1"
  q 30..40 client http.request.method=POST server.address=payments
  q 40..50 client db.system=postgresql db.statement="SELECT * FROM c WHERE id = 1"
  q 50..60 client http.request.method=PUT server.address=store
  q 60..70 client db.system=postgresql db.statement="SELECT * FROM d WHERE id = 1"
  q 70..80 client db.system=postgresql
  q 80..90 client db.system=postgresql db.statement="SELECT * FROM e WHERE id = 1"
"#,
            expect![[r##"
                #1 svc: POST /a 200ms | db 70 network 20 untraced 110 | path 1 2 3 4 5 6 7 8 9 10
                  gap after `SELECT * FROM e WHERE id = ?`, until the end at 90 for 110 in [1]
                  untraced_time "after `SELECT * FROM e WHERE id = ?`, until the end" x1 saves 110 [1]
            "##]],
        );
    }

    #[test]
    fn runs_of_the_same_operations_make_one_finding_whatever_their_length() {
        check(
            r#"
GET /a 0..200 server
  q 0..10 client db.system=postgresql db.statement="SELECT * FROM a WHERE id = 1"
  q 10..20 client db.system=postgresql db.statement="SELECT * FROM b WHERE id = 1"
  render 20..40 internal
  q 40..50 client db.system=postgresql db.statement="SELECT * FROM b WHERE id = 2"
  q 50..60 client db.system=postgresql db.statement="SELECT * FROM a WHERE id = 2"
  q 60..70 client db.system=postgresql db.statement="SELECT * FROM b WHERE id = 3"
"#,
            expect![[r##"
                #1 svc: GET /a 200ms | db 50 untraced 150 | path 1 2 3 4 5 6 7
                  gap after `SELECT * FROM b WHERE id = ?`, until the end at 70 for 130 in [1]
                  untraced_time "after `SELECT * FROM b WHERE id = ?`, until the end" x1 saves 130 [1]
                  sequential_io "sequential calls: SELECT * FROM a WHERE id = ?, SELECT * FROM b WHERE id = ?" x5 saves 30 [2 3 5 6 7]
            "##]],
        );
    }

    #[test]
    fn sequential_io_runs_break_on_cpu_work_and_overlap() {
        check(
            r#"
GET /a 0..200 server
  A 0..20 client db.system=postgresql db.statement="SELECT a"
  B 20..50 client http.request.method=GET server.address=b
  C 50.5..70 client db.system=redis db.statement="GET k"
  D 90..110 client db.system=postgresql db.statement="SELECT d"
  E 110..111 client db.system=postgresql db.statement="SELECT e"
  F 130..160 client db.system=postgresql db.statement="SELECT f"
  G 150..190 client db.system=postgresql db.statement="SELECT g"
"#,
            expect![[r##"
                #1 svc: GET /a 200ms | db 101 cache 19.5 network 30 untraced 49.5 | path 1 2 3 4 5 6 7 8
                  gap between `GET k` and `SELECT d` at 70 for 20 in [1]
                  gap between `SELECT e` and `SELECT f` at 111 for 19 in [1]
                  gap after `SELECT g`, until the end at 190 for 10 in [1]
                  sequential_io "sequential calls: GET b, GET k, SELECT a" x3 saves 39.5 [2 3 4]
            "##]],
        );
    }

    #[test]
    fn slow_query_hotspot_and_wait() {
        check(
            r#"
GET /report 0..2000 server cpu.time_ns=700000000
  aggregate 0..700 client db.system=postgresql db.statement="SELECT sum(x) FROM big"
  render 700..1300 internal cpu.time_ns=600000000
"#,
            expect![[r##"
                #1 svc: GET /report 2000ms | db 700 cpu 700 wait 600 | path 1 2 3
                  gap after `render`, until the end at 1300 for 700 cpu 100 in [1]
                  slow_query "SELECT sum(x) FROM big" x1 saves 700 [2]
                  cpu_hotspot "render" x1 saves 600 [3]
                  uninstrumented_wait "GET /report" x1 saves 600 [1]
            "##]],
        );
    }

    #[test]
    fn quick_duplicates_are_still_duplicates() {
        check(
            r#"
GET /a 0..100 server
  q 0..1 client db.system=postgresql db.statement="SELECT 1"
  q 1..2 client db.system=postgresql db.statement="SELECT 1"
"#,
            expect![[r##"
                #1 svc: GET /a 100ms | db 2 untraced 98 | path 1 2 3
                  gap after `SELECT ?`, until the end at 2 for 98 in [1]
                  untraced_time "after `SELECT ?`, until the end" x1 saves 98 [1]
                  duplicate_query "SELECT ?" x2 saves 1 [2 3]
            "##]],
        );
    }

    #[test]
    fn a_hidden_round_trip_is_untraced_time_between_its_neighbours_never_cpu() {
        // The seed's botocore upgrade: 300 ms between the policy query and the IdP call, no
        // span and no CPU measurement. The ORM's span names the query, not its driver's.
        check(
            r#"
auth: POST /login 0..400 server http.route=/login
  SELECT users 0..20 client db.system=postgresql db.statement="SELECT * FROM users WHERE id = 1"
  orm 20..40 client db.system=postgresql db.statement="SELECT * FROM policy_rules WHERE policy_id = 7"
    driver 20..40 client db.system=postgresql db.statement="SELECT * FROM policy_rules WHERE policy_id = $1"
  POST idp 340..390 client http.request.method=POST server.address=idp
"#,
            expect![[r##"
                #1 auth: POST /login 400ms | db 40 network 50 untraced 310 | path 1 2 3 4 5
                  gap between `SELECT * FROM policy_rules WHERE policy_id = ?` and `POST idp` at 40 for 300 in [1]
                  gap after `POST idp`, until the end at 390 for 10 in [1]
                  untraced_time "between `SELECT * FROM policy_rules WHERE policy_id = ?` and `POST idp`" x1 saves 300 [1]
            "##]],
        );
    }

    #[test]
    fn a_measured_gap_carries_its_cpu_and_a_hot_spot_needs_measured_cpu() {
        check(
            r#"
GET /a 0..100 server cpu.time_ns=60000000
  SELECT 0..20 client db.system=postgresql db.statement="SELECT 1"
  GET b 80..100 client http.request.method=GET server.address=b
"#,
            expect![[r#"
                #1 svc: GET /a 100ms | db 20 network 20 cpu 60 | path 1 2 3
                  gap between `SELECT ?` and `GET b` at 20 for 60 cpu 60 in [1]
                  cpu_hotspot "GET /a" x1 saves 60 [1]
            "#]],
        );
    }

    #[test]
    fn a_clean_health_check_has_no_findings() {
        check(
            r#"
GET /health 0..0.5 server http.route=/health
"#,
            expect![[r#"
                #1 svc: GET /health 0.5ms | untraced 0.5 | path 1
            "#]],
        );
        // Nothing below the request to place its time between: the endpoint names it.
        check(
            r#"
GET /report 0..80 server http.route=/report
"#,
            expect![[r#"
                #1 svc: GET /report 80ms | untraced 80 | path 1
                  gap with no span in the whole request at 0 for 80 in [1]
            "#]],
        );
    }

    #[test]
    fn findings_under_the_noise_floor_are_not_reported() {
        // Two reads one after another would save 6 ms run together: over `min_saving_ns`, but
        // under 2% of a 1 s request.
        check(
            r#"
GET /a 0..1000 server cpu.time_ns=1000000
  q 0..6 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1"
  r 6..12 client db.system=postgresql db.statement="SELECT * FROM u WHERE id = 1"
  GET b 12..1000 client http.request.method=GET server.address=b
"#,
            expect![[r#"
                #1 svc: GET /a 1000ms | db 12 network 988 | path 1 2 3 4
            "#]],
        );
    }

    #[test]
    fn a_finding_carries_the_most_frequent_code_location_of_its_spans() {
        // Four executions from the loader (current names, which win over the old ones on the
        // same span), two from a helper named the old way; the loader is the location.
        let mut text = String::from("auth: POST /login 0..100 server http.route=/login\n");
        for n in 0..6 {
            let at = 10 + n * 10;
            let code = if n < 4 {
                "code.file.path=app/policies.py code.line.number=88 code.function.name=load_rules \
                 code.filepath=app/old.py code.lineno=1 code.function=old"
            } else {
                "code.filepath=app/rules.py code.lineno=12 code.function=get code.namespace=Rules"
            };
            text.push_str(&format!(
                "  SELECT rules {at}..{} client db.system=postgresql \
                 db.statement=\"SELECT * FROM rules WHERE id = {n}\" {code}\n",
                at + 8
            ));
        }
        text.push_str("  GET idp 75..95 client http.request.method=GET server.address=idp\n");
        let n_plus_one_location = |text: &str| {
            let (requests, _) = analyze_trace(&fixture::parse(text), &AnalysisConfig::default());
            let n_plus_one = requests[0]
                .findings
                .iter()
                .find(|finding| finding.kind == FindingKind::NPlusOne)
                .expect("an N+1");
            (n_plus_one.location.clone().expect("located"), requests)
        };
        let (location, requests) = n_plus_one_location(&text);
        assert_eq!(location.describe(), "app/policies.py:88 in load_rules");
        assert!(
            requests[0]
                .findings
                .iter()
                .filter(|finding| finding.kind != FindingKind::NPlusOne)
                .all(|finding| finding.location.is_none()),
            "spans without code attributes have no location"
        );

        let old_only = text.replace(
            "code.file.path=app/policies.py code.line.number=88 code.function.name=load_rules ",
            "",
        );
        let (location, _) = n_plus_one_location(&old_only);
        assert_eq!(location.describe(), "app/old.py:1 in old");
    }
}
