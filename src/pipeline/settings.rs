//! The pipeline's settings: what it takes in (`[ingest]`) and when and how it analyses
//! (`[analysis]`).
//!
//! Invariant: plain values; the pipeline and the receivers read them once at start.

use std::time::Duration;

use anyhow::bail;
use collector::otlp::body::DEFAULT_MAX_INFLATION_RATIO;
use serde::Deserialize;

use super::{intern, skew};
use crate::analysis::AnalysisConfig;
use crate::store::operation_cap;
use crate::time::{duration_text, ms_as_ns};

/// 64 exports of up to 1000 spans hold ~64k spans, about half a second of full-rate ingest:
/// enough to ride out a slow commit, small enough to bound memory.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;
/// The OpenTelemetry Collector's default limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;
/// The decoded limit is this many times the wire limit unless set: caps gzip bombs at a sane
/// multiple of what may arrive.
const DECODED_PER_WIRE_BYTE: usize = 4;
/// The bytes in flight are this many decoded limits unless set: two of the largest exports, or
/// hundreds of ordinary ones, at once.
const IN_FLIGHT_PER_DECODED_BODY: usize = 2;

/// 2 s covers the default 1 s schedule delay of the SDK batch processors with room to spare.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(2);
/// Enough for any service's real endpoints; a service sending raw paths folds into `other`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SERVICE: usize = 1000;
/// Far above one analysis commit (milliseconds to a second), so only a dead or stuck instance
/// loses its claims.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Ingest limits and queueing.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// Exports that may wait for the store writer. Beyond it, clients are told to retry (429 /
    /// RESOURCE_EXHAUSTED).
    pub queue_capacity: usize,
    /// Largest OTLP body on the wire.
    pub max_body_bytes: usize,
    /// Largest body once gzip is undone.
    pub max_decoded_body_bytes: usize,
    /// Most a gzip body may inflate relative to its wire bytes read so far (checked while
    /// inflating, on every transport).
    pub max_inflation_ratio: usize,
    /// Body bytes all exports being read may hold together; past it exports are told to retry
    /// (429 / RESOURCE_EXHAUSTED) instead of memory growing.
    pub max_bytes_in_flight: usize,
}

/// `[ingest]` as the file writes it: the decoded and in-flight limits follow the wire limit
/// unless set.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    queue_capacity: usize,
    max_body_bytes: usize,
    max_decoded_body_bytes: Option<usize>,
    max_inflation_ratio: usize,
    max_bytes_in_flight: Option<usize>,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decoded_body_bytes: None,
            max_inflation_ratio: DEFAULT_MAX_INFLATION_RATIO,
            max_bytes_in_flight: None,
        }
    }
}

impl IngestSection {
    /// The limits, refusing a budget of bytes in flight too small for one body of the largest
    /// size allowed, which no export could ever pass.
    pub fn resolve(self) -> anyhow::Result<IngestConfig> {
        let max_decoded_body_bytes = self
            .max_decoded_body_bytes
            .unwrap_or(self.max_body_bytes.saturating_mul(DECODED_PER_WIRE_BYTE));
        let ingest = IngestConfig {
            queue_capacity: self.queue_capacity,
            max_body_bytes: self.max_body_bytes,
            max_decoded_body_bytes,
            max_inflation_ratio: self.max_inflation_ratio.max(1),
            max_bytes_in_flight: self
                .max_bytes_in_flight
                .unwrap_or(max_decoded_body_bytes.saturating_mul(IN_FLIGHT_PER_DECODED_BODY)),
        };
        let largest = ingest.max_decoded_body_bytes.max(ingest.max_body_bytes);
        if ingest.max_bytes_in_flight < largest {
            bail!(
                "ingest.max_bytes_in_flight ({}) must hold at least one body of the largest size \
                 allowed ({largest} bytes)",
                ingest.max_bytes_in_flight,
            );
        }
        Ok(ingest)
    }
}

