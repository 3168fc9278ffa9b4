//! What every listener is configured with: its address, who may use it (`[auth]`, `[tls]`), how
//! long a client may take (`[timeouts]`) and how many connections it serves (`[connections]`).
//!
//! Invariant: plain values read once at start; tokens never appear in `Debug` output.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use collector::auth::Tokens;
use serde::Deserialize;

use crate::time::duration_text;

/// The UI and JSON API listen on loopback unless told otherwise, as every listener does.
pub const DEFAULT_UI_ADDR: SocketAddr = loopback(8080);
/// The OTLP/HTTP port the OpenTelemetry SDKs export to by default.
pub const DEFAULT_OTLP_HTTP_ADDR: SocketAddr = loopback(4318);
/// The OTLP/gRPC port the OpenTelemetry SDKs export to by default.
pub const DEFAULT_OTLP_GRPC_ADDR: SocketAddr = loopback(4317);

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
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

impl ListenConfig {
    /// The listeners bound beyond loopback that check tokens (`authenticated`) or not.
    pub fn beyond_loopback(&self, auth: &AuthConfig, authenticated: bool) -> Vec<&'static str> {
        let ingest = auth.ingest_tokens.is_enabled();
        [
            ("UI", self.ui, auth.ui_enabled()),
            ("OTLP/HTTP", self.otlp_http, ingest),
            ("OTLP/gRPC", self.otlp_grpc, ingest),
        ]
        .into_iter()
        .filter(|(_, addr, checks)| !addr.ip().is_loopback() && *checks == authenticated)
        .map(|(name, _, _)| name)
        .collect()
    }
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

/// `[auth]` as the file writes it: a list left out falls back to its environment variable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `ingest_tokens`.
    pub ingest_tokens: Option<Vec<String>>,
    /// `read_tokens`.
    pub read_tokens: Option<Vec<String>>,
    /// `admin_tokens`.
    pub admin_tokens: Option<Vec<String>>,
}

/// TLS for every listener: one certificate chain and key, PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// 10 s to send the headers is generous for any real client and short enough that a trickling
/// one is cut off quickly.
pub const DEFAULT_HEADER_READ: Duration = Duration::from_secs(10);
/// 30 s of silence in a body tolerates a congested link uploading a 20 MiB export.
pub const DEFAULT_BODY_READ: Duration = Duration::from_secs(30);
/// 60 s for an export is far above a healthy commit, so only stalled clients hit it.
pub const DEFAULT_GRPC_REQUEST: Duration = Duration::from_secs(60);
/// 60 s carries a 20 MiB export over a link of 350 KB/s.
pub const DEFAULT_BODY_TOTAL: Duration = Duration::from_secs(60);

/// How long a client may take (`[timeouts]`), so that slow or stalled clients (slow-loris)
/// cannot hold connections and memory forever.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Time to send a request's headers (and to finish a TLS handshake).
    #[serde(deserialize_with = "duration_text")]
    pub header_read: Duration,
    /// Longest pause between two pieces of a request body; a client that stops sending is
    /// disconnected after it.
    #[serde(deserialize_with = "duration_text")]
    pub body_read: Duration,
    /// Longest an OTLP/gRPC export may take from its headers to its answer, including the commit.
    #[serde(deserialize_with = "duration_text")]
    pub grpc_request: Duration,
    /// Longest a whole OTLP body may take to arrive, however steadily it trickles (`body_read`
    /// only bounds the pauses).
    #[serde(deserialize_with = "duration_text")]
    pub body_total: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            header_read: DEFAULT_HEADER_READ,
            body_read: DEFAULT_BODY_READ,
            grpc_request: DEFAULT_GRPC_REQUEST,
            body_total: DEFAULT_BODY_TOTAL,
        }
    }
}

/// Connections each listener serves at once: far more than the exporters and browsers of one
/// deployment keep open, and three listeners' worth stays well under the common 1024-descriptor
/// limit, leaving room for the store and outgoing webhooks.
pub const DEFAULT_MAX_CONNECTIONS_PER_LISTENER: usize = 256;

/// How long a connection may stay open with no request in flight. Longer than the export
/// interval of the OpenTelemetry SDKs' batch processors (1 to 5 s), so a steady exporter keeps its
/// connection; short enough that abandoned ones give their descriptors back within a minute.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection limits of every listener (`[connections]` in the config file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Connections one listener serves at once; new ones wait for a free slot.
    pub max_per_listener: usize,
    /// A connection with no request in flight for this long is closed.
    #[serde(deserialize_with = "duration_text")]
    pub idle_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_per_listener: DEFAULT_MAX_CONNECTIONS_PER_LISTENER,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}
