//! Every setting, resolved once in `main` from three sources, in this order of precedence:
//! command-line flags, then the TOML file given with `--config`, then `BOTTLENECK_*` environment
//! variables, then the built-in default.
//!
//! Each subsystem owns its file section, with its defaults; this module only layers flags and the
//! environment over the file and assembles `Config`.
//!
//! Invariant: the only module that reads environment variables. Subsystems get their own
//! section and never see the whole `Config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use collector::auth::Tokens;
use serde::Deserialize;

use crate::alert::budget::{AlertRules, AlertSettings, Budget, Slo, Webhook};
use crate::analysis::AnalysisConfig;
use crate::listener::settings::{
    AuthSection, DEFAULT_OTLP_GRPC_ADDR, DEFAULT_OTLP_HTTP_ADDR, DEFAULT_UI_ADDR,
};
use crate::pipeline::settings::IngestSection;
use crate::store::settings::DEFAULT_DATABASE_URL;

pub use crate::listener::settings::{
    AuthConfig, ConnectionConfig, ListenConfig, TimeoutConfig, TlsConfig,
};
pub use crate::pipeline::settings::{IngestConfig, PipelineConfig};
pub use crate::regress::settings::RegressionConfig;
pub use crate::store::settings::{DatabaseUrl, RetentionConfig, StoreSettings};
pub use crate::web::read_limits::ReadLimits;

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

/// The TOML file's shape: every key is optional, and an unknown key is an error naming its line.
/// A key that a flag or a variable can also set is an `Option` (here, or in its section), so
/// the layering can tell whether the file set it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    otlp_http: Option<SocketAddr>,
    otlp_grpc: Option<SocketAddr>,
    ingest: IngestSection,
    analysis: PipelineConfig,
    regression: RegressionConfig,
    retention: RetentionConfig,
    alerts: AlertSettings,
    budget: Vec<Budget>,
    slo: Vec<Slo>,
    webhook: Vec<Webhook>,
    auth: AuthSection,
    tls: Option<TlsConfig>,
    timeouts: TimeoutConfig,
    connections: ConnectionConfig,
    allowed_hosts: Option<Vec<String>>,
    store: Option<StoreSettings>,
    reads: ReadLimits,
}

impl FileConfig {
    /// The alerting part of the file.
    pub fn alert_rules(&self) -> AlertRules {
        AlertRules {
            settings: self.alerts.clone(),
            budgets: self.budget.clone(),
            slos: self.slo.clone(),
            webhooks: self.webhook.clone(),
        }
    }

    /// The analysis thresholds of the `[analysis]` table, defaults where it says nothing.
    pub fn analysis_config(&self) -> AnalysisConfig {
        self.analysis.analysis.clone()
    }
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
    (
        "BOTTLENECK_SQLITE_SYNCHRONOUS",
        "full or normal: when an SQLite commit counts as done",
    ),
    ("BOTTLENECK_LOG", "log filter, e.g. debug (default info)"),
];

/// The log filter's directives from `BOTTLENECK_LOG`, if set.
pub fn log_filter() -> Option<String> {
    std::env::var("BOTTLENECK_LOG").ok()
}

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
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let listen = ListenConfig {
            ui: flags
                .listen
                .or(file.listen)
                .or(env_addr("BOTTLENECK_LISTEN")?)
                .unwrap_or(DEFAULT_UI_ADDR),
            otlp_http: flags
                .otlp_http
                .or(file.otlp_http)
                .or(env_addr("BOTTLENECK_OTLP_HTTP")?)
                .unwrap_or(DEFAULT_OTLP_HTTP_ADDR),
            otlp_grpc: flags
                .otlp_grpc
                .or(file.otlp_grpc)
                .or(env_addr("BOTTLENECK_OTLP_GRPC")?)
                .unwrap_or(DEFAULT_OTLP_GRPC_ADDR),
        };
        let tokens = |file: Option<Vec<String>>, variable: &str| {
            Tokens::new(file.or_else(|| env_tokens(variable)).unwrap_or_default())
        };
        let auth = AuthConfig {
            ingest_tokens: tokens(file.auth.ingest_tokens, "BOTTLENECK_INGEST_TOKENS"),
            read_tokens: tokens(file.auth.read_tokens, "BOTTLENECK_READ_TOKENS"),
            admin_tokens: tokens(file.auth.admin_tokens, "BOTTLENECK_ADMIN_TOKENS"),
        };
        let tls = match (
            file.tls,
            env("BOTTLENECK_TLS_CERT_FILE"),
            env("BOTTLENECK_TLS_KEY_FILE"),
        ) {
            (Some(tls), _, _) => Some(tls),
            (None, Some(cert), Some(key)) => Some(TlsConfig {
                cert_file: cert.into(),
                key_file: key.into(),
            }),
            (None, None, None) => None,
            _ => bail!("BOTTLENECK_TLS_CERT_FILE and BOTTLENECK_TLS_KEY_FILE must be set together"),
        };
        let store = match file.store {
            Some(store) => store,
            None => StoreSettings {
                sqlite_synchronous: env("BOTTLENECK_SQLITE_SYNCHRONOUS")
                    .map(|text| text.parse().map_err(anyhow::Error::msg))
                    .transpose()?
                    .unwrap_or_default(),
            },
        };
        let config = Config {
            database_url: DatabaseUrl::parse(&database_url)?,
            listen,
            ingest: file.ingest.resolve()?,
            pipeline: file.analysis,
            regression: file.regression,
            alerts,
            retention: file.retention,
            auth,
            tls,
            timeouts: file.timeouts,
            connections: file.connections,
            allowed_hosts: file
                .allowed_hosts
                .or_else(|| env_tokens("BOTTLENECK_ALLOWED_HOSTS"))
                .unwrap_or_default(),
            insecure: flags.insecure,
            reads: file.reads,
            store,
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
        self.listen.beyond_loopback(&self.auth, true)
    }

    /// The listeners bound beyond loopback that check no token.
    pub fn exposed_without_auth(&self) -> Vec<&'static str> {
        self.listen.beyond_loopback(&self.auth, false)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
    fn unknown_keys_name_the_line() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nlisten_addr = 3\n")
            .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn max_lateness_is_refused_like_any_unknown_key() {
        let err =
            parse_file("[analysis]\ngrace_period = \"1s\"\nmax_lateness = \"5m\"\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_lateness`"),
            "{err}"
        );
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
