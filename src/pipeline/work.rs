//! The CPU work of one analysis batch: decoding the due traces' blocks and analysing every trace,
//! split over the machine's cores. It runs on blocking threads (the runtime's pool, so threads
//! and their allocator caches are reused), never on the async workers.
//!
//! A batch is cut into contiguous parts, one per core, with fresh traces ordered by their first
//! block so that each part mostly decodes blocks of its own; a block shared by two parts is
//! decoded by both. Each part keeps only its traces' spans, so a batch never holds more decoded
//! spans than its traces have.
//!
//! Blocks are decoded sparsely: a span keeps only the attributes the analysis reads, and the
//! others are never decoded.
//!
//! Invariant: pure apart from logging; the results are in no particular order and each trace
//! appears exactly once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use collector::model::{Resource, Span, TraceId};
use foldhash::fast::RandomState;
use tracing::error;

use crate::analysis::{AnalysisConfig, Anomaly, RequestAnalysis, analyze_trace, reads_attribute};
use crate::store::{block, canonical_attributes};

/// Below this many traces a part is not worth a thread of its own.
const MIN_TRACES_PER_PART: usize = 500;

/// A trace seen for the first time: its spans are in held blocks.
#[derive(Debug)]
pub struct FreshTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// The blocks its spans are in.
    pub block_ids: Vec<i64>,
    /// The newest of them.
    pub last_block_id: i64,
    /// When its first spans reached the assembler, committed: the analysis delay counts from
    /// here.
    pub arrived: tokio::time::Instant,
}

/// A trace whose spans are already at hand (read from the store).
#[derive(Debug)]
pub struct Work {
    /// The trace.
    pub trace_id: TraceId,
    /// Every span to analyse now.
    pub spans: Vec<Span>,
    /// For a trace analysed before: the spans that analysis saw, whose requests are taken back.
    pub old_spans: Option<Vec<Span>>,
    /// The newest block among `spans`.
    pub last_block_id: i64,
}

/// One batch: fresh traces with the compressed blocks holding them, and traces at hand.
#[derive(Debug, Default)]
pub struct Batch {
    /// Traces to decode from `blocks`.
    pub fresh: Vec<FreshTrace>,
    /// Held blocks by id.
    pub blocks: HashMap<i64, Arc<Vec<u8>>>,
    /// Traces read from the store.
    pub at_hand: Vec<Work>,
}

impl Batch {
    /// Traces in the batch.
    pub fn len(&self) -> usize {
        self.fresh.len() + self.at_hand.len()
    }

    /// Whether the batch has no trace.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The analysis of one trace.
#[derive(Debug)]
pub struct AnalysedTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// Its requests as analysed now.
    pub new: Vec<RequestAnalysis>,
    /// The canonical resource of each request in `new` (empty when unknown).
    pub resources: Vec<Arc<str>>,
    /// Whether the trace was analysed before: its stored requests are replaced.
    pub reanalysed: bool,
    /// Its requests as analysed before, to take back (re-analysis only).
    pub old: Vec<RequestAnalysis>,
    /// The newest block its spans came in.
    pub last_block_id: i64,
    /// Odd input worked around (orphans, skew, cycles, duplicate ids).
    pub anomalies: u64,
    /// Some of its spans wait for a parent that has not arrived (SDKs export children seconds
    /// before their root): when more of the trace comes, it is analysed again whole.
    pub awaits_parent: bool,
}

/// Cuts a batch into parts to analyse side by side, one per core (fewer for a small batch), each
/// with the blocks its traces need.
pub fn split(batch: Batch) -> Vec<Batch> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n_parts = (batch.len() / MIN_TRACES_PER_PART).clamp(1, cores);
    if n_parts == 1 {
        return vec![batch];
    }
    let Batch {
        mut fresh,
        blocks,
        at_hand,
    } = batch;
    fresh.sort_unstable_by_key(|trace| trace.block_ids.first().copied());
    let fresh_parts = split_at_blocks(fresh, n_parts);
    let at_hand_parts = split_evenly(at_hand, n_parts);
    fresh_parts
        .into_iter()
        .zip(at_hand_parts)
        .map(|(fresh, at_hand)| {
            let blocks = fresh
                .iter()
                .flat_map(|trace| &trace.block_ids)
                .filter_map(|id| Some((*id, Arc::clone(blocks.get(id)?))))
                .collect();
            Batch {
                fresh,
                blocks,
                at_hand,
            }
        })
        .collect()
}

