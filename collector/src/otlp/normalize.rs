//! Normalization of OpenTelemetry semantic conventions: old and current attribute names map onto
//! one [`Semantics`] struct, so nothing downstream needs to know that `db.statement` became
//! `db.query.text`.
//!
//! Invariant: pure, total and cheap; it reads attributes and never changes them.

use crate::model::{AttrValue, KeyValue, Semantics};

/// The fields of [`Semantics`] that attributes give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    DbSystem,
    DbStatement,
    DbOperation,
    HttpMethod,
    HttpRoute,
    UrlPath,
    UrlFull,
    ServerAddress,
    HttpStatus,
    RpcSystem,
    MessagingSystem,
    MessagingDestination,
    CpuTime,
}

const N_FIELDS: usize = Field::CpuTime as usize + 1;

/// The field an attribute name feeds, and the name's rank among the field's names: current
/// names rank 0, and the lowest rank present wins.
fn field_of(key: &[u8]) -> Option<(Field, u8)> {
    Some(match key {
        b"db.system.name" => (Field::DbSystem, 0),
        b"db.system" => (Field::DbSystem, 1),
        b"db.query.text" => (Field::DbStatement, 0),
        b"db.statement" => (Field::DbStatement, 1),
        b"db.operation.name" => (Field::DbOperation, 0),
        b"db.operation" => (Field::DbOperation, 1),
        b"http.request.method" => (Field::HttpMethod, 0),
        b"http.method" => (Field::HttpMethod, 1),
        b"http.route" => (Field::HttpRoute, 0),
        b"url.path" => (Field::UrlPath, 0),
        b"http.target" => (Field::UrlPath, 1),
        b"url.full" => (Field::UrlFull, 0),
        b"http.url" => (Field::UrlFull, 1),
        b"server.address" => (Field::ServerAddress, 0),
        b"net.peer.name" => (Field::ServerAddress, 1),
        b"net.host.name" => (Field::ServerAddress, 2),
        b"http.response.status_code" => (Field::HttpStatus, 0),
        b"http.status_code" => (Field::HttpStatus, 1),
        b"rpc.system" => (Field::RpcSystem, 0),
        b"messaging.system" => (Field::MessagingSystem, 0),
        b"messaging.destination.name" => (Field::MessagingDestination, 0),
        b"messaging.destination" => (Field::MessagingDestination, 1),
        // RabbitMQ's default exchange has an empty name: the routing key is the queue.
        b"messaging.rabbitmq.destination.routing_key" => (Field::MessagingDestination, 2),
        b"messaging.rabbitmq.routing_key" => (Field::MessagingDestination, 3),
        b"cpu.time_ns" => (Field::CpuTime, 0),
        _ => return None,
    })
}

/// Whether the fields this crate derives from a span's attributes ([`semantics`] and the
/// category) read the attribute `key`: a span decoded with only these attributes derives the
/// same ones. Bytes, so that a decoder can ask before it checks a key's UTF-8.
pub fn is_read(key: &[u8]) -> bool {
    key == crate::category::EXPLICIT_CATEGORY.as_bytes() || field_of(key).is_some()
}

/// The value of a field's best-ranked name, the first of them where given twice.
struct Found<'a>([Option<(u8, &'a AttrValue)>; N_FIELDS]);

impl<'a> Found<'a> {
    fn of(attributes: &'a [KeyValue]) -> Self {
        let mut found = Found([None; N_FIELDS]);
        for kv in attributes {
            // An empty text is no value: a better-ranked name that is empty does not hide a
            // worse-ranked one that says something.
            if matches!(&kv.value, AttrValue::Str(text) if text.is_empty()) {
                continue;
            }
            if let Some((field, rank)) = field_of(kv.key.as_bytes()) {
                let slot = &mut found.0[field as usize];
                if slot.is_none_or(|(best, _)| rank < best) {
                    *slot = Some((rank, &kv.value));
                }
            }
        }
        found
    }

    fn value(&self, field: Field) -> Option<&'a AttrValue> {
        self.0[field as usize].map(|(_, value)| value)
    }

    fn text(&self, field: Field) -> Option<String> {
        match self.value(field)? {
            AttrValue::Str(s) if !s.is_empty() => Some(s.clone()),
            AttrValue::Str(_) | AttrValue::Empty => None,
            other => Some(other.to_string()),
        }
    }
}

