//! Mergeable per-endpoint rollups and the summaries computed from them.
//!
//! A [`Rollup`] holds everything one (service, endpoint, version, minute) contributes; rollups of
//! many minutes or versions merge into one, and [`summarize`] turns a merged rollup into the
//! numbers the API and pages show. Re-analysis of a request (late spans) calls `remove` with the
//! old analysis and `add` with the new one, so nothing is counted twice.
//!
//! Invariant: pure; the sketch's byte form is the only encoding here.

use std::collections::{BTreeMap, HashMap};

use collector::category::Category;
use foldhash::fast::RandomState;

use super::findings::noise_floor_ns;
use super::gap::Place;
use super::location::CodeLocation;
use super::{AnalysisConfig, Breakdown, FindingKind, OperationStat, RequestAnalysis};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// A latency distribution with at most 1% relative error at any quantile, mergeable.
/// Wrapped so the sketch implementation can be swapped without touching callers.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySketch(hdrhistogram::Histogram<u64>);

/// Per-operation sums within a rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OperationSums {
    /// Executions.
    pub calls: u64,
    /// Summed durations.
    pub total_ns: u64,
    /// Summed critical-path time.
    pub critical_ns: u64,
}

impl OperationSums {
    /// Adds one request's executions of the operation.
    fn add(&mut self, op: &OperationStat) {
        self.calls += u64::from(op.calls);
        self.total_ns = self.total_ns.saturating_add(op.total_ns);
        self.critical_ns = self.critical_ns.saturating_add(op.critical_ns);
    }
}

/// Per-finding sums within a rollup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindingSums {
    /// Requests that had the finding.
    pub requests: u64,
    /// Summed executions of the statement concerned.
    pub count: u64,
    /// Summed potential saving.
    pub saving_ns: u64,
    /// Where in the code the finding is: the location most of its requests named.
    pub location: Option<CodeLocation>,
    /// The votes `location` leads by (see [`FindingSums::vote`]).
    pub location_votes: u64,
}

impl FindingSums {
    /// Counts `votes` requests naming `location`, by majority vote (Boyer and Moore): a
    /// location named by most requests always wins, in any order of adding and merging, with
    /// one location and one count kept instead of a count per location.
    pub fn vote(&mut self, location: Option<&CodeLocation>, votes: u64) {
        let Some(location) = location else {
            return;
        };
        if self.location.as_ref() == Some(location) {
            self.location_votes = self.location_votes.saturating_add(votes);
        } else if self.location.is_none() || votes > self.location_votes {
            self.location = Some(location.clone());
            self.location_votes = votes - self.location_votes;
        } else {
            self.location_votes -= votes;
        }
    }

    /// Adds one request that had the finding, with its vote for a location.
    fn add(&mut self, one: &RequestFinding<'_>) {
        self.requests += 1;
        self.count += one.count;
        self.saving_ns = self.saving_ns.saturating_add(one.saving_ns);
        self.vote(one.location, 1);
    }

    /// Takes back votes for `location`; votes for another location were spent against the
    /// current one and cannot be given back, so the location stays.
    pub fn unvote(&mut self, location: Option<&CodeLocation>, votes: u64) {
        if location.is_some() && self.location.as_ref() == location {
            self.location_votes = self.location_votes.saturating_sub(votes);
        }
    }
}

/// Everything a set of requests contributes to an endpoint's aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Summed durations.
    pub duration_sum_ns: u64,
    /// Summed squared durations (ns²), for the variance behind a confidence interval of the
    /// mean. An integer, so that `add`, `remove` and `merge` stay exact; u128 because one
    /// second squared is already 10^18 ns².
    pub duration_sq_sum: u128,
    /// The latency distribution.
    pub sketch: LatencySketch,
    /// Summed critical-path breakdowns.
    pub breakdown_sum: Breakdown,
    /// Summed database calls.
    pub db_calls: u64,
    /// Per (category, operation name).
    pub operations: BTreeMap<(Category, String), OperationSums>,
    /// Per (finding kind, name).
    pub findings: BTreeMap<(FindingKind, String), FindingSums>,
}

/// The headline numbers of an endpoint over some window, all per request where it says so.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Mean duration.
    pub mean_ns: f64,
    /// Quantiles from the sketch.
    pub p50_ns: f64,
    /// 90th percentile.
    pub p90_ns: f64,
    /// 95th percentile.
    pub p95_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
    /// Mean critical-path time per category (ns per request).
    pub breakdown_mean_ns: [f64; Category::COUNT],
    /// Mean I/O time per request (db + cache + network + messaging).
    pub io_ns: f64,
    /// Mean measured CPU time per request (`cpu.time_ns`); untraced time is not in it.
    pub cpu_ns: f64,
    /// Database calls per request.
    pub db_calls_per_request: f64,
    /// Amdahl on measured CPU: mean / (mean - cpu); how much faster the endpoint could get if
    /// CPU work were free.
    pub speedup_if_cpu_free: f64,
    /// The same if all untraced time were CPU too: the top of the honest range, equal to
    /// `speedup_if_cpu_free` when nothing is untraced.
    pub speedup_if_cpu_free_max: f64,
    /// The category with the largest share of mean critical-path time.
    pub bottleneck: Category,
    /// Its share of the mean duration, 0..=1.
    pub bottleneck_share: f64,
    /// One sentence naming the bottleneck and the top finding.
    pub bottleneck_summary: String,
}

/// An endpoint's finding, averaged per request over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingStats {
    /// Kind.
    pub kind: FindingKind,
    /// Statement or span name.
    pub name: String,
    /// Share of requests that had it.
    pub request_share: f64,
    /// Executions per affected request.
    pub count_per_request: f64,
    /// Mean saving per request of the endpoint (ns).
    pub potential_saving_ns: f64,
    /// One sentence a person can act on.
    pub summary: String,
    /// Where in the code it is, when its spans carry `code.*` attributes.
    pub location: Option<CodeLocation>,
}

