//! Statement normalization: the shape of a query, with its values taken out.
//!
//! `SELECT * FROM users WHERE id = 42` and `... id = $1` both become
//! `SELECT * FROM users WHERE id = ?`, which makes statements comparable (operations, N+1 loops).
//! A hand-written byte scanner rather than a SQL parser: it must accept every dialect and any
//! truncated or invalid text an SDK sends, in one linear pass. What it replaces:
//! - quoted strings (`'..'` with `''` escapes, `E'..'` with backslash escapes, `N'..'`, `X'..'`,
//!   `B'..'`, `$$..$$`, `$tag$..$tag$`) and numbers become `?`;
//! - placeholders (`$1`, `?`, `:name`, `%s`, `%(name)s`) become `?`;
//! - comments (`-- ..` and `/* .. */`) are dropped and whitespace collapses to one space;
//! - `IN (?, ?, ?)` becomes `IN (?)` and `VALUES (?, ?), (?, ?)` becomes `VALUES (...)`.
//!
//! Keywords, identifiers (also `"quoted"` and `` `quoted` `` ones) and casts (`::int`) are kept as
//! written.
//!
//! Invariant: pure and total; never panics, whatever the bytes, and never looks back more than
//! one token. [`scan_shared`] remembers recent results per thread, which changes no answer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use foldhash::fast::RandomState;

/// A statement scanned once: its normalized text, and what was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The normalized statement.
    pub normalized: String,
    /// Inline values (strings, numbers) replaced by `?`.
    pub n_literals: u32,
    /// Placeholders (`$1`, `?`, `:name`, `%s`) replaced by `?`.
    pub n_placeholders: u32,
}

/// Statements remembered per thread by [`scan_shared`]; past it the memory starts over.
const REMEMBERED_STATEMENTS: usize = 4096;

thread_local! {
    static SCANS: RefCell<HashMap<Box<str>, Rc<Scanned>, RandomState>> =
        RefCell::new(HashMap::default());
}

/// [`scan`], remembered for statements without inline values. Those are what parameterized code
/// sends, the same few texts over and over (the analysis scans each database span twice per
/// request), while texts with literals rarely repeat and are scanned afresh.
pub fn scan_shared(statement: &str) -> Rc<Scanned> {
    if let Some(scanned) = SCANS.with_borrow(|scans| scans.get(statement).cloned()) {
        return scanned;
    }
    let scanned = Rc::new(scan(statement));
    if scanned.n_literals == 0 {
        SCANS.with_borrow_mut(|scans| {
            if scans.len() >= REMEMBERED_STATEMENTS {
                scans.clear();
            }
            scans.insert(statement.into(), Rc::clone(&scanned));
        });
    }
    scanned
}

/// The normalized statement: values and placeholders as `?`, comments gone, spaces collapsed.
pub fn normalize(statement: &str) -> String {
    scan(statement).normalized
}

/// Whether the statement carries inline values (so two executions with equal text ran with equal
/// values: a duplicate).
pub fn has_literals(statement: &str) -> bool {
    scan(statement).n_literals > 0
}

