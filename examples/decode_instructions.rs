//! Runs one decoder over the benchmark's 1,000-span export a given number of times, for
//! `valgrind --tool=callgrind`, whose instruction counts do not depend on the machine's load
//! (docs/benchmarks-history.md). `unread` adds, to every span, ten attributes the analysis does not read and
//! an event, as instrumentation libraries commonly send. `block` is `sparse` from the stored,
//! compressed block, as the analysis reads it; `analyse` is `block` and the analysis of its 100
//! traces, what one part of an analysis batch does per export; `pack` is `check` and the
//! compression of the export into a block, what a receiver does.
//!
//! ```sh
//! cargo build --release --example decode_instructions
//! valgrind --tool=callgrind target/release/examples/decode_instructions sparse bench 20
//! ```

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use bottleneck::analysis::{AnalysisConfig, reads_attribute};
use bottleneck::cli::bench::payload_for_benchmarks;
use bottleneck::pipeline::work::{self, Batch, FreshTrace};
use collector::otlp::{check, decode, sparse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use prost::Message;

// The server's allocator, so that allocation counts as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const UNREAD: [&str; 10] = [
    "thread.id",
    "thread.name",
    "code.function.name",
    "code.file.path",
    "code.line.number",
    "network.peer.address",
    "network.peer.port",
    "user_agent.original",
    "process.pid",
    "otel.scope.name",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: decode_instructions none|whole|accept|check|sparse|block|analyse|pack|encode bench|unread N";
    let decoder = args.next().expect(usage);
    let payload = args.next().expect(usage);
    let n: usize = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let mut export = payload_for_benchmarks(1000);
    if payload == "unread" {
        for span in export
            .resource_spans
            .iter_mut()
            .flat_map(|r| &mut r.scope_spans)
            .flat_map(|s| &mut s.spans)
        {
            span.attributes.extend(UNREAD.iter().map(|key| KeyValue {
                key: (*key).into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(format!("{key} of this span"))),
                }),
                ..Default::default()
            }));
            span.events.push(Event {
                time_unix_nano: span.start_time_unix_nano,
                name: "log".into(),
                attributes: vec![KeyValue {
                    key: "message".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("cache miss, loading".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    let body = export.encode_to_vec();
    let block = collector::block::pack(&body, decode::accept(&decode::protobuf(&body).unwrap()), 0);
    let config = AnalysisConfig::default();
    let fresh_traces = || {
        let mut ids = collector::block::trace_ids(&block.data).unwrap();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|trace_id| FreshTrace {
                trace_id,
                block_ids: vec![0],
                last_block_id: 0,
                arrived: tokio::time::Instant::now(),
            })
            .collect()
    };
    let blocks = HashMap::from([(0, Arc::new(block.data.clone()))]);
    for _ in 0..n {
        match decoder.as_str() {
            "whole" => drop(black_box(decode::spans(decode::protobuf(&body).unwrap()))),
            "accept" => drop(black_box(decode::accept(&decode::protobuf(&body).unwrap()))),
            "check" => drop(black_box(check::accept(&body).unwrap())),
            "sparse" => drop(black_box(
                sparse::spans_keeping(&body, reads_attribute).unwrap(),
            )),
            "block" => drop(black_box(
                collector::block::decode_keeping(&block.data, reads_attribute).unwrap(),
            )),
            "analyse" => drop(black_box(work::run(
                Batch {
                    fresh: fresh_traces(),
                    blocks: blocks.clone(),
                    at_hand: Vec::new(),
                },
                &config,
            ))),
            "pack" => drop(black_box(collector::block::pack(
                &body,
                check::accept(&body).unwrap(),
                0,
            ))),
            "encode" => drop(black_box(export.encode_to_vec())),
            "none" => {}
            _ => panic!("{usage}"),
        }
    }
}
