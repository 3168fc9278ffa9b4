//! A trace's spans indexed once: parent and children by position, with the input's defects
//! repaired and reported.
//!
//! Repairs: a duplicate span id keeps its first span (the later ones are left out); a span whose
//! parent is missing becomes a root (an orphan); parent links that form a cycle are cut where the
//! walk closes the cycle, making that span a root.
//!
//! Invariant: built in one linear pass plus one walk over parent links with an explicit stack;
//! no recursion, so a 100,000-deep chain is as cheap as a flat trace.

use std::collections::HashMap;

use collector::model::Span;
use foldhash::fast::RandomState;

use super::Anomaly;

/// The spans of one trace with their links resolved.
#[derive(Debug)]
pub struct SpanTree<'a> {
    /// The kept spans, in input order.
    pub spans: Vec<&'a Span>,
    /// Position of each span's parent, `None` for roots (true roots, orphans, cut cycles).
    pub parent: Vec<Option<usize>>,
    /// Positions of each span's children, in input order.
    pub children: Vec<Vec<usize>>,
    /// What was repaired.
    pub anomalies: Vec<Anomaly>,
}

impl SpanTree<'_> {
    /// Spans kept.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no spans.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Indexes spans: dedupes ids, resolves parents, cuts cycles.
pub fn build(input: &[Span]) -> SpanTree<'_> {
    let mut anomalies = Vec::new();
    let mut position = HashMap::with_capacity_and_hasher(input.len(), RandomState::default());
    let mut spans = Vec::with_capacity(input.len());
    for span in input {
        if position.contains_key(&span.span_id) {
            anomalies.push(Anomaly::DuplicateSpanId {
                span_id: span.span_id,
            });
            continue;
        }
        position.insert(span.span_id, spans.len());
        spans.push(span);
    }
    let mut parent: Vec<Option<usize>> = spans
        .iter()
        .map(|span| {
            let parent_id = span.parent_span_id?;
            let found = position.get(&parent_id).copied();
            if found.is_none() {
                anomalies.push(Anomaly::OrphanSpan {
                    span_id: span.span_id,
                });
            }
            found
        })
        .collect();
    cut_cycles(&spans, &mut parent, &mut anomalies);
    let mut children = vec![Vec::new(); spans.len()];
    for (idx, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(idx);
        }
    }
    SpanTree {
        spans,
        parent,
        children,
        anomalies,
    }
}

/// Walks up from every span, marking the path; meeting a span of the current path means a cycle,
/// which is cut at the link that closed it.
fn cut_cycles(spans: &[&Span], parent: &mut [Option<usize>], anomalies: &mut Vec<Anomaly>) {
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![UNSEEN; spans.len()];
    let mut path = Vec::new();
    for start in 0..spans.len() {
        let mut at = start;
        while state[at] == UNSEEN {
            state[at] = ON_PATH;
            path.push(at);
            match parent[at] {
                Some(p) if state[p] == ON_PATH => {
                    parent[at] = None;
                    anomalies.push(Anomaly::ParentCycle {
                        span_id: spans[at].span_id,
                    });
                    break;
                }
                Some(p) => at = p,
                None => break,
            }
        }
        for idx in path.drain(..) {
            state[idx] = DONE;
        }
    }
}
