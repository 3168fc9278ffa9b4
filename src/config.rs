//! Every setting, resolved once in `main` from three sources, in this order of precedence:
//! command-line flags, then the TOML file given with `--config`, then `BOTTLENECK_*` environment
//! variables, then the built-in default.
//!
//! Invariant: the only module that reads environment variables. Subsystems get their own
//! sub-struct and never see the whole `Config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use collector::auth::Tokens;
use collector::otlp::body::DEFAULT_MAX_INFLATION_RATIO;
use serde::Deserialize;

use crate::alert::budget::{AlertRules, AlertSettings, Budget, Slo, Webhook};
use crate::analysis::AnalysisConfig;
use crate::analysis::compare::Thresholds;
use crate::listener::ConnectionConfig;
use crate::pipeline::{intern, skew};
use crate::store::operation_cap;
use crate::store::settings::StoreSettings;
use crate::web::read_limits::ReadLimits;

/// Where the store lives.
#[derive(Clone, PartialEq)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

/// Shows a PostgreSQL URL without its password (in the user part or a `password=` parameter),
/// so that start-up errors, which print the URL, never print the password.
impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

fn redact_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The last '@' ends the user part: a password may itself hold an '@'.
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl DatabaseUrl {
    /// A `sqlite:` URL or a plain path selects SQLite; `postgres://` or `postgresql://`, PostgreSQL.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_owned()));
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            bail!("database url {text:?} names no file");
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// The listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenConfig {
    /// UI and JSON API.
    pub ui: SocketAddr,
    /// OTLP/HTTP.
    pub otlp_http: SocketAddr,
    /// OTLP/gRPC.
    pub otlp_grpc: SocketAddr,
}

/// Ingest limits and queueing.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// Exports that may wait for the store writer. Beyond it, clients are told to retry (429 /
    /// RESOURCE_EXHAUSTED). 64 exports of up to 1000 spans hold ~64k spans, about half a second
    /// of full-rate ingest: enough to ride out a slow commit, small enough to bound memory.
    pub queue_capacity: usize,
    /// Largest OTLP body on the wire; the OpenTelemetry Collector's default limit is 20 MiB.
    pub max_body_bytes: usize,
    /// Largest body once gzip is undone: caps gzip bombs at a sane multiple of the wire limit.
    pub max_decoded_body_bytes: usize,
    /// Most a gzip body may inflate relative to its wire bytes read so far (checked while
    /// inflating, on every transport).
    pub max_inflation_ratio: usize,
    /// Body bytes all exports being read may hold together. Twice the decoded limit by default:
    /// two of the largest exports, or hundreds of ordinary ones, at once; past it exports are
    /// told to retry (429 / RESOURCE_EXHAUSTED) instead of memory growing.
    pub max_bytes_in_flight: usize,
}

/// When requests are analysed.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Whether stored spans are analysed. Off only to measure ingest alone: requests, rollups
    /// and the API stay empty, and the blocks are analysed when a later start turns it on.
    pub analysis_enabled: bool,
    /// How long after a request span is stored its trace is analysed, so that children exported
    /// in a later batch (other services, slower exporters) are there. 2 s covers the default
    /// 1 s schedule delay of the SDK batch processors with room to spare.
    pub grace_period: Duration,
    /// Read from configuration files written for earlier versions, and validated, but without
    /// effect: the analyzer keeps no rollups in memory any more, so a late span re-analyses its
    /// request whenever it arrives (until retention removes the trace).
    pub max_lateness: Duration,
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
    /// another may take them over. 60 s is far above one analysis commit (milliseconds to a
    /// second), so only a dead or stuck instance loses its claims.
    pub claim_lease: Duration,
    /// Detector thresholds.
    pub analysis: AnalysisConfig,
}

/// The regression finder: when a service sends a new `service.version`, each endpoint is compared
/// with the previous version once both have enough requests, and again as the new version's
/// traffic grows.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionConfig {
    /// How often the finder looks for versions due for an evaluation. 30 s: a regression is
    /// raised within a minute of the evidence for it, at the cost of one grouped count of the
    /// lookback's rollups; sketches are read only for endpoints due.
    pub interval: Duration,
    /// The warm-up: requests each version of an endpoint needs before it is evaluated at all.
    /// 50: the median's 95% interval then spans the middle 30% of the requests, narrow enough to
    /// tell a 20% change on typical spreads. The p95 decides only from 73 requests on each side,
    /// where its interval first exists.
    pub min_requests: u64,
    /// How far back versions and their traffic are read: one day covers a rollout and its
    /// predecessor's last day of traffic.
    pub lookback: Duration,
    /// A regression is p50 or p95 slower by both the ratio and the absolute amount, measured
    /// from the baseline's upper to the candidate's lower 95% bound.
    pub thresholds: Thresholds,
}

