//! Bottleneck's verdict on a trace as span tags, so a Jaeger client's trace view shows it: every
//! span's category, the critical-path time of the spans on a request's critical path, and on
//! each request span its endpoint, breakdown and findings (each finding's kind also on the spans
//! it names).
//!
//! Invariant: the same analysis `/api/v1/traces/{id}` shows, re-run on the stored spans; nothing
//! here decides anything of its own.

use std::collections::HashMap;

use collector::category::Category;
use collector::model::{AttrValue, KeyValue, Span, SpanId};

use crate::analysis::aggregate::finding_sentence;
use crate::analysis::{AnalysisConfig, analyze_trace, critical_path, span_tree};

const NS_PER_US: u64 = 1_000;

fn push(tags: &mut HashMap<SpanId, Vec<KeyValue>>, span: SpanId, key: String, value: AttrValue) {
    let list = tags.entry(span).or_default();
    // A span in two requests (a callee's request span) keeps the first request's value.
    if !list.iter().any(|kv| kv.key == key) {
        list.push(KeyValue { key, value });
    }
}

fn micros(ns: u64) -> AttrValue {
    AttrValue::Int(i64::try_from(ns / NS_PER_US).unwrap_or(i64::MAX))
}

/// The verdict's tags by span.
pub fn tags(spans: &[Span], config: &AnalysisConfig) -> HashMap<SpanId, Vec<KeyValue>> {
    let mut out: HashMap<SpanId, Vec<KeyValue>> = HashMap::with_capacity(spans.len());
    for span in spans {
        // As the trace page colours it: in-process spans by whether their CPU was measured.
        let category = critical_path::self_category(span, false);
        push(
            &mut out,
            span.span_id,
            "bottleneck.category".to_owned(),
            AttrValue::Str(category.as_str().to_owned()),
        );
    }
    let (requests, _) = analyze_trace(spans, config);
    let tree = span_tree::build(spans);
    for request in &requests {
        let Some(root) = tree.spans.iter().position(|s| s.span_id == request.span_id) else {
            continue;
        };
        let path = critical_path::critical_path(&tree, root);
        for node in path.nodes.iter().filter(|node| node.on_path) {
            push(
                &mut out,
                tree.spans[node.tree_idx].span_id,
                "bottleneck.critical_path_us".to_owned(),
                micros(node.critical_ns),
            );
        }
        let id = request.span_id;
        push(
            &mut out,
            id,
            "bottleneck.endpoint".to_owned(),
            AttrValue::Str(request.endpoint.clone()),
        );
        for category in Category::ALL {
            let ns = request.breakdown.0[category.index()];
            if ns > 0 {
                push(
                    &mut out,
                    id,
                    format!("bottleneck.breakdown.{}_us", category.as_str()),
                    micros(ns),
                );
            }
        }
        push(
            &mut out,
            id,
            "bottleneck.findings".to_owned(),
            AttrValue::Int(i64::try_from(request.findings.len()).unwrap_or(i64::MAX)),
        );
        for (idx, finding) in request.findings.iter().enumerate() {
            let sentence = finding_sentence(
                finding.kind,
                &finding.name,
                f64::from(finding.count),
                finding.potential_saving_ns as f64,
            );
            push(
                &mut out,
                id,
                format!("bottleneck.finding.{}", idx + 1),
                AttrValue::Str(sentence),
            );
            for span_id in &finding.span_ids {
                let list = out.entry(*span_id).or_default();
                match list.iter_mut().find(|kv| kv.key == "bottleneck.finding") {
                    Some(kv) => {
                        if let AttrValue::Str(kinds) = &mut kv.value
                            && !kinds.split(',').any(|k| k == finding.kind.as_str())
                        {
                            kinds.push(',');
                            kinds.push_str(finding.kind.as_str());
                        }
                    }
                    None => list.push(KeyValue {
                        key: "bottleneck.finding".to_owned(),
                        value: AttrValue::Str(finding.kind.as_str().to_owned()),
                    }),
                }
            }
        }
    }
    out
}
