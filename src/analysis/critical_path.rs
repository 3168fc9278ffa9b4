//! Critical-path attribution: every instant of a request goes to exactly one span and category.
//!
//! The walk is Jaeger's, run backwards from the request's end with a cursor: among the children
//! that started before the cursor, the one that finishes last (its end cut at the cursor) takes
//! `[child.start, min(cursor, child.end)]`; the gap between it and the cursor is the parent's self
//! time; the walk descends into the child and then continues from the child's start. Whatever is
//! left when no child remains is the parent's self time again.
//!
//! The request's subtree stops at another request: a SERVER span of another process, a
//! CONSUMER span, or a span of another service (a framework's SERVER span inside the server's
//! own, in one process, is part of the request). A CONSUMER is never waited for, and neither is a child that ends more than a
//! millisecond after its parent (detached): neither is on the critical path.
//! Time under such a boundary child counts as the caller's: the CLIENT span's own category
//! (`network` for a remote call), or `network` when it hangs directly under in-process work.
//! Children are clamped into their parent's interval (clock skew), reported as
//! [`Anomaly::ChildOutsideParent`].
//!
//! Self time of in-process spans (category `cpu`, and the request span whatever its category) is
//! `untraced` unless the span measured its CPU: nobody knows whether it ran on a CPU or waited
//! on I/O that has no span. A span with `cpu.time_ns` (the CPU time of its interval on its
//! thread, children included) has its self time split into `cpu` and `wait`: its own on-CPU time
//! is its `cpu.time_ns` less its children's measured values (less the whole duration of an
//! in-process child that was not measured, and nothing for an unmeasured I/O child); the rest
//! of its self time is wait, and its critical self time is split in that proportion.
//!
//! Invariant: the breakdown sums exactly to the request's duration, in integer nanoseconds. Each
//! span is pushed on the explicit stack at most once and each child is looked at once after one
//! sort, so the walk is O(n log n) and never recurses.

use collector::category::Category;
use collector::model::{Span, SpanKind};

use std::rc::Rc;
use std::sync::Arc;

use super::span_tree::SpanTree;
use super::{Anomaly, Breakdown, request, sql};

/// One span of the request's subtree.
#[derive(Debug, Clone)]
pub struct Node {
    /// Position in the [`SpanTree`].
    pub tree_idx: usize,
    /// The parent node (`None` for the request span).
    pub parent: Option<usize>,
    /// What the span's own time counts as before the cpu/wait split: `cpu` or `untraced` for
    /// in-process work (by whether it measured its CPU), the category of the I/O call it is
    /// part of for a span inside one (a driver's span under an ORM's, `dns.lookup` under an
    /// HTTP call), else its own category.
    pub category: Category,
    /// The node whose call this span is part of: itself, the outermost I/O call it is nested
    /// in, or the sibling span of the same statement that contains it (an ORM's span beside its
    /// driver's). Only a node that is its own call counts as one.
    pub counted_as: usize,
    /// Whether the span ended after its parent: work the parent did not wait for (a
    /// fire-and-forget task, a publish acknowledged later), never on the parent's critical path.
    pub detached: bool,
    /// Depth below the request span.
    pub depth: u32,
    /// Start, clamped into the parent.
    pub start_ns: u64,
    /// End, clamped into the parent.
    pub end_ns: u64,
    /// Critical-path time attributed to this span itself: its self time and the time under its
    /// boundary children (another service's request), not the time of its descendants.
    pub critical_ns: u64,
    /// The part of `critical_ns` that is on-CPU self time (in-process spans only).
    pub cpu_critical_ns: u64,
    /// The part of `critical_ns` that is self time off the CPU (in-process spans only).
    pub wait_critical_ns: u64,
    /// The part of `critical_ns` that is self time nobody measured (in-process spans without
    /// `cpu.time_ns`).
    pub untraced_critical_ns: u64,
    /// Whether the walk went through this span.
    pub on_path: bool,
}