/// When and how requests are analysed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "AnalysisSection")]
pub struct PipelineConfig {
    /// Whether stored spans are analysed. Off only to measure ingest alone: requests, rollups
    /// and the API stay empty, and the blocks are analysed when a later start turns it on.
    pub analysis_enabled: bool,
    /// How long after a request span is stored its trace is analysed, so that children exported
    /// in a later batch (other services, slower exporters) are there.
    pub grace_period: Duration,
    /// Distinct endpoints kept per service; the rest fold into `other`, so a service sending raw
    /// paths cannot blow up the rollups.
    pub max_endpoints_per_service: usize,
    /// Distinct services kept; the rest fold into the service `other`, so a sender minting a
    /// service name per process cannot blow up the endpoints.
    pub max_services: usize,
    /// Distinct versions kept per service (as long as their rollups are); the rest fold into
    /// the version `other`.
    pub max_versions_per_service: usize,
    /// Distinct resources (processes) kept while their requests are; requests of the rest are
    /// stored without their resource, which only attribute selections miss.
    pub max_resources: usize,
    /// Distinct operation names kept per rollup row (an endpoint and version, a minute or an
    /// hour); the rest count as the operation `other` of their category.
    pub max_operations_per_rollup: usize,
    /// How far ahead of the analysis a request may start and still be counted at its own
    /// start; past it, it is counted when it is analysed (its spans keep the times sent).
    pub max_clock_skew: Duration,
    /// With a shared (PostgreSQL) store: how long an instance holds the traces it claimed before
    /// another may take them over.
    pub claim_lease: Duration,
    /// Detector thresholds.
    pub analysis: AnalysisConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        AnalysisSection::default().into()
    }
}

/// `[analysis]` as the file writes it: the detector thresholds flat, durations in milliseconds,
/// each defaulting to the analysis' own.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AnalysisSection {
    enabled: bool,
    #[serde(deserialize_with = "duration_text")]
    grace_period: Duration,
    max_endpoints_per_service: usize,
    max_services: usize,
    max_versions_per_service: usize,
    max_resources: usize,
    max_operations_per_rollup: usize,
    #[serde(deserialize_with = "duration_text")]
    max_clock_skew: Duration,
    #[serde(deserialize_with = "duration_text")]
    claim_lease: Duration,
    n_plus_one_min_calls: u32,
    #[serde(rename = "min_saving_ms", deserialize_with = "ms_as_ns")]
    min_saving_ns: u64,
    #[serde(rename = "slow_query_ms", deserialize_with = "ms_as_ns")]
    slow_query_ns: u64,
    cpu_hotspot_share: f64,
    wait_share: f64,
    untraced_share: f64,
    #[serde(rename = "gap_min_ms", deserialize_with = "ms_as_ns")]
    gap_min_ns: u64,
    #[serde(rename = "noise_floor_ms", deserialize_with = "ms_as_ns")]
    noise_floor_ns: u64,
    noise_floor_share: f64,
}

impl Default for AnalysisSection {
    fn default() -> Self {
        let thresholds = AnalysisConfig::default();
        Self {
            enabled: true,
            grace_period: DEFAULT_GRACE_PERIOD,
            max_endpoints_per_service: DEFAULT_MAX_ENDPOINTS_PER_SERVICE,
            max_services: intern::DEFAULT_MAX_SERVICES,
            max_versions_per_service: intern::DEFAULT_MAX_VERSIONS_PER_SERVICE,
            max_resources: intern::DEFAULT_MAX_RESOURCES,
            max_operations_per_rollup: operation_cap::DEFAULT_MAX_OPERATIONS_PER_ROLLUP,
            max_clock_skew: skew::DEFAULT_MAX_CLOCK_SKEW,
            claim_lease: DEFAULT_CLAIM_LEASE,
            n_plus_one_min_calls: thresholds.n_plus_one_min_calls,
            min_saving_ns: thresholds.min_saving_ns,
            slow_query_ns: thresholds.slow_query_ns,
            cpu_hotspot_share: thresholds.cpu_hotspot_share,
            wait_share: thresholds.wait_share,
            untraced_share: thresholds.untraced_share,
            gap_min_ns: thresholds.gap_min_ns,
            noise_floor_ns: thresholds.noise_floor_ns,
            noise_floor_share: thresholds.noise_floor_share,
        }
    }
}

impl From<AnalysisSection> for PipelineConfig {
    fn from(section: AnalysisSection) -> Self {
        Self {
            analysis_enabled: section.enabled,
            grace_period: section.grace_period,
            max_endpoints_per_service: section.max_endpoints_per_service,
            max_services: section.max_services,
            max_versions_per_service: section.max_versions_per_service,
            max_resources: section.max_resources,
            max_operations_per_rollup: section.max_operations_per_rollup,
            max_clock_skew: section.max_clock_skew,
            claim_lease: section.claim_lease,
            analysis: AnalysisConfig {
                n_plus_one_min_calls: section.n_plus_one_min_calls,
                min_saving_ns: section.min_saving_ns,
                slow_query_ns: section.slow_query_ns,
                cpu_hotspot_share: section.cpu_hotspot_share,
                wait_share: section.wait_share,
                untraced_share: section.untraced_share,
                gap_min_ns: section.gap_min_ns,
                noise_floor_ns: section.noise_floor_ns,
                noise_floor_share: section.noise_floor_share,
            },
        }
    }
}
