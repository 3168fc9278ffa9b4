//! One trace: its stored spans as a tree, and every request in it analysed again from them.
//!
//! The tree is built here once, by position: the pages walk it without looking ids up again.
//! A span whose parent is not in the trace (or is itself) is a root; a span id stored twice
//! resolves to its last copy, and both copies stay in the list.
//!
//! Invariant: reads one trace's spans; the analysis is the same pure `analyze_trace` the
//! pipeline runs, on a blocking thread.

use std::collections::HashMap;

use collector::category::Category;
use collector::model::{Span, SpanId, TraceId};

use crate::analysis::aggregate;
use crate::analysis::gap::Gap;
use crate::analysis::{AnalysisConfig, Finding, RequestAnalysis, analyze_trace, critical_path};
use crate::store::{Store, StoreError};

/// A stored span and where it sits.
#[derive(Debug, Clone)]
pub struct TraceSpan {
    /// The span as stored.
    pub span: Span,
    /// In-process spans show whether their self time was measured: cpu or untraced.
    pub category: Category,
    /// Position of its parent in [`TraceView::spans`], `None` for a root.
    pub parent: Option<usize>,
}

/// One trace.
#[derive(Debug, Clone)]
pub struct TraceView {
    /// Its id.
    pub trace_id: TraceId,
    /// The earliest span start.
    pub start_unix_ns: u64,
    /// The latest span end.
    pub end_unix_ns: u64,
    /// Every stored span, by start.
    pub spans: Vec<TraceSpan>,
    /// Positions of the roots, in span order.
    pub roots: Vec<usize>,
    /// Positions of each span's children, in span order.
    pub children: Vec<Vec<usize>>,
    /// Every request in it, analysed.
    pub requests: Vec<RequestAnalysis>,
    position: HashMap<SpanId, usize>,
}

impl TraceView {
    /// Builds the tree of `spans` and analyses their requests.
    pub fn build(trace_id: TraceId, spans: Vec<Span>, config: &AnalysisConfig) -> Self {
        let (requests, _) = analyze_trace(&spans, config);
        Self::new(trace_id, spans, requests)
    }

    /// Builds the tree of `spans`, with their requests as analysed.
    pub fn new(trace_id: TraceId, spans: Vec<Span>, requests: Vec<RequestAnalysis>) -> Self {
        let start_unix_ns = spans.iter().map(|s| s.start_unix_ns).min().unwrap_or(0);
        let end_unix_ns = spans
            .iter()
            .map(|s| s.end_unix_ns())
            .max()
            .unwrap_or(start_unix_ns);
        let position: HashMap<SpanId, usize> = spans
            .iter()
            .enumerate()
            .map(|(idx, span)| (span.span_id, idx))
            .collect();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
        let mut roots = Vec::new();
        let spans: Vec<TraceSpan> = spans
            .into_iter()
            .enumerate()
            .map(|(idx, span)| {
                let parent = span
                    .parent_span_id
                    .and_then(|id| position.get(&id).copied())
                    .filter(|parent| *parent != idx);
                match parent {
                    Some(parent) => children[parent].push(idx),
                    None => roots.push(idx),
                }
                TraceSpan {
                    category: critical_path::self_category(&span, false),
                    span,
                    parent,
                }
            })
            .collect();
        Self {
            trace_id,
            start_unix_ns,
            end_unix_ns,
            spans,
            roots,
            children,
            requests,
            position,
        }
    }

    /// Position of the span with this id (its last copy, when stored twice).
    pub fn position(&self, span_id: SpanId) -> Option<usize> {
        self.position.get(&span_id).copied()
    }

    /// From the trace's start to its end.
    pub fn duration_ns(&self) -> u64 {
        self.end_unix_ns - self.start_unix_ns
    }

    /// From the trace's start to `unix_ns`.
    pub fn offset_ns(&self, unix_ns: u64) -> u64 {
        unix_ns.saturating_sub(self.start_unix_ns)
    }
}

/// A trace with its tree and requests; `None` when not stored.
pub async fn trace(
    store: &Store,
    trace_id: TraceId,
    config: &AnalysisConfig,
) -> Result<Option<TraceView>, StoreError> {
    let Some(spans) = store.trace(trace_id).await? else {
        return Ok(None);
    };
    let config = config.clone();
    let view = tokio::task::spawn_blocking(move || TraceView::build(trace_id, spans, &config))
        .await
        .map_err(|err| StoreError::Corrupt(format!("trace rendering failed: {err}")))?;
    Ok(Some(view))
}

/// The category a gap is shown in: untraced where no CPU was measured, else the larger of its
/// cpu and wait parts.
pub fn gap_category(gap: &Gap) -> Category {
    match gap.parts() {
        [(Category::Untraced, _), _] => Category::Untraced,
        [(_, cpu), (_, wait)] if cpu >= wait => Category::Cpu,
        _ => Category::Wait,
    }
}

/// A request's finding in the sentence an endpoint's finding of that one request would have.
pub fn finding_sentence(finding: &Finding) -> String {
    aggregate::finding_sentence(
        finding.kind,
        &finding.name,
        f64::from(finding.count),
        finding.potential_saving_ns as f64,
    )
}

#[cfg(test)]
mod tests {
    use collector::model::SpanKind;

    use super::*;
    use crate::analysis::fixture::{make_span, span_id, trace_id};

    fn span(id: u64, parent: Option<u64>, start_ms: u64) -> Span {
        let ms = 1_000_000;
        make_span(
            id,
            parent,
            "auth",
            None,
            "step",
            SpanKind::Internal,
            start_ms * ms,
            10 * ms,
            Vec::new(),
            false,
        )
    }

    #[test]
    fn the_tree_is_by_position_and_odd_links_make_roots() {
        let spans = vec![
            span(1, None, 100),
            span(2, Some(1), 105),
            span(3, Some(3), 106), // its own parent
            span(4, Some(9), 107), // parent not stored
            span(2, Some(1), 108), // the same id again
        ];
        let view = TraceView::new(trace_id(), spans, Vec::new());
        assert_eq!(view.roots, [0, 2, 3]);
        assert_eq!(view.children[0], [1, 4]);
        assert_eq!(view.spans[4].parent, Some(0));
        assert_eq!(view.position(span_id(2)), Some(4), "the last copy");
        assert_eq!(view.duration_ns(), 18_000_000);
        assert_eq!(view.offset_ns(105_000_000), 5_000_000);
    }
}