impl Node {
    /// Clamped duration.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

impl CriticalPath {
    /// Whether node `idx` is a call of its own: not part of another span's call, and not a
    /// connection pool's checkout (which waits for a connection and runs no statement).
    pub fn is_call(&self, tree: &SpanTree<'_>, idx: usize) -> bool {
        let node = &self.nodes[idx];
        node.counted_as == idx
            && !(matches!(node.category, Category::Db | Category::Cache)
                && is_pool_checkout(tree.spans[node.tree_idx]))
    }
}

/// A connection pool's checkout span (SQLAlchemy's `connect`, node-postgres' `pg-pool.connect`
/// and `pg.connect`): a database span without a statement that only obtains a connection.
fn is_pool_checkout(span: &Span) -> bool {
    if span.semantics.db_statement.is_some() {
        return false;
    }
    let name = span.name.as_bytes();
    name.eq_ignore_ascii_case(b"connect")
        || name.len() > 8 && name[name.len() - 8..].eq_ignore_ascii_case(b".connect")
}

/// A child that ends later than this after its parent was not waited for: SDKs that stamp
/// times in whole milliseconds (Node's) make awaited children seem to end up to 1 ms late.
const DETACHED_AFTER_NS: u64 = 1_000_000;

/// One stretch of the critical path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The node the time is attributed to.
    pub node: usize,
    /// Start of the stretch.
    pub start_ns: u64,
    /// End of the stretch.
    pub end_ns: u64,
    /// Its category: `untraced` for self time of an in-process span without `cpu.time_ns`, and
    /// `cpu` for that of a span with it, before the cpu/wait split.
    pub category: Category,
}

/// The critical path of one request.
#[derive(Debug, Clone)]
pub struct CriticalPath {
    /// The subtree, request span first, parents before children.
    pub nodes: Vec<Node>,
    /// Stretches in time order, covering the request exactly.
    pub segments: Vec<Segment>,
    /// Time per category; sums to the request's duration.
    pub breakdown: Breakdown,
    /// Nodes the walk went through, in time order (request span first).
    pub path: Vec<usize>,
    /// Children clamped into their parents.
    pub anomalies: Vec<Anomaly>,
}

/// A child as the walk sees it: clamped interval, and its node unless it is a boundary.
#[derive(Debug, Clone, Copy)]
struct Kid {
    start_ns: u64,
    end_ns: u64,
    node: Option<usize>,
    category: Category,
}

/// Whether a span's self time is in-process work (split into cpu and wait, or untraced).
fn is_in_process(span: &Span) -> bool {
    span.category == Category::Cpu
}

/// The category of a node's self time before the cpu/wait split: in-process self time is `cpu`
/// where the span measured its CPU and `untraced` where it did not.
pub fn self_category(span: &Span, is_request: bool) -> Category {
    if is_request || is_in_process(span) {
        if span.semantics.cpu_time_ns.is_some() {
            Category::Cpu
        } else {
            Category::Untraced
        }
    } else {
        span.category
    }
}

/// The category time under a boundary child counts as, seen from its parent.
fn boundary_category(parent: &Span, child: &Span) -> Category {
    if parent.category.is_io() {
        parent.category
    } else if child.category.is_io() {
        child.category
    } else {
        Category::Network
    }
}

/// Two sibling spans of one statement from two instrumentations, one inside the other, are one
/// call: an ORM's span and its driver's (SQLAlchemy beside psycopg2). The inner one counts as
/// part of the outer one. Spans of one instrumentation are never twins: an SDK that stamps
/// starts in whole milliseconds makes quick loads of an N+1 loop seem to nest.
/// `siblings` are one parent's child nodes, at positions from `first`.
fn merge_statement_twins(tree: &SpanTree<'_>, siblings: &mut [Node], first: usize) {
    // Twins need two instrumentations among the siblings' queries: most requests have one, and
    // then no statement is looked at.
    let mut scopes = siblings
        .iter()
        .filter(|node| matches!(node.category, Category::Db | Category::Cache))
        .map(|node| &tree.spans[node.tree_idx].scope);
    let Some(first_scope) = scopes.next() else {
        return;
    };
    if scopes.all(|scope| Arc::ptr_eq(scope, first_scope) || scope.name == first_scope.name) {
        return;
    }
    let mut queries: Vec<(Rc<sql::Scanned>, usize)> = siblings
        .iter()
        .enumerate()
        .filter(|(_, node)| matches!(node.category, Category::Db | Category::Cache))
        .filter_map(|(idx, node)| {
            let statement = tree.spans[node.tree_idx]
                .semantics
                .db_statement
                .as_deref()?;
            Some((sql::scan_shared(statement), idx))
        })
        .collect();
    if queries.len() < 2 {
        return;
    }
    // By statement, then outermost first: earliest start, latest end.
    queries.sort_by(|(a_sql, a), (b_sql, b)| {
        a_sql
            .normalized
            .cmp(&b_sql.normalized)
            .then(siblings[*a].start_ns.cmp(&siblings[*b].start_ns))
            .then(siblings[*b].end_ns.cmp(&siblings[*a].end_ns))
    });
    let mut outer: Option<usize> = None;
    for pair in 0..queries.len() {
        let (scanned, idx) = &queries[pair];
        let same_statement = pair > 0 && queries[pair - 1].0.normalized == scanned.normalized;
        match outer.filter(|_| same_statement) {
            Some(container)
                if siblings[*idx].end_ns
                    <= siblings[container].end_ns.saturating_add(DETACHED_AFTER_NS)
                    && tree.spans[siblings[*idx].tree_idx].scope.name
                        != tree.spans[siblings[container].tree_idx].scope.name =>
            {
                siblings[*idx].counted_as = first + container;
            }
            _ => outer = Some(*idx),
        }
    }
}

