//! The processor and the future adapter through the real SDK: a tracer provider whose only
//! processor is a `CpuTimeProcessor` around one that keeps every span it is handed.
//!
//! Bounds are loose on purpose: a span's value is checked against CPU time burned inside it,
//! measured on the same clock, never against wall time.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor};

use super::*;

const MS: u64 = 1_000_000;

/// Keeps every span it is handed.
#[derive(Debug, Default, Clone)]
struct Kept(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Kept {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0
            .lock()
            .expect("no panic while holding the lock")
            .push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Kept {
    /// The `cpu.time_ns` of the span named `name`, checking that no marker reached the processor.
    fn cpu_ns(&self, name: &str) -> Option<u64> {
        let spans = self.0.lock().expect("no panic while holding the lock");
        let span = spans
            .iter()
            .find(|it| it.name == name)
            .unwrap_or_else(|| panic!("span {name} ended"));
        assert!(
            span.attributes
                .iter()
                .all(|kv| !kv.key.as_str().starts_with("cputime.")),
            "{:?}",
            span.attributes
        );
        let mut values = span
            .attributes
            .iter()
            .filter(|kv| kv.key.as_str() == CPU_TIME_NS);
        let value = values.next().map(|kv| match kv.value {
            Value::I64(ns) => u64::try_from(ns).expect("never negative"),
            ref other => panic!("cpu.time_ns is an integer, not {other:?}"),
        });
        assert!(values.next().is_none(), "at most one cpu.time_ns");
        value
    }
}

fn tracer() -> (SdkTracer, Kept) {
    let kept = Kept::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(CpuTimeProcessor::new(kept.clone()))
        .build();
    (provider.tracer("cputime-test"), kept)
}

/// Busy work on this thread until it has used `target_ns` of CPU time; returns what it used.
fn burn(target_ns: u64) -> u64 {
    let before = thread_cpu_ns().expect("tests run where threads have a CPU clock");
    let mut digest = 0xcbf2_9ce4_8422_2325_u64;
    loop {
        for idx in 0..10_000_u64 {
            digest = (digest ^ idx).wrapping_mul(0x0000_0100_0000_01b3);
        }
        std::hint::black_box(digest);
        let used = thread_cpu_ns().expect("same clock") - before;
        if used >= target_ns {
            return used;
        }
    }
}

/// Returns `Pending` once, waking itself: a task at this await may resume on another thread.
#[derive(Default)]
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn busy_work_inside_a_span_is_counted() {
    let (tracer, kept) = tracer();
    let mut span = tracer.start("busy");
    let burned = burn(20 * MS);
    span.end();
    let cpu_ns = kept.cpu_ns("busy").expect("measured on this thread");
    assert!(cpu_ns >= burned, "{cpu_ns} < {burned}");
    assert!(cpu_ns < burned + 10 * MS, "{cpu_ns}");
}

#[test]
fn sleeping_inside_a_span_is_not_cpu() {
    let (tracer, kept) = tracer();
    let mut span = tracer.start("asleep");
    std::thread::sleep(Duration::from_millis(30));
    span.end();
    let cpu_ns = kept.cpu_ns("asleep").expect("measured on this thread");
    assert!(cpu_ns < 3 * MS, "{cpu_ns}");
}

#[test]
fn a_parent_includes_its_children() {
    let (tracer, kept) = tracer();
    let parent = tracer.start("parent");
    let cx = Context::current_with_span(parent);
    let own = burn(5 * MS);
    let mut child = tracer.start_with_context("child", &cx);
    let in_child = burn(10 * MS);
    child.end();
    let own = own + burn(5 * MS);
    cx.span().end();
    let child_ns = kept.cpu_ns("child").expect("measured");
    let parent_ns = kept.cpu_ns("parent").expect("measured");
    assert!(child_ns >= in_child, "{child_ns} < {in_child}");
    assert!(
        parent_ns >= child_ns + own,
        "{parent_ns} < {child_ns} + {own}"
    );
}

#[test]
fn a_span_ended_on_another_thread_gets_none() {
    let (tracer, kept) = tracer();
    let mut span = tracer.start("handed over");
    burn(2 * MS);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            burn(2 * MS);
            span.end();
        });
    });
    assert_eq!(kept.cpu_ns("handed over"), None);
}

#[test]
fn a_span_with_an_explicit_past_start_gets_none() {
    let (tracer, kept) = tracer();
    // As tracing-opentelemetry does: the span is built when it closes, with the time it opened.
    let mut span = tracer
        .span_builder("built late")
        .with_start_time(SystemTime::now() - Duration::from_millis(50))
        .start(&tracer);
    span.end();
    assert_eq!(kept.cpu_ns("built late"), None);
}

#[test]
fn the_applications_own_value_is_kept() {
    let (tracer, kept) = tracer();
    let mut span = tracer.start("measured by hand");
    span.set_attribute(KeyValue::new(CPU_TIME_NS, 42_i64));
    span.end();
    assert_eq!(kept.cpu_ns("measured by hand"), Some(42));
}

