//! The span model every other part of Bottleneck consumes: ids, spans, resources and attribute
//! values, with the semantic-convention fields already normalized into [`Semantics`].
//!
//! Invariant: plain data. Nothing here does IO; constructors that validate are called `parse`.

use std::fmt;
use std::sync::Arc;

use crate::category::Category;

/// A 16-byte W3C trace id. The all-zero id is invalid and never constructed by `parse`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id. The all-zero id is invalid and never constructed by `parse`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

/// Why an id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id had the wrong number of bytes (or hex digits).
    #[error("id must be {expected} bytes, got {got}")]
    WrongLength {
        /// Bytes the id type needs.
        expected: usize,
        /// Bytes that were given.
        got: usize,
    },
    /// Every byte was zero, which the W3C trace context forbids.
    #[error("id is all zeros")]
    AllZero,
    /// The text was not hexadecimal.
    #[error("id is not hexadecimal")]
    NotHex,
}

macro_rules! id_type {
    ($name:ident, $len:expr) => {
        impl $name {
            /// Validates raw id bytes: the exact length and not all zeros.
            pub fn parse(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| IdError::WrongLength {
                    expected: $len,
                    got: bytes.len(),
                })?;
                if arr == [0; $len] {
                    return Err(IdError::AllZero);
                }
                Ok(Self(arr))
            }

            /// Parses lower- or upper-case hex, as OTLP/JSON and our URLs carry ids.
            pub fn parse_hex(text: &str) -> Result<Self, IdError> {
                if text.len() != 2 * $len {
                    return Err(IdError::WrongLength {
                        expected: $len,
                        got: text.len() / 2,
                    });
                }
                let bytes = hex::decode(text).map_err(|_| IdError::NotHex)?;
                Self::parse(&bytes)
            }

            /// Lower-case hex, the form used in the API and in URLs.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

id_type!(TraceId, 16);
id_type!(SpanId, 8);

/// The OpenTelemetry span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// Kind not given by the instrumentation; treated like `Internal`.
    Unspecified,
    /// In-process work.
    Internal,
    /// Handling of a remote request: a request of its service.
    Server,
    /// An outgoing call to a remote service or database.
    Client,
    /// Sending a message to a broker.
    Producer,
    /// Receiving a message from a broker.
    Consumer,
}

impl SpanKind {
    /// Maps the OTLP enum value; unknown values count as unspecified, as the spec allows.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// The OTLP enum value.
    pub fn to_otlp(self) -> i32 {
        match self {
            Self::Unspecified => 0,
            Self::Internal => 1,
            Self::Server => 2,
            Self::Client => 3,
            Self::Producer => 4,
            Self::Consumer => 5,
        }
    }

    /// The lower-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// The status of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// No status was set.
    Unset,
    /// The operation was explicitly marked successful.
    Ok,
    /// The operation failed.
    Error,
}

impl StatusCode {
    /// Maps the OTLP enum value; unknown values count as unset.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// The OTLP enum value.
    pub fn to_otlp(self) -> i32 {
        match self {
            Self::Unset => 0,
            Self::Ok => 1,
            Self::Error => 2,
        }
    }

    /// The lower-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// A span's status with its optional message.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Unset, ok or error.
    pub code: StatusCode,
    /// The description an instrumentation gave with an error.
    pub message: String,
}

/// An attribute value, as rich as OTLP's `AnyValue`.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A homogeneous or mixed array.
    Array(Vec<AttrValue>),
    /// A nested key-value list.
    Map(Vec<KeyValue>),
    /// An attribute sent without a value.
    Empty,
}

impl AttrValue {
    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer; strings holding an integer count, since some SDKs send those.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Double(d) if d.is_finite() => Some(*d as i64),
            Self::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Double(d) => write!(f, "{d}"),
            Self::Bytes(b) => f.write_str(&hex::encode(b)),
            Self::Array(values) => {
                f.write_str("[")?;
                for (idx, value) in values.iter().enumerate() {
                    if idx > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_str("]")
            }
            Self::Map(kvs) => {
                f.write_str("{")?;
                for (idx, kv) in kvs.iter().enumerate() {
                    if idx > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {}", kv.key, kv.value)?;
                }
                f.write_str("}")
            }
            Self::Empty => Ok(()),
        }
    }
}

