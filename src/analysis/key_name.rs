//! The longest names the analysis hands on: the service, version and endpoint a request is
//! counted under, and the names of its operations and findings. These are the text of the
//! store's unique keys (endpoints, rollup rows, their operations and findings), and PostgreSQL
//! refuses a B-tree index row over 2,704 bytes: one over-long name would fail every commit it is
//! part of. Cut here, every key stays under that limit whatever the input, on both stores, and
//! an analysis of the same spans always yields the same names.
//!
//! Invariant: a cut name is at most its limit in bytes, marker included, and cut on a character
//! boundary; a name within its limit is kept as it is.

use std::borrow::Cow;

use collector::otlp::decode::TRUNCATION_MARKER;

/// Longest `service.name` and `service.version`, in bytes.
pub const MAX_SERVICE_BYTES: usize = 256;

/// Longest endpoint name, in bytes: a route or a span name with its method.
pub const MAX_ENDPOINT_BYTES: usize = 1_024;

/// Longest operation or finding name, in bytes: long enough for most normalized statements. The
/// widest key holding it (endpoint id, version, minute, category, name) stays under 2,400 bytes.
pub const MAX_OPERATION_BYTES: usize = 2_048;

/// `name` cut to at most `max_bytes` bytes, marker included, on a character boundary.
pub fn cut(name: &str, max_bytes: usize) -> Cow<'_, str> {
    if name.len() <= max_bytes {
        return Cow::Borrowed(name);
    }
    let mut end = max_bytes.saturating_sub(TRUNCATION_MARKER.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATION_MARKER}", &name[..end]))
}

/// Cuts an owned name in place.
pub fn cut_in_place(name: &mut String, max_bytes: usize) {
    if let Cow::Owned(cut) = cut(name, max_bytes) {
        *name = cut;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_within_the_limit_are_kept_and_longer_ones_are_cut_on_a_character_boundary() {
        assert!(matches!(cut("GET /a", 10), Cow::Borrowed("GET /a")));
        for text in ["x".repeat(5_000), "é".repeat(2_500), "𝄞".repeat(1_000)] {
            for max in [MAX_SERVICE_BYTES, MAX_ENDPOINT_BYTES, MAX_OPERATION_BYTES] {
                let out = cut(&text, max);
                assert!(out.len() <= max, "{} > {max}", out.len());
                assert!(out.len() > max - TRUNCATION_MARKER.len() - 4);
                assert!(out.ends_with(TRUNCATION_MARKER));
            }
        }
    }
}