#[test]
fn a_future_polled_on_three_threads_gets_the_sum_of_its_polls() {
    let (tracer, kept) = tracer();
    let burned = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&burned);
    let mut task = Box::pin(
        async move {
            let mut span = tracer.start("migrating");
            for _ in 0..3 {
                let used = burn(5 * MS);
                record.lock().expect("no panic").push(used);
                YieldOnce::default().await;
            }
            span.end();
        }
        .with_cpu_time(),
    );
    let mut threads = HashSet::new();
    // Each poll on a thread of its own, as a work-stealing runtime may do.
    let done = loop {
        let (ready, thread) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut cx = TaskContext::from_waker(Waker::noop());
                    (task.as_mut().poll(&mut cx).is_ready(), thread_id())
                })
                .join()
                .expect("no panic")
        });
        threads.insert(thread);
        if ready {
            break threads;
        }
    };
    assert_eq!(done.len(), 4, "one thread per poll");
    let burned: u64 = burned.lock().expect("no panic").iter().sum();
    let cpu_ns = kept
        .cpu_ns("migrating")
        .expect("measured on the future's clock");
    assert!(cpu_ns >= burned, "{cpu_ns} < {burned}");
    assert!(cpu_ns < burned + 10 * MS, "{cpu_ns}");
}

#[test]
fn a_span_migrating_between_tokio_workers_gets_the_sum_of_its_polls() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    let (tracer, kept) = tracer();
    let (burned, switches) = runtime.block_on(async move {
        let task = async move {
            let mut span = tracer.start("on workers");
            let (mut burned, mut switches, mut last) = (0, 0, thread_id());
            // Until the task has changed workers a few times; it nearly always does within 20
            // rounds, and the bound ends the test whatever the scheduler does.
            for _ in 0..500 {
                if switches >= 5 {
                    break;
                }
                burned += burn(MS / 2);
                // Keep this worker busy with another task (spawned into its LIFO slot, which is
                // not stolen) and resume from a blocking thread: the other worker, idle, usually
                // takes the task.
                tokio::spawn(async { burn(2 * MS) });
                tokio::task::spawn_blocking(|| ()).await.expect("no panic");
                switches += u32::from(thread_id() != last);
                last = thread_id();
            }
            span.end();
            (burned, switches)
        };
        tokio::spawn(task.with_cpu_time()).await.expect("no panic")
    });
    assert!(switches >= 1, "the task never changed workers");
    let cpu_ns = kept
        .cpu_ns("on workers")
        .expect("measured on the task's clock");
    assert!(cpu_ns >= burned, "{cpu_ns} < {burned}");
    assert!(cpu_ns < burned + 10 * MS, "{cpu_ns} vs {burned}");
}

#[test]
fn spans_on_a_runtime_without_the_wrapper_get_none() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    let (tracer, kept) = tracer();
    let in_task = tracer.clone();
    runtime.block_on(async move {
        let mut span = tracer.start("in block_on");
        burn(MS);
        span.end();
        let in_blocking = in_task.clone();
        tokio::spawn(async move {
            let mut span = in_task.start("in a task");
            burn(MS);
            tokio::task::yield_now().await;
            span.end();
        })
        .await
        .expect("no panic");
        tokio::task::spawn_blocking(move || {
            let mut span = in_blocking.start("in spawn_blocking");
            burn(MS);
            span.end();
        })
        .await
        .expect("no panic");
    });
    assert_eq!(kept.cpu_ns("in block_on"), None);
    assert_eq!(kept.cpu_ns("in a task"), None);
    // A blocking thread runs one closure at a time, but the processor cannot tell it from a
    // worker: it is left out too.
    assert_eq!(kept.cpu_ns("in spawn_blocking"), None);
}

#[test]
fn a_wrapped_child_future_counts_for_its_parent_span() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    let (tracer, kept) = tracer();
    let (own, in_child) = runtime.block_on(async move {
        let request = async move {
            let parent = tracer.start("request");
            let cx = Context::current_with_span(parent);
            let own = burn(3 * MS);
            let child_tracer = tracer.clone();
            let child_cx = cx.clone();
            let in_child = async move {
                let mut child = child_tracer.start_with_context("child", &child_cx);
                let used = burn(3 * MS);
                tokio::task::yield_now().await;
                let used = used + burn(3 * MS);
                child.end();
                used
            }
            .with_cpu_time()
            .await;
            cx.span().end();
            (own, in_child)
        };
        tokio::spawn(request.with_cpu_time())
            .await
            .expect("no panic")
    });
    let child_ns = kept.cpu_ns("child").expect("measured");
    let parent_ns = kept.cpu_ns("request").expect("measured");
    assert!(child_ns >= in_child, "{child_ns} < {in_child}");
    assert!(
        parent_ns >= child_ns + own,
        "{parent_ns} < {child_ns} + {own}"
    );
}

#[test]
fn cpu_time_charged_from_a_blocking_thread_counts() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    let (tracer, kept) = tracer();
    let on_blocking = runtime.block_on(async move {
        let task = async move {
            let mut span = tracer.start("delegating");
            let used = tokio::task::spawn_blocking(|| burn(10 * MS))
                .await
                .expect("no panic");
            charge(used);
            span.end();
            used
        };
        tokio::spawn(task.with_cpu_time()).await.expect("no panic")
    });
    let cpu_ns = kept.cpu_ns("delegating").expect("measured");
    assert!(cpu_ns >= on_blocking, "{cpu_ns} < {on_blocking}");
    assert!(cpu_ns < on_blocking + 5 * MS, "{cpu_ns}");
}

fn thread_id() -> ThreadId {
    std::thread::current().id()
}