/// An endpoint's operation, averaged per request over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStats {
    /// Category.
    pub category: Category,
    /// Normalized statement or span name; for a gap, where it sits ("between `A` and `B`").
    pub name: String,
    /// For a gap (self time no span explains), the operations around it.
    pub gap: Option<Place>,
    /// Executions per request.
    pub calls_per_request: f64,
    /// Mean duration of one execution.
    pub mean_ns: f64,
    /// Critical-path time per request.
    pub critical_ns_per_request: f64,
}

/// An endpoint's gap: self time between the same two operations, averaged over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct GapStats {
    /// Where it sits.
    pub place: Place,
    /// Mean time per request of the endpoint, per category (untraced, or cpu and wait).
    pub mean_ns: [f64; Category::COUNT],
    /// Share of requests that had it (at most 1).
    pub request_share: f64,
}

impl GapStats {
    /// Mean time per request, all categories.
    pub fn total_mean_ns(&self) -> f64 {
        self.mean_ns.iter().sum()
    }
}

/// Smallest latency the sketch tells apart: 1 µs (it counts microseconds).
const SKETCH_LOW_US: u64 = 1;
/// Largest latency recorded as itself: one hour; longer requests are counted as one hour.
const SKETCH_HIGH_US: u64 = 3_600_000_000;
/// Two significant digits: at most 1% relative error at any quantile, in ~10 KiB.
const SKETCH_SIGFIG: u8 = 2;

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self(Self::empty())
    }

    fn empty() -> Histogram<u64> {
        let mut histogram =
            Histogram::new_with_bounds(SKETCH_LOW_US, SKETCH_HIGH_US, SKETCH_SIGFIG)
                .expect("constant bounds are valid");
        // A sketch read from bytes may have other bounds; auto-resize lets any two merge.
        histogram.auto(true);
        histogram
    }

    fn to_us(ns: u64) -> u64 {
        (ns / 1_000).clamp(SKETCH_LOW_US, SKETCH_HIGH_US)
    }

    /// Records one latency.
    pub fn record_ns(&mut self, ns: u64) {
        self.0.saturating_record(Self::to_us(ns));
    }

    /// Removes one latency recorded before; removing one never recorded changes nothing.
    pub fn remove_ns(&mut self, ns: u64) {
        let mut one = Self::empty();
        one.saturating_record(Self::to_us(ns));
        // Fails only when the value is not there, which leaves the sketch as it was.
        let _ = self.0.subtract(&one);
    }

    /// Adds another sketch's latencies.
    pub fn merge(&mut self, other: &LatencySketch) {
        if self.0.add(&other.0).is_err() {
            // Only when the other sketch came from bytes with odd bounds: add value by value.
            for value in other.0.iter_recorded() {
                self.0
                    .saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
    }

    /// Takes back another sketch's latencies, value by value; a value not (or less often)
    /// recorded here is taken back only as often as it is here, so the sketch never goes negative.
    pub fn subtract(&mut self, other: &LatencySketch) {
        for value in other.0.iter_recorded() {
            let at = value.value_iterated_to();
            let n = value.count_at_value().min(self.0.count_at(at));
            if n == 0 {
                continue;
            }
            let mut some = Self::empty();
            some.saturating_record_n(at, n);
            // Cannot fail: `n` of the value are recorded here.
            let _ = self.0.subtract(&some);
        }
    }

    /// The latency at quantile `q` (0..=1), in nanoseconds; 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let q = if q.is_finite() {
            q.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.0.value_at_quantile(q) as f64 * 1_000.0
    }

    /// Latencies recorded at or under `ns`: the good events of a latency SLO. Within the
    /// sketch's resolution (1%), a value just above `ns` may count as under it.
    pub fn count_at_most_ns(&self, ns: u64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        let us = ns / 1_000;
        if us < SKETCH_LOW_US {
            return 0;
        }
        self.0.count_between(0, us.min(self.0.max()))
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The V2 encoding (the HdrHistogram interchange format), uncompressed: its counts are
    /// already run-length and varint coded, and a day's overview reads hundreds of sketches,
    /// which deflate made half again as costly to read.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail, and the histogram is always serializable.
        V2Serializer::new()
            .serialize(&self.0, &mut out)
            .expect("serializing into memory cannot fail");
        out
    }

    /// Reads `to_bytes` output, or the V2 deflate encoding earlier builds stored; `None` for
    /// anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut reader = bytes;
        let mut histogram: Histogram<u64> = Deserializer::new().deserialize(&mut reader).ok()?;
        histogram.auto(true);
        Some(Self(histogram))
    }
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

impl Rollup {
    /// An empty rollup.
    pub fn new() -> Self {
        Self::with_sketch(LatencySketch::new())
    }

    /// A rollup of nothing but a sketch read from storage, whose counts the caller then sets:
    /// no empty sketch is made only to be replaced.
    pub fn with_sketch(sketch: LatencySketch) -> Self {
        Self {
            requests: 0,
            errors: 0,
            duration_sum_ns: 0,
            duration_sq_sum: 0,
            sketch,
            breakdown_sum: Breakdown::default(),
            db_calls: 0,
            operations: BTreeMap::new(),
            findings: BTreeMap::new(),
        }
    }

    /// Adds one request.
    pub fn add(&mut self, analysis: &RequestAnalysis) {
        self.add_headline(
            analysis.duration_ns,
            analysis.error,
            &analysis.breakdown,
            analysis.n_db_calls,
        );
        for op in &analysis.operations {
            // Nearly every name is in the row already: found by reference, it is not copied.
            let key: &dyn OperationKey = &(op.category, op.name.as_str());
            match self.operations.get_mut(key) {
                Some(sums) => sums.add(op),
                None => (self.operations)
                    .entry((op.category, op.name.clone()))
                    .or_default()
                    .add(op),
            }
        }
        for one in request_findings(analysis) {
            let key: &dyn FindingKey = &(one.kind, one.name);
            match self.findings.get_mut(key) {
                Some(sums) => sums.add(&one),
                None => (self.findings)
                    .entry((one.kind, one.name.to_owned()))
                    .or_default()
                    .add(&one),
            }
        }
    }

