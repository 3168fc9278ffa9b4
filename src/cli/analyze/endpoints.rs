//! A capture analysed as the server analyses stored spans: spans grouped by trace, each trace
//! through `analysis::analyze_trace`, each request added to its endpoint's rollup. Summaries,
//! operations and findings then come from the same `aggregate` functions the API uses, so the
//! numbers are the server's for the same spans.
//!
//! Invariant: pure apart from the analysis' own work; nothing here reads files or prints.

use std::collections::{BTreeMap, HashMap};

use collector::model::{Span, TraceId};

use crate::analysis::aggregate::Rollup;
use crate::analysis::{AnalysisConfig, analyze_trace};

/// `service.name` and endpoint name.
pub type EndpointName = (String, String);

/// One endpoint of a capture.
#[derive(Debug, Clone)]
pub struct CapturedEndpoint {
    /// Every request of the endpoint in the capture.
    pub rollup: Rollup,
}

/// What a capture holds, analysed.
#[derive(Debug, Clone, Default)]
pub struct CaptureAnalysis {
    /// Per endpoint, in name order.
    pub endpoints: BTreeMap<EndpointName, CapturedEndpoint>,
    /// Traces in the capture.
    pub traces: u64,
    /// Odd input the analysis worked around (orphan spans, clock skew, duplicate ids).
    pub anomalies: u64,
}

/// Analyses every trace of `spans`.
pub fn analyse(spans: Vec<Span>, config: &AnalysisConfig) -> CaptureAnalysis {
    let mut traces: HashMap<TraceId, Vec<Span>> = HashMap::new();
    for span in spans {
        traces.entry(span.trace_id).or_default().push(span);
    }
    let mut out = CaptureAnalysis {
        traces: traces.len() as u64,
        ..CaptureAnalysis::default()
    };
    for spans in traces.into_values() {
        let (requests, anomalies) = analyze_trace(&spans, config);
        out.anomalies += anomalies.len() as u64;
        if requests.is_empty() {
            continue;
        }
        for request in &requests {
            let endpoint = out
                .endpoints
                .entry((request.service.clone(), request.endpoint.clone()))
                .or_insert_with(|| CapturedEndpoint {
                    rollup: Rollup::new(),
                });
            endpoint.rollup.add(request);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{FindingKind, fixture};

    #[test]
    fn requests_count_under_their_endpoint_and_findings_carry_their_code() {
        let mut text = String::from("auth: GET /rules 0..100 server http.route=/rules\n");
        for n in 0..6 {
            let at = 10 + n * 10;
            text.push_str(&format!(
                "  SELECT rules {at}..{} client db.system=postgresql \
                 db.statement=\"SELECT * FROM rules WHERE id = {n}\" \
                 code.file.path=app/policies.py code.line.number=88 code.function.name=load_rules\n",
                at + 8
            ));
        }
        let analysis = analyse(fixture::parse(&text), &AnalysisConfig::default());
        assert_eq!(analysis.traces, 1);
        let key = ("auth".to_owned(), "GET /rules".to_owned());
        let endpoint = &analysis.endpoints[&key];
        assert_eq!(endpoint.rollup.requests, 1);
        assert_eq!(endpoint.rollup.db_calls, 6);
        let (_, sums) = endpoint
            .rollup
            .findings
            .iter()
            .find(|((kind, _), _)| *kind == FindingKind::NPlusOne)
            .expect("an N+1 finding");
        let location = sums.location.as_ref().expect("located");
        assert_eq!(location.describe(), "app/policies.py:88 in load_rules");
    }
}