/// A socket's connect (`tcp.connect`, `tls.connect`: INTERNAL spans on the network) or a name
/// lookup (`dns.lookup`): setting up a connection, not a call of its own.
fn is_connection_setup(span: &Span) -> bool {
    span.category == Category::Network
        && (span.kind == SpanKind::Internal || span.name.starts_with("dns."))
}

/// Node's fetch (undici) opens its connection in the caller's context, so the `tcp.connect` and
/// `dns.lookup` spans of a call are the call's siblings, not its children. A setup span that
/// starts while a sibling remote call is open (the latest such call) is part of that call: one
/// network call, detached when the call is. `siblings` are one parent's child nodes, at
/// positions from `first`. Returns whether a setup span became detached.
fn merge_connection_setup(tree: &SpanTree<'_>, siblings: &mut [Node], first: usize) -> bool {
    let mut detached_any = false;
    for setup in 0..siblings.len() {
        if !is_connection_setup(tree.spans[siblings[setup].tree_idx]) {
            continue;
        }
        let start = siblings[setup].start_ns;
        // Starts are stamped per span (in whole milliseconds by Node's SDK): a setup span may
        // seem to start up to that much after its call ended.
        let call = (0..siblings.len())
            .filter(|&idx| {
                let span = tree.spans[siblings[idx].tree_idx];
                span.kind == SpanKind::Client
                    && siblings[idx].category == Category::Network
                    && !is_connection_setup(span)
                    && siblings[idx].start_ns <= start
                    && start <= siblings[idx].end_ns.saturating_add(DETACHED_AFTER_NS)
            })
            .max_by_key(|&idx| siblings[idx].start_ns);
        if let Some(call) = call {
            siblings[setup].counted_as = first + call;
            if siblings[call].detached && !siblings[setup].detached {
                siblings[setup].detached = true;
                detached_any = true;
            }
        }
    }
    detached_any
}

/// Nodes the vectors of one request's walk are sized for at first, at most.
const MAX_PRESIZED_NODES: usize = 256;

