//! Gaps: stretches of a request's critical path that no span explains, and where they sit.
//!
//! A gap is a run of consecutive critical-path segments that are self time of one in-process
//! span, at least `gap_min_ns` long: of the request span, or of an INTERNAL span between or
//! around its children (the self time of a leaf span is explained by its name). It is placed by its
//! neighbours: `after` is the operation of the span that ended last at or before the gap's start,
//! `before` the operation of the span that started first at or after its end (neither the gap's
//! own span nor one of its ancestors, which contain it). "300 ms untraced between `SELECT …
//! policy_rules` and `POST idp`" is the hidden round trip of a dependency upgrade, found without
//! a custom attribute.
//!
//! Gaps are aggregated as operations whose name encodes the two neighbours ([`gap_operation`]),
//! so rollups, comparisons and regressions carry them like any other operation.
//!
//! Invariant: pure; gaps never overlap, and their time is part of their span's critical self time.

use collector::category::Category;
use collector::model::SpanId;

use super::critical_path::{CriticalPath, Node};
use super::operation::NodeNames;
use super::span_tree::SpanTree;

/// One gap of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The in-process span whose self time it is.
    pub span_id: SpanId,
    /// The operation that ended last before it; `None` at the request's start.
    pub after: Option<String>,
    /// The operation that started first after it; `None` at the request's end.
    pub before: Option<String>,
    /// Start of the gap.
    pub start_unix_ns: u64,
    /// Length of the gap.
    pub duration_ns: u64,
    /// The part measured on a CPU, where the span measured its CPU (`cpu.time_ns`); the rest
    /// is wait. `None`: nobody measured it, so the whole gap is untraced.
    pub cpu_ns: Option<u64>,
    /// The node whose self time it is, and its segments in the critical path.
    pub(crate) node: usize,
    pub(crate) segments: std::ops::Range<usize>,
}

impl Gap {
    /// End of the gap.
    pub fn end_unix_ns(&self) -> u64 {
        self.start_unix_ns + self.duration_ns
    }

    /// The time the gap adds to each category: untraced, or cpu and wait.
    pub fn parts(&self) -> [(Category, u64); 2] {
        match self.cpu_ns {
            None => [(Category::Untraced, self.duration_ns), (Category::Wait, 0)],
            Some(cpu_ns) => [
                (Category::Cpu, cpu_ns),
                (Category::Wait, self.duration_ns - cpu_ns),
            ],
        }
    }

    /// The operation name the gap is aggregated under.
    pub fn operation(&self) -> String {
        gap_operation(self.after.as_deref(), self.before.as_deref())
    }
}

/// Where a gap sits: the operations around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The operation that ended last before the gap; `None` at the request's start.
    pub after: Option<String>,
    /// The operation that started first after it; `None` at the request's end.
    pub before: Option<String>,
}

impl Place {
    /// The place of a gap's operation name; `None` for any other operation.
    pub fn of_operation(name: &str) -> Option<Self> {
        parse_gap_operation(name).map(|(after, before)| Self {
            after: after.map(str::to_owned),
            before: before.map(str::to_owned),
        })
    }

    /// In words: "between `A` and `B`".
    pub fn describe(&self) -> String {
        gap_place(self.after.as_deref(), self.before.as_deref())
    }
}

/// Marks an operation name as a gap's: a control character no operation name of a span keeps
/// (`operation_name` replaces it).
pub const GAP_MARK: char = '\u{1f}';

/// The operation name of a gap between two operations: the mark, `after`, the mark, `before`.
pub fn gap_operation(after: Option<&str>, before: Option<&str>) -> String {
    let (after, before) = (after.unwrap_or(""), before.unwrap_or(""));
    let mut name = String::with_capacity(after.len() + before.len() + 2);
    name.push(GAP_MARK);
    name.push_str(after);
    name.push(GAP_MARK);
    name.push_str(before);
    name
}

