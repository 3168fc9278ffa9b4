//! Bearer tokens: the credentials exporters send (`Authorization: Bearer <token>`, set through
//! `OTEL_EXPORTER_OTLP_HEADERS`) and the UI and API accept.
//!
//! Invariant: a token is compared in constant time and never printed; `Debug` shows only how
//! many tokens there are.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// A set of accepted tokens. Empty means "no authentication".
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens(Arc<Vec<String>>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    /// The given tokens; blank ones are ignored so that an empty variable enables nothing.
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(
            tokens
                .into_iter()
                .map(|token| token.trim().to_owned())
                .filter(|token| !token.is_empty())
                .collect(),
        ))
    }

    /// Whether any token is configured (authentication is required).
    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `candidate` is one of the tokens. Every token is compared, each in constant time,
    /// so the answer takes as long whichever token (if any) matches.
    pub fn accepts(&self, candidate: &str) -> bool {
        let candidate = candidate.as_bytes();
        self.0.iter().fold(false, |found, token| {
            let equal: bool = token.as_bytes().ct_eq(candidate).into();
            found | equal
        })
    }

    /// Whether an `Authorization` header value carries an accepted bearer token.
    pub fn accepts_bearer(&self, authorization: Option<&[u8]>) -> bool {
        authorization
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(bearer_token)
            .is_some_and(|token| self.accepts(token))
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_matched_exactly() {
        let tokens = Tokens::new(["s3cret".to_owned(), " ".to_owned(), "other".to_owned()]);
        assert!(tokens.is_enabled());
        assert!(tokens.accepts_bearer(Some(b"Bearer s3cret")));
        assert!(tokens.accepts_bearer(Some(b"bearer  other ")));
        assert!(!tokens.accepts_bearer(Some(b"Bearer s3cre")));
        assert!(!tokens.accepts_bearer(Some(b"Bearer s3crett")));
        assert!(!tokens.accepts_bearer(Some(b"Basic s3cret")));
        assert!(!tokens.accepts_bearer(Some(b"Bearer ")));
        assert!(!tokens.accepts_bearer(Some(b"\xff\xfe")));
        assert!(!tokens.accepts_bearer(None));
        assert!(!tokens.accepts(""));
        assert_eq!(format!("{tokens:?}"), "Tokens(2 redacted)");
        assert!(!Tokens::new([" ".to_owned()]).is_enabled());
    }
}
