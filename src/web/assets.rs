//! The static files of the UI, embedded in the binary and served at `/static/{file}`.
//!
//! Pages reference each file with a content hash in the query (`/static/app.css?v=…`), so the
//! responses can be cached for a year: a changed file gets a new URL.
//!
//! Invariant: serves only the files in [`ASSETS`]; never reads the disk at run time.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
pub struct Asset {
    /// The file name under `static/`, which is also its URL path under `/static/`.
    pub path: &'static str,
    /// The `Content-Type` it is served with.
    pub mime: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
    /// FNV-1a of the bytes, computed at compile time, for the URL's `v` parameter.
    pub hash: u64,
}

/// FNV-1a, 64 bit: not cryptographic, only a cache buster, and a `const fn`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut idx = 0;
    while idx < bytes.len() {
        hash ^= bytes[idx] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        idx += 1;
    }
    hash
}

macro_rules! asset {
    ($path:literal, $mime:literal) => {
        Asset {
            path: $path,
            mime: $mime,
            bytes: include_bytes!(concat!("../../static/", $path)),
            hash: fnv1a(include_bytes!(concat!("../../static/", $path))),
        }
    };
}

/// Every file of `static/`; a test checks that none is missing.
pub const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// A year, and `immutable`: the URL changes whenever the content does.
const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// The versioned URL of a static file, e.g. `/static/app.css?v=3f2a…`.
pub fn url(path: &str) -> String {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => format!("/static/{}?v={:016x}", asset.path, asset.hash),
        None => format!("/static/{path}"),
    }
}

/// `GET /static/{file}`.
pub async fn asset_get(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == file) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(asset.mime)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(CACHE_CONTROL),
                ),
            ],
            asset.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_content_hash() {
        let css = url("app.css");
        assert!(css.starts_with("/static/app.css?v="), "{css}");
        assert_eq!(css.len(), "/static/app.css?v=".len() + 16);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