/// Decodes and analyses one batch (or part of one) on this thread: one analysis per trace.
pub fn run(batch: Batch, config: &AnalysisConfig) -> Vec<AnalysedTrace> {
    analyse_part(batch.fresh, &batch.blocks, batch.at_hand, config)
}

/// Cuts traces ordered by first block into exactly `n` contiguous parts of about equal length,
/// cutting only where the first block changes, so that one block's traces stay in one part and
/// no block is decoded twice (an export of 10,000 traces makes one part).
fn split_at_blocks(fresh: Vec<FreshTrace>, n: usize) -> Vec<Vec<FreshTrace>> {
    let target = fresh.len().div_ceil(n.max(1));
    let mut parts: Vec<Vec<FreshTrace>> = vec![Vec::new()];
    for trace in fresh {
        let current = parts.last_mut().expect("parts starts with one");
        let new_block = current
            .last()
            .is_some_and(|last| last.block_ids.first() != trace.block_ids.first());
        if current.len() >= target && new_block && parts.len() < n {
            parts.push(Vec::new());
        }
        parts.last_mut().expect("parts is not empty").push(trace);
    }
    parts.resize_with(n.max(1), Vec::new);
    parts
}

/// Cuts `items` into exactly `n` contiguous parts of nearly equal length (some empty when there
/// are fewer items than parts).
fn split_evenly<T>(mut items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let size = items.len().div_ceil(n.max(1));
    let mut parts: Vec<Vec<T>> = (1..n)
        .map(|_| items.split_off(items.len().saturating_sub(size)))
        .collect();
    parts.push(items);
    parts
}

fn analyse_part(
    fresh: Vec<FreshTrace>,
    blocks: &HashMap<i64, Arc<Vec<u8>>>,
    mut work: Vec<Work>,
    config: &AnalysisConfig,
) -> Vec<AnalysedTrace> {
    work.extend(decode_fresh(fresh, blocks));
    let mut analysed = Vec::with_capacity(work.len());
    // Spans of one export share their resource, and a batch sees few resources: render each one
    // once per part, not once per request.
    let mut rendered: HashMap<*const Resource, Arc<str>> = HashMap::new();
    for item in work {
        let (new, anomalies) = analyze_trace(&item.spans, config);
        let resources = new
            .iter()
            .map(|request| match request_span(&item.spans, request) {
                Some(span) => Arc::clone(
                    rendered
                        .entry(Arc::as_ptr(&span.resource))
                        .or_insert_with(|| resource_key(span).into()),
                ),
                None => Arc::from(""),
            })
            .collect();
        let reanalysed = item.old_spans.is_some();
        let old = item
            .old_spans
            .map(|old| analyze_trace(&old, config).0)
            .unwrap_or_default();
        analysed.push(AnalysedTrace {
            trace_id: item.trace_id,
            new,
            resources,
            reanalysed,
            old,
            last_block_id: item.last_block_id,
            awaits_parent: anomalies
                .iter()
                .any(|anomaly| matches!(anomaly, Anomaly::OrphanSpan { .. })),
            anomalies: anomalies.len() as u64,
        });
    }
    analysed
}

