//! A running simulated service: its tracer, and the in-flight guard of its deployment.
//!
//! Invariant: a deployment's provider is shut down only after every request holding one of its
//! [`Service`]s has finished, so no span of a request is lost in a redeploy.

use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tokio::sync::mpsc;

use super::telemetry::{self, CpuTime, ExportStats, Identity, Transport};

/// What a request needs from its service.
#[derive(Debug)]
pub struct Service {
    /// Records the service's spans.
    pub tracer: SdkTracer,
    /// `service.version`, which decides the behaviour of versioned code paths.
    pub version: &'static str,
    /// Dropped with the last request of this deployment; see [`Deployment::retire`].
    _in_flight: mpsc::Sender<()>,
}

/// One deployed version of a service: the provider and the handle requests clone.
#[derive(Debug)]
pub struct Deployment {
    /// Cloned into every request.
    pub service: std::sync::Arc<Service>,
    provider: SdkTracerProvider,
    name: &'static str,
    in_flight: mpsc::Receiver<()>,
}

impl Deployment {
    /// Starts `identity` exporting over `transport` to `endpoint`, measuring CPU time or not.
    pub fn start(
        identity: &Identity,
        transport: Transport,
        endpoint: &str,
        cpu_time: CpuTime,
        stats: std::sync::Arc<ExportStats>,
    ) -> anyhow::Result<Deployment> {
        let provider = telemetry::provider(identity, transport, endpoint, cpu_time, stats)?;
        // Nothing is ever sent: the channel only reports when the last sender is gone.
        let (tx, in_flight) = mpsc::channel(1);
        let service = Service {
            tracer: telemetry::tracer(&provider),
            version: identity.version,
            _in_flight: tx,
        };
        Ok(Deployment {
            service: std::sync::Arc::new(service),
            provider,
            name: identity.name,
            in_flight,
        })
    }

    /// Waits until no request uses this deployment any more, then flushes and stops it.
    pub async fn retire(self) -> anyhow::Result<()> {
        let Deployment {
            service,
            provider,
            name,
            mut in_flight,
        } = self;
        drop(service);
        while in_flight.recv().await.is_some() {}
        telemetry::shutdown(provider, name).await
    }
}
