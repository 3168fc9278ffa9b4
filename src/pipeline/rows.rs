//! A batch's analyses as the rows one commit writes: a request row per request analysed now,
//! and the change to each rollup row its requests count in (requests added, requests of a
//! previous analysis taken back). Where each request is counted (its interned endpoint id, its
//! version, its start) is decided before, with the store at hand (`analyze`); this only builds.
//!
//! Each request is added to (or taken back from) its minute row only; each hour row's change is
//! the sum of the batch's changes to that hour's minute rows, merged once per minute row rather
//! than adding every request a second time. Merging is adding (`Rollup::merge`): the same sums,
//! sketch counts and finding counts, and a location named by most requests still wins its vote.
//!
//! Invariant: pure; a request counted in a rollup row is added once, and one taken back is
//! taken back under the row its previous analysis counted it in; an hour row changes by exactly
//! what its minute rows change by.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use collector::model::TraceId;
use foldhash::fast::RandomState;

use super::work::AnalysedTrace;
use crate::analysis::aggregate::Tally;
use crate::store::{AnalysisCommit, Granularity, RequestRow, RollupChange, RollupKey, minute_of};

/// Where a request is counted: under which endpoint and version, and at which start (the
/// request's own, or the time it was analysed when its clock is far ahead).
pub struct CountedAs<'a> {
    /// The interned endpoint (possibly `other`).
    pub endpoint_id: i64,
    /// The version (possibly `other`).
    pub version: &'a str,
    /// The start it is counted at.
    pub start_unix_ns: u64,
}

impl CountedAs<'_> {
    /// The minute rollup row a request counts in (its hour row is that minute's hour).
    pub fn rollup_key(&self) -> RollupKey {
        RollupKey {
            endpoint_id: self.endpoint_id,
            version: self.version.to_owned(),
            minute: minute_of(self.start_unix_ns),
            granularity: Granularity::Minute,
        }
    }
}

/// Where every request of a batch's analyses is counted, in the order of the analyses and of
/// their requests.
#[derive(Default)]
pub struct Counted<'a> {
    /// Traces analysed before, whose request rows the commit replaces.
    pub replace_traces: Vec<TraceId>,
    /// For each request analysed before (`AnalysedTrace::old`), the minute rollup row it was
    /// counted in; none when its endpoint is not known here (nothing to take back from).
    pub old: Vec<Option<RollupKey>>,
    /// For each request analysed now (`AnalysedTrace::new`), where it is counted and the id of
    /// its resource (0 for none).
    pub new: Vec<(CountedAs<'a>, i64)>,
}