/// Decodes the blocks the fresh traces need, keeping only their spans and of those only the
/// attributes the analysis reads. A block that cannot be decoded (written by this process
/// moments ago, so only memory corruption could do it) is logged, and its spans from the damage
/// on are skipped.
fn decode_fresh(fresh: Vec<FreshTrace>, blocks: &HashMap<i64, Arc<Vec<u8>>>) -> Vec<Work> {
    let needed: BTreeSet<i64> = fresh
        .iter()
        .flat_map(|trace| trace.block_ids.iter().copied())
        .collect();
    // foldhash rather than SipHash: trace ids are looked up once per span, on the hot path.
    let mut traces: HashMap<TraceId, Work, RandomState> = fresh
        .into_iter()
        .map(|trace| {
            let work = Work {
                trace_id: trace.trace_id,
                spans: Vec::new(),
                old_spans: None,
                last_block_id: trace.last_block_id,
            };
            (trace.trace_id, work)
        })
        .collect();
    for block_id in needed {
        let Some(data) = blocks.get(&block_id) else {
            continue;
        };
        let decoded = block::each_span_keeping(data, reads_attribute, |span| {
            if let Some(trace) = traces.get_mut(&span.trace_id) {
                trace.spans.push(span);
            }
        });
        if let Err(err) = decoded {
            error!(error = %err, block_id, "decoding a committed block failed");
        }
    }
    traces
        .into_values()
        .filter(|trace| !trace.spans.is_empty())
        .collect()
}

/// The span of an analysed request: found by a scan, as a trace has few requests.
fn request_span<'a>(spans: &'a [Span], request: &RequestAnalysis) -> Option<&'a Span> {
    spans.iter().find(|span| span.span_id == request.span_id)
}