    /// Adds one request's headline figures only (no operations or findings): what a stored
    /// request row holds, for selections that rollups cannot answer.
    pub fn add_headline(
        &mut self,
        duration_ns: u64,
        error: bool,
        breakdown: &Breakdown,
        n_db_calls: u32,
    ) {
        self.requests += 1;
        self.errors += u64::from(error);
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(duration_ns);
        self.duration_sq_sum = self.duration_sq_sum.saturating_add(square(duration_ns));
        self.sketch.record_ns(duration_ns);
        for (sum, ns) in self.breakdown_sum.0.iter_mut().zip(breakdown.0) {
            *sum = sum.saturating_add(ns);
        }
        self.db_calls += u64::from(n_db_calls);
    }

    /// Takes back one request added before: the exact inverse of [`Rollup::add`], so that a
    /// re-analysed request can replace its old analysis.
    pub fn remove(&mut self, analysis: &RequestAnalysis) {
        self.requests = self.requests.saturating_sub(1);
        self.errors = self.errors.saturating_sub(u64::from(analysis.error));
        self.duration_sum_ns = self.duration_sum_ns.saturating_sub(analysis.duration_ns);
        self.duration_sq_sum = self
            .duration_sq_sum
            .saturating_sub(square(analysis.duration_ns));
        self.sketch.remove_ns(analysis.duration_ns);
        for (sum, ns) in self.breakdown_sum.0.iter_mut().zip(analysis.breakdown.0) {
            *sum = sum.saturating_sub(ns);
        }
        self.db_calls = self.db_calls.saturating_sub(u64::from(analysis.n_db_calls));
        for op in &analysis.operations {
            let key: &dyn OperationKey = &(op.category, op.name.as_str());
            if let Some(sums) = self.operations.get_mut(key) {
                sums.calls = sums.calls.saturating_sub(u64::from(op.calls));
                sums.total_ns = sums.total_ns.saturating_sub(op.total_ns);
                sums.critical_ns = sums.critical_ns.saturating_sub(op.critical_ns);
                if sums.calls == 0 {
                    self.operations.remove(key);
                }
            }
        }
        for one in request_findings(analysis) {
            let key: &dyn FindingKey = &(one.kind, one.name);
            if let Some(sums) = self.findings.get_mut(key) {
                sums.requests = sums.requests.saturating_sub(1);
                sums.count = sums.count.saturating_sub(one.count);
                sums.saving_ns = sums.saving_ns.saturating_sub(one.saving_ns);
                sums.unvote(one.location, 1);
                if sums.requests == 0 {
                    self.findings.remove(key);
                }
            }
        }
    }

    /// Adds another rollup (another minute, another version).
    pub fn merge(&mut self, other: &Rollup) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(other.duration_sum_ns);
        self.duration_sq_sum = self.duration_sq_sum.saturating_add(other.duration_sq_sum);
        self.sketch.merge(&other.sketch);
        for (sum, ns) in self.breakdown_sum.0.iter_mut().zip(other.breakdown_sum.0) {
            *sum = sum.saturating_add(ns);
        }
        self.db_calls += other.db_calls;
        // Most names are in this rollup already: found by reference, they are not copied.
        for (key, theirs) in &other.operations {
            let sums = match self.operations.get_mut(key) {
                Some(sums) => sums,
                None => self.operations.entry(key.clone()).or_default(),
            };
            sums.calls += theirs.calls;
            sums.total_ns = sums.total_ns.saturating_add(theirs.total_ns);
            sums.critical_ns = sums.critical_ns.saturating_add(theirs.critical_ns);
        }
        for (key, theirs) in &other.findings {
            let sums = match self.findings.get_mut(key) {
                Some(sums) => sums,
                None => self.findings.entry(key.clone()).or_default(),
            };
            sums.requests += theirs.requests;
            sums.count += theirs.count;
            sums.saving_ns = sums.saving_ns.saturating_add(theirs.saving_ns);
            sums.vote(theirs.location.as_ref(), theirs.location_votes);
        }
    }
}

impl Rollup {
    /// Takes back another rollup's requests: the inverse of [`Rollup::merge`] for requests that
    /// were merged before (a re-analysed trace's previous analysis).
    pub fn subtract(&mut self, other: &Rollup) {
        self.requests = self.requests.saturating_sub(other.requests);
        self.errors = self.errors.saturating_sub(other.errors);
        self.duration_sum_ns = self.duration_sum_ns.saturating_sub(other.duration_sum_ns);
        self.duration_sq_sum = self.duration_sq_sum.saturating_sub(other.duration_sq_sum);
        self.sketch.subtract(&other.sketch);
        for (sum, ns) in self.breakdown_sum.0.iter_mut().zip(other.breakdown_sum.0) {
            *sum = sum.saturating_sub(ns);
        }
        self.db_calls = self.db_calls.saturating_sub(other.db_calls);
        for (key, theirs) in &other.operations {
            if let Some(sums) = self.operations.get_mut(key) {
                sums.calls = sums.calls.saturating_sub(theirs.calls);
                sums.total_ns = sums.total_ns.saturating_sub(theirs.total_ns);
                sums.critical_ns = sums.critical_ns.saturating_sub(theirs.critical_ns);
                if sums.calls == 0 {
                    self.operations.remove(key);
                }
            }
        }
        for (key, theirs) in &other.findings {
            if let Some(sums) = self.findings.get_mut(key) {
                sums.requests = sums.requests.saturating_sub(theirs.requests);
                sums.count = sums.count.saturating_sub(theirs.count);
                sums.saving_ns = sums.saving_ns.saturating_sub(theirs.saving_ns);
                sums.unvote(theirs.location.as_ref(), theirs.location_votes);
                if sums.requests == 0 {
                    self.findings.remove(key);
                }
            }
        }
    }
}

