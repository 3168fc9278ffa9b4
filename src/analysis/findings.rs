//! Findings: what to fix in one request, and how much critical-path time the fix would save.
//!
//! Over the database and cache spans of the request's own subtree:
//! - `duplicate_query`: one statement run more than once with the same values. Values are the
//!   inline literals of the text, or the recorded parameters (`db.query.parameter.*`,
//!   `db.statement.parameters`); a statement with placeholders and no recorded parameters cannot
//!   be told apart from its siblings, so it is never a duplicate (it still counts for N+1).
//!   Saving: the critical time of every execution after the first.
//! - `n_plus_one`: one statement shape run at least `n_plus_one_min_calls` times, with at least
//!   two different values (or unknown ones).
//!   Saving: the group's critical time less its longest execution (all collapsed into one query).
//! - `sequential_io`: I/O calls one after another on the critical path, not already part of the
//!   two findings above. Saving: their critical time less the longest (run together).
//! - `slow_query`: a database span at least `slow_query_ns` long. Saving: its critical time.
//! - `cpu_hotspot`: an in-process span whose critical on-CPU time is at least
//!   `cpu_hotspot_share` of the request. Saving: that time.
//! - `uninstrumented_wait`: the request's `wait` is at least `wait_share` of it. Saving: the wait.
//! - `untraced_time`: one gap of unmeasured self time (or the unmeasured self time of one
//!   in-process leaf span) is at least `untraced_share` of the request. Nobody knows whether it
//!   was CPU or I/O, so it is never called either. Saving: at most that time.
//!
//! `cpu_hotspot` needs measured CPU (`cpu.time_ns`): self time nobody measured is never taken for
//! CPU. The first three are reported only when their saving reaches `min_saving_ns`, and no
//! finding is reported below the noise floor (`noise_floor_ns`, `noise_floor_share` of the
//! request).
//!
//! Invariant: pure; a saving never exceeds the critical-path time of the spans it names, so the
//! savings of one finding never promise more than the request's duration.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;

use collector::category::Category;
use collector::model::{AttrValue, Span, SpanKind};

use super::critical_path::CriticalPath;
use super::gap::{Gap, gap_place};
use super::operation::operation_name;
use super::request::template_name;
use super::span_tree::SpanTree;
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
    /// What makes two executions the same: the text with its values, `None` when unknown.
    identity: Option<Cow<'a, str>>,
}

/// A statement's scan, compared by its normalized text: queries are grouped by shape without
/// copying the text of each.
struct Shape(Rc<sql::Scanned>);

impl PartialEq for Shape {
    fn eq(&self, other: &Self) -> bool {
        self.0.normalized == other.0.normalized
    }
}

impl Eq for Shape {}

impl PartialOrd for Shape {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Shape {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.normalized.cmp(&other.0.normalized)
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
        write!(identity, "{value}").expect("writing to a String cannot fail");
    }
    Some(identity)
}

/// The findings of one request, largest saving first.
pub fn findings(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    gaps: &[Gap],
    config: &AnalysisConfig,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut reported: HashSet<usize> = HashSet::new();
    repeated_queries(tree, path, config, &mut out, &mut reported);
    sequential_io(tree, path, config, &mut out, &reported);
    slow_queries(tree, path, config, &mut out);
    cpu_hotspots(tree, path, config, &mut out);
    uninstrumented_wait(tree, path, config, &mut out);
    untraced_time(tree, path, gaps, config, &mut out);
    let floor = noise_floor_ns(config, path.nodes[0].duration_ns() as f64);
    out.retain(|finding| finding.potential_saving_ns as f64 >= floor);
    out.sort_by(|a, b| {
        b.potential_saving_ns
            .cmp(&a.potential_saving_ns)
            .then(a.kind.cmp(&b.kind))
            .then(a.name.cmp(&b.name))
    });
    out
}

fn span_ids(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    nodes: impl IntoIterator<Item = usize>,
) -> Vec<collector::model::SpanId> {
    nodes
        .into_iter()
        .map(|node| tree.spans[path.nodes[node].tree_idx].span_id)
        .collect()
}

