//! A batch's analyses as the rows one commit writes: a request row per request analysed now,
//! and the change to each rollup row its requests count in (requests added, requests of a
//! previous analysis taken back). Where each request is counted (its interned endpoint id, its
//! version, its start) is decided before, with the store at hand (`analyze`); this only builds.
//!
//! Invariant: pure; a request counted in a rollup row is added once, and one taken back is
//! taken back under the row its previous analysis counted it in.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use collector::model::TraceId;

use super::work::AnalysedTrace;
use crate::analysis::aggregate::Rollup;
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
    /// The rollup rows a request counts in: its minute and its hour.
    pub fn rollup_keys(&self) -> [RollupKey; 2] {
        let minute = minute_of(self.start_unix_ns);
        [Granularity::Minute, Granularity::Hour].map(|granularity| RollupKey {
            endpoint_id: self.endpoint_id,
            version: self.version.to_owned(),
            minute: granularity.row_start(minute),
            granularity,
        })
    }
}

/// Where every request of a batch's analyses is counted, in the order of the analyses and of
/// their requests.
#[derive(Default)]
pub struct Counted<'a> {
    /// Traces analysed before, whose request rows the commit replaces.
    pub replace_traces: Vec<TraceId>,
    /// For each request analysed before (`AnalysedTrace::old`), the rollup rows it was counted
    /// in; none when its endpoint is not known here (nothing to take back from).
    pub old: Vec<Option<[RollupKey; 2]>>,
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
    let mut changes: HashMap<RollupKey, RollupChange> = HashMap::new();
    let mut requests = Vec::with_capacity(new.len());
    let mut old = old.into_iter();
    let mut new = new.into_iter();
    for trace in analysed {
        for (request, keys) in trace.old.iter().zip(old.by_ref()) {
            for key in keys.into_iter().flatten() {
                change_of(&mut changes, key).removed.add(request);
            }
        }
        for (request, (counted, resource_id)) in trace.new.iter().zip(new.by_ref()) {
            for key in counted.rollup_keys() {
                change_of(&mut changes, key).added.add(request);
            }
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
                resource_id,
            });
        }
    }
    AnalysisCommit {
        replace_traces,
        requests,
        rollups: changes.into_values().collect(),
        ..AnalysisCommit::default()
    }
}

/// The change to one rollup row, started empty.
fn change_of(changes: &mut HashMap<RollupKey, RollupChange>, key: RollupKey) -> &mut RollupChange {
    // Nearly every request counts in a row the batch has already: the key is cloned only for a
    // new one.
    match changes.entry(key) {
        Entry::Occupied(change) => change.into_mut(),
        Entry::Vacant(vacant) => {
            let key = vacant.key().clone();
            vacant.insert(RollupChange {
                key,
                added: Rollup::new(),
                removed: Rollup::new(),
            })
        }
    }
}
