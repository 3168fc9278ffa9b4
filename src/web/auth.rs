//! Access control for the UI and API: read tokens for reading, admin tokens for changing state,
//! and a cross-site check on every state-changing request.
//!
//! - `/healthz` and `/readyz` are always open (probes carry no credentials).
//! - Reads (GET, HEAD) need a read or admin token when any is configured: `Authorization: Bearer
//!   <token>`, or HTTP basic auth with the token as the password (any user name), which lets a
//!   browser prompt for it.
//! - State changes (`POST /api/v1/reload`) need an admin token as a bearer header when admin
//!   tokens are configured (with only read tokens configured they are refused). Basic credentials
//!   are not accepted for them: a browser re-sends those on a cross-site form post, a bearer header
//!   it cannot. That is the CSRF protection; in addition, a state change whose `Origin` names
//!   another host or whose `Sec-Fetch-Site` says `cross-site` is refused even without tokens.
//!
//! Invariant: tokens are compared in constant time and never logged or echoed.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use collector::auth::bearer_token;

use crate::listener::settings::AuthConfig;

/// Paths open to anyone: liveness and readiness probes.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Wraps `router` in the access checks of `auth`.
pub fn require(router: Router, auth: &AuthConfig) -> Router {
    let auth = auth.clone();
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let verdict = check(&auth, &request);
        async move {
            match verdict {
                Ok(()) => next.run(request).await,
                Err(refusal) => refusal.into_response(),
            }
        }
    }))
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No or wrong credentials for a read.
    NeedRead,
    /// No admin bearer token for a state change.
    NeedAdmin,
    /// Valid credentials that may not change state, or no admin tokens configured.
    Forbidden,
    /// A state change sent from another site.
    CrossSite,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message, challenge) = match self {
            Self::NeedRead => (
                StatusCode::UNAUTHORIZED,
                "credentials required",
                Some("Basic realm=\"bottleneck\", charset=\"UTF-8\""),
            ),
            Self::NeedAdmin => (
                StatusCode::UNAUTHORIZED,
                "an admin bearer token is required",
                Some("Bearer"),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "these credentials may not change state",
                None,
            ),
            Self::CrossSite => (
                StatusCode::FORBIDDEN,
                "cross-site state changes are refused",
                None,
            ),
        };
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "error": message }).to_string(),
        )
            .into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn check(auth: &AuthConfig, request: &Request) -> Result<(), Refusal> {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return Ok(());
    }
    let headers = request.headers();
    if is_read(request.method()) {
        if !auth.ui_enabled()
            || presented(headers, true).is_some_and(|token| {
                auth.read_tokens.accepts(&token) || auth.admin_tokens.accepts(&token)
            })
        {
            return Ok(());
        }
        return Err(Refusal::NeedRead);
    }
    if is_cross_site(headers) {
        return Err(Refusal::CrossSite);
    }
    if !auth.ui_enabled() {
        return Ok(());
    }
    match presented(headers, false) {
        Some(token) if auth.admin_tokens.accepts(&token) => Ok(()),
        Some(token) if auth.read_tokens.accepts(&token) => Err(Refusal::Forbidden),
        _ if !auth.admin_tokens.is_enabled() => Err(Refusal::Forbidden),
        _ => Err(Refusal::NeedAdmin),
    }
}

/// The token a request carries: a bearer token, or (if `basic` is allowed) the password of
/// basic credentials.
fn presented(headers: &HeaderMap, basic: bool) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = bearer_token(value) {
        return Some(token.to_owned());
    }
    if !basic {
        return None;
    }
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    Some(password.to_owned())
}

/// Whether the browser says the request comes from another site: `Sec-Fetch-Site: cross-site`,
/// or an `Origin` whose host and port differ from the `Host` the request was sent to.
fn is_cross_site(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if text(header::HeaderName::from_static("sec-fetch-site"))
        .is_some_and(|site| site.eq_ignore_ascii_case("cross-site"))
    {
        return true;
    }
    let Some(origin) = text(header::ORIGIN) else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    text(header::HOST).is_none_or(|host| !origin_host.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use collector::auth::Tokens;

    use super::*;

    fn auth(read: &[&str], admin: &[&str]) -> AuthConfig {
        let tokens = |list: &[&str]| Tokens::new(list.iter().map(|t| (*t).to_owned()));
        AuthConfig {
            ingest_tokens: Tokens::default(),
            read_tokens: tokens(read),
            admin_tokens: tokens(admin),
        }
    }

    fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1:8080");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn basic(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    #[test]
    fn reads_need_a_read_or_admin_token_bearer_or_basic() {
        let auth = auth(&["r"], &["a"]);
        let get = |headers: &[(&str, &str)]| {
            check(&auth, &request(Method::GET, "/api/v1/services", headers))
        };
        assert_eq!(get(&[]), Err(Refusal::NeedRead));
        assert_eq!(
            get(&[("authorization", "Bearer x")]),
            Err(Refusal::NeedRead)
        );
        assert_eq!(get(&[("authorization", "Bearer r")]), Ok(()));
        assert_eq!(get(&[("authorization", "Bearer a")]), Ok(()));
        assert_eq!(get(&[("authorization", &basic("me", "r"))]), Ok(()));
        assert_eq!(
            get(&[("authorization", &basic("r", ""))]),
            Err(Refusal::NeedRead)
        );
        assert_eq!(
            get(&[("authorization", "Basic !!!")]),
            Err(Refusal::NeedRead)
        );
        assert_eq!(check(&auth, &request(Method::GET, "/healthz", &[])), Ok(()));
    }

    #[test]
    fn state_changes_need_an_admin_bearer_token() {
        let auth = auth(&["r"], &["a"]);
        let post = |headers: &[(&str, &str)]| {
            check(&auth, &request(Method::POST, "/api/v1/reload", headers))
        };
        assert_eq!(post(&[]), Err(Refusal::NeedAdmin));
        assert_eq!(
            post(&[("authorization", "Bearer r")]),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            post(&[("authorization", &basic("me", "a"))]),
            Err(Refusal::NeedAdmin)
        );
        assert_eq!(post(&[("authorization", "Bearer a")]), Ok(()));
        let read_only = super::tests::auth(&["r"], &[]);
        assert_eq!(
            check(
                &read_only,
                &request(
                    Method::POST,
                    "/api/v1/reload",
                    &[("authorization", "Bearer r")]
                )
            ),
            Err(Refusal::Forbidden)
        );
    }

    #[test]
    fn cross_site_state_changes_are_refused_even_without_tokens() {
        let open = auth(&[], &[]);
        let post = |headers: &[(&str, &str)]| {
            check(&open, &request(Method::POST, "/api/v1/reload", headers))
        };
        assert_eq!(post(&[]), Ok(()));
        assert_eq!(post(&[("origin", "http://127.0.0.1:8080")]), Ok(()));
        assert_eq!(
            post(&[("origin", "https://evil.example")]),
            Err(Refusal::CrossSite)
        );
        assert_eq!(post(&[("origin", "null")]), Err(Refusal::CrossSite));
        assert_eq!(
            post(&[("sec-fetch-site", "cross-site")]),
            Err(Refusal::CrossSite)
        );
        assert_eq!(post(&[("sec-fetch-site", "same-origin")]), Ok(()));
        assert_eq!(
            check(
                &open,
                &request(
                    Method::GET,
                    "/api/v1/services",
                    &[("origin", "https://evil.example")]
                )
            ),
            Ok(()),
            "reads are not state changes"
        );
    }
}