/// Duplicate and N+1 queries, grouped by statement shape.
fn repeated_queries(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
    reported: &mut HashSet<usize>,
) {
    let mut shapes: BTreeMap<(Category, Shape), Vec<Query<'_>>> = BTreeMap::new();
    for (node_idx, node) in path.nodes.iter().enumerate().skip(1) {
        let span = tree.spans[node.tree_idx];
        if !matches!(span.category, Category::Db | Category::Cache) {
            continue;
        }
        let Some(statement) = &span.semantics.db_statement else {
            continue;
        };
        let scanned = sql::scan_shared(statement);
        let identity = if scanned.n_placeholders == 0 {
            Some(Cow::Borrowed(statement.as_str()))
        } else {
            identity_by_parameters(statement, span).map(Cow::Owned)
        };
        shapes
            .entry((span.category, Shape(scanned)))
            .or_default()
            .push(Query {
                node: node_idx,
                start_ns: node.start_ns,
                critical_ns: node.critical_ns,
                identity,
            });
    }
    for ((_, Shape(scanned)), mut queries) in shapes {
        let shape = &scanned.normalized;
        queries.sort_by_key(|q| (q.start_ns, q.node));
        let mut same: BTreeMap<&str, Vec<&Query>> = BTreeMap::new();
        let mut n_distinct = 0u32;
        for query in &queries {
            match &query.identity {
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
        for members in same.values().filter(|m| m.len() > 1) {
            let saving: u64 = members[1..].iter().map(|q| q.critical_ns).sum();
            if saving >= config.min_saving_ns && saving > 0 {
                reported.extend(members.iter().map(|q| q.node));
                out.push(Finding {
                    kind: FindingKind::DuplicateQuery,
                    name: shape.clone(),
                    count: u32::try_from(members.len()).unwrap_or(u32::MAX),
                    potential_saving_ns: saving,
                    span_ids: span_ids(tree, path, members.iter().map(|q| q.node)),
                });
            }
        }
        // Sentry's detector counts repeated spans, not distinct values, so we do too: enough
        // executions, and not all of them the very same query (that is a duplicate alone).
        let n_executions = u32::try_from(queries.len()).unwrap_or(u32::MAX);
        if n_executions >= config.n_plus_one_min_calls && n_distinct >= 2 {
            let total: u64 = queries.iter().map(|q| q.critical_ns).sum();
            let longest = queries.iter().map(|q| q.critical_ns).max().unwrap_or(0);
            let saving = total - longest;
            if saving >= config.min_saving_ns && saving > 0 {
                reported.extend(queries.iter().map(|q| q.node));
                out.push(Finding {
                    kind: FindingKind::NPlusOne,
                    name: shape.clone(),
                    count: u32::try_from(queries.len()).unwrap_or(u32::MAX),
                    potential_saving_ns: saving,
                    span_ids: span_ids(tree, path, queries.iter().map(|q| q.node)),
                });
            }
        }
    }
}

/// Runs of I/O spans one after another on the critical path.
fn sequential_io(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
    reported: &HashSet<usize>,
) {
    // Visits: consecutive segments of one node merged.
    let mut visits: Vec<(usize, u64)> = Vec::new();
    for seg in &path.segments {
        let len = seg.end_ns - seg.start_ns;
        match visits.last_mut() {
            Some((node, total)) if *node == seg.node => *total += len,
            _ => visits.push((seg.node, len)),
        }
    }
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    for &(node_idx, len) in &visits {
        let node = &path.nodes[node_idx];
        let span = tree.spans[node.tree_idx];
        let is_io = node_idx != 0 && span.category.is_io();
        if is_io && !reported.contains(&node_idx) {
            let follows = run
                .last()
                .is_none_or(|prev| path.nodes[*prev].end_ns <= node.start_ns);
            if !follows {
                runs.push(std::mem::take(&mut run));
            }
            run.push(node_idx);
        } else if is_io || len > SEQUENTIAL_GAP_NS {
            runs.push(std::mem::take(&mut run));
        }
    }
    runs.push(run);
    for run in runs.into_iter().filter(|r| r.len() >= 2) {
        let critical: Vec<u64> = run.iter().map(|n| path.nodes[*n].critical_ns).collect();
        let saving = critical.iter().sum::<u64>() - critical.iter().copied().max().unwrap_or(0);
        if saving < config.min_saving_ns || saving == 0 {
            continue;
        }
        let names: Vec<String> = run
            .iter()
            .take(SEQUENTIAL_NAMES)
            .map(|n| operation_name(tree.spans[path.nodes[*n].tree_idx]))
            .collect();
        let more = if run.len() > SEQUENTIAL_NAMES {
            ", …"
        } else {
            ""
        };
        out.push(Finding {
            kind: FindingKind::SequentialIo,
            name: format!("{} sequential calls: {}{more}", run.len(), names.join(", ")),
            count: u32::try_from(run.len()).unwrap_or(u32::MAX),
            potential_saving_ns: saving,
            span_ids: span_ids(tree, path, run.iter().copied()),
        });
    }
}

/// Database spans slow in absolute terms, grouped by statement.
fn slow_queries(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    config: &AnalysisConfig,
    out: &mut Vec<Finding>,
) {
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (node_idx, node) in path.nodes.iter().enumerate().skip(1) {
        let span = tree.spans[node.tree_idx];
        if span.category == Category::Db && node.duration_ns() >= config.slow_query_ns {
            by_name
                .entry(operation_name(span))
                .or_default()
                .push(node_idx);
        }
    }
    for (name, nodes) in by_name {
        out.push(Finding {
            kind: FindingKind::SlowQuery,
            name,
            count: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            potential_saving_ns: nodes.iter().map(|n| path.nodes[*n].critical_ns).sum(),
            span_ids: span_ids(tree, path, nodes),
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
    out.push(Finding {
        kind: FindingKind::UninstrumentedWait,
        name: template_name(&tree.spans[path.nodes[0].tree_idx].name),
        count: 1,
        potential_saving_ns: wait,
        span_ids: span_ids(tree, path, nodes),
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

    use crate::analysis::{AnalysisConfig, analyze_trace, fixture};

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
                  sequential_io "2 sequential calls: SELECT * FROM u WHERE id = ?, SELECT * FROM u WHERE id = ?" x2 saves 10 [4 5]
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
                  sequential_io "4 sequential calls: SELECT * FROM u WHERE id = ?, SELECT * FROM u WHERE id = ?, SELECT * FROM u WHERE id = ?, …" x4 saves 30 [7 8 9 10]
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
                  sequential_io "3 sequential calls: SELECT a, GET b, GET k" x3 saves 39.5 [2 3 4]
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
    fn small_savings_are_not_reported() {
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
                  sequential_io "2 sequential calls: SELECT * FROM users WHERE id = ?, SELECT * FROM policy_rules WHERE policy_id = ?" x2 saves 20 [2 4]
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
        // A 6 ms duplicate passes `min_saving_ns` but is under 2% of a 1 s request.
        check(
            r#"
GET /a 0..1000 server cpu.time_ns=1000000
  q 0..6 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1"
  q 6..12 client db.system=postgresql db.statement="SELECT * FROM t WHERE id = 1"
  GET b 12..1000 client http.request.method=GET server.address=b
"#,
            expect![[r#"
                #1 svc: GET /a 1000ms | db 12 network 988 | path 1 2 3 4
            "#]],
        );
    }
}
