//! [`CpuTimeProcessor`]: reads a clock when a span starts and again when it ends, and adds the
//! difference as `cpu.time_ns` before the span goes on to the processor it wraps.
//!
//! The reading taken in `on_start` travels to `on_end` inside the span itself, as three marker
//! attributes (the clock, its value, the wall time), which `on_end` always removes: no table, no
//! lock, and nothing left behind by a span that never ends.
//!
//! Invariant: the processor it wraps never sees a marker attribute, and sees `cpu.time_ns` only
//! when one clock covered the span from its start to its end as the span records them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::Span as _;
use opentelemetry::{Context, Key, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use crate::CPU_TIME_NS;
use crate::clock::{self, ClockId, Reading};

/// The marker attributes, in the order `on_start` adds them. The names are this crate's own, so
/// no instrumentation sets them.
const MARKER_CLOCK: &str = "cputime.start.clock";
const MARKER_CPU_NS: &str = "cputime.start.cpu_ns";
const MARKER_UNIX_NS: &str = "cputime.start.unix_ns";

/// The value is left out when a span's recorded start and end lie, together, further than this
/// and than a quarter of the span from when the processor saw them. The floor absorbs a thread
/// descheduled between the SDK's timestamp and the processor; the quarter catches spans given
/// explicit timestamps, such as those tracing-opentelemetry builds only when they close.
const MAX_UNSEEN: Duration = Duration::from_micros(200);

/// Wraps a [`SpanProcessor`] (typically the `BatchSpanProcessor`) and adds `cpu.time_ns` to each
/// span it can measure: the CPU time of the thread, or of the [`CpuTimed`](crate::CpuTimed)
/// future, that ran the span, from its start to its end, children included.
///
/// A span gets no `cpu.time_ns` when it ends on another thread (or outside the polls of the
/// future it started in), when it starts on a tokio runtime's thread outside a future wrapped with
/// [`with_cpu_time`](crate::CpuTimeExt::with_cpu_time), when its recorded start or end is not
/// when the processor saw it (explicit timestamps), when the platform has no thread CPU clock, or
/// when the application set `cpu.time_ns` itself (its value is kept).
///
/// Register it as the provider's only processor, wrapping the others: a processor registered
/// beside it would see its marker attributes.
#[derive(Debug)]
pub struct CpuTimeProcessor<P> {
    inner: P,
}

impl<P> CpuTimeProcessor<P> {
    /// Wraps `inner`, which receives every span after `cpu.time_ns` was added.
    pub fn new(inner: P) -> CpuTimeProcessor<P> {
        CpuTimeProcessor { inner }
    }

    /// The wrapped processor.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: SpanProcessor> SpanProcessor for CpuTimeProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        // The clock is read after the wrapped processor's work, so that work is not counted.
        self.inner.on_start(span, cx);
        let Some(reading) = clock::start() else {
            return;
        };
        let (Some(clock), Ok(cpu_ns), Some(started_at)) = (
            reading.clock.as_i64(),
            i64::try_from(reading.ns),
            unix_ns(SystemTime::now()),
        ) else {
            return;
        };
        span.set_attribute(KeyValue::new(Key::from_static_str(MARKER_CLOCK), clock));
        span.set_attribute(KeyValue::new(Key::from_static_str(MARKER_CPU_NS), cpu_ns));
        span.set_attribute(KeyValue::new(
            Key::from_static_str(MARKER_UNIX_NS),
            started_at,
        ));
    }

    fn on_end(&self, mut span: SpanData) {
        let markers = span
            .attributes
            .iter()
            .position(|kv| kv.key.as_str() == MARKER_CLOCK);
        if let Some(at) = markers {
            let cpu_ns = marked_start(&span.attributes[at..]).and_then(|(reading, started_at)| {
                let cpu_ns = clock::elapsed(reading)?;
                seen_whole(&span, started_at, SystemTime::now()).then_some(cpu_ns)
            });
            span.attributes.retain(|kv| !is_marker(&kv.key));
            let measured_by_app = span
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == CPU_TIME_NS);
            if let Some(cpu_ns) = cpu_ns
                && !measured_by_app
            {
                let value = i64::try_from(cpu_ns).unwrap_or(i64::MAX);
                let at = at.min(span.attributes.len());
                span.attributes
                    .insert(at, KeyValue::new(Key::from_static_str(CPU_TIME_NS), value));
            }
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn shutdown(&self) -> OTelSdkResult {
        self.inner.shutdown()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn is_marker(key: &Key) -> bool {
    matches!(key.as_str(), MARKER_CLOCK | MARKER_CPU_NS | MARKER_UNIX_NS)
}

/// The reading and wall time `on_start` left at the start of `attributes`, if all three markers
/// are there (a span at its attribute limit may have dropped some).
fn marked_start(attributes: &[KeyValue]) -> Option<(Reading, SystemTime)> {
    let [clock, cpu_ns, unix_ns, ..] = attributes else {
        return None;
    };
    let int = |kv: &KeyValue, key: &str| match kv.value {
        Value::I64(value) if kv.key.as_str() == key => Some(value),
        _ => None,
    };
    let reading = Reading {
        clock: ClockId::from_i64(int(clock, MARKER_CLOCK)?)?,
        ns: u64::try_from(int(cpu_ns, MARKER_CPU_NS)?).ok()?,
    };
    let started_at =
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(int(unix_ns, MARKER_UNIX_NS)?).ok()?);
    Some((reading, started_at))
}

/// Whether the processor saw the span start and end when the span says it did (see
/// [`MAX_UNSEEN`]).
fn seen_whole(span: &SpanData, started_at: SystemTime, ended_at: SystemTime) -> bool {
    let unseen = distance(span.start_time, started_at) + distance(span.end_time, ended_at);
    let duration = distance(span.start_time, span.end_time);
    unseen <= MAX_UNSEEN.max(duration / 4)
}

fn distance(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .unwrap_or_else(|earlier| earlier.duration())
}

fn unix_ns(at: SystemTime) -> Option<i64> {
    i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()
}