/// Requests added up for one rollup row, keyed by names borrowed from their analyses and found
/// by hash: what [`Rollup::add`] makes of the same requests, at a lookup per operation instead
/// of a walk down a tree of names compared in full, and with no name copied until
/// [`Tally::into_rollup`], once per row. For a batch's rows, whose analyses outlive them.
pub struct Tally<'a> {
    /// Everything but the operations and findings.
    headline: Rollup,
    operations: HashMap<(Category, &'a str), OperationSums, RandomState>,
    findings: HashMap<(FindingKind, &'a str), FindingSums, RandomState>,
}

impl<'a> Tally<'a> {
    /// Nothing added yet.
    pub fn new() -> Self {
        Self {
            headline: Rollup::new(),
            operations: HashMap::default(),
            findings: HashMap::default(),
        }
    }

    /// Adds one request, as [`Rollup::add`] does.
    pub fn add(&mut self, analysis: &'a RequestAnalysis) {
        self.headline.add_headline(
            analysis.duration_ns,
            analysis.error,
            &analysis.breakdown,
            analysis.n_db_calls,
        );
        for op in &analysis.operations {
            let key = (op.category, op.name.as_str());
            self.operations.entry(key).or_default().add(op);
        }
        for one in request_findings(analysis) {
            self.findings
                .entry((one.kind, one.name))
                .or_default()
                .add(&one);
        }
    }

    /// The rollup of the requests added: equal to adding each to a [`Rollup`] in the same order.
    pub fn into_rollup(self) -> Rollup {
        let operations = self.operations.into_iter();
        let findings = self.findings.into_iter();
        Rollup {
            operations: operations
                .map(|((category, name), sums)| ((category, name.to_owned()), sums))
                .collect(),
            findings: findings
                .map(|((kind, name), sums)| ((kind, name.to_owned()), sums))
                .collect(),
            ..self.headline
        }
    }
}

impl Default for Tally<'_> {
    fn default() -> Self {
        Self::new()
    }
}

fn square(ns: u64) -> u128 {
    u128::from(ns) * u128::from(ns)
}

impl Default for Rollup {
    fn default() -> Self {
        Self::new()
    }
}

/// A rollup key of a kind and a name, owned as the rollups hold it or borrowed from a request,
/// so that a rollup's rows can be looked up without allocating the name (the
/// `Borrow<dyn Trait>` pattern: `BTreeMap` looks up by anything its key borrows as). Ordered as
/// the owned key is, by kind and then name. A macro, not a generic trait: `Borrow` for a tuple
/// of a type parameter would be an orphan.
macro_rules! named_key {
    ($trait:ident, $kind:ty) => {
        trait $trait {
            fn parts(&self) -> ($kind, &str);
        }

        impl $trait for ($kind, String) {
            fn parts(&self) -> ($kind, &str) {
                (self.0, self.1.as_str())
            }
        }

        impl $trait for ($kind, &str) {
            fn parts(&self) -> ($kind, &str) {
                (self.0, self.1)
            }
        }

        impl<'a> std::borrow::Borrow<dyn $trait + 'a> for ($kind, String) {
            fn borrow(&self) -> &(dyn $trait + 'a) {
                self
            }
        }

        impl PartialEq for dyn $trait + '_ {
            fn eq(&self, other: &Self) -> bool {
                self.parts() == other.parts()
            }
        }

        impl Eq for dyn $trait + '_ {}

        impl PartialOrd for dyn $trait + '_ {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for dyn $trait + '_ {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.parts().cmp(&other.parts())
            }
        }
    };
}

named_key!(OperationKey, Category);
named_key!(FindingKey, FindingKind);

/// One request's share of a rollup row's finding, borrowed from its analysis.
struct RequestFinding<'a> {
    kind: FindingKind,
    name: &'a str,
    count: u64,
    saving_ns: u64,
    /// The request's one vote: its first located finding's location (the largest saving).
    location: Option<&'a CodeLocation>,
}

/// One request's findings keyed like the rollup: a (kind, name) found twice in one request (two
/// duplicate groups of one statement shape) counts once as a request, with summed count and saving.
/// A request has a handful of findings, so a scan finds the twice-found ones; nothing is copied.
fn request_findings(analysis: &RequestAnalysis) -> Vec<RequestFinding<'_>> {
    let mut out: Vec<RequestFinding<'_>> = Vec::with_capacity(analysis.findings.len());
    for finding in &analysis.findings {
        let index = match (out.iter())
            .position(|seen| seen.kind == finding.kind && seen.name == finding.name.as_str())
        {
            Some(index) => index,
            None => {
                out.push(RequestFinding {
                    kind: finding.kind,
                    name: &finding.name,
                    count: 0,
                    saving_ns: 0,
                    location: None,
                });
                out.len() - 1
            }
        };
        let sums = &mut out[index];
        sums.count += u64::from(finding.count);
        sums.saving_ns = sums.saving_ns.saturating_add(finding.potential_saving_ns);
        if sums.location.is_none() {
            sums.location = finding.location.as_ref();
        }
    }
    out
}

/// Caps the Amdahl speedup: when all the time is CPU, freeing the CPU would make the endpoint
/// "infinitely" faster, which no chart or JSON number can hold.
pub const MAX_SPEEDUP: f64 = 1000.0;

fn per(sum: f64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Milliseconds for a sentence: `375 ms`, `4.2 ms`, `1.3 s`.
pub fn format_ms(ns: f64) -> String {
    let ms = ns / 1_000_000.0;
    if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1_000.0)
    } else if ms >= 1_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// The headline numbers of an endpoint; `None` without requests.
