//! Which spans are requests, and what their endpoints are called.
//!
//! A request is a unit of work a service was asked to do: every SERVER span, and any root span
//! (no parent in the trace) of another kind, such as a job or a message CONSUMER. Its endpoint
//! name must have low cardinality, so ids in paths and span names are templated into `{id}`:
//! `GET /users/12345` and `GET /users/67890` are one endpoint.
//!
//! Invariant: pure and total; a name is computed from one span alone (the per-service cap on
//! endpoints is applied later, with state, elsewhere).

use collector::model::{Span, SpanKind};

/// Whether a span is a request: a SERVER span, or a root of any other kind.
pub fn is_request(span: &Span, parent_in_trace: bool) -> bool {
    span.kind == SpanKind::Server || !parent_in_trace
}

/// The endpoint of a request span: `"{METHOD} {http.route}"` when the route is known, else
/// `"{METHOD} {templated url.path}"` for HTTP SERVER spans, else the span name, ids templated.
pub fn endpoint_name(span: &Span) -> String {
    let sem = &span.semantics;
    if let Some(method) = &sem.http_method {
        if let Some(route) = &sem.http_route {
            return format!("{method} {route}");
        }
        if span.kind == SpanKind::Server
            && let Some(path) = sem
                .url_path
                .as_deref()
                .or_else(|| sem.url_full.as_deref().and_then(url_path))
        {
            return format!("{method} {}", template_path(path));
        }
    }
    template_name(&span.name)
}

/// The path of a full URL (`https://host/a/b?q` gives `/a/b`), when it has one.
fn url_path(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = &rest[rest.find('/')?..];
    path.split(['?', '#']).next()
}

/// The text used for an id.
const ID: &str = "{id}";

/// Replaces the id-like segments of a `/`-separated path with `{id}`.
pub fn template_path(path: &str) -> String {
    path.split('/')
        .map(|segment| if is_id(segment) { ID } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// Templates a free-form name: each whitespace-separated word is templated as a path, so both
/// `GET /users/12345` and `process order 12345` lose their ids.
pub fn template_name(name: &str) -> String {
    name.split(' ')
        .map(template_path)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Mixed letters-and-digits tokens at least this long are taken for ids (`a1b2c3d4e5`); shorter
/// ones are usually names (`v2`, `oauth2`, `s3`).
const MIN_MIXED_ID_LEN: usize = 10;

/// Hex strings at least this long are ids (object ids, hashes); shorter ones may be words (`cafe`).
const MIN_HEX_ID_LEN: usize = 16;

/// Whether a path segment or word is an id: all digits, a UUID, long hex, or a long token of
/// letters mixed with digits.
pub fn is_id(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(bytes) {
        return true;
    }
    if bytes.len() >= MIN_HEX_ID_LEN && bytes.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    let token_chars = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let has_letter = bytes.iter().any(u8::is_ascii_alphabetic);
    token_chars && has_digit && has_letter && bytes.len() >= MIN_MIXED_ID_LEN
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(idx, b)| match idx {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::analysis::fixture;

    /// Renders, per fixture span, whether it is a request and its endpoint name.
    #[track_caller]
    fn check(fixture_text: &str, expect: Expect) {
        let spans = fixture::parse(fixture_text);
        let ids: std::collections::HashSet<_> = spans.iter().map(|s| s.span_id).collect();
        let mut out = String::new();
        for span in &spans {
            let parent_in_trace = span.parent_span_id.is_some_and(|p| ids.contains(&p));
            let marker = if is_request(span, parent_in_trace) {
                "request"
            } else {
                "-"
            };
            out.push_str(&format!("{marker} {}\n", endpoint_name(span)));
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn routes_paths_and_names() {
        check(
            r#"
GET /users/:id 0..10 server http.request.method=GET http.route=/users/:id url.path=/users/12
  GET /users/12345 1..9 server http.request.method=GET url.path=/users/12345/orders/550e8400-e29b-41d4-a716-446655440000
  GET 1..9 server http.request.method=get url.path=/blobs/deadbeefdeadbeef00/a1b2c3d4e5f6/v2
  GET 1..9 server http.request.method=GET url.full=https://api.example/items/42?full=1
  load user 12345 2..3 internal
  GET 2..3 client http.request.method=GET url.full=http://a/users/1
job: nightly export 7f3a9b2c1d4e5f60 0..100 internal
worker: orders process 0..5 consumer messaging.system=kafka
"#,
            expect![[r#"
                request GET /users/:id
                request GET /users/{id}/orders/{id}
                request GET /blobs/{id}/{id}/v2
                request GET /items/{id}
                - load user {id}
                - GET
                request nightly export {id}
                request orders process
            "#]],
        );
    }

    #[test]
    fn short_words_are_not_ids() {
        check(
            "GET /api/v2/oauth2/cafe/s3 0..1 server http.request.method=GET",
            expect![[r#"
                request GET /api/v2/oauth2/cafe/s3
            "#]],
        );
    }
}
