//! A capture analysed as the server analyses stored spans: spans grouped by trace, each trace
//! through `analysis::analyze_trace`, each request added to its endpoint's rollup. Summaries,
//! operations and findings then come from the same `aggregate` functions the API uses, so the
//! numbers are the server's for the same spans.
//!
//! Beside the rollups it counts where in the code each finding's spans were made
//! (`location`), for SARIF and the text report.
//!
//! Invariant: pure apart from the analysis' own work; nothing here reads files or prints.

use std::collections::{BTreeMap, HashMap};

use collector::model::{Span, SpanId, TraceId};

use super::location::{CodeLocation, LocationCounts};
use crate::analysis::aggregate::Rollup;
use crate::analysis::{AnalysisConfig, FindingKind, analyze_trace};

/// `service.name` and endpoint name.
pub type EndpointName = (String, String);

/// One endpoint of a capture.
#[derive(Debug, Clone)]
pub struct CapturedEndpoint {
    /// Every request of the endpoint in the capture.
    pub rollup: Rollup,
    /// Where the spans of each finding (kind, name) were made.
    pub locations: HashMap<(FindingKind, String), LocationCounts>,
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

impl CaptureAnalysis {
    /// The most frequent code location of an endpoint's finding, if its spans name one.
    pub fn location(
        &self,
        endpoint: &EndpointName,
        kind: FindingKind,
        name: &str,
    ) -> Option<&CodeLocation> {
        self.endpoints
            .get(endpoint)?
            .locations
            .get(&(kind, name.to_owned()))?
            .most_frequent()
    }
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
        let by_id: HashMap<SpanId, &Span> = spans.iter().map(|s| (s.span_id, s)).collect();
        for request in &requests {
            let endpoint = out
                .endpoints
                .entry((request.service.clone(), request.endpoint.clone()))
                .or_insert_with(|| CapturedEndpoint {
                    rollup: Rollup::new(),
                    locations: HashMap::new(),
                });
            endpoint.rollup.add(request);
            for finding in &request.findings {
                let counts = endpoint
                    .locations
                    .entry((finding.kind, finding.name.clone()))
                    .or_default();
                for span_id in &finding.span_ids {
                    if let Some(location) = by_id.get(span_id).and_then(|s| CodeLocation::of(s)) {
                        counts.record(location);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::fixture;

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
        let (kind, name) = endpoint
            .rollup
            .findings
            .keys()
            .find(|(kind, _)| *kind == FindingKind::NPlusOne)
            .expect("an N+1 finding")
            .clone();
        let location = analysis.location(&key, kind, &name).expect("located");
        assert_eq!(location.describe(), "app/policies.py:88 in load_rules");
    }
}