pub fn summarize(rollup: &Rollup, endpoint: &str) -> Option<EndpointStats> {
    if rollup.requests == 0 {
        return None;
    }
    let n = rollup.requests;
    let mean_ns = per(rollup.duration_sum_ns as f64, n);
    let mut breakdown_mean_ns = [0.0; Category::COUNT];
    for category in Category::ALL {
        breakdown_mean_ns[category.index()] = per(rollup.breakdown_sum.get(category) as f64, n);
    }
    let io_ns = per(rollup.breakdown_sum.io() as f64, n);
    let cpu_ns = breakdown_mean_ns[Category::Cpu.index()];
    let db_calls_per_request = per(rollup.db_calls as f64, n);
    let untraced_ns = breakdown_mean_ns[Category::Untraced.index()];
    let speedup_if_cpu_free = amdahl(mean_ns, cpu_ns);
    let speedup_if_cpu_free_max = amdahl(mean_ns, cpu_ns + untraced_ns);
    // The first category with the largest mean: ties go to the API order.
    let bottleneck = Category::ALL.into_iter().fold(Category::Db, |best, c| {
        if breakdown_mean_ns[c.index()] > breakdown_mean_ns[best.index()] {
            c
        } else {
            best
        }
    });
    let bottleneck_ns = breakdown_mean_ns[bottleneck.index()];
    let bottleneck_share = if mean_ns > 0.0 {
        (bottleneck_ns / mean_ns).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let detail = match bottleneck {
        Category::Db => format!(", {} queries per request", trim_float(db_calls_per_request)),
        Category::Untraced => {
            ": no span covers it and no CPU was measured, so it may be CPU or I/O".to_owned()
        }
        _ => String::new(),
    };
    let fix = match findings(rollup).first() {
        Some(top) => format!(
            "; fix first: {}, saves ~{} per request",
            finding_phrase(top.kind, &top.name, top.count_per_request),
            format_ms(top.potential_saving_ns)
        ),
        None => String::new(),
    };
    let bottleneck_summary = format!(
        "{} is {:.0}% of {endpoint}'s time ({} of {}{detail}){fix}",
        bottleneck.as_str(),
        bottleneck_share * 100.0,
        format_ms(bottleneck_ns),
        format_ms(mean_ns),
    );
    Some(EndpointStats {
        requests: n,
        errors: rollup.errors,
        mean_ns,
        p50_ns: rollup.sketch.quantile_ns(0.50),
        p90_ns: rollup.sketch.quantile_ns(0.90),
        p95_ns: rollup.sketch.quantile_ns(0.95),
        p99_ns: rollup.sketch.quantile_ns(0.99),
        breakdown_mean_ns,
        io_ns,
        cpu_ns,
        db_calls_per_request,
        speedup_if_cpu_free,
        speedup_if_cpu_free_max,
        bottleneck,
        bottleneck_share,
        bottleneck_summary,
    })
}

/// Amdahl's law: how many times faster a request of `mean_ns` gets without `free_ns` of it,
/// capped at [`MAX_SPEEDUP`].
fn amdahl(mean_ns: f64, free_ns: f64) -> f64 {
    if mean_ns <= 0.0 {
        1.0
    } else if mean_ns - free_ns <= mean_ns / MAX_SPEEDUP {
        MAX_SPEEDUP
    } else {
        mean_ns / (mean_ns - free_ns)
    }
}

/// `12`, `12.5`: a count without a useless `.0`.
fn trim_float(x: f64) -> String {
    if (x - x.round()).abs() < 0.05 {
        format!("{:.0}", x.round())
    } else {
        format!("{x:.1}")
    }
}

/// Statements in sentences are cut to this many characters.
const MAX_NAME_CHARS: usize = 80;

fn short(name: &str) -> String {
    if name.chars().count() <= MAX_NAME_CHARS {
        name.to_owned()
    } else {
        format!("{}…", name.chars().take(MAX_NAME_CHARS).collect::<String>())
    }
}

/// What a finding is, in a few words: "duplicate query `SELECT ..` ×2".
fn finding_phrase(kind: FindingKind, name: &str, count: f64) -> String {
    let name = short(name);
    let count = trim_float(count);
    match kind {
        FindingKind::DuplicateQuery => format!("duplicate query `{name}` ×{count}"),
        FindingKind::NPlusOne => format!("N+1 query `{name}` ×{count}"),
        FindingKind::SequentialIo => format!("{name} (run them concurrently)"),
        FindingKind::SlowQuery => format!("slow query `{name}`"),
        FindingKind::CpuHotspot => format!("CPU hot spot `{name}`"),
        FindingKind::UninstrumentedWait => format!("time off the CPU in `{name}`"),
        FindingKind::UntracedTime => format!("untraced time {name}"),
    }
}

/// What to do about one request's finding, in one sentence.
pub fn finding_sentence(kind: FindingKind, name: &str, count: f64, saving_ns: f64) -> String {
    let what = finding_phrase(kind, name, count);
    format!("{what}; {}", finding_advice(kind, name, saving_ns, ""))
}

/// What to do about a finding named `name`, and what it saves; `per` follows the saving ("",
/// " per request").
fn finding_advice(kind: FindingKind, name: &str, saving_ns: f64, per: &str) -> String {
    let saving = format_ms(saving_ns);
    let action = match kind {
        FindingKind::DuplicateQuery => "reuse the first result",
        // A loop of writes (or calls) has no one query to fetch with; it can be batched.
        FindingKind::NPlusOne if !super::sql::effect(name).is_fetch() => {
            "batch them into one round trip"
        }
        FindingKind::NPlusOne => "fetch them in one query",
        FindingKind::SequentialIo => "issue the calls concurrently",
        FindingKind::SlowQuery => "check its plan and indexes",
        FindingKind::CpuHotspot => "profile it",
        FindingKind::UninstrumentedWait => "add spans around the I/O or sleeps it hides",
        // Never "profile it": nobody measured whether this time was on a CPU.
        FindingKind::UntracedTime => {
            return format!(
                "~{saving}{per} that may be CPU or I/O: add a span there, or measure CPU \
                 (cpu.time_ns), to find out"
            );
        }
    };
    format!("{action} to save ~{saving}{per}")
}

/// What to do about a finding, in one sentence.
fn finding_summary(
    kind: FindingKind,
    name: &str,
    count: f64,
    saving_ns: f64,
    share: f64,
) -> String {
    let what = finding_phrase(kind, name, count);
    let advice = finding_advice(kind, name, saving_ns, " per request");
    format!("{what} in {:.0}% of requests; {advice}", share * 100.0)
}

/// The endpoint's findings, largest mean saving per request first. A time-based finding whose
/// mean saving over all the endpoint's requests is under the default noise floor (the larger of
/// 1 ms and 2% of the endpoint's mean) is left out: a few requests descheduled on a busy machine
/// are not what to fix. Duplicates and N+1s are facts, never dropped for their size.
pub fn findings(rollup: &Rollup) -> Vec<FindingStats> {
    let defaults = AnalysisConfig::default();
    let floor = noise_floor_ns(
        &defaults,
        per(rollup.duration_sum_ns as f64, rollup.requests),
    );
    let mut out: Vec<FindingStats> = rollup
        .findings
        .iter()
        .filter(|(_, sums)| sums.requests > 0)
        .map(|((kind, name), sums)| {
            let request_share = per(sums.requests as f64, rollup.requests).min(1.0);
            let count_per_request = per(sums.count as f64, sums.requests);
            let potential_saving_ns = per(sums.saving_ns as f64, rollup.requests);
            FindingStats {
                kind: *kind,
                name: name.clone(),
                request_share,
                count_per_request,
                potential_saving_ns,
                summary: finding_summary(
                    *kind,
                    name,
                    count_per_request,
                    potential_saving_ns,
                    request_share,
                ),
                location: sums.location.clone(),
            }
        })
        .collect();
    out.retain(|finding| {
        matches!(
            finding.kind,
            FindingKind::DuplicateQuery | FindingKind::NPlusOne
        ) || finding.potential_saving_ns >= floor
    });
    out.sort_by(|a, b| b.potential_saving_ns.total_cmp(&a.potential_saving_ns));
    out
}

/// The endpoint's operations, largest critical time per request first.
pub fn operations(rollup: &Rollup) -> Vec<OperationStats> {
    let mut out: Vec<OperationStats> = rollup
        .operations
        .iter()
        .map(|((category, name), sums)| {
            let gap = Place::of_operation(name);
            OperationStats {
                category: *category,
                name: gap.as_ref().map_or_else(|| name.clone(), Place::describe),
                gap,
                calls_per_request: per(sums.calls as f64, rollup.requests),
                mean_ns: per(sums.total_ns as f64, sums.calls),
                critical_ns_per_request: per(sums.critical_ns as f64, rollup.requests),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.critical_ns_per_request
            .total_cmp(&a.critical_ns_per_request)
    });
    out
}

/// The endpoint's gaps, most time per request first: its gap operations by place.
pub fn gaps(rollup: &Rollup) -> Vec<GapStats> {
    let mut by_place: BTreeMap<&str, (Place, [u64; Category::COUNT], u64)> = BTreeMap::new();
    for ((category, name), sums) in &rollup.operations {
        let Some(place) = Place::of_operation(name) else {
            continue;
        };
        let (_, critical, occurrences) = by_place
            .entry(name.as_str())
            .or_insert_with(|| (place, [0; Category::COUNT], 0));
        critical[category.index()] = critical[category.index()].saturating_add(sums.critical_ns);
        // A measured gap is a cpu and a wait operation of the same occurrences.
        *occurrences = (*occurrences).max(sums.calls);
    }
    let mut out: Vec<GapStats> = by_place
        .into_values()
        .map(|(place, critical, occurrences)| GapStats {
            place,
            mean_ns: critical.map(|ns| per(ns as f64, rollup.requests)),
            request_share: per(occurrences as f64, rollup.requests).min(1.0),
        })
        .collect();
    out.sort_by(|a, b| b.total_mean_ns().total_cmp(&a.total_mean_ns()));
    out
}

/// A statement got slower between two windows: its mean per execution is at least
/// [`REGRESSION_FACTOR`] times what it was. Too few executions in either window say nothing.
pub fn is_regression(current: &OperationSums, previous: &OperationSums) -> bool {
    if current.calls < MIN_REGRESSION_CALLS || previous.calls < MIN_REGRESSION_CALLS {
        return false;
    }
    let now = current.total_ns as f64 / current.calls as f64;
    let before = previous.total_ns as f64 / previous.calls as f64;
    before > 0.0 && now >= REGRESSION_FACTOR * before
}

/// A mean three times the previous one is a regression, not noise.
pub const REGRESSION_FACTOR: f64 = 3.0;
/// Executions each window needs before its mean is trusted.
pub const MIN_REGRESSION_CALLS: u64 = 5;

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::analysis::{AnalysisConfig, analyze_trace, fixture};

    fn rollup_of(fixtures: &[&str]) -> (Rollup, Vec<RequestAnalysis>) {
        let mut rollup = Rollup::new();
        let mut all = Vec::new();
        for text in fixtures {
            let (requests, _) = analyze_trace(&fixture::parse(text), &AnalysisConfig::default());
            // The first request of each fixture is the endpoint under test.
            if let Some(req) = requests.into_iter().next() {
                rollup.add(&req);
                all.push(req);
            }
        }
        (rollup, all)
    }

    fn ms(ns: f64) -> String {
        format!("{:.1}", ns / 1_000_000.0)
    }

    /// Renders the summary, findings and operations of the endpoint the fixtures' requests make.
    #[track_caller]
    fn check(fixtures: &[&str], expect: Expect) {
        let (rollup, _) = rollup_of(fixtures);
        let mut out = String::new();
        match summarize(&rollup, "POST /login") {
            None => out.push_str("no requests\n"),
            Some(stats) => {
                out.push_str(&format!(
                    "requests {} errors {} mean {} p50 {} p95 {} p99 {} io {} cpu {} db/req {:.1} speedup {:.2}\n",
                    stats.requests,
                    stats.errors,
                    ms(stats.mean_ns),
                    ms(stats.p50_ns),
                    ms(stats.p95_ns),
                    ms(stats.p99_ns),
                    ms(stats.io_ns),
                    ms(stats.cpu_ns),
                    stats.db_calls_per_request,
                    stats.speedup_if_cpu_free,
                ));
                out.push_str(&format!(
                    "bottleneck {} {:.2}: {}\n",
                    stats.bottleneck.as_str(),
                    stats.bottleneck_share,
                    stats.bottleneck_summary
                ));
            }
        }
        for f in findings(&rollup) {
            out.push_str(&format!(
                "finding {} {:?} share {:.2} x{:.1} saves {}: {}\n",
                f.kind.as_str(),
                f.name,
                f.request_share,
                f.count_per_request,
                ms(f.potential_saving_ns),
                f.summary
            ));
        }
        for op in operations(&rollup) {
            out.push_str(&format!(
                "op {} {:?} calls/req {:.1} mean {} critical/req {}\n",
                op.category.as_str(),
                op.name,
                op.calls_per_request,
                ms(op.mean_ns),
                ms(op.critical_ns_per_request)
            ));
        }
        expect.assert_eq(&out);
    }

    const FAST: &str = r#"
POST /login 0..100 server http.request.method=POST http.route=/login
  SELECT 10..30 client db.system=postgresql db.statement="SELECT * FROM users WHERE id = 1"
"#;

    #[test]
    fn seed_login_summary() {
        check(
            &[crate::analysis::tests::SEED_LOGIN, FAST],
            expect![[r#"
                requests 2 errors 0 mean 250.0 p50 100.4 p95 401.4 p99 401.4 io 172.5 cpu 7.5 db/req 6.5 speedup 1.03
                bottleneck db 0.34: db is 34% of POST /login's time (85 ms of 250 ms, 6.5 queries per request); fix first: N+1 query `SELECT * FROM policies WHERE id = ?` ×8, saves ~35 ms per request
                finding n_plus_one "SELECT * FROM policies WHERE id = ?" share 0.50 x8.0 saves 35.0: N+1 query `SELECT * FROM policies WHERE id = ?` ×8 in 50% of requests; fetch them in one query to save ~35 ms per request
                finding untraced_time "after `SELECT * FROM users WHERE id = ?`, until the end" share 0.50 x1.0 saves 35.0: untraced time after `SELECT * FROM users WHERE id = ?`, until the end in 50% of requests; ~35 ms per request that may be CPU or I/O: add a span there, or measure CPU (cpu.time_ns), to find out
                finding duplicate_query "SELECT * FROM policy_sets WHERE tenant_id = ?" share 0.50 x2.0 saves 10.0: duplicate query `SELECT * FROM policy_sets WHERE tenant_id = ?` ×2 in 50% of requests; reuse the first result to save ~10 ms per request
                finding sequential_io "sequential calls: SELECT * FROM tenants WHERE host = ?, SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?" share 0.50 x2.0 saves 5.0: sequential calls: SELECT * FROM tenants WHERE host = ?, SELECT id, password_hash… (run them concurrently) in 50% of requests; issue the calls concurrently to save ~5.0 ms per request
                op network "POST idp.example" calls/req 0.5 mean 170.0 critical/req 85.0
                op db "SELECT * FROM policies WHERE id = ?" calls/req 4.0 mean 10.0 critical/req 40.0
                op untraced "after `SELECT * FROM users WHERE id = ?`, until the end" calls/req 0.5 mean 70.0 critical/req 35.0
                op db "SELECT * FROM policy_sets WHERE tenant_id = ?" calls/req 1.0 mean 20.0 critical/req 20.0
                op wait "after `saml.sign`, until the end" calls/req 0.5 mean 31.8 critical/req 15.9
                op db "SELECT * FROM users WHERE id = ?" calls/req 0.5 mean 20.0 critical/req 10.0
                op db "SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?" calls/req 0.5 mean 20.0 critical/req 10.0
                op db "SELECT * FROM tenants WHERE host = ?" calls/req 0.5 mean 10.0 critical/req 5.0
                op untraced "from the start until `SELECT * FROM users WHERE id = ?`" calls/req 0.5 mean 10.0 critical/req 5.0
                op wait "between `GET session:ann` and `POST idp.example`" calls/req 0.5 mean 9.1 critical/req 4.5
                op cpu "saml.sign" calls/req 0.5 mean 10.0 critical/req 4.5
                op cache "GET session:ann" calls/req 0.5 mean 5.0 critical/req 2.5
                op wait "from the start until `SELECT * FROM tenants WHERE host = ?`" calls/req 0.5 mean 4.5 critical/req 2.3
                op wait "between `POST idp.example` and `saml.sign`" calls/req 0.5 mean 4.5 critical/req 2.3
                op wait "between `SELECT * FROM policies WHERE id = ?` and `GET session:ann`" calls/req 0.5 mean 4.5 critical/req 2.3
                op wait "between `SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?` and `SELECT * FROM policy_sets WHERE tenant_id = ?`" calls/req 0.5 mean 4.5 critical/req 2.3
                op cpu "after `saml.sign`, until the end" calls/req 0.5 mean 3.2 critical/req 1.6
                op wait "saml.sign" calls/req 0.5 mean 1.0 critical/req 0.5
                op cpu "between `GET session:ann` and `POST idp.example`" calls/req 0.5 mean 0.9 critical/req 0.5
                op cpu "from the start until `SELECT * FROM tenants WHERE host = ?`" calls/req 0.5 mean 0.5 critical/req 0.2
                op cpu "between `POST idp.example` and `saml.sign`" calls/req 0.5 mean 0.5 critical/req 0.2
                op cpu "between `SELECT * FROM policies WHERE id = ?` and `GET session:ann`" calls/req 0.5 mean 0.5 critical/req 0.2
                op cpu "between `SELECT id, password_hash FROM users WHERE tenant_id = ? AND email = ?` and `SELECT * FROM policy_sets WHERE tenant_id = ?`" calls/req 0.5 mean 0.5 critical/req 0.2
                op cpu "POST /login" calls/req 0.5 mean 400.0 critical/req 0.0
                op untraced "POST /login" calls/req 0.5 mean 100.0 critical/req 0.0
            "#]],
        );
    }

    #[test]
    fn empty_rollup_has_no_summary() {
        check(
            &[],
            expect![[r#"
            no requests
        "#]],
        );
    }

    #[test]
    fn all_cpu_speedup_is_capped() {
        check(
            &["POST /login 0..50 server status=error"],
            expect![[r#"
                requests 1 errors 1 mean 50.0 p50 50.2 p95 50.2 p99 50.2 io 0.0 cpu 0.0 db/req 0.0 speedup 1.00
                bottleneck untraced 1.00: untraced is 100% of POST /login's time (50 ms of 50 ms: no span covers it and no CPU was measured, so it may be CPU or I/O)
                op untraced "with no span in the whole request" calls/req 1.0 mean 50.0 critical/req 50.0
                op untraced "POST /login" calls/req 1.0 mean 50.0 critical/req 0.0
            "#]],
        );
    }

    #[test]
    fn remove_is_the_inverse_of_add() {
        let (with_both, requests) = rollup_of(&[crate::analysis::tests::SEED_LOGIN, FAST]);
        let (only_fast, _) = rollup_of(&[FAST]);
        let mut removed = with_both.clone();
        removed.remove(&requests[0]);
        assert_eq!(removed, only_fast);
        removed.remove(&requests[1]);
        assert_eq!(removed, Rollup::new());
    }

    /// A login whose N+1 of six loads is made at `file`.
    fn n_plus_one_at(file: &str) -> String {
        let mut text = String::from("POST /login 0..100 server http.route=/login\n");
        for n in 0..6 {
            let at = 10 + n * 10;
            text.push_str(&format!(
                "  SELECT {at}..{} client db.system=postgresql \
                 db.statement=\"SELECT * FROM rules WHERE id = {n}\" code.file.path={file}\n",
                at + 8
            ));
        }
        text
    }

    #[test]
    fn a_tally_equals_adding_each_request() {
        // Votes for three locations, none with a majority: the order of the votes decides.
        let [a, b, c] = ["app/a.py", "app/b.py", "app/c.py"].map(n_plus_one_at);
        let (added, requests) = rollup_of(&[
            crate::analysis::tests::SEED_LOGIN,
            &a,
            FAST,
            &b,
            &b,
            &c,
            &a,
            crate::analysis::tests::SEED_LOGIN,
        ]);
        assert!(
            (added.findings.values()).any(|sums| sums.location.is_some()),
            "the requests vote"
        );
        let mut tally = Tally::new();
        requests.iter().for_each(|request| tally.add(request));
        assert_eq!(tally.into_rollup(), added);
        assert_eq!(Tally::new().into_rollup(), Rollup::new());
    }

    #[test]
    fn merge_equals_adding_everything() {
        let (a, _) = rollup_of(&[crate::analysis::tests::SEED_LOGIN]);
        let (b, _) = rollup_of(&[FAST]);
        let (both, _) = rollup_of(&[crate::analysis::tests::SEED_LOGIN, FAST]);
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, both);
    }

    #[test]
    fn sketches_stored_deflated_by_earlier_builds_still_read() {
        let mut sketch = LatencySketch::new();
        for ms in [3u64, 40, 40, 900] {
            sketch.record_ns(ms * 1_000_000);
        }
        let mut deflated = Vec::new();
        hdrhistogram::serialization::V2DeflateSerializer::new()
            .serialize(&sketch.0, &mut deflated)
            .unwrap();
        assert_ne!(deflated, sketch.to_bytes());
        let back = LatencySketch::from_bytes(&deflated).expect("deflated bytes decode");
        assert_eq!(back, sketch);
    }

    #[test]
    fn sketch_round_trips_through_bytes_within_one_percent() {
        let mut sketch = LatencySketch::new();
        for ms in 1..=1000u64 {
            sketch.record_ns(ms * 1_000_000);
        }
        let back = LatencySketch::from_bytes(&sketch.to_bytes()).expect("own bytes decode");
        assert_eq!(back.count(), 1000);
        for (q, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = back.quantile_ns(q) / 1_000_000.0;
            assert!(
                (got - exact).abs() / exact <= 0.01,
                "q{q}: {got} vs {exact}"
            );
        }
        assert!(LatencySketch::from_bytes(b"not a sketch").is_none());
        let mut merged = LatencySketch::new();
        merged.merge(&back);
        merged.remove_ns(1_000_000);
        merged.remove_ns(7); // never recorded
        assert_eq!(merged.count(), 999);
    }

    #[test]
    fn count_at_most_counts_the_good_requests() {
        let mut sketch = LatencySketch::new();
        assert_eq!(sketch.count_at_most_ns(1_000_000), 0);
        for ms in 1..=1000u64 {
            sketch.record_ns(ms * 1_000_000);
        }
        let under = sketch.count_at_most_ns(300 * 1_000_000);
        assert!((300..=303).contains(&under), "{under}");
        assert_eq!(sketch.count_at_most_ns(0), 0);
        assert_eq!(sketch.count_at_most_ns(10_000 * 1_000_000), 1000);
        let near = sketch.count_at_most_ns(555 * 1_000_000);
        assert!((550..=560).contains(&near), "{near}");
    }

    #[test]
    fn regression_needs_three_times_the_mean() {
        let before = OperationSums {
            calls: 10,
            total_ns: 100,
            critical_ns: 0,
        };
        let slower = OperationSums {
            calls: 10,
            total_ns: 300,
            critical_ns: 0,
        };
        let bit_slower = OperationSums {
            calls: 10,
            total_ns: 290,
            critical_ns: 0,
        };
        assert!(is_regression(&slower, &before));
        assert!(!is_regression(&bit_slower, &before));
        assert!(!is_regression(
            &OperationSums {
                calls: 1,
                total_ns: 1000,
                critical_ns: 0
            },
            &before
        ));
    }

    #[test]
    fn a_location_named_by_most_requests_wins_in_any_order_of_adding_and_merging() {
        let at = |line| CodeLocation {
            file: Some("app/policies.py".into()),
            line: Some(line),
            function: Some("load_rules".into()),
        };
        let votes = [Some(88), Some(12), None, Some(88), Some(40), Some(88)];
        let mut one_by_one = FindingSums::default();
        for line in votes {
            one_by_one.vote(line.map(at).as_ref(), 1);
        }
        assert_eq!(one_by_one.location, Some(at(88)));
        let (mut first, mut second) = (FindingSums::default(), FindingSums::default());
        for line in [Some(12), Some(40), Some(12)] {
            first.vote(line.map(at).as_ref(), 1);
        }
        for line in [Some(88), Some(88), Some(88), Some(88)] {
            second.vote(line.map(at).as_ref(), 1);
        }
        assert_eq!(first.location, Some(at(12)));
        first.vote(second.location.as_ref(), second.location_votes);
        assert_eq!(first.location, Some(at(88)), "4 of 7 requests");
        assert_eq!(first.location_votes, 3, "four against one left over");
        first.unvote(Some(&at(88)), 1);
        assert_eq!(
            first.location,
            Some(at(88)),
            "a location stays while it has no rival"
        );
        let mut none = FindingSums::default();
        none.vote(None, 3);
        assert_eq!(none.location, None);
    }
}