/// Whether the statement has placeholders (so its values live in separate parameters).
pub fn has_placeholders(statement: &str) -> bool {
    scan(statement).n_placeholders > 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokKind {
    /// Keyword or identifier.
    Word,
    /// A replaced literal or placeholder: renders as `?`.
    Value,
    /// Punctuation and anything else, verbatim.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: TokKind,
    /// Byte range in the statement (for `Value`, unused).
    start: usize,
    end: usize,
    /// Whitespace or a comment came before it.
    space_before: bool,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Scans a statement: normalized text and counts of replaced values.
pub fn scan(statement: &str) -> Scanned {
    let bytes = statement.as_bytes();
    let mut toks: Vec<Tok> = Vec::new();
    let mut n_literals = 0u32;
    let mut n_placeholders = 0u32;
    let mut space = false;
    let mut i = 0;
    let len = bytes.len();
    while i < len {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        let start = i;
        let push = |toks: &mut Vec<Tok>, kind, end, space: &mut bool| {
            toks.push(Tok {
                kind,
                start,
                end,
                space_before: *space,
            });
            *space = false;
        };
        if b.is_ascii_whitespace() {
            space = true;
            i += 1;
        } else if b == b'-' && next == Some(b'-') {
            // A line comment, up to the end of the line.
            while i < len && bytes[i] != b'\n' {
                i += 1;
            }
            space = true;
        } else if b == b'/' && next == Some(b'*') {
            i = find(bytes, i + 2, b"*/").map_or(len, |at| at + 2);
            space = true;
        } else if b == b'\'' {
            i = skip_quoted(bytes, i + 1, false);
            n_literals += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if matches!(b, b'E' | b'e' | b'N' | b'n' | b'X' | b'x' | b'B' | b'b')
            && next == Some(b'\'')
        {
            // A prefixed string; only E'..' strings use backslash escapes.
            i = skip_quoted(bytes, i + 2, matches!(b, b'E' | b'e'));
            n_literals += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b'$' && next.is_some_and(|n| n.is_ascii_digit()) {
            i += 1;
            while i < len && bytes[i].is_ascii_digit() {
                i += 1;
            }
            n_placeholders += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b'$'
            && let Some(tag_end) = dollar_tag_end(bytes, i)
        {
            // `$tag$ .. $tag$`: the body ends at the same tag; unterminated runs to the end.
            let tag = &bytes[i..=tag_end];
            i = find(bytes, tag_end + 1, tag).map_or(len, |at| at + tag.len());
            n_literals += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b'?' {
            i += 1;
            n_placeholders += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b':' && next == Some(b':') {
            // A cast: `::int` stays as written.
            i += 2;
            push(&mut toks, TokKind::Other, i, &mut space);
        } else if b == b':'
            && next.is_some_and(is_ident_start)
            && (i == 0 || !is_ident_byte(bytes[i - 1]))
        {
            // `:name`, but not `session:ann` (a cache key) or `a:b` (a JSON path).
            i += 1;
            while i < len && is_ident_byte(bytes[i]) {
                i += 1;
            }
            n_placeholders += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b'%' && next == Some(b's') {
            i += 2;
            n_placeholders += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b'%'
            && next == Some(b'(')
            && let Some(close) = find(bytes, i + 2, b")s")
        {
            i = close + 2;
            n_placeholders += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b'"' || b == b'`' {
            // A quoted identifier, kept as written.
            i = bytes[i + 1..]
                .iter()
                .position(|c| *c == b)
                .map_or(len, |at| i + 1 + at + 1);
            push(&mut toks, TokKind::Word, i, &mut space);
        } else if b.is_ascii_digit() || (b == b'.' && next.is_some_and(|n| n.is_ascii_digit())) {
            i = skip_number(bytes, i);
            n_literals += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if is_ident_start(b) {
            while i < len && is_ident_byte(bytes[i]) {
                i += 1;
            }
            push(&mut toks, TokKind::Word, i, &mut space);
        } else {
            i += 1;
            push(&mut toks, TokKind::Other, i, &mut space);
        }
    }
    Scanned {
        normalized: render(statement, &toks),
        n_literals,
        n_placeholders,
    }
}

/// First position at or after `from` where `needle` starts.
fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || from > bytes.len() {
        return None;
    }
    bytes[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| from + at)
}

/// Skips a single-quoted body starting after the opening quote; returns the index after the
/// closing quote (or the end, for an unterminated string).
fn skip_quoted(bytes: &[u8], mut i: usize, backslash_escapes: bool) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash_escapes => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// For `$` at `i`, the index of the `$` closing a dollar-quote tag (`$$` or `$tag$`).
fn dollar_tag_end(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if bytes.get(j).is_some_and(|b| is_ident_start(*b)) {
        while bytes
            .get(j)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b >= 0x80)
        {
            j += 1;
        }
    }
    (bytes.get(j) == Some(&b'$')).then_some(j)
}

/// Skips a number: digits, a fraction, an exponent, or a `0x` hex literal.
fn skip_number(bytes: &[u8], mut i: usize) -> usize {
    let len = bytes.len();
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < len && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < len && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    if i < len && matches!(bytes[i], b'e' | b'E') {
        let mut j = i + 1;
        if j < len && matches!(bytes[j], b'+' | b'-') {
            j += 1;
        }
        if j < len && bytes[j].is_ascii_digit() {
            i = j;
            while i < len && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    // A number glued to letters (`1st`) is not a number on its own; keep the letters.
    i
}

/// If `toks[at]` opens a `( ? , ? , ... )` list, the index of its closing parenthesis.
fn value_list_end(statement: &str, toks: &[Tok], at: usize) -> Option<usize> {
    let text = |tok: &Tok| &statement[tok.start..tok.end];
    if toks
        .get(at)
        .is_none_or(|t| t.kind != TokKind::Other || text(t) != "(")
    {
        return None;
    }
    let mut j = at + 1;
    loop {
        if toks.get(j)?.kind != TokKind::Value {
            return None;
        }
        let sep = toks.get(j + 1)?;
        match (sep.kind, text(sep)) {
            (TokKind::Other, ")") => return Some(j + 1),
            (TokKind::Other, ",") => j += 2,
            _ => return None,
        }
    }
}

/// Renders tokens, collapsing `IN` and `VALUES` lists of values.
fn render(statement: &str, toks: &[Tok]) -> String {
    let mut out = String::with_capacity(statement.len());
    let push = |out: &mut String, tok: &Tok, text: &str| {
        if tok.space_before && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(text);
    };
    let mut i = 0;
    while i < toks.len() {
        let tok = &toks[i];
        let text = if tok.kind == TokKind::Value {
            "?"
        } else {
            &statement[tok.start..tok.end]
        };
        push(&mut out, tok, text);
        i += 1;
        if tok.kind != TokKind::Word {
            continue;
        }
        if text.eq_ignore_ascii_case("IN")
            && let Some(close) = value_list_end(statement, toks, i)
        {
            push(&mut out, &toks[i], "(?)");
            i = close + 1;
        } else if text.eq_ignore_ascii_case("VALUES")
            && let Some(mut close) = value_list_end(statement, toks, i)
        {
            push(&mut out, &toks[i], "(...)");
            // Further rows: `, (?, ?)`.
            while toks
                .get(close + 1)
                .is_some_and(|t| &statement[t.start..t.end] == ",")
                && let Some(next) = value_list_end(statement, toks, close + 2)
            {
                close = next;
            }
            i = close + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    /// One statement per line; renders `literals placeholders | normalized`.
    #[track_caller]
    fn check(statements: &str, expect: Expect) {
        let mut out = String::new();
        for line in statements.lines().filter(|l| !l.trim().is_empty()) {
            let scanned = scan(line.replace("\\n", "\n").replace("\\t", "\t").as_str());
            out.push_str(&format!(
                "{} {} | {}\n",
                scanned.n_literals, scanned.n_placeholders, scanned.normalized
            ));
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn strings_and_numbers() {
        check(
            r#"
SELECT * FROM tenants WHERE id = 1
SELECT * FROM users WHERE email = 'a@b.c' AND name = 'O''Brien'
SELECT E'it\'s', N'x', X'ff', 1.5e-3, .5, 0xFF, -3
SELECT $$a 'quoted' body$$, $fn$ body $ with $$ $fn$ FROM t
SELECT col1, t2.x3 FROM t2 WHERE "col 9" = 9 AND `x1` = 'a'
SELECT 'unterminated
"#,
            expect![[r#"
                1 0 | SELECT * FROM tenants WHERE id = ?
                2 0 | SELECT * FROM users WHERE email = ? AND name = ?
                7 0 | SELECT ?, ?, ?, ?, ?, ?, -?
                2 0 | SELECT ?, ? FROM t
                2 0 | SELECT col1, t2.x3 FROM t2 WHERE "col 9" = ? AND `x1` = ?
                1 0 | SELECT ?
            "#]],
        );
    }

    #[test]
    fn placeholders() {
        check(
            r#"
SELECT * FROM users WHERE id = $1 AND org = $12
SELECT * FROM users WHERE id = ? AND x = :name AND y = %s AND z = %(zed)s
SELECT id::text, '1'::int FROM t
GET session:ann
GET session:12345
"#,
            expect![[r#"
                0 2 | SELECT * FROM users WHERE id = ? AND org = ?
                0 4 | SELECT * FROM users WHERE id = ? AND x = ? AND y = ? AND z = ?
                1 0 | SELECT id::text, ?::int FROM t
                0 0 | GET session:ann
                1 0 | GET session:?
            "#]],
        );
    }

    #[test]
    fn comments_and_whitespace() {
        check(
            r#"
  SELECT  *   -- trailing comment\n  FROM t /* inline */ WHERE\ta = 1  
/* leading */ SELECT 1 /* unterminated
SELECT a--b\n,c
"#,
            expect![[r#"
                1 0 | SELECT * FROM t WHERE a = ?
                1 0 | SELECT ?
                0 0 | SELECT a ,c
            "#]],
        );
    }

    #[test]
    fn in_and_values_lists() {
        check(
            r#"
SELECT * FROM t WHERE id IN (1, 2, 3) AND x in ($1,$2)
SELECT * FROM t WHERE id IN (SELECT id FROM u) AND y IN (?, now())
INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (?, ?)
INSERT INTO t (a, b) values(?, ?) RETURNING id
INSERT INTO t (a) VALUES (now())
"#,
            expect![[r#"
                3 2 | SELECT * FROM t WHERE id IN (?) AND x in (?)
                0 1 | SELECT * FROM t WHERE id IN (SELECT id FROM u) AND y IN (?, now())
                4 2 | INSERT INTO t (a, b) VALUES (...)
                0 2 | INSERT INTO t (a, b) values(...) RETURNING id
                0 0 | INSERT INTO t (a) VALUES (now())
            "#]],
        );
    }

    #[test]
    fn odd_bytes_never_panic() {
        check(
            "$\n$a\n:\n%\n%(\n'\nE'\\\n\"\n/*\n-- x\nSELECT ünïcode1 = 'é'",
            expect![[r#"
                0 0 | $
                0 0 | $a
                0 0 | :
                0 0 | %
                0 0 | %(
                1 0 | ?
                1 0 | ?
                0 0 | "
                0 0 | 
                0 0 | 
                1 0 | SELECT ünïcode1 = ?
            "#]],
        );
    }

    #[test]
    fn shared_scans_answer_as_fresh_ones_and_stay_bounded() {
        let parameterized = "SELECT * FROM users WHERE id = $1";
        let literal = "SELECT * FROM users WHERE id = 42";
        for _ in 0..2 {
            assert_eq!(*scan_shared(parameterized), scan(parameterized));
            assert_eq!(*scan_shared(literal), scan(literal));
        }
        SCANS.with_borrow(|scans| {
            assert!(scans.contains_key(parameterized));
            assert!(
                !scans.contains_key(literal),
                "texts with values are not kept"
            );
        });
        for n in 0..REMEMBERED_STATEMENTS + 10 {
            scan_shared(&format!("SELECT * FROM t{n} WHERE id = ?"));
        }
        SCANS.with_borrow(|scans| assert!(scans.len() <= REMEMBERED_STATEMENTS));
    }

    proptest::proptest! {
        #[test]
        fn any_text_scans_without_panicking(text in "(?s).{0,64}", sqlish in "[ '$:?%()a-z0-9.,E*/\\n-]{0,64}") {
            for input in [text, sqlish] {
                let scanned = scan(&input);
                proptest::prop_assert!(scanned.normalized.len() <= input.len() * 2 + 8);
            }
        }
    }
}
