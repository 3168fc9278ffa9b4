//! One OpenTelemetry SDK pipeline per simulated service: a tracer provider with the service's
//! resource, the SDK's batch span processor and a real OTLP exporter (HTTP/protobuf or gRPC).
//! A service that measures CPU time wraps the batch processor in `cputime`'s processor, which
//! adds `cpu.time_ns` (children included) to every span it can measure.
//!
//! The SDK's batch processor exports from its own thread with a plain executor, but the OTLP
//! exporters need a tokio reactor (hyper and tonic IO). [`OnRuntime`] therefore runs every export
//! on the workload's runtime and counts the spans that went out.
//!
//! Invariant: nothing here blocks the runtime: `force_flush` and `shutdown`, which wait for the
//! processor's thread, run on a blocking thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;
use cputime::CpuTimeProcessor;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};
use tokio::runtime::Handle;

/// How long one export may take before it counts as failed; a collector that is down must not
/// hold up the end of the demo for long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the batch processor sends: short, so the dashboard fills while one watches.
const SCHEDULED_DELAY: Duration = Duration::from_millis(500);

/// Spans a provider buffers before it drops: a login makes about 15, so this holds several
/// seconds of a fast demo even if the collector is slow.
const MAX_QUEUE_SIZE: usize = 16_384;

/// The OTLP transport a service exports with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/HTTP with protobuf bodies, posted to `<endpoint>/v1/traces`.
    Http,
    /// OTLP/gRPC.
    Grpc,
}

/// Whether a service's spans carry `cpu.time_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuTime {
    /// Measured by `cputime::CpuTimeProcessor`, for spans started in a task run with
    /// `with_cpu_time`.
    Measured,
    /// Never set: the service's self time cannot be split into CPU and waiting.
    Unmeasured,
}

/// Spans handed to the collector, over all services.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans in exports the collector accepted.
    pub exported: AtomicU64,
    /// Spans in exports that failed (collector down, refused or too slow).
    pub failed: AtomicU64,
}

/// Who a provider reports itself as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `service.name`.
    pub name: &'static str,
    /// `service.version`.
    pub version: &'static str,
    /// `service.instance.id`, distinct per deployment.
    pub instance_id: String,
}

/// Builds a provider that exports over `transport` to `endpoint` (the base URL; for HTTP the
/// traces path is appended), measuring CPU time or not. Must run inside the tokio runtime: the
/// gRPC channel is bound to it.
pub fn provider(
    identity: &Identity,
    transport: Transport,
    endpoint: &str,
    cpu_time: CpuTime,
    stats: Arc<ExportStats>,
) -> anyhow::Result<SdkTracerProvider> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match transport {
        Transport::Http => builder
            .with_http()
            // An explicit protocol wins over OTEL_EXPORTER_OTLP_PROTOCOL, which may say grpc.
            .with_protocol(Protocol::HttpBinary)
            // An explicit endpoint is used as is; only the environment variable gets the path.
            .with_endpoint(format!(
                "{}{}",
                endpoint.trim_end_matches('/'),
                collector::otlp::http::TRACES_PATH
            ))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        Transport::Grpc => builder
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .with_context(|| {
        format!(
            "building the otlp exporter of {} for {endpoint}",
            identity.name
        )
    })?;
    let exporter = OnRuntime {
        inner: Arc::new(exporter),
        runtime: Handle::current(),
        stats,
    };
    let config = BatchConfigBuilder::default()
        .with_scheduled_delay(SCHEDULED_DELAY)
        .with_max_queue_size(MAX_QUEUE_SIZE)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(config)
        .build();
    // builder_empty: the demo's identity must not change with OTEL_SERVICE_NAME or
    // OTEL_RESOURCE_ATTRIBUTES of the shell it runs in.
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", identity.name),
            KeyValue::new("service.version", identity.version),
            KeyValue::new("service.instance.id", identity.instance_id.clone()),
            KeyValue::new("deployment.environment.name", "demo"),
            KeyValue::new("telemetry.sdk.language", "rust"),
            KeyValue::new("telemetry.sdk.name", "opentelemetry"),
        ])
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let builder = match cpu_time {
        CpuTime::Measured => builder.with_span_processor(CpuTimeProcessor::new(processor)),
        CpuTime::Unmeasured => builder.with_span_processor(processor),
    };
    Ok(builder.build())
}

/// The tracer a service records its spans with.
pub fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    provider.tracer("bottleneck-demo")
}

/// Exports everything still buffered and stops the provider, off the runtime's threads.
pub async fn shutdown(provider: SdkTracerProvider, service: &'static str) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        // Flush first: shutdown alone would also export, but a failed flush is worth its own
        // message and must not stop the shutdown.
        let flushed = provider.force_flush();
        provider.shutdown()?;
        flushed
    })
    .await
    .with_context(|| format!("joining the shutdown of {service}"))?
    .with_context(|| format!("flushing the spans of {service}"))
}

/// Runs another exporter's exports on a tokio runtime and counts their spans.
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: Handle,
    stats: Arc<ExportStats>,
}

impl<E> fmt::Debug for OnRuntime<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnRuntime").finish_non_exhaustive()
    }
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n_spans = batch.len() as u64;
        let inner = Arc::clone(&self.inner);
        let result = self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
            .unwrap_or_else(|err| {
                Err(OTelSdkError::InternalFailure(format!(
                    "export task failed: {err}"
                )))
            });
        let counter = if result.is_ok() {
            &self.stats.exported
        } else {
            &self.stats.failed
        };
        counter.fetch_add(n_spans, Relaxed);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The processor sets the resource once, before its first export, so no export task
        // holds a clone of the exporter yet.
        Arc::get_mut(&mut self.inner)
            .expect("the resource is set before any export shares the exporter")
            .set_resource(resource);
    }
}
