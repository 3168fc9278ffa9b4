//! The `Host` allow-list of the UI and API, against DNS rebinding: a web page on another site
//! that points its own name at 127.0.0.1 could otherwise read every trace through the browser,
//! because a token-free loopback setup trusts whatever reaches the socket.
//!
//! A request is served when the host it names (`Host`, or the `:authority` of HTTP/2) is a
//! loopback name (`localhost`, `127.0.0.1`, `[::1]`), the address the UI listens on, any IP
//! address when it listens on all of them (a page cannot be served from our address by someone
//! else, so an IP literal is never a rebinding), or a name from `allowed_hosts`. Anything else is
//! answered 421 with a JSON error. The probes (`/healthz`, `/readyz`) are open to any host, and a
//! request naming no host at all (HTTP/1.0) is served: browsers always name one.
//!
//! The OTLP/HTTP listener is not checked: exporters reach it by whatever name their deployment
//! gives it, and it serves nothing a page could read.
//!
//! Invariant: the check runs before any handler, and the port is not part of it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

/// Paths open to any host: probes name whatever host their platform uses, and learn nothing.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// The hosts the UI answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    listen_ip: IpAddr,
    names: Vec<String>,
}

impl AllowedHosts {
    /// The loopback names, the UI's `listen` address and the configured `names` (host names or
    /// addresses, a port being ignored).
    pub fn new(listen: SocketAddr, names: &[String]) -> Self {
        AllowedHosts {
            listen_ip: listen.ip(),
            names: names.iter().map(|name| normalize(name)).collect(),
        }
    }

    /// Whether a request naming `authority` (`host` or `host:port`) is served.
    pub fn allows(&self, authority: &str) -> bool {
        let host = normalize(authority);
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return ip.is_loopback()
                || ip == self.listen_ip
                || self.listen_ip.is_unspecified()
                || self.names.contains(&host);
        }
        host == "localhost" || self.names.contains(&host)
    }
}

/// The host of `authority`, lower case, without port or a final dot.
fn normalize(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    let host = match authority.strip_prefix('[') {
        // [v6]:port keeps its brackets, so it compares like the Host header a browser sends.
        Some(rest) => rest
            .split_once(']')
            .map_or(authority.clone(), |(v6, _)| format!("[{v6}]")),
        None if authority.matches(':').count() > 1 => format!("[{authority}]"),
        None => authority
            .split_once(':')
            .map_or(authority.clone(), |(host, _)| host.to_owned()),
    };
    host.trim_end_matches('.').to_owned()
}

/// Wraps `router` in the host check.
pub fn require(router: Router, hosts: AllowedHosts) -> Router {
    let hosts = Arc::new(hosts);
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let refused = refused_host(&hosts, &request);
        async move {
            match refused {
                None => next.run(request).await,
                Some(host) => misdirected(&host),
            }
        }
    }))
}

/// The host `request` names, if it is not allowed.
fn refused_host(hosts: &AllowedHosts, request: &Request) -> Option<String> {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return None;
    }
    let named = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            let host = request.headers().get(header::HOST)?;
            Some(String::from_utf8_lossy(host.as_bytes()).into_owned())
        })?;
    (!hosts.allows(&named)).then_some(named)
}

fn misdirected(host: &str) -> Response {
    let message = format!(
        "this server does not answer to the host {host:?}; add it to allowed_hosts to reach it by that name"
    );
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_the_listen_address_and_configured_names() {
        let hosts = AllowedHosts::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["Bottleneck.internal".to_owned(), "10.1.2.3:8080".to_owned()],
        );
        for allowed in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "[::1]",
            "bottleneck.internal:443",
            "10.1.2.3",
        ] {
            assert!(hosts.allows(allowed), "{allowed}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.1.2.4",
            "192.168.1.10:8080",
            "",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }

    #[test]
    fn listening_on_every_address_allows_any_address_but_no_other_name() {
        let hosts = AllowedHosts::new("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(hosts.allows("192.168.1.10:8080"));
        assert!(hosts.allows("[fe80::1]:8080"));
        assert!(!hosts.allows("evil.example"));
        let specific = AllowedHosts::new("192.168.1.10:8080".parse().unwrap(), &[]);
        assert!(specific.allows("192.168.1.10"));
        assert!(!specific.allows("192.168.1.11"));
    }
}