/// Who may use the listeners. An empty token list switches its check off; tokens are compared
/// in constant time and never logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    /// Bearer tokens accepted on OTLP/HTTP (401 otherwise) and OTLP/gRPC (UNAUTHENTICATED).
    pub ingest_tokens: Tokens,
    /// Tokens that may read the UI, the API and `/metrics` (bearer, or the password of HTTP
    /// basic auth with any user name).
    pub read_tokens: Tokens,
    /// Tokens that may also change state (`POST /api/v1/reload`); bearer only, because browsers
    /// re-send basic credentials on cross-site requests and a bearer header cannot be forged by a
    /// cross-site form.
    pub admin_tokens: Tokens,
}

impl AuthConfig {
    /// Whether the UI and API ask for credentials.
    pub fn ui_enabled(&self) -> bool {
        self.read_tokens.is_enabled() || self.admin_tokens.is_enabled()
    }
}

/// TLS for every listener: one certificate chain and key, PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// How long a client may take, so that slow or stalled clients (slow-loris) cannot hold
/// connections and memory forever.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutConfig {
    /// Time to send a request's headers (and to finish a TLS handshake). 10 s is generous for
    /// any real client and short enough that a trickling one is cut off quickly.
    pub header_read: Duration,
    /// Longest pause between two pieces of a request body. 30 s tolerates a congested link
    /// uploading a 20 MiB export; a client that stops sending is disconnected after it.
    pub body_read: Duration,
    /// Longest an OTLP/gRPC export may take from its headers to its answer, including the
    /// commit. 60 s: far above a healthy commit, so only stalled clients hit it.
    pub grpc_request: Duration,
    /// Longest a whole OTLP body may take to arrive, however steadily it trickles (`body_read`
    /// only bounds the pauses). 60 s carries a 20 MiB export over a link of 350 KB/s.
    pub body_total: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            grpc_request: Duration::from_secs(60),
            body_total: Duration::from_secs(60),
        }
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store.
    pub database_url: DatabaseUrl,
    /// Listeners.
    pub listen: ListenConfig,
    /// Ingest.
    pub ingest: IngestConfig,
    /// Analysis timing.
    pub pipeline: PipelineConfig,
    /// The regression finder.
    pub regression: RegressionConfig,
    /// Budgets, SLOs and webhooks.
    pub alerts: AlertConfig,
    /// Tokens for ingest, reading and administration.
    pub auth: AuthConfig,
    /// TLS on every listener, when configured.
    pub tls: Option<TlsConfig>,
    /// Client timeouts on every listener.
    pub timeouts: TimeoutConfig,
    /// Connection cap and idle timeout of every listener.
    pub connections: ConnectionConfig,
    /// Host names (or addresses) the UI answers to besides loopback and its listen address.
    pub allowed_hosts: Vec<String>,
    /// Allows listening beyond loopback without authentication (`--insecure`).
    pub insecure: bool,
    /// How long data is kept.
    pub retention: RetentionConfig,
    /// How the store commits.
    pub store: StoreSettings,
    /// What one page or API call may cost.
    pub reads: ReadLimits,
}

/// How long data is kept: spans (blocks, their index, request rows) and rollups separately,
/// because rollups are small and answer long-range questions spans cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Spans and request rows older than this go. A week covers a release cycle's traces.
    pub spans: Duration,
    /// Minute and hourly rollups older than this go. 90 days cover a quarter's SLO windows.
    pub rollups: Duration,
    /// How often retention runs. Hourly: day partitions need no more, and SQLite batches stay small.
    pub interval: Duration,
}

/// Alerting: the rules from the config file, and the file to re-read on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// The rules in force at start.
    pub rules: AlertRules,
    /// Re-read on SIGHUP and `POST /api/v1/reload`; without it there is nothing to reload.
    pub config_file: Option<PathBuf>,
}

/// The flags `serve` shares with `demo`: each one is optional so a config file or the
/// environment can supply it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeFlags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A `sqlite:` URL or file path (default `bottleneck.db`), or a `postgres://` URL.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Address of the UI and JSON API (default 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the OTLP/HTTP receiver (default 127.0.0.1:4318).
    #[arg(long, value_name = "ADDR")]
    pub otlp_http: Option<SocketAddr>,
    /// Address of the OTLP/gRPC receiver (default 127.0.0.1:4317).
    #[arg(long, value_name = "ADDR")]
    pub otlp_grpc: Option<SocketAddr>,
    /// Allow listening on a non-loopback address without tokens for that listener.
    #[arg(long)]
    pub insecure: bool,
}