/// Reads the semantic-convention fields of one span's attributes, in one pass over them.
pub fn semantics(attributes: &[KeyValue]) -> Semantics {
    let found = Found::of(attributes);
    Semantics {
        db_system: found.text(Field::DbSystem),
        db_statement: found.text(Field::DbStatement),
        db_operation: found.text(Field::DbOperation),
        http_method: found.text(Field::HttpMethod).map(|mut method| {
            method.make_ascii_uppercase();
            method
        }),
        http_route: found.text(Field::HttpRoute),
        // http.target carries the query string too; the path alone is what identifies a route.
        url_path: found.text(Field::UrlPath).map(|mut target| {
            target.truncate(target.find(['?', '#']).unwrap_or(target.len()));
            target
        }),
        url_full: found.text(Field::UrlFull),
        server_address: found.text(Field::ServerAddress),
        http_status_code: found.value(Field::HttpStatus).and_then(AttrValue::as_i64),
        rpc_system: found.text(Field::RpcSystem),
        messaging_system: found.text(Field::MessagingSystem),
        messaging_destination: found.text(Field::MessagingDestination),
        cpu_time_ns: found
            .value(Field::CpuTime)
            .and_then(AttrValue::as_i64)
            .and_then(|ns| u64::try_from(ns).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: AttrValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
        }
    }

    fn s(text: &str) -> AttrValue {
        AttrValue::Str(text.into())
    }

    #[test]
    fn current_database_names() {
        let sem = semantics(&[
            kv("db.system.name", s("postgresql")),
            kv("db.query.text", s("SELECT 1")),
            kv("db.operation.name", s("SELECT")),
        ]);
        assert_eq!(sem.db_system.as_deref(), Some("postgresql"));
        assert_eq!(sem.db_statement.as_deref(), Some("SELECT 1"));
        assert_eq!(sem.db_operation.as_deref(), Some("SELECT"));
    }

    #[test]
    fn old_database_names() {
        let sem = semantics(&[
            kv("db.system", s("sqlite")),
            kv("db.statement", s("SELECT 2")),
            kv("db.operation", s("SELECT")),
        ]);
        assert_eq!(sem.db_system.as_deref(), Some("sqlite"));
        assert_eq!(sem.db_statement.as_deref(), Some("SELECT 2"));
        assert_eq!(sem.db_operation.as_deref(), Some("SELECT"));
    }

    #[test]
    fn current_name_wins_over_old_one() {
        let sem = semantics(&[kv("db.statement", s("old")), kv("db.query.text", s("new"))]);
        assert_eq!(sem.db_statement.as_deref(), Some("new"));
    }

    #[test]
    fn a_name_given_twice_gives_its_first_value_and_a_better_ranked_name_wins_wherever_it_stands() {
        let sem = semantics(&[
            kv("net.host.name", s("host")),
            kv("db.system", s("first")),
            kv("db.system", s("second")),
            kv("net.peer.name", s("peer")),
        ]);
        assert_eq!(sem.db_system.as_deref(), Some("first"));
        assert_eq!(sem.server_address.as_deref(), Some("peer"));
        assert!(is_read(b"net.host.name") && is_read(b"bottleneck.category"));
        assert!(!is_read(b"net.host") && !is_read(b"db.system.name.x"));
    }

    #[test]
    fn current_http_names() {
        let sem = semantics(&[
            kv("http.request.method", s("post")),
            kv("http.route", s("/login")),
            kv("url.path", s("/login")),
            kv("url.full", s("https://idp.example/saml")),
            kv("server.address", s("idp.example")),
            kv("http.response.status_code", AttrValue::Int(502)),
        ]);
        assert_eq!(sem.http_method.as_deref(), Some("POST"));
        assert_eq!(sem.http_route.as_deref(), Some("/login"));
        assert_eq!(sem.url_path.as_deref(), Some("/login"));
        assert_eq!(sem.url_full.as_deref(), Some("https://idp.example/saml"));
        assert_eq!(sem.server_address.as_deref(), Some("idp.example"));
        assert_eq!(sem.http_status_code, Some(502));
    }

    #[test]
    fn old_http_names() {
        let sem = semantics(&[
            kv("http.method", s("GET")),
            kv("http.target", s("/users/12?x=1")),
            kv("http.url", s("http://a/users/12?x=1")),
            kv("net.peer.name", s("a")),
            kv("http.status_code", s("404")),
        ]);
        assert_eq!(sem.http_method.as_deref(), Some("GET"));
        assert_eq!(sem.url_path.as_deref(), Some("/users/12"));
        assert_eq!(sem.url_full.as_deref(), Some("http://a/users/12?x=1"));
        assert_eq!(sem.server_address.as_deref(), Some("a"));
        assert_eq!(sem.http_status_code, Some(404));
    }

    #[test]
    fn an_empty_destination_gives_way_to_the_routing_key() {
        let sem = semantics(&[
            kv("messaging.destination", s("")),
            kv("messaging.rabbitmq.routing_key", s("orders")),
        ]);
        assert_eq!(sem.messaging_destination.as_deref(), Some("orders"));
    }

    #[test]
    fn rpc_messaging_and_cpu_time() {
        let sem = semantics(&[
            kv("rpc.system", s("grpc")),
            kv("messaging.system", s("rabbitmq")),
            kv("cpu.time_ns", AttrValue::Int(1_500_000)),
        ]);
        assert_eq!(sem.rpc_system.as_deref(), Some("grpc"));
        assert_eq!(sem.messaging_system.as_deref(), Some("rabbitmq"));
        assert_eq!(sem.cpu_time_ns, Some(1_500_000));
    }

    #[test]
    fn negative_cpu_time_is_ignored() {
        assert_eq!(
            semantics(&[kv("cpu.time_ns", AttrValue::Int(-5))]).cpu_time_ns,
            None
        );
    }
}
