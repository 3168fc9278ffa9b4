//! Where in the code a span was made: OpenTelemetry's `code.*` attributes, current names
//! (`code.file.path`, `code.line.number`, `code.function.name`) before the older ones
//! (`code.filepath`, `code.lineno`, `code.function` with `code.namespace`).
//!
//! Only findings ask (a few per request), never every span: a span without code attributes
//! costs nothing here.
//!
//! Invariant: reads attributes only; a span without a file path has no location.

use std::collections::HashMap;

use collector::model::{Span, attr};

/// The attributes a location is read from.
const KEYS: [&str; 7] = [
    "code.file.path",
    "code.filepath",
    "code.line.number",
    "code.lineno",
    "code.function.name",
    "code.function",
    "code.namespace",
];

/// Whether a location is read from the attribute `key`.
pub fn is_read(key: &[u8]) -> bool {
    key.starts_with(b"code.") && KEYS.iter().any(|name| name.as_bytes() == key)
}

/// A place in the source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeLocation {
    /// The file, as the span names it.
    pub file: String,
    /// The line, when given (1-based).
    pub line: Option<u32>,
    /// The function, qualified by its namespace when the span gives one.
    pub function: Option<String>,
}

impl CodeLocation {
    /// The span's location, if it names a file.
    pub fn of(span: &Span) -> Option<CodeLocation> {
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|key| attr(&span.attributes, key)?.as_str().map(str::to_owned))
                .filter(|value| !value.is_empty())
        };
        let file = text(&["code.file.path", "code.filepath"])?;
        let line = ["code.line.number", "code.lineno"]
            .iter()
            .find_map(|key| attr(&span.attributes, key)?.as_i64())
            .and_then(|line| u32::try_from(line).ok())
            .filter(|line| *line > 0);
        let function = text(&["code.function.name"]).or_else(|| {
            let function = text(&["code.function"])?;
            Some(match text(&["code.namespace"]) {
                Some(namespace) => format!("{namespace}.{function}"),
                None => function,
            })
        });
        Some(CodeLocation {
            file,
            line,
            function,
        })
    }

    /// `app/policies.py:88 in load_rules`.
    pub fn describe(&self) -> String {
        let mut out = self.file.clone();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
        }
        if let Some(function) = &self.function {
            out.push_str(&format!(" in {function}"));
        }
        out
    }
}

/// How often each location was seen.
#[derive(Debug, Clone, Default)]
pub struct LocationCounts(HashMap<CodeLocation, u64>);

impl LocationCounts {
    /// Counts one sighting.
    pub fn record(&mut self, location: CodeLocation) {
        *self.0.entry(location).or_default() += 1;
    }

    /// The most frequent location, taken out.
    pub fn into_most_frequent(mut self) -> Option<CodeLocation> {
        let location = self.most_frequent()?.clone();
        self.0.remove_entry(&location).map(|(location, _)| location)
    }

    /// The most frequent location; ties go to the first in sort order, so output is stable.
    pub fn most_frequent(&self) -> Option<&CodeLocation> {
        self.0
            .iter()
            .max_by(|(a, n), (b, m)| n.cmp(m).then_with(|| b.cmp(a)))
            .map(|(location, _)| location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::fixture;

    fn location(attributes: &str) -> Option<CodeLocation> {
        let spans = fixture::parse(&format!("auth: q 0..1 client {attributes}"));
        CodeLocation::of(&spans[0])
    }

    #[test]
    fn current_names_win_over_old_ones_and_a_file_is_required() {
        let current = location(
            "code.file.path=app/policies.py code.line.number=88 code.function.name=load_rules \
             code.filepath=old.py code.lineno=1",
        )
        .expect("a location");
        assert_eq!(current.describe(), "app/policies.py:88 in load_rules");
        let old = location(
            "code.filepath=app/db.py code.lineno=12 code.function=get code.namespace=Repo",
        )
        .expect("a location");
        assert_eq!(old.describe(), "app/db.py:12 in Repo.get");
        assert_eq!(
            location("code.function.name=load_rules code.line.number=3"),
            None
        );
    }

    #[test]
    fn the_most_frequent_location_is_chosen() {
        let at = |line| CodeLocation {
            file: "a.py".into(),
            line: Some(line),
            function: None,
        };
        let mut counts = LocationCounts::default();
        assert_eq!(counts.most_frequent(), None);
        for line in [7, 3, 7, 3, 9] {
            counts.record(at(line));
        }
        assert_eq!(counts.most_frequent(), Some(&at(3)), "ties go to the first");
        counts.record(at(7));
        assert_eq!(counts.most_frequent(), Some(&at(7)));
    }
}
