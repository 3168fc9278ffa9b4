//! The one place that decides which category a span's own time belongs to.
//!
//! Rules, first match wins:
//! 1. an explicit `bottleneck.category` attribute (`db`, `cache`, `network`, `messaging`, `cpu`)
//!    overrides everything, for instrumentation that knows better;
//! 2. a database system (`db.system.name` / `db.system`) is `cache` when it is a cache
//!    (redis, memcached, valkey, ...), else `db`;
//! 3. `messaging.system` makes `messaging`, and so does any PRODUCER span;
//! 4. a CLIENT span is `network`: HTTP (`http.request.method` / `http.method`, `url.full`), RPC
//!    (`rpc.system`), anything with `server.address`, and an unknown remote call alike; so is an
//!    INTERNAL span with `server.address` (a socket's connect);
//! 5. everything else (SERVER, INTERNAL, CONSUMER without a messaging system, unspecified) is
//!    in-process work: `cpu`.
//!
//! `wait` and `untraced` are never assigned here: only the analysis can tell, from `cpu.time_ns`,
//! whether in-process self time was spent on a CPU (`cpu`), off it (`wait`), or nobody measured
//! it (`untraced`).
//!
//! Invariant: pure and total; every span gets exactly one category.

use crate::model::{KeyValue, Semantics, SpanKind, attr};

/// Where time goes, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// A database query.
    Db,
    /// A cache lookup.
    Cache,
    /// A call over the network to another service (HTTP, RPC).
    Network,
    /// Talking to a message broker.
    Messaging,
    /// In-process work, measured on a CPU (`cpu.time_ns`); before the analysis splits self time,
    /// the category of every in-process span.
    Cpu,
    /// Self time that was measurably not on a CPU: uninstrumented I/O, sleeping, a blocked loop.
    Wait,
    /// Self time of an in-process span without a CPU measurement: no span covers it and nobody
    /// measured whether it was CPU or I/O.
    Untraced,
}

impl Category {
    /// Every category, in the order the API and the charts list them.
    pub const ALL: [Category; 7] = [
        Category::Db,
        Category::Cache,
        Category::Network,
        Category::Messaging,
        Category::Cpu,
        Category::Wait,
        Category::Untraced,
    ];

    /// How many categories there are: the length of arrays indexed by category.
    pub const COUNT: usize = Self::ALL.len();

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Db => "db",
            Self::Cache => "cache",
            Self::Network => "network",
            Self::Messaging => "messaging",
            Self::Cpu => "cpu",
            Self::Wait => "wait",
            Self::Untraced => "untraced",
        }
    }

    /// Parses an API name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|category| category.as_str() == name)
    }

    /// Whether time in this category is I/O (waiting on something outside the process).
    pub fn is_io(self) -> bool {
        matches!(
            self,
            Self::Db | Self::Cache | Self::Network | Self::Messaging
        )
    }

    /// Position in [`Category::ALL`], for arrays indexed by category.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Database systems that are caches (OpenTelemetry `db.system.name` values and common aliases).
const CACHE_SYSTEMS: &[&str] = &[
    "redis",
    "memcached",
    "valkey",
    "hazelcast",
    "ehcache",
    "cache",
];

/// The attribute that states a span's category outright.
pub const EXPLICIT_CATEGORY: &str = "bottleneck.category";

/// Classifies a span from its kind, its normalized semantics and its raw attributes.
pub fn classify(kind: SpanKind, semantics: &Semantics, attributes: &[KeyValue]) -> Category {
    if let Some(explicit) = attr(attributes, EXPLICIT_CATEGORY)
        .and_then(|value| value.as_str())
        .and_then(Category::parse)
        .filter(|category| !matches!(category, Category::Wait | Category::Untraced))
    {
        return explicit;
    }
    if let Some(system) = &semantics.db_system {
        let system = system.to_ascii_lowercase();
        return if CACHE_SYSTEMS.contains(&system.as_str()) {
            Category::Cache
        } else {
            Category::Db
        };
    }
    if semantics.messaging_system.is_some() || kind == SpanKind::Producer {
        return Category::Messaging;
    }
    if kind == SpanKind::Client {
        return Category::Network;
    }
    // A socket's own span (Node's `tcp.connect`, INTERNAL with `server.address`) waits on the
    // network, whatever its kind says.
    if kind == SpanKind::Internal && semantics.server_address.is_some() {
        return Category::Network;
    }
    Category::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttrValue;

    fn sem() -> Semantics {
        Semantics::default()
    }

    #[test]
    fn database_systems_are_db() {
        let semantics = Semantics {
            db_system: Some("postgresql".into()),
            ..sem()
        };
        assert_eq!(classify(SpanKind::Client, &semantics, &[]), Category::Db);
        let semantics = Semantics {
            db_system: Some("sqlite".into()),
            ..sem()
        };
        assert_eq!(classify(SpanKind::Internal, &semantics, &[]), Category::Db);
    }

    #[test]
    fn cache_systems_are_cache() {
        for system in ["redis", "Memcached", "valkey"] {
            let semantics = Semantics {
                db_system: Some(system.into()),
                ..sem()
            };
            assert_eq!(
                classify(SpanKind::Client, &semantics, &[]),
                Category::Cache,
                "{system}"
            );
        }
    }

    #[test]
    fn messaging_system_or_producer_is_messaging() {
        let semantics = Semantics {
            messaging_system: Some("kafka".into()),
            ..sem()
        };
        assert_eq!(
            classify(SpanKind::Consumer, &semantics, &[]),
            Category::Messaging
        );
        assert_eq!(
            classify(SpanKind::Producer, &sem(), &[]),
            Category::Messaging
        );
    }

    #[test]
    fn client_calls_are_network() {
        let http = Semantics {
            http_method: Some("GET".into()),
            ..sem()
        };
        assert_eq!(classify(SpanKind::Client, &http, &[]), Category::Network);
        let rpc = Semantics {
            rpc_system: Some("grpc".into()),
            ..sem()
        };
        assert_eq!(classify(SpanKind::Client, &rpc, &[]), Category::Network);
        assert_eq!(classify(SpanKind::Client, &sem(), &[]), Category::Network);
    }

    #[test]
    fn a_socket_connect_is_network_whatever_its_kind() {
        let connect = Semantics {
            server_address: Some("localhost".into()),
            ..sem()
        };
        assert_eq!(
            classify(SpanKind::Internal, &connect, &[]),
            Category::Network
        );
    }

    #[test]
    fn in_process_spans_are_cpu() {
        for kind in [
            SpanKind::Server,
            SpanKind::Internal,
            SpanKind::Unspecified,
            SpanKind::Consumer,
        ] {
            assert_eq!(classify(kind, &sem(), &[]), Category::Cpu, "{kind:?}");
        }
    }

    #[test]
    fn explicit_category_wins_but_never_wait_or_untraced() {
        let attrs = vec![KeyValue {
            key: "bottleneck.category".into(),
            value: AttrValue::Str("cache".into()),
        }];
        assert_eq!(
            classify(SpanKind::Internal, &sem(), &attrs),
            Category::Cache
        );
        let attrs = vec![KeyValue {
            key: "bottleneck.category".into(),
            value: AttrValue::Str("wait".into()),
        }];
        assert_eq!(classify(SpanKind::Internal, &sem(), &attrs), Category::Cpu);
        let attrs = vec![KeyValue {
            key: "bottleneck.category".into(),
            value: AttrValue::Str("untraced".into()),
        }];
        assert_eq!(classify(SpanKind::Internal, &sem(), &attrs), Category::Cpu);
    }
}