/// The two neighbours of a gap's operation name; `None` for any other operation.
pub fn parse_gap_operation(name: &str) -> Option<(Option<&str>, Option<&str>)> {
    let rest = name.strip_prefix(GAP_MARK)?;
    let (after, before) = rest.split_once(GAP_MARK)?;
    Some((non_empty(after), non_empty(before)))
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Where a gap sits, in words: "between `A` and `B`", "after `A`", "before `B`".
pub fn gap_place(after: Option<&str>, before: Option<&str>) -> String {
    match (after, before) {
        (Some(after), Some(before)) => format!("between `{after}` and `{before}`"),
        (Some(after), None) => format!("after `{after}`, until the end"),
        (None, Some(before)) => format!("from the start until `{before}`"),
        (None, None) => "with no span in the whole request".to_owned(),
    }
}

/// At most this many gaps per request, the longest: a trace of ten thousand spans can have
/// thousands of short ones, and the longest are what a person looks at.
pub const MAX_GAPS: usize = 64;

/// The gaps of a request, in time order (the [`MAX_GAPS`] longest).
pub fn gaps(
    tree: &SpanTree<'_>,
    path: &CriticalPath,
    names: &mut NodeNames,
    min_ns: u64,
) -> Vec<Gap> {
    let mut runs: Vec<(usize, u64, u64, std::ops::Range<usize>)> = Vec::new();
    let mut has_children: Option<Vec<bool>> = None;
    let mut at = 0;
    while at < path.segments.len() {
        let first = path.segments[at];
        let mut end = at + 1;
        while end < path.segments.len()
            && path.segments[end].node == first.node
            && path.segments[end].category == first.category
            && path.segments[end].start_ns == path.segments[end - 1].end_ns
        {
            end += 1;
        }
        let duration_ns = path.segments[end - 1].end_ns - first.start_ns;
        let is_self = matches!(first.category, Category::Untraced | Category::Cpu);
        let find_parents = || {
            let mut flags = vec![false; path.nodes.len()];
            for node in &path.nodes {
                if let Some(parent) = node.parent {
                    flags[parent] = true;
                }
            }
            flags
        };
        if is_self
            && duration_ns >= min_ns.max(1)
            && (first.node == 0 || has_children.get_or_insert_with(find_parents)[first.node])
        {
            runs.push((first.node, first.start_ns, duration_ns, at..end));
        }
        at = end;
    }
    if runs.is_empty() {
        return Vec::new();
    }
    if runs.len() > MAX_GAPS {
        runs.sort_by_key(|run| (std::cmp::Reverse(run.2), run.1));
        runs.truncate(MAX_GAPS);
        runs.sort_by_key(|run| run.1);
    }
    let neighbours = Neighbours::new(path);
    runs.into_iter()
        .map(|(node, start_ns, duration_ns, segments)| {
            let owner = &path.nodes[node];
            let after = neighbours
                .after(start_ns)
                .map(|idx| names.get(tree, path, idx).to_owned());
            let before = neighbours
                .before(start_ns + duration_ns)
                .map(|idx| names.get(tree, path, idx).to_owned());
            Gap {
                span_id: tree.spans[owner.tree_idx].span_id,
                after,
                before,
                start_unix_ns: start_ns,
                duration_ns,
                cpu_ns: (path.segments[segments.start].category == Category::Cpu)
                    .then(|| cpu_part(owner, duration_ns)),
                node,
                segments,
            }
        })
        .collect()
}

/// The measured on-CPU part of a gap of a measured span: its critical self time's proportion.
fn cpu_part(owner: &Node, duration_ns: u64) -> u64 {
    let measured = owner.cpu_critical_ns + owner.wait_critical_ns;
    if measured == 0 {
        return 0;
    }
    let cpu = u128::from(duration_ns) * u128::from(owner.cpu_critical_ns) / u128::from(measured);
    u64::try_from(cpu).unwrap_or(duration_ns).min(duration_ns)
}

/// Finds a gap's neighbours among the request's spans. A gap's own span and its ancestors
/// contain the gap, so they neither end at or before its start nor start at or after its end: no
/// span needs to be left out. A scan per gap: a request has few gaps ([`MAX_GAPS`] at most), and
/// sorting its spans would cost more than scanning them.
struct Neighbours<'p> {
    nodes: &'p [Node],
}

impl<'p> Neighbours<'p> {
    fn new(path: &'p CriticalPath) -> Self {
        Self { nodes: &path.nodes }
    }

    /// The span that ended last at or before `start_ns`; among equal ends the outermost (an
    /// ORM's span rather than its driver's), then the last.
    fn after(&self, start_ns: u64) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|idx| self.nodes[*idx].end_ns <= start_ns)
            .max_by_key(|idx| {
                let node = &self.nodes[*idx];
                (node.end_ns, std::cmp::Reverse(node.depth), *idx)
            })
    }

    /// The span that started first at or after `end_ns`; among equal starts the outermost,
    /// then the first.
    fn before(&self, end_ns: u64) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|idx| self.nodes[*idx].start_ns >= end_ns)
            .min_by_key(|idx| {
                let node = &self.nodes[*idx];
                (node.start_ns, node.depth, *idx)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_operation_names_round_trip() {
        for (after, before) in [
            (Some("SELECT 1"), Some("POST idp")),
            (Some("SELECT 1"), None),
            (None, Some("POST idp")),
            (None, None),
        ] {
            let name = gap_operation(after, before);
            assert_eq!(parse_gap_operation(&name), Some((after, before)));
        }
        assert_eq!(parse_gap_operation("SELECT 1"), None);
    }
}
