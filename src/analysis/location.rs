//! Where in the code a span was made: OpenTelemetry's `code.*` attributes, current names
//! (`code.file.path`, `code.line.number`, `code.function.name`) before the older ones
//! (`code.filepath`, `code.lineno`, `code.function` with `code.namespace`); without a file, the
//! first application frame of `code.stacktrace`; without either, the function alone.
//!
//! Only findings ask (a few per request), never every span: a span without code attributes
//! costs nothing here.
//!
//! Invariant: reads attributes only; a location names a file or a function, or is none.

mod stacktrace;

use std::collections::HashMap;

use collector::model::{AttrValue, Span};

/// The attributes a location is read from, in the order of the indexes below.
const KEYS: [&str; 8] = [
    "code.file.path",
    "code.filepath",
    "code.line.number",
    "code.lineno",
    "code.function.name",
    "code.function",
    "code.namespace",
    "code.stacktrace",
];

const FILE_PATH: usize = 0;
const FILEPATH: usize = 1;
const LINE_NUMBER: usize = 2;
const LINENO: usize = 3;
const FUNCTION_NAME: usize = 4;
const FUNCTION: usize = 5;
const NAMESPACE: usize = 6;
const STACKTRACE: usize = 7;

/// The first value of each of [`KEYS`] on the span, found in one pass over its attributes: a
/// finding asks for every span it involves (an N+1's every load).
fn code_attributes(span: &Span) -> [Option<&AttrValue>; KEYS.len()] {
    let mut found = [None; KEYS.len()];
    for kv in &span.attributes {
        if !kv.key.starts_with("code.") {
            continue;
        }
        if let Some(index) = KEYS.iter().position(|key| *key == kv.key) {
            found[index].get_or_insert(&kv.value);
        }
    }
    found
}

/// Whether a location is read from the attribute `key`.
pub fn is_read(key: &[u8]) -> bool {
    key.starts_with(b"code.") && KEYS.iter().any(|name| name.as_bytes() == key)
}

/// A place in the source: a file or a function, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeLocation {
    /// The file, as the span names it; `None` when only the function is known.
    pub file: Option<String>,
    /// The line, when given (1-based).
    pub line: Option<u32>,
    /// The function, qualified by its namespace when the span gives one.
    pub function: Option<String>,
}

impl CodeLocation {
    /// The span's location: its file attributes, else its stack trace's first application
    /// frame, else its function attributes alone; `None` when it names none of them.
    pub fn of(span: &Span) -> Option<CodeLocation> {
        let found = code_attributes(span);
        let text = |keys: &[usize]| {
            keys.iter()
                .find_map(|key| found[*key]?.as_str())
                .filter(|value| !value.is_empty())
        };
        let function = text(&[FUNCTION_NAME]).map(str::to_owned).or_else(|| {
            let function = text(&[FUNCTION])?;
            Some(match text(&[NAMESPACE]) {
                Some(namespace) => format!("{namespace}.{function}"),
                None => function.to_owned(),
            })
        });
        if let Some(file) = text(&[FILE_PATH, FILEPATH]) {
            let line = [LINE_NUMBER, LINENO]
                .iter()
                .find_map(|key| found[*key]?.as_i64())
                .and_then(|line| u32::try_from(line).ok())
                .filter(|line| *line > 0);
            return Some(CodeLocation {
                file: Some(file.to_owned()),
                line,
                function,
            });
        }
        if let Some(mut frame) = text(&[STACKTRACE]).and_then(stacktrace::first_application_frame) {
            // The span's own name for its function is more exact than a frame's.
            if function.is_some() {
                frame.function = function;
            }
            return Some(frame);
        }
        // A line without its file points nowhere: the function alone.
        function.map(|function| CodeLocation {
            file: None,
            line: None,
            function: Some(function),
        })
    }

    /// `app/policies.py:88 in load_rules`, or `in load_rules` when the file is unknown.
    pub fn describe(&self) -> String {
        let mut parts = Vec::with_capacity(2);
        if let Some(file) = &self.file {
            parts.push(match self.line {
                Some(line) => format!("{file}:{line}"),
                None => file.clone(),
            });
        }
        if let Some(function) = &self.function {
            parts.push(format!("in {function}"));
        }
        parts.join(" ")
    }

    /// The location after the preposition that introduces it in a sentence: (`at`,
    /// `app/policies.py:88 in load_rules`), or (`in`, `load_rules`) when the file is unknown.
    pub fn phrase(&self) -> (&'static str, String) {
        match (&self.file, &self.function) {
            (None, Some(function)) => ("in", function.clone()),
            _ => ("at", self.describe()),
        }
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
    fn current_names_win_over_old_ones() {
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
        assert_eq!(location("code.line.number=3"), None);
    }

    #[test]
    fn a_function_without_a_file_is_a_location_without_a_line() {
        let current =
            location("code.function.name=load_rules code.line.number=3").expect("a location");
        assert_eq!(current.file, None);
        assert_eq!(current.describe(), "in load_rules");
        let old =
            location("code.function=load_rules code.namespace=app.policies").expect("a location");
        assert_eq!(old.describe(), "in app.policies.load_rules");
    }

    fn with_stacktrace(attributes: &str, stacktrace: &str) -> Option<CodeLocation> {
        let mut spans = fixture::parse(&format!("auth: q 0..1 client {attributes}"));
        spans[0].attributes.push(collector::model::KeyValue {
            key: "code.stacktrace".into(),
            value: collector::model::AttrValue::Str(stacktrace.into()),
        });
        CodeLocation::of(&spans[0])
    }

    #[test]
    fn a_stack_trace_places_a_span_without_a_file_and_an_explicit_file_wins() {
        let stacktrace = "Traceback (most recent call last):\n  \
             File \"app/policies.py\", line 88, in load_rules\n    rows = cursor.execute(sql)\n  \
             File \"/venv/lib/python3.12/site-packages/psycopg/cursor.py\", line 97, in execute\n";
        let from_frame = with_stacktrace("", stacktrace).expect("a location");
        assert_eq!(from_frame.describe(), "app/policies.py:88 in load_rules");
        let named = with_stacktrace("code.function.name=Policies.load_rules", stacktrace)
            .expect("a location");
        assert_eq!(
            named.describe(),
            "app/policies.py:88 in Policies.load_rules"
        );
        let explicit = with_stacktrace("code.file.path=app/db.py code.line.number=12", stacktrace)
            .expect("a location");
        assert_eq!(explicit.describe(), "app/db.py:12");
        let only_library = "  File \"/usr/lib/python3.12/socket.py\", line 1, in recv\n";
        assert_eq!(
            with_stacktrace("code.function=load_rules", only_library)
                .expect("a location")
                .describe(),
            "in load_rules"
        );
    }

    #[test]
    fn the_most_frequent_location_is_chosen() {
        let at = |line| CodeLocation {
            file: Some("a.py".into()),
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
