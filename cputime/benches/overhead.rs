//! What `CpuTimeProcessor` adds to each span, side by side with the bare processor it wraps, and
//! what `with_cpu_time` adds to each poll, next to the cost of one read of the thread CPU clock.
//! `cargo bench -p cputime --bench overhead`.
//!
//! Every span is started and ended with four attributes, on a plain thread (the thread clock),
//! inside a wrapped future (the task clock) and on a tokio worker without the wrapper (where the
//! value is left out). Rounds of each case alternate and the median round is reported, so a
//! machine that is busy for a while skews every case alike.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use cputime::{CpuTimeExt as _, CpuTimeProcessor};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};

const SPANS_PER_ROUND: u32 = 100_000;
const POLLS_PER_ROUND: u32 = 200_000;
const ROUNDS: usize = 9;

/// The cheapest processor there is, so the wrapper's own cost shows.
#[derive(Debug, Default)]
struct Counting(AtomicU64);

impl SpanProcessor for Counting {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        black_box(&span);
        self.0.fetch_add(1, Relaxed);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// An exporter that drops what it is given: the batch processor's own cost, not the network's.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn tracer(processor: impl SpanProcessor + 'static) -> (SdkTracerProvider, SdkTracer) {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer("bench");
    (provider, tracer)
}

/// Starts and ends `SPANS_PER_ROUND` spans; nanoseconds per span.
fn spans(tracer: &SdkTracer) -> f64 {
    let started = Instant::now();
    for idx in 0..SPANS_PER_ROUND {
        let mut span = tracer
            .span_builder("SELECT users")
            .with_attributes([
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new("db.operation.name", "SELECT"),
                KeyValue::new("db.collection.name", "users"),
                KeyValue::new("server.port", i64::from(idx)),
            ])
            .start(tracer);
        span.end();
    }
    started.elapsed().as_nanos() as f64 / f64::from(SPANS_PER_ROUND)
}

/// Polls `future` to completion on this thread.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = TaskContext::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Returns `Pending` `n` times, waking itself each time.
struct Yields(u32);

impl Future for Yields {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Nanoseconds per poll of a future that does nothing else.
fn polls(wrapped: bool) -> f64 {
    let started = Instant::now();
    if wrapped {
        block_on(Yields(POLLS_PER_ROUND).with_cpu_time());
    } else {
        block_on(Yields(POLLS_PER_ROUND));
    }
    started.elapsed().as_nanos() as f64 / f64::from(POLLS_PER_ROUND + 1)
}

/// A named case; each call runs one round and returns nanoseconds per span (or poll).
type Case<'a> = (&'static str, Box<dyn FnMut() -> f64 + 'a>);

/// Nanoseconds per read of the thread CPU clock, the floor of every measurement.
fn clock_reads() -> f64 {
    let started = Instant::now();
    for _ in 0..POLLS_PER_ROUND {
        black_box(cputime::thread_cpu_ns());
    }
    started.elapsed().as_nanos() as f64 / f64::from(POLLS_PER_ROUND)
}

fn median(mut rounds: Vec<f64>) -> f64 {
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// Runs every case in `cases` for `ROUNDS` alternating rounds; the median per case.
fn alternate(cases: &mut [Case<'_>]) -> Vec<f64> {
    let mut rounds = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for (_, run) in cases.iter_mut() {
        run(); // warm-up
    }
    for _ in 0..ROUNDS {
        for (idx, (_, run)) in cases.iter_mut().enumerate() {
            rounds[idx].push(run());
        }
    }
    rounds.into_iter().map(median).collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a runtime");
    let (_bare_provider, bare) = tracer(Counting::default());
    let (_wrapped_provider, wrapped) = tracer(CpuTimeProcessor::new(Counting::default()));
    let (_batch_provider, batch) = tracer(BatchSpanProcessor::builder(Discard).build());
    let (_batch_wrapped_provider, batch_wrapped) = tracer(CpuTimeProcessor::new(
        BatchSpanProcessor::builder(Discard).build(),
    ));
    let on_worker = |tracer: &SdkTracer| {
        let tracer = tracer.clone();
        runtime.block_on(async move {
            tokio::spawn(async move { spans(&tracer) })
                .await
                .expect("no panic")
        })
    };
    let mut cases: Vec<Case<'_>> = vec![
        ("counting, bare", Box::new(|| spans(&bare))),
        (
            "counting, wrapped: thread clock",
            Box::new(|| spans(&wrapped)),
        ),
        (
            "counting, wrapped: task clock",
            Box::new(|| block_on(async { spans(&wrapped) }.with_cpu_time())),
        ),
        (
            "counting, wrapped: tokio worker, left out",
            Box::new(|| on_worker(&wrapped)),
        ),
        ("batch, bare", Box::new(|| spans(&batch))),
        (
            "batch, wrapped: thread clock",
            Box::new(|| spans(&batch_wrapped)),
        ),
        ("poll, bare", Box::new(|| polls(false))),
        ("poll, with_cpu_time", Box::new(|| polls(true))),
        ("clock, one thread_cpu_ns read", Box::new(clock_reads)),
    ];
    let medians = alternate(&mut cases);
    println!(
        "median of {ROUNDS} rounds of {SPANS_PER_ROUND} spans ({POLLS_PER_ROUND} polls), ns each"
    );
    let of = |name: &str| {
        cases
            .iter()
            .position(|(it, _)| *it == name)
            .map(|idx| medians[idx])
            .expect("a case of that name")
    };
    for ((name, _), ns) in cases.iter().zip(&medians) {
        let base = if name.starts_with("counting") {
            of("counting, bare")
        } else if name.starts_with("batch") {
            of("batch, bare")
        } else if name.starts_with("poll") {
            of("poll, bare")
        } else {
            0.0
        };
        println!("  {name:<44} {ns:>8.0}   {:>+8.0}", ns - base);
    }
}
