//! SARIF 2.1.0 for code scanning: one result per endpoint finding with a code location (the
//! analysis' own), one rule per finding kind. Findings without a location have no place in a
//! code view and are left out; the text and JSON reports keep them.
//!
//! The minimal valid log: `version`, `$schema`, one run with the tool's driver and its rules,
//! results with `ruleId`, `ruleIndex`, `level`, `message.text` and a physical location (GitHub
//! requires `region.startLine`: a location without a line points at the file's first). A
//! location whose spans name only their function has no physical location, only the logical
//! one naming the function, as SARIF 2.1.0 allows (§3.28.2).
//!
//! Invariant: these are the only `Serialize` types outside `web::api::dto`: SARIF is not the
//! API, and its field names are the standard's.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::endpoints::CaptureAnalysis;
use crate::analysis::FindingKind;
use crate::analysis::aggregate;

const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

#[derive(Debug, Serialize)]
pub struct Log {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<Run>,
}

#[derive(Debug, Serialize)]
struct Run {
    tool: Tool,
    results: Vec<SarifResult>,
}

#[derive(Debug, Serialize)]
struct Tool {
    driver: Driver,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Driver {
    name: &'static str,
    version: &'static str,
    rules: Vec<Rule>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    id: &'static str,
    short_description: Text,
}

#[derive(Debug, Serialize)]
struct Text {
    text: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    rule_id: &'static str,
    rule_index: usize,
    level: &'static str,
    message: Text,
    locations: Vec<Location>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    physical_location: Option<PhysicalLocation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logical_locations: Vec<LogicalLocation>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    region: Region,
}

#[derive(Debug, Serialize)]
struct ArtifactLocation {
    uri: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogicalLocation {
    fully_qualified_name: String,
    kind: &'static str,
}

/// What a finding kind is, for the rule's description.
fn rule_text(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::DuplicateQuery => {
            "The same query with the same parameters runs more than once in one request"
        }
        FindingKind::NPlusOne => {
            "A query runs in a loop, once per item, where one query could fetch them all"
        }
        FindingKind::SequentialIo => {
            "I/O calls run one after another on the critical path where they could run together"
        }
        FindingKind::SlowQuery => "A query is slow in absolute terms",
        FindingKind::CpuHotspot => "In-process CPU work dominates the request's critical path",
        FindingKind::UninstrumentedWait => {
            "A large share of the request waits off the CPU outside any span"
        }
        FindingKind::UntracedTime => {
            "A long stretch of the request is covered by no span and no CPU measurement"
        }
    }
}

/// The file as the scanned repository names it: relative to `source_root` when under it.
fn uri(file: &str, source_root: Option<&Path>) -> String {
    let relative = source_root
        .and_then(|root| Path::new(file).strip_prefix(root).ok())
        .map(|path| path.to_string_lossy().into_owned());
    relative.unwrap_or_else(|| file.to_owned())
}

/// The SARIF log of a capture's located findings.
pub fn log(analysis: &CaptureAnalysis, source_root: Option<&Path>) -> Log {
    let mut rule_of: BTreeMap<FindingKind, usize> = BTreeMap::new();
    let mut results = Vec::new();
    for (name, captured) in &analysis.endpoints {
        let (service, endpoint) = name;
        for finding in aggregate::findings(&captured.rollup) {
            let Some(at) = &finding.location else {
                continue;
            };
            let next = rule_of.len();
            let rule_index = *rule_of.entry(finding.kind).or_insert(next);
            results.push(SarifResult {
                rule_id: finding.kind.as_str(),
                rule_index,
                level: "warning",
                message: Text {
                    text: format!("{service} {endpoint}: {}", finding.summary),
                },
                locations: vec![Location {
                    physical_location: at.file.as_deref().map(|file| PhysicalLocation {
                        artifact_location: ArtifactLocation {
                            uri: uri(file, source_root),
                        },
                        region: Region {
                            start_line: at.line.unwrap_or(1),
                        },
                    }),
                    logical_locations: at
                        .function
                        .iter()
                        .map(|function| LogicalLocation {
                            fully_qualified_name: function.clone(),
                            kind: "function",
                        })
                        .collect(),
                }],
            });
        }
    }
    let mut rules: Vec<(usize, Rule)> = rule_of
        .into_iter()
        .map(|(kind, index)| {
            (
                index,
                Rule {
                    id: kind.as_str(),
                    short_description: Text {
                        text: rule_text(kind).to_owned(),
                    },
                },
            )
        })
        .collect();
    rules.sort_by_key(|(index, _)| *index);
    Log {
        schema: SCHEMA,
        version: "2.1.0",
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "bottleneck",
                    version: env!("CARGO_PKG_VERSION"),
                    rules: rules.into_iter().map(|(_, rule)| rule).collect(),
                },
            },
            results,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::AnalysisConfig;
    use crate::analysis::fixture;
    use crate::cli::analyze::endpoints::analyse;

    /// A capture of one request whose six identical-shape queries carry `code`.
    fn n_plus_one_at(code: &str) -> serde_json::Value {
        let mut text = String::from("auth: GET /rules 0..100 server http.route=/rules\n");
        for n in 0..6 {
            let at = 10 + n * 10;
            text.push_str(&format!(
                "  SELECT rules {at}..{} client db.system=postgresql \
                 db.statement=\"SELECT * FROM rules WHERE id = {n}\" {code}\n",
                at + 8
            ));
        }
        let analysis = analyse(fixture::parse(&text), &AnalysisConfig::default());
        let log = serde_json::to_value(log(&analysis, None)).expect("serializes");
        let results = log["runs"][0]["results"].as_array().expect("results");
        results
            .iter()
            .find(|result| result["ruleId"] == "n_plus_one")
            .unwrap_or_else(|| panic!("an N+1 in {results:?}"))
            .clone()
    }

    #[test]
    fn a_location_with_a_file_is_physical_and_one_without_only_logical() {
        let located = n_plus_one_at(
            "code.file.path=app/policies.py code.line.number=88 code.function.name=load_rules",
        );
        assert_eq!(
            located["locations"][0]["physicalLocation"],
            serde_json::json!({"artifactLocation": {"uri": "app/policies.py"}, "region": {"startLine": 88}})
        );
        let function_only = n_plus_one_at("code.function=load_rules code.namespace=app.policies");
        assert_eq!(
            function_only["locations"][0],
            serde_json::json!({"logicalLocations": [
                {"fullyQualifiedName": "app.policies.load_rules", "kind": "function"}
            ]})
        );
    }
}
