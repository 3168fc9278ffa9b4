//! Selections of traffic for comparisons: `baseline=` and `candidate=` of `/api/v1/compare`.
//!
//! A selector is one or more terms joined by `,`:
//! - `version:1.1`: the resource's `service.version`;
//! - `window:FROM..TO`: a time range, each end RFC 3339 or unix milliseconds;
//! - `attr:key=value`: any resource attribute;
//! - `key:value` with a dotted key (`deployment.environment:prod`, `host.name:web-1`,
//!   `cloud.region:eu-west-1`): the same, shorter.
//!
//! Versions and windows are answered from rollups. Resource attributes are not in the rollups:
//! those selections read request rows (which carry an interned resource id) and have no
//! per-operation detail.
//!
//! Invariant: parsing only; a parsed selector names at least one term.

pub use crate::read::compare::Selector;
use crate::store::Window;
use crate::web::error::ApiError;
use crate::web::window::parse_instant;

fn bad(text: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("selector {text:?}: {why}"))
}

/// Parses a selector; errors say what is wrong with which term.
pub fn parse(text: &str) -> Result<Selector, ApiError> {
    let mut selector = Selector {
        text: text.trim().to_owned(),
        version: None,
        window: None,
        attributes: Vec::new(),
    };
    if selector.text.is_empty() {
        return Err(bad(
            text,
            "empty; use version:X, window:FROM..TO or attr:key=value",
        ));
    }
    for term in selector.text.clone().split(',').map(str::trim) {
        let Some((kind, value)) = term.split_once(':') else {
            return Err(bad(
                term,
                "expected version:X, window:FROM..TO, attr:key=value or resource.key:value",
            ));
        };
        if value.is_empty() {
            return Err(bad(term, "no value"));
        }
        match kind {
            "version" => {
                if selector.version.replace(value.to_owned()).is_some() {
                    return Err(bad(term, "more than one version"));
                }
            }
            "window" => {
                let Some((from, to)) = value.split_once("..") else {
                    return Err(bad(term, "a window is FROM..TO"));
                };
                let window = Window {
                    from_unix_ns: parse_instant(from)?,
                    to_unix_ns: parse_instant(to)?,
                };
                if window.from_unix_ns >= window.to_unix_ns {
                    return Err(bad(term, "FROM must be before TO"));
                }
                if selector.window.replace(window).is_some() {
                    return Err(bad(term, "more than one window"));
                }
            }
            "attr" => {
                let Some((key, attr_value)) = value.split_once('=') else {
                    return Err(bad(term, "an attribute is attr:key=value"));
                };
                if key.is_empty() {
                    return Err(bad(term, "no attribute key"));
                }
                selector
                    .attributes
                    .push((key.to_owned(), attr_value.to_owned()));
            }
            key if key.contains('.') => {
                selector.attributes.push((key.to_owned(), value.to_owned()));
            }
            _ => {
                return Err(bad(
                    term,
                    "unknown term; expected version:, window:, attr: or a dotted resource key",
                ));
            }
        }
    }
    Ok(selector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_combine() {
        let selector =
            parse("version:1.1, window:1000..2000,deployment.environment:prod,attr:team=id=x")
                .unwrap();
        assert_eq!(selector.version.as_deref(), Some("1.1"));
        assert_eq!(
            selector.window,
            Some(Window {
                from_unix_ns: 1_000_000_000,
                to_unix_ns: 2_000_000_000
            })
        );
        assert_eq!(
            selector.attributes,
            vec![
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "id=x".into())
            ]
        );
        assert_eq!(selector.label(), "1.1");
        let rfc = parse("window:2024-05-01T10:00:00Z..2024-05-01T11:00:00.5Z").unwrap();
        assert_eq!(
            rfc.window.unwrap().to_unix_ns - rfc.window.unwrap().from_unix_ns,
            3_600_500_000_000
        );
        assert!(rfc.from_rollups());
    }

    #[test]
    fn bad_selectors_are_rejected() {
        for text in [
            "",
            "1.1",
            "version:",
            "flavour:mild",
            "window:2000..1000",
            "window:yesterday..today",
            "window:1000",
            "attr:novalue",
            "version:1,version:2",
        ] {
            assert!(parse(text).is_err(), "{text:?} accepted");
        }
    }
}
