//! CPU time per span for the OpenTelemetry Rust SDK (`opentelemetry_sdk` 0.33): the span
//! attribute `cpu.time_ns`, the CPU time consumed while the span was open by the thread or task
//! that ran it, its children included.
//!
//! ```no_run
//! use cputime::{CpuTimeExt as _, CpuTimeProcessor};
//! use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanExporter};
//! # async fn handle() {}
//! # fn install(exporter: impl SpanExporter + 'static) {
//! let batch = BatchSpanProcessor::builder(exporter).build();
//! let provider = SdkTracerProvider::builder()
//!     .with_span_processor(CpuTimeProcessor::new(batch))
//!     .build();
//! tokio::spawn(handle().with_cpu_time()); // spans started in `handle` get cpu.time_ns
//! # }
//! ```
//!
//! # Clocks
//!
//! A span is measured on one clock, read by [`CpuTimeProcessor`] when the span starts and again
//! when it ends:
//!
//! - on a plain thread, the thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`);
//! - inside a future wrapped with [`CpuTimeExt::with_cpu_time`], the future's own clock: the
//!   thread CPU time of each of its polls, added up across whatever threads ran them. A tokio task
//!   can move to another worker thread at every `.await`; its clock moves with it, so a span that
//!   starts on one worker and ends on another is still measured exactly. The futures it polls are
//!   part of its polls, so a parent span includes its children's CPU time, as it does on a thread.
//!
//! CPU time spent for a span on another thread (a `spawn_blocking` closure) is not on either
//! clock; [`charge`] adds it to the calling thread's or future's clock once it is known.
//!
//! # Link between the future and the processor
//!
//! Neither knows the other. Each thread keeps the polls of wrapped futures in progress on it, in a
//! thread-local list, innermost last; a poll records its future's clock id and both clocks' values
//! when it began. `on_start` reads the innermost poll's clock (or the thread's) and stores the
//! reading in the span itself, as marker attributes; `on_end` removes them and, if that clock can
//! be read on the ending thread (the same thread, or a poll of the same future in progress on it),
//! adds the difference as `cpu.time_ns`. Clock ids are never reused, so a reading is only ever
//! compared with a later reading of the same clock. There is no table keyed by span id, no lock,
//! and nothing to clean up when a span is never ended.
//!
//! Invariant: `cpu.time_ns` is either a difference of two readings of one clock that covered the
//! span from its recorded start to its recorded end, or absent; never estimated, never zero for
//! lack of a measurement.

#![warn(missing_docs)]

mod clock;
mod future;
mod processor;

#[cfg(test)]
mod tests;

pub use clock::{charge, thread_cpu_ns};
pub use future::{CpuTimeExt, CpuTimed};
pub use processor::CpuTimeProcessor;

/// The span attribute this crate adds: CPU time in nanoseconds, an integer.
pub const CPU_TIME_NS: &str = "cpu.time_ns";
