//! Which spans are requests, and what their endpoints are called.
//!
//! A request is a unit of work a service was asked to do: every SERVER span, every CONSUMER span
//! (a message's processing, whether its parent is the producer's span in the trace or not), and
//! a root span of in-process work (a job, a script's span). A root that is a call (a CLIENT,
//! PRODUCER or database span: start-up statements, a pool's pre-ping, a connection) is not a
//! request: no one asked the service for it, and it is left out. Nor is a span whose parent has
//! not arrived yet (SDKs export children seconds before their root): its request is analysed once
//! the root is there. Its endpoint
//! name must have low cardinality, so ids in paths and span names are templated into `{id}`:
//! `GET /users/12345` and `GET /users/67890` are one endpoint. An HTTP request that no route
//! matched and that was answered 404 (a scanner probing `/wp-login.php`, `/.env`) is
//! `{METHOD} (unrouted)`: one endpoint per service and method, however many paths are probed.
//!
//! Invariant: pure and total; a name is computed from one span alone (the per-service cap on
//! endpoints is applied later, with state, elsewhere).

use std::sync::Arc;

use collector::category::Category;
use collector::model::{Span, SpanKind};

/// Whether two spans come from one process: the same resource (the SDK sends one per process),
/// or, where an exporter repeats it per export, an equal one.
pub fn same_process(a: &Span, b: &Span) -> bool {
    Arc::ptr_eq(&a.resource, &b.resource)
        || (a.resource.service_name == b.resource.service_name
            && a.resource.service_instance_id == b.resource.service_instance_id
            && a.resource.attributes == b.resource.attributes)
}

/// Where a span's parent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// In the trace (or cut out of a cycle of parent links).
    InTrace,
    /// None: the span is a root.
    None,
    /// Named but not in the trace: not arrived yet, or never sent.
    Missing,
}

/// Whether a span is a request: see the module's documentation.
pub fn is_request(span: &Span, parent: Parent) -> bool {
    match span.kind {
        SpanKind::Server | SpanKind::Consumer => true,
        _ => parent == Parent::None && span.category == Category::Cpu,
    }
}

/// What an HTTP SERVER span that no route matched and that answered 404 is called after its
/// method.
pub const UNROUTED: &str = "(unrouted)";

