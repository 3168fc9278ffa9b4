//! What the workload did: requests per service and endpoint, injected errors, the redeploy, and
//! the spans that reached the collector.
//!
//! Invariant: counters only ever grow while the workload runs; the report is read once, after
//! every request has finished and every provider has been flushed.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Every endpoint the demo serves, across its services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `auth` `POST /login`.
    Login,
    /// `auth` `GET /report`.
    Report,
    /// `auth` `GET /health`.
    Health,
    /// `idp` `POST /saml/assert`.
    IdpAssert,
    /// `mailer` consuming from the `emails` queue.
    MailerProcess,
}

impl Endpoint {
    /// Every endpoint, in report order.
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Login,
        Endpoint::Report,
        Endpoint::Health,
        Endpoint::IdpAssert,
        Endpoint::MailerProcess,
    ];

    /// The service that serves it.
    pub fn service(self) -> &'static str {
        match self {
            Self::Login | Self::Report | Self::Health => "auth",
            Self::IdpAssert => "idp",
            Self::MailerProcess => "mailer",
        }
    }

    /// The name of its request span, which is also how Bottleneck names the endpoint.
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "POST /login",
            Self::Report => "GET /report",
            Self::Health => "GET /health",
            Self::IdpAssert => "POST /saml/assert",
            Self::MailerProcess => "process emails",
        }
    }
}

/// Live counters, shared by all requests.
#[derive(Debug, Default)]
pub struct Counters {
    requests: [AtomicU64; Endpoint::ALL.len()],
    errors: [AtomicU64; Endpoint::ALL.len()],
    /// Arrivals dropped because too many requests were in flight.
    pub shed: AtomicU64,
}

impl Counters {
    /// Counts one request of `endpoint`, and whether an error was injected into it.
    pub fn count(&self, endpoint: Endpoint, error: bool) {
        self.requests[endpoint as usize].fetch_add(1, Relaxed);
        if error {
            self.errors[endpoint as usize].fetch_add(1, Relaxed);
        }
    }
}

/// Requests of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointCount {
    /// `service.name`.
    pub service: &'static str,
    /// The endpoint, as Bottleneck names it (`POST /login`).
    pub endpoint: &'static str,
    /// Requests started.
    pub requests: u64,
    /// Requests that were made to fail (error status, 5xx).
    pub errors: u64,
}

/// The outcome of [`super::run`].
#[derive(Debug, Clone)]
pub struct WorkloadReport {
    /// Requests per service and endpoint, `auth` first.
    pub requests: Vec<EndpointCount>,
    /// Errors injected over all endpoints (an `idp` failure also fails its login).
    pub errors_injected: u64,
    /// Arrivals dropped because the in-flight limit was reached.
    pub requests_shed: u64,
    /// Whether `auth` was redeployed as 1.1 with the hidden round trip.
    pub regressed: bool,
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans in exports that failed.
    pub spans_failed: u64,
    /// Why flushes failed at the end, if they did (collector down or refusing).
    pub export_errors: Vec<String>,
    /// Wall time from the first arrival to the last flush.
    pub elapsed: Duration,
}

impl WorkloadReport {
    pub(super) fn from_counters(counters: &Counters) -> WorkloadReport {
        let requests: Vec<EndpointCount> = Endpoint::ALL
            .iter()
            .map(|endpoint| EndpointCount {
                service: endpoint.service(),
                endpoint: endpoint.name(),
                requests: counters.requests[*endpoint as usize].load(Relaxed),
                errors: counters.errors[*endpoint as usize].load(Relaxed),
            })
            .collect();
        WorkloadReport {
            errors_injected: requests.iter().map(|it| it.errors).sum(),
            requests,
            requests_shed: counters.shed.load(Relaxed),
            regressed: false,
            spans_exported: 0,
            spans_failed: 0,
            export_errors: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// Requests of one endpoint, 0 if it never ran.
    pub fn requests_of(&self, service: &str, endpoint: &str) -> u64 {
        self.requests
            .iter()
            .find(|it| it.service == service && it.endpoint == endpoint)
            .map_or(0, |it| it.requests)
    }
}

impl fmt::Display for WorkloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "demo ran for {:.1} s", self.elapsed.as_secs_f64())?;
        for it in &self.requests {
            writeln!(
                f,
                "  {:<7} {:<18} {:>7} requests {:>5} errors",
                it.service, it.endpoint, it.requests, it.errors
            )?;
        }
        let redeploy = if self.regressed {
            "auth redeployed as 1.1 (hidden 300 ms round trip)"
        } else {
            "auth stayed at 1.0"
        };
        writeln!(f, "  {redeploy}; {} arrivals shed", self.requests_shed)?;
        write!(
            f,
            "  spans exported: {}, failed: {}",
            self.spans_exported, self.spans_failed
        )?;
        for err in &self.export_errors {
            write!(f, "\n  export error: {err}")?;
        }
        Ok(())
    }
}