/// The TOML file's shape. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    otlp_http: Option<SocketAddr>,
    otlp_grpc: Option<SocketAddr>,
    #[serde(default)]
    ingest: FileIngest,
    #[serde(default)]
    analysis: FileAnalysis,
    #[serde(default)]
    regression: FileRegression,
    #[serde(default)]
    retention: FileRetention,
    alerts: Option<AlertSettings>,
    #[serde(default)]
    budget: Vec<Budget>,
    #[serde(default)]
    slo: Vec<Slo>,
    #[serde(default)]
    webhook: Vec<Webhook>,
    #[serde(default)]
    auth: FileAuth,
    tls: Option<FileTls>,
    #[serde(default)]
    timeouts: FileTimeouts,
    #[serde(default)]
    connections: ConnectionConfig,
    allowed_hosts: Option<Vec<String>>,
    store: Option<StoreSettings>,
    #[serde(default)]
    reads: ReadLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    ingest_tokens: Option<Vec<String>>,
    read_tokens: Option<Vec<String>>,
    admin_tokens: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    header_read: Option<String>,
    body_read: Option<String>,
    grpc_request: Option<String>,
    body_total: Option<String>,
}

impl FileConfig {
    /// The alerting part of the file.
    pub fn alert_rules(&self) -> AlertRules {
        AlertRules {
            settings: self.alerts.clone().unwrap_or_default(),
            budgets: self.budget.clone(),
            slos: self.slo.clone(),
            webhooks: self.webhook.clone(),
        }
    }