/// Computes the critical path of the request at `request` (a position in `tree`).
pub fn critical_path(tree: &SpanTree<'_>, request: usize) -> CriticalPath {
    let root_span = tree.spans[request];
    let service = &root_span.resource.service_name;
    let mut anomalies = Vec::new();
    // Sized for the whole trace, up to a bound: a request is usually most of its trace, and
    // growing these one push at a time would be a large share of this function's work.
    let expected_nodes = tree.len().min(MAX_PRESIZED_NODES);
    let mut nodes = Vec::with_capacity(expected_nodes);
    nodes.push(Node {
        tree_idx: request,
        parent: None,
        category: self_category(root_span, true),
        counted_as: 0,
        detached: false,
        depth: 0,
        start_ns: root_span.start_unix_ns,
        end_ns: root_span.end_unix_ns(),
        critical_ns: 0,
        cpu_critical_ns: 0,
        wait_critical_ns: 0,
        untraced_critical_ns: 0,
        on_path: false,
    });
    let mut kids: Vec<Vec<Kid>> = Vec::with_capacity(expected_nodes);
    // Breadth-first: `nodes` grows while we walk it, parents before children.
    let mut at = 0;
    while at < nodes.len() {
        let (p_start, p_end, depth) = (nodes[at].start_ns, nodes[at].end_ns, nodes[at].depth);
        let parent_span = tree.spans[nodes[at].tree_idx];
        // Inside an I/O call (not the request itself), everything is part of that call.
        let inside_call = at != 0 && nodes[at].category.is_io();
        let (parent_category, parent_call) = (nodes[at].category, nodes[at].counted_as);
        let first_child = nodes.len();
        let mut has_connection_setup = false;
        let mut own = Vec::with_capacity(tree.children[nodes[at].tree_idx].len());
        for &child_idx in &tree.children[nodes[at].tree_idx] {
            let child = tree.spans[child_idx];
            // A message's processing is a request of its own, which its producer never waits
            // for.
            // A SERVER span of the request's own process (a framework's inside the server's) is
            // part of the request; another process's is a request of its own.
            let consumer = child.kind == SpanKind::Consumer;
            let boundary = (child.kind == SpanKind::Server
                && !request::same_process(child, root_span))
                || consumer
                || child.resource.service_name != *service;
            let detached = consumer
                || !boundary && child.end_unix_ns() > p_end.saturating_add(DETACHED_AFTER_NS);
            let start_ns = child.start_unix_ns.clamp(p_start, p_end);
            let end_ns = child.end_unix_ns().clamp(start_ns, p_end);
            if !detached && (start_ns != child.start_unix_ns || end_ns != child.end_unix_ns()) {
                anomalies.push(Anomaly::ChildOutsideParent {
                    span_id: child.span_id,
                });
            }
            let node = (!boundary).then(|| {
                let (category, counted_as) = if inside_call {
                    (parent_category, parent_call)
                } else {
                    has_connection_setup |= is_connection_setup(child);
                    (self_category(child, false), nodes.len())
                };
                nodes.push(Node {
                    tree_idx: child_idx,
                    parent: Some(at),
                    category,
                    counted_as,
                    detached,
                    depth: depth + 1,
                    start_ns,
                    end_ns,
                    critical_ns: 0,
                    cpu_critical_ns: 0,
                    wait_critical_ns: 0,
                    untraced_critical_ns: 0,
                    on_path: false,
                });
                nodes.len() - 1
            });
            if detached {
                // Its time overlapping the parent is the parent's own.
                continue;
            }
            let category = match node {
                Some(node) => nodes[node].category,
                None if inside_call => parent_category,
                None => boundary_category(parent_span, child),
            };
            own.push(Kid {
                start_ns,
                end_ns,
                node,
                category,
            });
        }
        if !inside_call {
            merge_statement_twins(tree, &mut nodes[first_child..], first_child);
            if has_connection_setup
                && merge_connection_setup(tree, &mut nodes[first_child..], first_child)
            {
                // A setup span of a call the parent did not wait for was not waited for either.
                own.retain(|kid| kid.node.is_none_or(|node| !nodes[node].detached));
            }
        }
        // Latest end first; among equal ends the earliest start, which covers the most.
        own.sort_by(|a, b| b.end_ns.cmp(&a.end_ns).then(a.start_ns.cmp(&b.start_ns)));
        kids.push(own);
        at += 1;
    }

    let mut segments = walk(&mut nodes, &kids, expected_nodes);
    segments.reverse();

    // Critical self time of measured in-process nodes, and its cpu/wait split.
    let mut self_critical = vec![0u64; nodes.len()];
    let mut breakdown = Breakdown::default();
    for seg in &segments {
        let len = seg.end_ns - seg.start_ns;
        let node = &mut nodes[seg.node];
        node.critical_ns += len;
        match seg.category {
            Category::Cpu => self_critical[seg.node] += len,
            Category::Untraced => {
                node.untraced_critical_ns += len;
                breakdown.add(Category::Untraced, len);
            }
            category => breakdown.add(category, len),
        }
    }
    for node_idx in 0..nodes.len() {
        let critical_self = self_critical[node_idx];
        if critical_self == 0 {
            continue;
        }
        let wait = split_wait(tree, &nodes, &kids, node_idx, critical_self);
        nodes[node_idx].wait_critical_ns = wait;
        nodes[node_idx].cpu_critical_ns = critical_self - wait;
        breakdown.add(Category::Wait, wait);
        breakdown.add(Category::Cpu, critical_self - wait);
    }

    let mut path: Vec<usize> = (0..nodes.len()).filter(|idx| nodes[*idx].on_path).collect();
    path.sort_by_key(|idx| (*idx != 0, nodes[*idx].start_ns, nodes[*idx].depth, *idx));
    CriticalPath {
        nodes,
        segments,
        breakdown,
        path,
        anomalies,
    }
}

/// A node being walked: the cursor moves backwards from its end; `next` is the first child (in
/// latest-end order) not yet considered.
struct Frame {
    node: usize,
    cursor: u64,
    next: usize,
}