/// The endpoint of a request span: `"{METHOD} {http.route}"` when the route is known, else
/// `"{METHOD} (unrouted)"` for an HTTP SERVER span answered 404, else
/// `"{METHOD} {templated url.path}"` for HTTP SERVER spans, else the span name, ids templated.
pub fn endpoint_name(span: &Span) -> String {
    let sem = &span.semantics;
    // A consumer is named by its queue or topic, which is configured, not an id: only the rest
    // of its name (`orders process`) is templated.
    if span.kind == SpanKind::Consumer
        && let Some(destination) = sem.messaging_destination.as_deref()
        && let Some(rest) = span.name.strip_prefix(destination)
        && (rest.is_empty() || rest.starts_with(' '))
    {
        return format!("{destination}{}", template_name(rest));
    }
    if let Some(method) = &sem.http_method {
        if let Some(route) = &sem.http_route {
            return format!("{method} {route}");
        }
        if span.kind == SpanKind::Server && sem.http_status_code == Some(404) {
            return format!("{method} {UNROUTED}");
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
    let mut out = String::with_capacity(path.len());
    push_templated_path(&mut out, path);
    out
}

/// Templates a free-form name: each whitespace-separated word is templated as a path, so both
/// `GET /users/12345` and `process order 12345` lose their ids.
pub fn template_name(name: &str) -> String {
    // Written into one string: this runs for every span that is not a statement or a call.
    let mut out = String::with_capacity(name.len());
    for (n, word) in name.split(' ').enumerate() {
        if n > 0 {
            out.push(' ');
        }
        push_templated_path(&mut out, word);
    }
    out
}

fn push_templated_path(out: &mut String, path: &str) {
    for (n, segment) in path.split('/').enumerate() {
        if n > 0 {
            out.push('/');
        }
        out.push_str(if is_id(segment) { ID } else { segment });
    }
}

/// Mixed letters-and-digits tokens at least this long are taken for ids (`a1b2c3d4e5`); shorter
/// ones are usually names (`v2`, `oauth2`, `s3`).
const MIN_MIXED_ID_LEN: usize = 10;

/// Hex strings at least this long are ids (object ids, hashes); shorter ones may be words (`cafe`).
const MIN_HEX_ID_LEN: usize = 16;

/// Hex strings with a digit at least this long are ids: git abbreviates commit SHAs to 7, and
/// few words are 7 hex letters with a digit among them.
const MIN_SHORT_HEX_ID_LEN: usize = 7;

/// The digits that make a slug numbered (`order-12345`, `item_42`); one digit is usually part of
/// a name (`utf-8`, `page-2`).
const MIN_SLUG_DIGITS: usize = 2;

/// Whether a path segment or word is an id: all digits, a UUID (any case, braces or not), hex of
/// a hash or an object id, a date, an email address, a numbered slug, or a long token of letters
/// mixed with digits.
pub fn is_id(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    if bytes.iter().all(u8::is_ascii_digit) || is_uuid(bytes) || is_hex_id(bytes) {
        return true;
    }
    if is_date(bytes) || is_email(segment) || is_numbered_slug(segment) {
        return true;
    }
    let token_chars = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let has_letter = bytes.iter().any(u8::is_ascii_alphabetic);
    token_chars && has_digit && has_letter && bytes.len() >= MIN_MIXED_ID_LEN
}

/// A hash, a commit SHA or an object id: hex with a digit (7 or more), or long hex.
fn is_hex_id(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_hexdigit)
        && (bytes.len() >= MIN_HEX_ID_LEN
            || (bytes.len() >= MIN_SHORT_HEX_ID_LEN && bytes.iter().any(u8::is_ascii_digit)))
}

fn is_uuid(bytes: &[u8]) -> bool {
    let bytes = bytes
        .strip_prefix(b"{")
        .and_then(|inner| inner.strip_suffix(b"}"))
        .unwrap_or(bytes);
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(idx, b)| match idx {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// An ISO 8601 date (`2024-05-01`), alone or followed by a time (`2024-05-01T10:00:00Z`).
fn is_date(bytes: &[u8]) -> bool {
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let is_time_byte = |b: &u8| b.is_ascii_digit() || b":.+-_TtZz".contains(b);
    let date = digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(7) == Some(&b'-')
        && digits(8..10);
    date && bytes[10..].first().is_none_or(|sep| b"Tt_".contains(sep))
        && bytes[10..].iter().all(is_time_byte)
}

/// An email address, `@` written or percent-encoded: `ann@acme.example`, `ann%40acme.example`.
fn is_email(segment: &str) -> bool {
    let Some((local, domain)) = segment
        .split_once('@')
        .or_else(|| segment.split_once("%40"))
    else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A slug of words and a number (`order-12345`, `item_42`, `12345-my-title`): parts joined by
/// `-` or `_`, one of them a number of at least two digits or a hex id.
fn is_numbered_slug(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let slug_chars = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    slug_chars
        && bytes.iter().any(|b| matches!(b, b'-' | b'_'))
        && segment.split(['-', '_']).any(|part| {
            let part = part.as_bytes();
            (part.len() >= MIN_SLUG_DIGITS && part.iter().all(u8::is_ascii_digit))
                || is_hex_id(part)
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
            let parent = match span.parent_span_id {
                None => Parent::None,
                Some(p) if ids.contains(&p) => Parent::InTrace,
                Some(_) => Parent::Missing,
            };
            let marker = if is_request(span, parent) {
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
            r#"
GET /api/v2/oauth2/cafe/s3 0..1 server http.request.method=GET
GET 0..1 server http.request.method=GET url.path=/docs/utf-8/page-2/x86/decade/v1.2/robots.txt
"#,
            expect![[r#"
                request GET /api/v2/oauth2/cafe/s3
                request GET /docs/utf-8/page-2/x86/decade/v1.2/robots.txt
            "#]],
        );
    }

    #[test]
    fn dates_hashes_emails_and_numbered_slugs_are_ids() {
        check(
            r#"
GET 0..1 server http.request.method=GET url.path=/reports/2024-05-01/20240501/2024-05-01T10:00:00Z
GET 0..1 server http.request.method=GET url.path=/objects/8f3a9c2e/commits/1a2b3c4/0af7651916cd43dd8448eb211c80319c34d2e9f0
GET 0..1 server http.request.method=GET url.path=/u/550E8400-E29B-41D4-A716-446655440000/{550e8400-e29b-41d4-a716-446655440000}
GET 0..1 server http.request.method=GET url.path=/users/ann@acme.example/invites/bob%40acme.example
GET 0..1 server http.request.method=GET url.path=/orders/order-12345/items/item_42/posts/12345-my-first-post
GET 0..1 server http.request.method=GET url.path=/api/v2/oauth2/s3/health
send receipt to ann@acme.example 0..1 consumer
"#,
            expect![[r#"
                request GET /reports/{id}/{id}/{id}
                request GET /objects/{id}/commits/{id}/{id}
                request GET /u/{id}/{id}
                request GET /users/{id}/invites/{id}
                request GET /orders/{id}/items/{id}/posts/{id}
                request GET /api/v2/oauth2/s3/health
                request send receipt to {id}
            "#]],
        );
    }

    #[test]
    fn unrouted_not_found_is_one_endpoint_per_method() {
        // Scanners probe paths no route matches; a known route keeps its name even when it
        // answers 404 (no such user), and only a 404 is taken for a probe.
        check(
            r#"
GET 0..1 server http.request.method=GET url.path=/wp-login.php http.response.status_code=404
POST 0..1 server http.request.method=POST url.path=/.env http.response.status_code=404
GET 0..1 server http.request.method=GET url.full=http://a/cgi-bin/luci http.status_code=404
GET 0..1 server http.request.method=GET http.route=/users/:id url.path=/users/7 http.response.status_code=404
GET 0..1 server http.request.method=GET url.path=/users/7 http.response.status_code=200
GET 0..1 server http.request.method=GET url.path=/users/7 http.response.status_code=500
GET /x 0..1 client http.request.method=GET url.full=http://a/x http.response.status_code=404 parent=none
"#,
            expect![[r#"
                request GET (unrouted)
                request POST (unrouted)
                request GET (unrouted)
                request GET /users/:id
                request GET /users/{id}
                request GET /users/{id}
                - GET /x
            "#]],
        );
    }
}