/// The request rows and rollup changes of `analysed`, counted as `counted` says; what the
/// commit completes and the names behind its ids are the caller's to add.
pub fn commit_of(analysed: &[AnalysedTrace], counted: Counted<'_>) -> AnalysisCommit {
    let Counted {
        replace_traces,
        old,
        new,
    } = counted;
    // Requests added and taken back per minute row, by (endpoint id, version, minute): the
    // versions are borrowed, so nothing is copied per request to find its row.
    let mut minutes: HashMap<(i64, &str, i64), [Tally<'_>; 2], RandomState> = HashMap::default();
    let mut requests = Vec::with_capacity(new.len());
    let mut old = old.iter();
    let mut new = new.iter();
    for trace in analysed {
        for (request, key) in trace.old.iter().zip(old.by_ref()) {
            if let Some(key) = key {
                let row = (key.endpoint_id, key.version.as_str(), key.minute);
                minutes.entry(row).or_default()[REMOVED].add(request);
            }
        }
        for (request, (counted, resource_id)) in trace.new.iter().zip(new.by_ref()) {
            let minute = minute_of(counted.start_unix_ns);
            let row = (counted.endpoint_id, counted.version, minute);
            minutes.entry(row).or_default()[ADDED].add(request);
            requests.push(RequestRow {
                trace_id: request.trace_id,
                span_id: request.span_id,
                endpoint_id: counted.endpoint_id,
                version: counted.version.to_owned(),
                start_unix_ns: counted.start_unix_ns,
                duration_ns: request.duration_ns,
                error: request.error,
                breakdown: request.breakdown,
                n_db_calls: request.n_db_calls,
                last_block_id: trace.last_block_id,
                resource_id: *resource_id,
            });
        }
    }
    let minutes = minutes
        .into_iter()
        .map(
            |((endpoint_id, version, minute), [added, removed])| RollupChange {
                key: RollupKey {
                    endpoint_id,
                    version: version.to_owned(),
                    minute,
                    granularity: Granularity::Minute,
                },
                added: added.into_rollup(),
                removed: removed.into_rollup(),
            },
        )
        .collect();
    AnalysisCommit {
        replace_traces,
        requests,
        rollups: with_hours(minutes),
        ..AnalysisCommit::default()
    }
}

/// Which of a minute row's two tallies holds the requests added, and which those taken back.
const ADDED: usize = 0;
const REMOVED: usize = 1;

/// The minute rows' changes followed by their hours' changes, each the sum of its minutes'.
fn with_hours(minutes: Vec<RollupChange>) -> Vec<RollupChange> {
    let mut hours: HashMap<RollupKey, RollupChange> = HashMap::new();
    for minute in &minutes {
        let key = RollupKey {
            granularity: Granularity::Hour,
            minute: Granularity::Hour.row_start(minute.key.minute),
            ..minute.key.clone()
        };
        match hours.entry(key) {
            Entry::Occupied(hour) => {
                let hour = hour.into_mut();
                hour.added.merge(&minute.added);
                hour.removed.merge(&minute.removed);
            }
            // A batch mostly holds one minute of an hour: its change is the hour's, copied.
            Entry::Vacant(vacant) => {
                let key = vacant.key().clone();
                vacant.insert(RollupChange {
                    key,
                    added: minute.added.clone(),
                    removed: minute.removed.clone(),
                });
            }
        }
    }
    let mut out = minutes;
    out.extend(hours.into_values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::analysis::aggregate::Rollup;
    use crate::analysis::{AnalysisConfig, RequestAnalysis, analyze_trace, fixture};

    const MINUTE_NS: u64 = 60_000_000_000;

    /// A login (operations, gaps, a located finding, a sketch), started `minute` minutes after
    /// an hour's start.
    fn login_at(minute: u64, n: u8) -> RequestAnalysis {
        let text = "auth: POST /login 0..100 server http.route=/login\n  \
                    SELECT 10..30 client db.system=postgresql code.file.path=app/login.py \
                    db.statement=\"SELECT * FROM users WHERE id = 1\"\n  \
                    SELECT 40..60 client db.system=postgresql code.file.path=app/login.py \
                    db.statement=\"SELECT * FROM users WHERE id = 1\"";
        let (requests, _) = analyze_trace(&fixture::parse(text), &AnalysisConfig::default());
        let mut request = requests.into_iter().next().expect("the login is a request");
        request.trace_id = TraceId([n; 16]);
        request.start_unix_ns = 1_000 * 60 * MINUTE_NS + minute * MINUTE_NS;
        request.duration_ns += u64::from(n) * 1_000_000;
        request
    }

    fn counted_at(request: &RequestAnalysis) -> CountedAs<'static> {
        CountedAs {
            endpoint_id: 1,
            version: "1.0",
            start_unix_ns: request.start_unix_ns,
        }
    }

    #[test]
    fn an_hour_row_changes_by_what_its_minute_rows_change_by() {
        // Two minutes of one hour, then the next hour; one request of the first minute is taken
        // back (a re-analysis).
        let new: Vec<RequestAnalysis> = [(3, 1), (3, 2), (41, 3), (41, 4), (41, 5), (75, 6)]
            .into_iter()
            .map(|(minute, n)| login_at(minute, n))
            .collect();
        let old = vec![login_at(3, 9)];
        let trace = AnalysedTrace {
            trace_id: TraceId([1; 16]),
            resources: vec![Arc::from(""); new.len()],
            reanalysed: true,
            old: old.clone(),
            new: new.clone(),
            last_block_id: 1,
            anomalies: 0,
            awaits_parent: false,
        };
        let counted = Counted {
            replace_traces: vec![trace.trace_id],
            old: old
                .iter()
                .map(|r| Some(counted_at(r).rollup_key()))
                .collect(),
            new: new.iter().map(|r| (counted_at(r), 0)).collect(),
        };
        assert!(
            new[0].findings.iter().any(|f| f.location.is_some()),
            "the requests vote"
        );
        let commit = commit_of(std::slice::from_ref(&trace), counted);
        assert_eq!(commit.requests.len(), new.len());

        let change = |granularity: Granularity, minute: u64| {
            let minute = minute_of(1_000 * 60 * MINUTE_NS + minute * MINUTE_NS);
            let key = RollupKey {
                endpoint_id: 1,
                version: "1.0".into(),
                minute: granularity.row_start(minute),
                granularity,
            };
            let found = commit.rollups.iter().find(|change| change.key == key);
            found.unwrap_or_else(|| panic!("no change to {key:?}"))
        };
        let added = |requests: &[&RequestAnalysis]| {
            let mut rollup = Rollup::new();
            requests.iter().for_each(|request| rollup.add(request));
            rollup
        };
        assert_eq!(commit.rollups.len(), 5, "three minutes and two hours");
        let first_hour = change(Granularity::Hour, 3);
        assert_eq!(
            first_hour.added,
            added(&[&new[0], &new[1], &new[2], &new[3], &new[4]])
        );
        assert_eq!(first_hour.removed, added(&[&old[0]]));
        assert_eq!(
            change(Granularity::Minute, 41).added,
            added(&new[2..5].iter().collect::<Vec<_>>())
        );
        let next_hour = change(Granularity::Hour, 75);
        assert_eq!(next_hour.added, added(&[&new[5]]));
        assert_eq!(next_hour.added, change(Granularity::Minute, 75).added);
        assert_eq!(next_hour.removed, Rollup::new());
    }
}