/// The backwards walk; returns segments latest first.
fn walk(nodes: &mut [Node], kids: &[Vec<Kid>], expected_nodes: usize) -> Vec<Segment> {
    // A node's time is cut at most at each of its children's two ends.
    let mut segments = Vec::with_capacity(2 * expected_nodes + 1);
    nodes[0].on_path = true;
    let mut stack = vec![Frame {
        node: 0,
        cursor: nodes[0].end_ns,
        next: 0,
    }];
    while let Some(frame) = stack.last_mut() {
        let own = &kids[frame.node];
        let cursor = frame.cursor;
        // The group of children whose end, cut at the cursor, is the latest; pick the one
        // starting first. The others of the group start at or after it, so once the cursor moves
        // to its start they can never be picked: the group is done with.
        let mut chosen = None;
        while frame.next < own.len() {
            let cut_end = own[frame.next].end_ns.min(cursor);
            let mut best: Option<usize> = None;
            let mut idx = frame.next;
            while idx < own.len() && own[idx].end_ns.min(cursor) == cut_end {
                if own[idx].start_ns < cut_end
                    && best.is_none_or(|b| own[idx].start_ns < own[b].start_ns)
                {
                    best = Some(idx);
                }
                idx += 1;
            }
            frame.next = idx;
            if let Some(best) = best {
                chosen = Some((own[best], cut_end));
                break;
            }
        }
        let node = frame.node;
        match chosen {
            Some((kid, cut_end)) => {
                if cut_end < cursor {
                    let category = nodes[node].category;
                    segments.push(Segment {
                        node,
                        start_ns: cut_end,
                        end_ns: cursor,
                        category,
                    });
                }
                frame.cursor = kid.start_ns;
                match kid.node {
                    Some(child) => {
                        nodes[child].on_path = true;
                        stack.push(Frame {
                            node: child,
                            cursor: cut_end,
                            next: 0,
                        });
                    }
                    None => segments.push(Segment {
                        node,
                        start_ns: kid.start_ns,
                        end_ns: cut_end,
                        category: kid.category,
                    }),
                }
            }
            None => {
                let start = nodes[node].start_ns;
                if start < cursor {
                    let category = nodes[node].category;
                    segments.push(Segment {
                        node,
                        start_ns: start,
                        end_ns: cursor,
                        category,
                    });
                }
                stack.pop();
            }
        }
    }
    segments
}

/// The wait part of a node's critical self time, from its `cpu.time_ns`.
fn split_wait(
    tree: &SpanTree<'_>,
    nodes: &[Node],
    kids: &[Vec<Kid>],
    node: usize,
    critical_self: u64,
) -> u64 {
    let span = tree.spans[nodes[node].tree_idx];
    let Some(cpu_time) = span.semantics.cpu_time_ns else {
        return 0;
    };
    // `cpu.time_ns` includes the children's CPU: take out what they measured, and all of an
    // unmeasured in-process child (it may have been on the CPU throughout); an unmeasured I/O
    // call is taken to have waited.
    let children_cpu: u64 = kids[node]
        .iter()
        .filter_map(|kid| kid.node)
        .map(|child| {
            let child_span = tree.spans[nodes[child].tree_idx];
            match child_span.semantics.cpu_time_ns {
                Some(cpu_ns) => cpu_ns,
                None if is_in_process(child_span) => nodes[child].duration_ns(),
                None => 0,
            }
        })
        .fold(0u64, u64::saturating_add);
    let own_cpu = cpu_time.saturating_sub(children_cpu);
    let self_total = nodes[node]
        .duration_ns()
        .saturating_sub(union_ns(&kids[node]));
    let wait_total = self_total.saturating_sub(own_cpu);
    if self_total == 0 {
        return 0;
    }
    let wait = u128::from(critical_self) * u128::from(wait_total) / u128::from(self_total);
    // critical_self <= self_total (self stretches are not under any child), so wait fits; the
    // min keeps that true even if the input defeats the argument.
    u64::try_from(wait)
        .unwrap_or(critical_self)
        .min(critical_self)
}

/// Length of the union of the children's intervals.
fn union_ns(kids: &[Kid]) -> u64 {
    let mut intervals: Vec<(u64, u64)> = kids.iter().map(|k| (k.start_ns, k.end_ns)).collect();
    intervals.sort_unstable();
    let mut total = 0;
    let mut current: Option<(u64, u64)> = None;
    for (start, end) in intervals {
        match &mut current {
            Some((_, cur_end)) if start <= *cur_end => *cur_end = (*cur_end).max(end),
            _ => {
                if let Some((s, e)) = current {
                    total += e - s;
                }
                current = Some((start, end));
            }
        }
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

#[cfg(test)]
mod tests;