/// The canonical form of the resource of a request span, for interning.
fn resource_key(span: &Span) -> String {
    let attributes: Vec<(String, String)> = span
        .resource
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.to_string()))
        .collect();
    canonical_attributes(&attributes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::fixture;

    fn fixture_block(text: &str) -> Arc<Vec<u8>> {
        Arc::new(block::encode(fixture::parse(text), 0).data)
    }

    #[test]
    fn split_covers_every_item_once_in_nearly_equal_parts() {
        let parts = split_evenly((0..1001).collect::<Vec<_>>(), 2);
        assert_eq!(parts.len(), 2);
        let mut all: Vec<i32> = parts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..1001).collect::<Vec<_>>());
        assert!(parts.iter().all(|part| part.len() >= 500));
        let empty = split_evenly(Vec::<i32>::new(), 2);
        assert_eq!(empty.len(), 2, "always as many parts as asked");
        assert!(empty.concat().is_empty());
        assert_eq!(split_evenly(vec![1], 3).concat(), [1]);
    }

    #[test]
    fn parts_are_cut_between_blocks_only() {
        let trace = |n: u128, block: i64| FreshTrace {
            trace_id: TraceId(n.to_be_bytes()),
            block_ids: vec![block],
            last_block_id: block,
            arrived: tokio::time::Instant::now(),
        };
        let one_block: Vec<FreshTrace> = (0..1000).map(|n| trace(n, 7)).collect();
        let parts = split_at_blocks(one_block, 2);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 1000, "one block's traces stay together");
        let two_blocks: Vec<FreshTrace> = (0..1000).map(|n| trace(n, (n / 600) as i64)).collect();
        let parts = split_at_blocks(two_blocks, 2);
        assert_eq!([parts[0].len(), parts[1].len()], [600, 400]);
    }

    #[test]
    fn a_large_batch_split_over_parts_analyses_each_trace_once() {
        let mut blocks = HashMap::new();
        let mut fresh = Vec::new();
        for n in 0..(2 * MIN_TRACES_PER_PART as i64 + 7) {
            let text = format!(
                "auth: GET /login/{n} 0..10 server\n  SELECT {n} 1..4 client db.system=sqlite"
            );
            let spans = fixture::parse(&text);
            // Fixture trace ids are fixed: give each trace its own.
            let trace_id = TraceId((n as u128 + 1).to_be_bytes());
            let spans: Vec<Span> = spans
                .into_iter()
                .map(|span| Span { trace_id, ..span })
                .collect();
            blocks.insert(n, Arc::new(block::encode(spans, 0).data));
            fresh.push(FreshTrace {
                trace_id,
                block_ids: vec![n],
                last_block_id: n,
                arrived: tokio::time::Instant::now(),
            });
        }
        let n_traces = fresh.len();
        let parts = split(Batch {
            fresh,
            blocks,
            at_hand: Vec::new(),
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(parts.len(), cores.min(2));
        assert!(
            parts
                .iter()
                .all(|part| part.blocks.len() == part.fresh.len()),
            "each part carries the blocks of its own traces"
        );
        let traces: Vec<AnalysedTrace> = parts
            .into_iter()
            .flat_map(|part| run(part, &AnalysisConfig::default()))
            .collect();
        assert_eq!(traces.len(), n_traces);
        let mut ids: Vec<TraceId> = traces.iter().map(|trace| trace.new[0].trace_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n_traces, "no trace analysed twice");
        assert!(traces.iter().all(|trace| trace.new[0].n_db_calls == 1));
    }

    #[test]
    fn spans_decoded_for_the_analysis_analyse_as_whole_spans_do() {
        let text = r#"
auth: POST /login/42 0..400 server http.request.method=POST url.path=/login/42 http.response.status_code=500 cpu.time_ns=15000000 client.address=10.0.0.1 enduser.id=alice
  SELECT users 10..30 client db.system.name=postgresql db.query.text="SELECT * FROM users WHERE id = $1" db.query.parameter.0=42 db.namespace=auth
  SELECT users 30..50 client db.system.name=postgresql db.query.text="SELECT * FROM users WHERE id = $1" db.query.parameter.0=42
  SELECT roles 50..60 client db.system=mysql db.statement="SELECT * FROM roles WHERE user = ?" db.statement.parameters="[42]"
  GET session 60..62 client db.system.name=redis db.query.text="GET session:?" server.address=cache.internal
  ldap lookup 62..80 internal bottleneck.category=network thread.id=7
  POST 80..300 client http.request.method=POST url.full=https://idp.example.com/saml server.address=idp.example.com
  publish 300..310 producer messaging.system=kafka messaging.destination.name=logins
  Check 310..320 client rpc.system=grpc rpc.service=Policy
"#;
        let config = AnalysisConfig::default();
        let data = block::encode(fixture::parse(text), 0).data;
        let whole = analyze_trace(&block::decode(&data).expect("decodes"), &config);
        let sparse = block::decode_keeping(&data, reads_attribute).expect("decodes");
        assert!(
            sparse.iter().all(|span| span.attributes.iter().all(|kv| ![
                "client.address",
                "enduser.id",
                "db.namespace",
                "thread.id"
            ]
            .contains(&kv.key.as_str()))),
            "attributes nothing reads are not decoded"
        );
        let analysed = analyze_trace(&sparse, &config);
        assert_eq!(analysed, whole);
        assert!(
            !whole.0[0].findings.is_empty(),
            "the fixture has findings to compare"
        );
    }

    #[test]
    fn spans_of_a_trace_across_blocks_are_analysed_together() {
        let blocks = HashMap::from([
            (1, fixture_block("auth: GET /health 0..5 server")),
            (
                2,
                fixture_block(
                    "auth: GET /health 0..5 server\n  SELECT 1 1..4 client db.system=sqlite",
                ),
            ),
        ]);
        let trace_id = fixture::parse("auth: GET /health 0..5 server")[0].trace_id;
        let analysed = run(
            Batch {
                fresh: vec![FreshTrace {
                    trace_id,
                    block_ids: vec![1, 2],
                    last_block_id: 2,
                    arrived: tokio::time::Instant::now(),
                }],
                blocks,
                at_hand: Vec::new(),
            },
            &AnalysisConfig::default(),
        );
        assert_eq!(analysed.len(), 1);
        assert_eq!(analysed[0].trace_id, trace_id);
        assert_eq!(analysed[0].last_block_id, 2);
        assert_eq!(analysed[0].new[0].n_db_calls, 1);
        assert_eq!(analysed[0].resources.len(), 1);
    }
}
