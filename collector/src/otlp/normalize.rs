//! Normalization of OpenTelemetry semantic conventions: old and current attribute names map onto
//! one [`Semantics`] struct, so nothing downstream needs to know that `db.statement` became
//! `db.query.text`.
//!
//! Invariant: pure, total and cheap; it reads attributes and never changes them.

use crate::model::{AttrValue, KeyValue, Semantics, attr};

/// Attribute names, current first: the first one present wins.
const DB_SYSTEM: &[&str] = &["db.system.name", "db.system"];
const DB_STATEMENT: &[&str] = &["db.query.text", "db.statement"];
const DB_OPERATION: &[&str] = &["db.operation.name", "db.operation"];
const HTTP_METHOD: &[&str] = &["http.request.method", "http.method"];
const HTTP_ROUTE: &[&str] = &["http.route"];
const URL_PATH: &[&str] = &["url.path", "http.target"];
const URL_FULL: &[&str] = &["url.full", "http.url"];
const SERVER_ADDRESS: &[&str] = &["server.address", "net.peer.name", "net.host.name"];
const HTTP_STATUS: &[&str] = &["http.response.status_code", "http.status_code"];
const RPC_SYSTEM: &[&str] = &["rpc.system"];
const MESSAGING_SYSTEM: &[&str] = &["messaging.system"];
const CPU_TIME: &[&str] = &["cpu.time_ns"];

/// Every name above.
const ALL: &[&[&str]] = &[
    DB_SYSTEM,
    DB_STATEMENT,
    DB_OPERATION,
    HTTP_METHOD,
    HTTP_ROUTE,
    URL_PATH,
    URL_FULL,
    SERVER_ADDRESS,
    HTTP_STATUS,
    RPC_SYSTEM,
    MESSAGING_SYSTEM,
    CPU_TIME,
];

/// Whether the fields this crate derives from a span's attributes ([`semantics`] and the
/// category) read the attribute `key`: a span decoded with only these attributes derives the
/// same ones.
pub fn is_read(key: &str) -> bool {
    key == crate::category::EXPLICIT_CATEGORY || ALL.iter().any(|names| names.contains(&key))
}

fn first<'a>(attributes: &'a [KeyValue], names: &[&str]) -> Option<&'a AttrValue> {
    names.iter().find_map(|name| attr(attributes, name))
}

fn text(attributes: &[KeyValue], names: &[&str]) -> Option<String> {
    match first(attributes, names)? {
        AttrValue::Str(s) if !s.is_empty() => Some(s.clone()),
        AttrValue::Str(_) | AttrValue::Empty => None,
        other => Some(other.to_string()),
    }
}

/// Reads the semantic-convention fields of one span's attributes.
pub fn semantics(attributes: &[KeyValue]) -> Semantics {
    Semantics {
        db_system: text(attributes, DB_SYSTEM),
        db_statement: text(attributes, DB_STATEMENT),
        db_operation: text(attributes, DB_OPERATION),
        http_method: text(attributes, HTTP_METHOD).map(|m| m.to_ascii_uppercase()),
        http_route: text(attributes, HTTP_ROUTE),
        // http.target carries the query string too; the path alone is what identifies a route.
        url_path: text(attributes, URL_PATH).map(|target| {
            target
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .to_owned()
        }),
        url_full: text(attributes, URL_FULL),
        server_address: text(attributes, SERVER_ADDRESS),
        http_status_code: first(attributes, HTTP_STATUS).and_then(AttrValue::as_i64),
        rpc_system: text(attributes, RPC_SYSTEM),
        messaging_system: text(attributes, MESSAGING_SYSTEM),
        cpu_time_ns: first(attributes, CPU_TIME)
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