    /// The analysis thresholds of the `[analysis]` table, defaults where it says nothing.
    pub fn analysis_config(&self) -> AnalysisConfig {
        self.analysis.config()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIngest {
    queue_capacity: Option<usize>,
    max_body_bytes: Option<usize>,
    max_decoded_body_bytes: Option<usize>,
    max_inflation_ratio: Option<usize>,
    max_bytes_in_flight: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAnalysis {
    enabled: Option<bool>,
    grace_period: Option<String>,
    max_lateness: Option<String>,
    max_endpoints_per_service: Option<usize>,
    max_services: Option<usize>,
    max_versions_per_service: Option<usize>,
    max_resources: Option<usize>,
    max_operations_per_rollup: Option<usize>,
    max_clock_skew: Option<String>,
    claim_lease: Option<String>,
    n_plus_one_min_calls: Option<u32>,
    min_saving_ms: Option<f64>,
    slow_query_ms: Option<f64>,
    cpu_hotspot_share: Option<f64>,
    wait_share: Option<f64>,
    untraced_share: Option<f64>,
    gap_min_ms: Option<f64>,
    noise_floor_ms: Option<f64>,
    noise_floor_share: Option<f64>,
}

impl FileAnalysis {
    fn config(&self) -> AnalysisConfig {
        let defaults = AnalysisConfig::default();
        AnalysisConfig {
            n_plus_one_min_calls: self
                .n_plus_one_min_calls
                .unwrap_or(defaults.n_plus_one_min_calls),
            min_saving_ns: self.min_saving_ms.map_or(defaults.min_saving_ns, ms_to_ns),
            slow_query_ns: self.slow_query_ms.map_or(defaults.slow_query_ns, ms_to_ns),
            cpu_hotspot_share: self.cpu_hotspot_share.unwrap_or(defaults.cpu_hotspot_share),
            wait_share: self.wait_share.unwrap_or(defaults.wait_share),
            untraced_share: self.untraced_share.unwrap_or(defaults.untraced_share),
            gap_min_ns: self.gap_min_ms.map_or(defaults.gap_min_ns, ms_to_ns),
            noise_floor_ns: self
                .noise_floor_ms
                .map_or(defaults.noise_floor_ns, ms_to_ns),
            noise_floor_share: self.noise_floor_share.unwrap_or(defaults.noise_floor_share),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    spans: Option<String>,
    rollups: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRegression {
    interval: Option<String>,
    min_requests: Option<u64>,
    lookback: Option<String>,
    min_increase_ratio: Option<f64>,
    min_increase_ms: Option<f64>,
}

/// Reads a TOML config file; errors name the file and the line.
pub fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// Parses TOML config text; errors name the line.
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

/// Reads the alerting part of a config file, for `check` and for reloads.
pub fn read_alert_rules(path: &Path) -> anyhow::Result<AlertRules> {
    Ok(read_file(path)?.alert_rules())
}

/// The environment variables Bottleneck reads, for `--help` and the README.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("BOTTLENECK_CONFIG", "TOML configuration file"),
    (
        "BOTTLENECK_DATABASE_URL",
        "sqlite: URL, file path or postgres:// URL",
    ),
    ("BOTTLENECK_LISTEN", "UI and API address"),
    ("BOTTLENECK_OTLP_HTTP", "OTLP/HTTP address"),
    ("BOTTLENECK_OTLP_GRPC", "OTLP/gRPC address"),
    (
        "BOTTLENECK_INGEST_TOKENS",
        "comma-separated bearer tokens accepted for OTLP ingest",
    ),
    (
        "BOTTLENECK_READ_TOKENS",
        "comma-separated tokens that may read the UI and API",
    ),
    (
        "BOTTLENECK_ADMIN_TOKENS",
        "comma-separated tokens that may also reload",
    ),
    ("BOTTLENECK_TLS_CERT_FILE", "PEM certificate chain for TLS"),
    ("BOTTLENECK_TLS_KEY_FILE", "PEM private key for TLS"),
    (
        "BOTTLENECK_ALLOWED_HOSTS",
        "comma-separated host names the UI answers to besides loopback",
    ),
];

fn env_tokens(name: &str) -> Option<Vec<String>> {
    env(name).map(|value| value.split(',').map(str::to_owned).collect())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn env_addr(name: &str) -> anyhow::Result<Option<SocketAddr>> {
    env(name)
        .map(|value| {
            value
                .parse()
                .with_context(|| format!("{name}={value:?} is not an address"))
        })
        .transpose()
}

fn duration(text: &str, what: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("{what} {text:?} is not a duration (e.g. \"2s\")"))
}

fn ms_to_ns(ms: f64) -> u64 {
    (ms * 1e6).max(0.0) as u64
}

impl Config {
    /// Resolves flags, the config file and the environment into one `Config`.
    pub fn resolve(flags: &ServeFlags) -> anyhow::Result<Config> {
        let config_path = flags
            .config
            .clone()
            .or_else(|| env("BOTTLENECK_CONFIG").map(PathBuf::from));
        let file = match &config_path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut config = Self::from_parts(flags, file)?;
        config.alerts.config_file = config_path;
        Ok(config)
    }

    /// Merges the three sources; `file` is what the config file said (or nothing).
    pub fn from_parts(flags: &ServeFlags, file: FileConfig) -> anyhow::Result<Config> {
        let alerts = AlertConfig {
            rules: file.alert_rules(),
            config_file: None,
        };
        let database_url = flags
            .database_url
            .clone()
            .or(file.database_url)
            .or_else(|| env("BOTTLENECK_DATABASE_URL"))
            .unwrap_or_else(|| "bottleneck.db".to_owned());
        let listen = ListenConfig {
            ui: flags
                .listen
                .or(file.listen)
                .or(env_addr("BOTTLENECK_LISTEN")?)
                .unwrap_or(([127, 0, 0, 1], 8080).into()),
            otlp_http: flags
                .otlp_http
                .or(file.otlp_http)
                .or(env_addr("BOTTLENECK_OTLP_HTTP")?)
                .unwrap_or(([127, 0, 0, 1], 4318).into()),
            otlp_grpc: flags
                .otlp_grpc
                .or(file.otlp_grpc)
                .or(env_addr("BOTTLENECK_OTLP_GRPC")?)
                .unwrap_or(([127, 0, 0, 1], 4317).into()),
        };
        let max_body_bytes = file.ingest.max_body_bytes.unwrap_or(20 * 1024 * 1024);
        let max_decoded_body_bytes = file
            .ingest
            .max_decoded_body_bytes
            .unwrap_or(max_body_bytes.saturating_mul(4));
        let ingest = IngestConfig {
            queue_capacity: file.ingest.queue_capacity.unwrap_or(64),
            max_body_bytes,
            max_decoded_body_bytes,
            max_inflation_ratio: file
                .ingest
                .max_inflation_ratio
                .unwrap_or(DEFAULT_MAX_INFLATION_RATIO)
                .max(1),
            max_bytes_in_flight: file
                .ingest
                .max_bytes_in_flight
                .unwrap_or(max_decoded_body_bytes.saturating_mul(2)),
        };
        if ingest.max_bytes_in_flight < ingest.max_decoded_body_bytes.max(max_body_bytes) {
            bail!(
                "ingest.max_bytes_in_flight ({}) must hold at least one body of the largest size \
                 allowed ({} bytes)",
                ingest.max_bytes_in_flight,
                ingest.max_decoded_body_bytes.max(max_body_bytes)
            );
        }
        let analysis = file.analysis.config();
        let analysis_file = file.analysis;
        let pipeline = PipelineConfig {
            analysis_enabled: analysis_file.enabled.unwrap_or(true),
            grace_period: analysis_file
                .grace_period
                .map(|text| duration(&text, "analysis.grace_period"))
                .transpose()?
                .unwrap_or(Duration::from_secs(2)),
            max_lateness: analysis_file
                .max_lateness
                .map(|text| duration(&text, "analysis.max_lateness"))
                .transpose()?
                .unwrap_or(Duration::from_secs(300)),
            max_endpoints_per_service: analysis_file.max_endpoints_per_service.unwrap_or(1000),
            max_services: (analysis_file.max_services).unwrap_or(intern::DEFAULT_MAX_SERVICES),
            max_versions_per_service: (analysis_file.max_versions_per_service)
                .unwrap_or(intern::DEFAULT_MAX_VERSIONS_PER_SERVICE),
            max_resources: (analysis_file.max_resources).unwrap_or(intern::DEFAULT_MAX_RESOURCES),
            max_operations_per_rollup: (analysis_file.max_operations_per_rollup)
                .unwrap_or(operation_cap::DEFAULT_MAX_OPERATIONS_PER_ROLLUP),
            max_clock_skew: (analysis_file.max_clock_skew)
                .map(|text| duration(&text, "analysis.max_clock_skew"))
                .transpose()?
                .unwrap_or(skew::DEFAULT_MAX_CLOCK_SKEW),
            claim_lease: analysis_file
                .claim_lease
                .map(|text| duration(&text, "analysis.claim_lease"))
                .transpose()?
                .unwrap_or(Duration::from_secs(60)),
            analysis,
        };
        let default_thresholds = Thresholds::default();
        let regression_file = file.regression;
        let regression = RegressionConfig {
            interval: regression_file
                .interval
                .map(|text| duration(&text, "regression.interval"))
                .transpose()?
                .unwrap_or(Duration::from_secs(30)),
            min_requests: regression_file.min_requests.unwrap_or(50).max(2),
            lookback: regression_file
                .lookback
                .map(|text| duration(&text, "regression.lookback"))
                .transpose()?
                .unwrap_or(Duration::from_secs(24 * 3600)),
            thresholds: Thresholds {
                min_ratio: regression_file
                    .min_increase_ratio
                    .unwrap_or(default_thresholds.min_ratio)
                    .max(0.0),
                min_delta_ns: regression_file
                    .min_increase_ms
                    .map_or(default_thresholds.min_delta_ns, ms_to_ns),
            },
        };
        let retention_file = file.retention;
        let retention = RetentionConfig {
            spans: retention_file
                .spans
                .map(|text| duration(&text, "retention.spans"))
                .transpose()?
                .unwrap_or(Duration::from_secs(7 * 86_400)),
            rollups: retention_file
                .rollups
                .map(|text| duration(&text, "retention.rollups"))
                .transpose()?
                .unwrap_or(Duration::from_secs(90 * 86_400)),
            interval: retention_file
                .interval
                .map(|text| duration(&text, "retention.interval"))
                .transpose()?
                .unwrap_or(Duration::from_secs(3_600)),
        };
        let auth = AuthConfig {
            ingest_tokens: Tokens::new(
                file.auth
                    .ingest_tokens
                    .or_else(|| env_tokens("BOTTLENECK_INGEST_TOKENS"))
                    .unwrap_or_default(),
            ),
            read_tokens: Tokens::new(
                file.auth
                    .read_tokens
                    .or_else(|| env_tokens("BOTTLENECK_READ_TOKENS"))
                    .unwrap_or_default(),
            ),
            admin_tokens: Tokens::new(
                file.auth
                    .admin_tokens
                    .or_else(|| env_tokens("BOTTLENECK_ADMIN_TOKENS"))
                    .unwrap_or_default(),
            ),
        };
        let tls = match file.tls {
            Some(tls) => Some(TlsConfig {
                cert_file: tls.cert_file,
                key_file: tls.key_file,
            }),
            None => match (
                env("BOTTLENECK_TLS_CERT_FILE"),
                env("BOTTLENECK_TLS_KEY_FILE"),
            ) {
                (Some(cert), Some(key)) => Some(TlsConfig {
                    cert_file: cert.into(),
                    key_file: key.into(),
                }),
                (None, None) => None,
                _ => bail!(
                    "BOTTLENECK_TLS_CERT_FILE and BOTTLENECK_TLS_KEY_FILE must be set together"
                ),
            },
        };
        let default_timeouts = TimeoutConfig::default();
        let timeout = |text: Option<String>, what: &str, default: Duration| {
            text.map(|text| duration(&text, what))
                .transpose()
                .map(|value| value.unwrap_or(default))
        };
        let timeouts = TimeoutConfig {
            header_read: timeout(
                file.timeouts.header_read,
                "timeouts.header_read",
                default_timeouts.header_read,
            )?,
            body_read: timeout(
                file.timeouts.body_read,
                "timeouts.body_read",
                default_timeouts.body_read,
            )?,
            grpc_request: timeout(
                file.timeouts.grpc_request,
                "timeouts.grpc_request",
                default_timeouts.grpc_request,
            )?,
            body_total: timeout(
                file.timeouts.body_total,
                "timeouts.body_total",
                default_timeouts.body_total,
            )?,
        };
        let config = Config {
            database_url: DatabaseUrl::parse(&database_url)?,
            listen,
            ingest,
            pipeline,
            regression,
            alerts,
            retention,
            auth,
            tls,
            timeouts,
            connections: file.connections,
            allowed_hosts: file
                .allowed_hosts
                .or_else(|| env_tokens("BOTTLENECK_ALLOWED_HOSTS"))
                .unwrap_or_default(),
            insecure: flags.insecure,
            reads: file.reads,
            store: match file.store {
                Some(store) => store,
                None => StoreSettings {
                    sqlite_synchronous: env("BOTTLENECK_SQLITE_SYNCHRONOUS")
                        .map(|text| text.parse().map_err(anyhow::Error::msg))
                        .transpose()?
                        .unwrap_or_default(),
                },
            },
        };
        let exposed = config.exposed_without_auth();
        if !exposed.is_empty() && !config.insecure {
            bail!(
                "the {} listener(s) would accept anyone on a non-loopback address: configure \
                 tokens ([auth] ingest_tokens, read_tokens) or pass --insecure",
                exposed.join(", ")
            );
        }
        Ok(config)
    }

    /// The listeners bound beyond loopback that check tokens over plain TCP, where anyone on
    /// the path can read a token and replay it.
    pub fn tokens_in_clear(&self) -> Vec<&'static str> {
        if self.tls.is_some() {
            return Vec::new();
        }
        self.beyond_loopback(true)
    }

    /// The listeners bound beyond loopback that check no token.
    pub fn exposed_without_auth(&self) -> Vec<&'static str> {
        self.beyond_loopback(false)
    }

    /// The listeners bound beyond loopback that check tokens (`authenticated`) or not.
    fn beyond_loopback(&self, authenticated: bool) -> Vec<&'static str> {
        let ingest = self.auth.ingest_tokens.is_enabled();
        [
            ("UI", self.listen.ui, self.auth.ui_enabled()),
            ("OTLP/HTTP", self.listen.otlp_http, ingest),
            ("OTLP/gRPC", self.listen.otlp_grpc, ingest),
        ]
        .into_iter()
        .filter(|(_, addr, checks)| !addr.ip().is_loopback() && *checks == authenticated)
        .map(|(name, _, _)| name)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("bottleneck.db").unwrap(),
            DatabaseUrl::Sqlite("bottleneck.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:data.db?mode=rwc").unwrap(),
            DatabaseUrl::Sqlite("data.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@h/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(DatabaseUrl::parse("sqlite:").is_err());
    }

    #[test]
    fn database_urls_are_shown_without_their_password() {
        let shown = |text: &str| DatabaseUrl::parse(text).unwrap().to_string();
        assert_eq!(
            shown("postgres://app:s3cr@t@db.internal:5432/traces?sslmode=require"),
            "postgres://app:***@db.internal:5432/traces?sslmode=require"
        );
        assert_eq!(
            shown("postgresql://db/traces?user=app&password=s3cret"),
            "postgresql://db/traces?user=app&password=***"
        );
        assert_eq!(
            shown("postgres://app@db/traces"),
            "postgres://app@db/traces"
        );
        assert_eq!(shown("sqlite:data.db"), "data.db");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\notlp_http = \"127.0.0.1:9001\"").unwrap();
        let flags = ServeFlags {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        let config = Config::from_parts(&flags, file).unwrap();
        assert_eq!(config.listen.ui.port(), 7000);
        assert_eq!(config.listen.otlp_http.port(), 9001);
    }

    #[test]
    fn non_loopback_without_tokens_needs_insecure() {
        let flags = ServeFlags {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..Default::default()
        };
        let err = Config::from_parts(&flags, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("UI listener"), "{err}");
        assert!(err.to_string().contains("--insecure"), "{err}");
        let insecure = ServeFlags {
            insecure: true,
            ..flags.clone()
        };
        let config = Config::from_parts(&insecure, FileConfig::default()).unwrap();
        assert_eq!(config.exposed_without_auth(), ["UI"]);
        let file = parse_file("[auth]\nread_tokens = [\"r\"]\n").unwrap();
        let config = Config::from_parts(&flags, file).unwrap();
        assert!(config.exposed_without_auth().is_empty());
    }

    #[test]
    fn auth_tls_and_timeouts_from_the_file() {
        let file = parse_file(
            "[auth]\ningest_tokens = [\"i1\", \"i2\"]\nadmin_tokens = [\"a\"]\n\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n\n[timeouts]\nheader_read = \"2s\"\nbody_read = \"3s\"\n",
        )
        .unwrap();
        let config = Config::from_parts(&ServeFlags::default(), file).unwrap();
        assert!(config.auth.ingest_tokens.accepts("i2"));
        assert!(!config.auth.read_tokens.is_enabled());
        assert!(config.auth.ui_enabled());
        assert_eq!(
            format!("{:?}", config.auth.admin_tokens),
            "Tokens(1 redacted)"
        );
        assert_eq!(config.tls.unwrap().key_file, PathBuf::from("k.pem"));
        assert_eq!(config.timeouts.header_read, Duration::from_secs(2));
        assert_eq!(config.timeouts.body_read, Duration::from_secs(3));
        assert_eq!(config.timeouts.grpc_request, Duration::from_secs(60));
        assert_eq!(config.timeouts.body_total, Duration::from_secs(60));
    }

    #[test]
    fn bounds_on_bodies_and_connections_from_the_file() {
        let config = Config::from_parts(&ServeFlags::default(), FileConfig::default()).unwrap();
        assert_eq!(config.ingest.max_inflation_ratio, 100);
        assert_eq!(config.ingest.max_bytes_in_flight, 160 << 20);
        assert_eq!(config.connections, ConnectionConfig::default());
        assert!(config.allowed_hosts.is_empty());
        let file = parse_file(
            "allowed_hosts = [\"bottleneck.internal\"]\n\n[ingest]\nmax_inflation_ratio = 20\nmax_bytes_in_flight = 100000000\n\n[timeouts]\nbody_total = \"5s\"\n\n[connections]\nmax_per_listener = 64\nidle_timeout = \"2m\"\n",
        )
        .unwrap();
        let config = Config::from_parts(&ServeFlags::default(), file).unwrap();
        assert_eq!(config.ingest.max_inflation_ratio, 20);
        assert_eq!(config.ingest.max_bytes_in_flight, 100_000_000);
        assert_eq!(config.timeouts.body_total, Duration::from_secs(5));
        assert_eq!(config.connections.max_per_listener, 64);
        assert_eq!(config.connections.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.allowed_hosts, ["bottleneck.internal"]);
        let err = parse_file("[connections]\nidle_timeout = \"soon\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("not a duration"), "{err:#}");
        let too_small = parse_file("[ingest]\nmax_bytes_in_flight = 1000\n").unwrap();
        let err = Config::from_parts(&ServeFlags::default(), too_small).unwrap_err();
        assert!(err.to_string().contains("max_bytes_in_flight"), "{err}");
    }

    #[test]
    fn regression_settings_from_the_file() {
        let file: FileConfig = toml::from_str(
            "[regression]\ninterval = \"5s\"\nmin_requests = 80\nmin_increase_ratio = 0.5\nmin_increase_ms = 10\n",
        )
        .unwrap();
        let config = Config::from_parts(&ServeFlags::default(), file).unwrap();
        assert_eq!(config.regression.interval, Duration::from_secs(5));
        assert_eq!(config.regression.min_requests, 80);
        assert_eq!(config.regression.lookback, Duration::from_secs(86_400));
        assert_eq!(config.regression.thresholds.min_ratio, 0.5);
        assert_eq!(config.regression.thresholds.min_delta_ns, 10_000_000);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nlisten_addr = 3\n")
            .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    fn rules(text: &str) -> AlertRules {
        parse_file(text).expect("valid config").alert_rules()
    }

    #[track_caller]
    fn error(text: &str) -> String {
        format!("{:#}", parse_file(text).expect_err("invalid config"))
    }

    #[test]
    fn budget_tables_with_defaults_and_globs() {
        use crate::alert::budget::Metric;
        let rules = rules(
            r#"
[alerts]
interval = "30s"

[[budget]]
service = "auth"
endpoint = "POST /login"
p95_ms = 200

[[budget]]
service = "auth"
endpoint = "GET /users/*"
db_calls_per_request = 8
window = "10m"
for = "2m"
min_requests = 50
"#,
        );
        assert_eq!(rules.settings.interval, Duration::from_secs(30));
        assert_eq!(rules.budgets.len(), 2);
        let login = &rules.budgets[0];
        assert_eq!(login.metric, Metric::P95);
        assert_eq!(login.limit, 200.0);
        assert_eq!(login.window, Duration::from_secs(300));
        assert_eq!(login.hold, Duration::ZERO);
        assert_eq!(login.min_requests, 20);
        let users = &rules.budgets[1];
        assert_eq!(users.metric, Metric::DbCallsPerRequest);
        assert_eq!(users.window, Duration::from_secs(600));
        assert_eq!(users.hold, Duration::from_secs(120));
        assert_eq!(users.min_requests, 50);
        assert!(users.endpoint.matches("GET /users/{id}"));
        assert!(!users.endpoint.matches("POST /users"));
    }

    #[test]
    fn every_metric_key_is_accepted() {
        use crate::alert::budget::Metric;
        for metric in Metric::ALL {
            let text = format!(
                "[[budget]]\nservice = \"a\"\nendpoint = \"b\"\n{} = 1.5\n",
                metric.key()
            );
            assert_eq!(rules(&text).budgets[0].metric, metric, "{text}");
        }
    }

    #[test]
    fn slo_tables_default_to_the_workbook_windows() {
        let rules = rules(
            r#"
[[slo]]
service = "auth"
endpoint = "POST /login"
objective = 0.99
threshold_ms = 300

[[slo]]
service = "*"
endpoint = "*"
objective = 0.999
threshold_ms = 1000
period = "7d"

[[slo.burn]]
severity = "page"
long_window = "30m"
short_window = "2m"
factor = 10
"#,
        );
        let login = &rules.slos[0];
        assert_eq!(login.period, Duration::from_secs(30 * 86_400));
        let pairs: Vec<_> = login
            .burn
            .iter()
            .map(|b| {
                (
                    b.severity.as_str(),
                    b.long.as_secs(),
                    b.short.as_secs(),
                    b.factor,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [("page", 3600, 300, 14.4), ("ticket", 21_600, 1800, 6.0)]
        );
        let custom = &rules.slos[1];
        assert_eq!(custom.burn.len(), 1);
        assert_eq!(custom.burn[0].long, Duration::from_secs(1800));
        assert_eq!(custom.burn[0].factor, 10.0);
    }

    #[test]
    fn webhook_tables() {
        use crate::alert::budget::WebhookFormat;
        let rules = rules(
            r#"
[[webhook]]
url = "http://127.0.0.1:9093/api/hook"

[[webhook]]
url = "https://alerts.example.com/x"
format = "alertmanager"
"#,
        );
        assert_eq!(rules.webhooks[0].format, WebhookFormat::Json);
        assert_eq!(rules.webhooks[1].format, WebhookFormat::Alertmanager);
    }

    #[test]
    fn alert_config_errors_name_the_line() {
        let cases = [
            (
                "[[budget]]\nservice = \"auth\"\nendpoint = \"POST /login\"\n",
                "names no metric",
            ),
            (
                "listen = \"127.0.0.1:1\"\n\n[[budget]]\nservice = \"auth\"\nendpoint = \"x\"\np95_ms = 1\np99_ms = 2\n",
                "names 2 metrics (p95_ms, p99_ms)",
            ),
            (
                "[[budget]]\nservice = \"auth\"\nendpoint = \"x\"\np95_ms = 200\nwindow = \"five minutes\"\n",
                "window \"five minutes\" is not a duration",
            ),
            (
                "[[budget]]\nservice = \"auth\"\nendpoint = \"x\"\np95_ms = 200\nwindo = \"5m\"\n",
                "unknown field `windo`",
            ),
            (
                "[[slo]]\nservice = \"auth\"\nendpoint = \"x\"\nobjective = 99\nthreshold_ms = 300\n",
                "objective must be between 0 and 1",
            ),
            (
                "[[webhook]]\nurl = \"ftp://x\"\n",
                "must be an http:// or https:// URL",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nformat = \"slack\"\n",
                "unknown variant `slack`",
            ),
            (
                "[alerts]\ninterval = \"0s\"\n",
                "interval must be longer than zero",
            ),
        ];
        for (text, message) in cases {
            let err = error(text);
            assert!(err.contains(message), "{message:?} not in:\n{err}");
            assert!(err.contains("line "), "no line in:\n{err}");
        }
        // The error points at the offending table's line.
        let err = error(
            "listen = \"127.0.0.1:1\"\n\n[[budget]]\nservice = \"auth\"\nendpoint = \"x\"\np95_ms = 1\np99_ms = 2\n",
        );
        assert!(err.contains("line 3"), "{err}");
    }
}
