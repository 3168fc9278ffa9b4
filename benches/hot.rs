//! Micro-benchmarks of the hot functions: decode + normalize of an export (whole, as ingest checks
//! it, and sparse, as the analysis reads it), attribution of one
//! request, SQL normalization, and rollup add/merge. `cargo bench --bench hot`.

use std::hint::black_box;

use bottleneck::analysis::aggregate::Rollup;
use bottleneck::analysis::{AnalysisConfig, analyze_trace, reads_attribute, sql};
use bottleneck::cli::bench::payload_for_benchmarks;
use collector::otlp::{decode, sparse};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

fn hot(c: &mut Criterion) {
    let export = payload_for_benchmarks(1000).encode_to_vec();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("decode+normalize 1000 spans", |b| {
        b.iter(|| decode::spans(decode::protobuf(black_box(&export)).unwrap()))
    });
    group.bench_function("decode+accept 1000 spans (ingest)", |b| {
        b.iter(|| decode::accept(&decode::protobuf(black_box(&export)).unwrap()))
    });
    group.bench_function("sparse decode 1000 spans (analysis)", |b| {
        b.iter(|| sparse::spans_keeping(black_box(&export), reads_attribute).unwrap())
    });
    group.finish();

    let spans = decode::spans(decode::protobuf(&export).unwrap()).spans;
    let trace: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == spans[0].trace_id)
        .cloned()
        .collect();
    let config = AnalysisConfig::default();
    let mut group = c.benchmark_group("analysis");
    group.throughput(Throughput::Elements(trace.len() as u64));
    group.bench_function("analyze one 10-span request", |b| {
        b.iter(|| analyze_trace(black_box(&trace), &config))
    });
    group.finish();

    let statement = "SELECT u.id, u.email FROM users u WHERE u.tenant_id = 42 AND u.email = 'a@b.c' AND id IN (1, 2, 3)";
    c.bench_function("sql normalize", |b| {
        b.iter(|| sql::normalize(black_box(statement)))
    });

    let (requests, _) = analyze_trace(&trace, &config);
    let request = &requests[0];
    c.bench_function("rollup add", |b| {
        let mut rollup = Rollup::new();
        b.iter(|| rollup.add(black_box(request)))
    });
    let mut one = Rollup::new();
    for _ in 0..100 {
        one.add(request);
    }
    c.bench_function("rollup merge", |b| {
        let mut acc = Rollup::new();
        b.iter(|| acc.merge(black_box(&one)))
    });
}

criterion_group!(benches, hot);
criterion_main!(benches);