/// One attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    /// The attribute name, e.g. `db.query.text`.
    pub key: String,
    /// Its value.
    pub value: AttrValue,
}

/// Finds an attribute by key. Attribute lists are short (tens), so a scan beats a map.
pub fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AttrValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| &kv.value)
}

/// The entity that produced spans: a service instance. Shared by all spans of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// `service.name`; `unknown_service` when the resource has none, as the SDKs default to.
    pub service_name: String,
    /// `service.version`, the selector for version comparisons.
    pub service_version: Option<String>,
    /// `service.instance.id`.
    pub service_instance_id: Option<String>,
    /// Every resource attribute, including the three above, as sent.
    pub attributes: Vec<KeyValue>,
}

/// The instrumentation scope (library) that recorded a span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    /// Scope name, e.g. `opentelemetry.instrumentation.sqlite3`.
    pub name: String,
    /// Scope version.
    pub version: String,
}

/// A link to another span.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The linked span's trace.
    pub trace_id: TraceId,
    /// The linked span.
    pub span_id: SpanId,
}

/// An event a span recorded (an exception, a log line). Spans do not keep them (the analysis
/// needs only their count); readers that show them take them from the stored export.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The span that recorded it.
    pub span_id: SpanId,
    /// When, in nanoseconds since the Unix epoch.
    pub time_unix_ns: u64,
    /// The event name, e.g. `exception`.
    pub name: String,
    /// Its attributes, as sent.
    pub attributes: Vec<KeyValue>,
}

/// Semantic-convention fields, normalized from either the old or the current attribute names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Semantics {
    /// `db.system.name` or `db.system`.
    pub db_system: Option<String>,
    /// `db.query.text` or `db.statement`.
    pub db_statement: Option<String>,
    /// `db.operation.name` or `db.operation`.
    pub db_operation: Option<String>,
    /// `http.request.method` or `http.method`.
    pub http_method: Option<String>,
    /// `http.route`: the templated route of a SERVER span.
    pub http_route: Option<String>,
    /// `url.path` or `http.target` (without its query string).
    pub url_path: Option<String>,
    /// `url.full` or `http.url`.
    pub url_full: Option<String>,
    /// `server.address` or `net.peer.name`.
    pub server_address: Option<String>,
    /// `http.response.status_code` or `http.status_code`.
    pub http_status_code: Option<i64>,
    /// `rpc.system`.
    pub rpc_system: Option<String>,
    /// `messaging.system`.
    pub messaging_system: Option<String>,
    /// `messaging.destination.name` or `messaging.destination`: the queue or topic.
    pub messaging_destination: Option<String>,
    /// `cpu.time_ns`: on-CPU time of the span's thread while it ran, when the application
    /// measures it. Self time beyond it is `wait`.
    pub cpu_time_ns: Option<u64>,
}

/// One span, decoded and normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its own id.
    pub span_id: SpanId,
    /// Its parent, `None` for a root.
    pub parent_span_id: Option<SpanId>,
    /// The service instance that produced it.
    pub resource: Arc<Resource>,
    /// The instrumentation library that recorded it.
    pub scope: Arc<Scope>,
    /// The span name.
    pub name: String,
    /// Server, client, internal, ...
    pub kind: SpanKind,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// Duration in nanoseconds; a span that ended before it started is clamped to 0.
    pub duration_ns: u64,
    /// Unset, ok or error, with the message.
    pub status: Status,
    /// The span's own attributes, as sent.
    pub attributes: Vec<KeyValue>,
    /// How many events the span carried (the events themselves are not kept).
    pub n_events: u32,
    /// Links to other spans.
    pub links: Vec<Link>,
    /// Normalized semantic-convention fields, derived from `attributes`.
    pub semantics: Semantics,
    /// The one category this span's own time counts as.
    pub category: Category,
}

impl Span {
    /// End, in nanoseconds since the Unix epoch.
    pub fn end_unix_ns(&self) -> u64 {
        self.start_unix_ns.saturating_add(self.duration_ns)
    }

    /// Whether the span failed: an error status, or a 5xx answer on a SERVER span.
    pub fn is_error(&self) -> bool {
        self.status.code == StatusCode::Error
            || (self.kind == SpanKind::Server
                && self
                    .semantics
                    .http_status_code
                    .is_some_and(|code| code >= 500))
    }
}
