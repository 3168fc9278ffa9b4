//! Statement normalization: the shape of a query, with its values taken out.
//!
//! `SELECT * FROM users WHERE id = 42` and `... id = $1` both become
//! `SELECT * FROM users WHERE id = ?`, which makes statements comparable (operations, N+1 loops).
//! A hand-written byte scanner rather than a SQL parser: it must accept every dialect and any
//! truncated or invalid text an SDK sends, in one linear pass. What it replaces:
//! - quoted strings (`'..'` with `''` escapes, `E'..'` with backslash escapes, `N'..'`, `X'..'`,
//!   `B'..'`, `$$..$$`, `$tag$..$tag$`) and numbers become `?`;
//! - placeholders (`$1`, `?`, `?1`, `:name`, `:1`, `@name`, `%s`, `%(name)s`) become `?`;
//! - comments (`-- ..` and `/* .. */`, such as sqlcommenter's trace context) are dropped and
//!   whitespace collapses to one space;
//! - `IN (?, ?, ?)` becomes `IN (?)` and `VALUES (?, ?), (?, ?)` becomes `VALUES (...)`, also
//!   when an SDK cut the list short (`IN (1, 2, ...`, or no closing parenthesis).
//!
//! Keywords, identifiers (also `"quoted"` and `` `quoted` `` ones), system variables (`@@rowcount`)
//! and casts (`::int`) are kept as written.
//!
//! Key-value commands (Redis, Memcached: `GET session:8f3a..`, `HMSET user:42 name ann`) are
//! another language: the command is kept, the id-like parts of the key's `:`-separated segments
//! become `?` and the arguments after the key are dropped (`GET session:?`, `HMSET user:?`).
//!
//! Each scan also tells what running the statement does ([`Effect`]): a read can be repeated
//! and reused, a write, a call or a transaction's boundary cannot.
//!
//! Invariant: pure and total; never panics, whatever the bytes, and never looks back more than
//! one token. [`scan_shared_as`] remembers recent results per thread, which changes no answer.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use collector::category::Category;
use foldhash::fast::RandomState;

use super::request::is_id;

/// What a statement is written in, which decides what in it is a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// SQL of any dialect (and anything else a database span carries).
    Sql,
    /// A key-value command: `GET key`, `HMSET key field value`.
    Command,
}

impl Language {
    /// The language of the statements of spans of a category: caches speak commands.
    pub fn of(category: Category) -> Self {
        if category == Category::Cache {
            Self::Command
        } else {
            Self::Sql
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What running a statement does, as far as its text tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Reads data and can be repeated with the same answer: `SELECT`, `GET`, and any statement
    /// not known to be something else.
    Read,
    /// Reads and locks what it read (`SELECT .. FOR UPDATE`, `LOCK TABLE`).
    Lock,
    /// Changes data: `INSERT`, `UPDATE`, `DELETE`, `MERGE`, DDL, `SET key value`, `INCR`.
    Write,
    /// Runs code of unknown effect or draws a new value each time: `CALL`, `EXEC proc`, an
    /// anonymous block, `nextval(..)`, `random()`, a script (`EVAL`).
    Call,
    /// Opens a transaction: `BEGIN`, `START TRANSACTION`, `MULTI`.
    Begin,
    /// Ends one: `COMMIT`, `ROLLBACK`, `END`, `EXEC` (of a `MULTI`).
    End,
    /// Changes the session, not the data: `SET search_path ..`, `SAVEPOINT`, `USE`.
    Control,
}

impl Effect {
    /// Whether running it twice gives the first answer again, so a repeat could reuse it.
    pub fn is_repeatable(self) -> bool {
        self == Self::Read
    }

    /// Whether it fetches data (so a loop of it is fetched in one query, not batched).
    pub fn is_fetch(self) -> bool {
        matches!(self, Self::Read | Self::Lock)
    }

    /// Whether executions in a loop make an N+1: every kind of data access, but not a
    /// transaction's boundaries or session settings.
    pub fn is_data_access(self) -> bool {
        matches!(self, Self::Read | Self::Lock | Self::Write | Self::Call)
    }

    /// The effect of a text holding this and then `other` (statements separated by `;`, the
    /// lines of a pipeline): session settings give way to the rest, the strongest access wins,
    /// and statements beside a transaction's boundary (`BEGIN; INSERT ..; COMMIT`) count as a
    /// write: neither a repeatable read nor a boundary of the request's own transaction.
    fn then(self, other: Effect) -> Effect {
        match (self, other) {
            (Self::Control, next) => next,
            (first, Self::Control) => first,
            (first, next) if first.is_data_access() && next.is_data_access() => first.max(next),
            _ => Self::Write,
        }
    }
}

/// A statement scanned once: its normalized text, and what was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The normalized statement.
    pub normalized: String,
    /// Inline values (strings, numbers, the ids of a key, a command's arguments) replaced by `?`.
    pub n_literals: u32,
    /// Placeholders (`$1`, `?`, `:name`, `@name`, `%s`) replaced by `?`.
    pub n_placeholders: u32,
    /// What running it does.
    pub effect: Effect,
    /// Whether a comment was dropped (so the text is not its own identity: see [`identity`]).
    pub has_comment: bool,
}

/// Statements remembered per thread and language by [`scan_shared_as`]; past it the memory starts
/// over.
const REMEMBERED_STATEMENTS: usize = 4096;

type Remembered = HashMap<Box<str>, Rc<Scanned>, RandomState>;

thread_local! {
    static SCANS: RefCell<[Remembered; 2]> = RefCell::new(Default::default());
}

/// [`scan`] (of SQL), remembered: see [`scan_shared_as`].
pub fn scan_shared(statement: &str) -> Rc<Scanned> {
    scan_shared_as(statement, Language::Sql)
}

/// [`scan_as`], remembered for statements without inline values or comments. Those are what
/// parameterized code sends, the same few texts over and over (the analysis scans each database
/// span twice per request), while texts with literals rarely repeat, and a comment usually
/// carries the trace context of its one execution (sqlcommenter): those are scanned afresh.
pub fn scan_shared_as(statement: &str, language: Language) -> Rc<Scanned> {
    let slot = language.index();
    if let Some(scanned) = SCANS.with_borrow(|scans| scans[slot].get(statement).cloned()) {
        return scanned;
    }
    let scanned = Rc::new(scan_as(statement, language));
    if scanned.n_literals == 0 && !scanned.has_comment {
        SCANS.with_borrow_mut(|scans| {
            let scans = &mut scans[slot];
            if scans.len() >= REMEMBERED_STATEMENTS {
                scans.clear();
            }
            scans.insert(statement.into(), Rc::clone(&scanned));
        });
    }
    scanned
}

/// Scans a statement of either language.
pub fn scan_as(statement: &str, language: Language) -> Scanned {
    match language {
        Language::Sql => scan(statement),
        Language::Command => scan_command(statement),
    }
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

/// What running a SQL statement, or a normalized one of either language, does.
pub fn effect(statement: &str) -> Effect {
    scan_shared(statement).effect
}

/// What makes two executions of a statement the same: its text with values, comments dropped
/// (sqlcommenter's `/*traceparent='..'*/` differs in every execution) and spaces collapsed.
/// Borrowed when the text had no comment; `scanned` is its scan.
pub fn identity<'a>(statement: &'a str, scanned: &Scanned) -> Cow<'a, str> {
    if !scanned.has_comment {
        return Cow::Borrowed(statement);
    }
    let toks = tokenize(statement).toks;
    let mut out = String::with_capacity(statement.len());
    for tok in &toks {
        if tok.space_before && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&statement[tok.start..tok.end]);
    }
    Cow::Owned(out)
}

/// The key of a key-value command (`session:8f3a` of `GET session:8f3a`), as written; the first
/// command's, for a pipeline.
pub fn command_key(statement: &str) -> Option<&str> {
    let line = statement.lines().find(|line| !line.trim().is_empty())?;
    let mut words = line.split_ascii_whitespace();
    let command = words.next()?;
    if is_container_command(command) {
        words.next();
    }
    words.next()
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
    /// Byte range in the statement (for a `Value`, the value as written).
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

/// A statement's tokens and what the tokenizer replaced.
struct Tokens {
    toks: Vec<Tok>,
    n_literals: u32,
    n_placeholders: u32,
    has_comment: bool,
}

/// Scans a SQL statement: normalized text, counts of replaced values, and its effect.
pub fn scan(statement: &str) -> Scanned {
    let tokens = tokenize(statement);
    Scanned {
        normalized: render(statement, &tokens.toks),
        n_literals: tokens.n_literals,
        n_placeholders: tokens.n_placeholders,
        effect: sql_effect(statement, &tokens.toks),
        has_comment: tokens.has_comment,
    }
}

/// Splits a statement into tokens in one pass.
fn tokenize(statement: &str) -> Tokens {
    let bytes = statement.as_bytes();
    let mut toks: Vec<Tok> = Vec::new();
    let mut n_literals = 0u32;
    let mut n_placeholders = 0u32;
    let mut has_comment = false;
    let mut space = false;
    let mut i = 0;
    let len = bytes.len();
    while i < len {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        let prev = i.checked_sub(1).map(|at| bytes[at]);
        // A sigil starts a placeholder only where no word or number runs into it.
        let after_word = prev.is_some_and(is_ident_byte);
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
            has_comment = true;
        } else if b == b'/' && next == Some(b'*') {
            i = find(bytes, i + 2, b"*/").map_or(len, |at| at + 2);
            space = true;
            has_comment = true;
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
            i = skip_digits(bytes, i + 1);
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
            // `?`, or a numbered `?1` (SQLite, JDBC escapes).
            i = skip_digits(bytes, i + 1);
            n_placeholders += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b':' && next == Some(b':') {
            // A cast: `::int` stays as written.
            i += 2;
            push(&mut toks, TokKind::Other, i, &mut space);
        } else if b == b':' && next.is_some_and(|n| n.is_ascii_digit()) && !after_word {
            // Oracle's numbered `:1`, but not `a[1:2]` (a slice) or `12:30`.
            i = skip_digits(bytes, i + 1);
            n_placeholders += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b':' && next.is_some_and(is_ident_start) && !after_word {
            // `:name`, but not `session:ann` (a cache key) or `a:b` (a JSON path).
            i = skip_ident(bytes, i + 1);
            n_placeholders += 1;
            push(&mut toks, TokKind::Value, i, &mut space);
        } else if b == b'@' && next == Some(b'@') {
            // A system variable (`@@ROWCOUNT`, `@@session.x`), kept as written.
            i = skip_ident(bytes, i + 2);
            push(&mut toks, TokKind::Word, i, &mut space);
        } else if b == b'@' && next.is_some_and(is_ident_start) && !after_word {
            // `@p0`, `@__id_0`, `@name` (SqlClient, EF Core, Dapper); not `a@b` or `@>`.
            i = skip_ident(bytes, i + 1);
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
            i = skip_ident(bytes, i);
            push(&mut toks, TokKind::Word, i, &mut space);
        } else {
            i += 1;
            push(&mut toks, TokKind::Other, i, &mut space);
        }
    }
    Tokens {
        toks,
        n_literals,
        n_placeholders,
        has_comment,
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

/// The index after the digits starting at `i`.
fn skip_digits(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// The index after the identifier bytes starting at `i`.
fn skip_ident(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && is_ident_byte(bytes[i]) {
        i += 1;
    }
    i
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

/// Whether `toks[at..]` starts an ellipsis (`...`, `…`): where an SDK cut a list short. Returns
/// how many tokens it takes.
fn ellipsis_len(statement: &str, toks: &[Tok], at: usize) -> Option<usize> {
    let text = |idx: usize| toks.get(idx).map(|t| &statement[t.start..t.end]);
    if text(at) == Some("…") {
        return Some(1);
    }
    (text(at) == Some(".") && text(at + 1) == Some(".") && text(at + 2) == Some(".")).then_some(3)
}

/// If `toks[at]` opens a `( ? , ? , ... )` list, the index of its last token: the closing
/// parenthesis, or the list's last token where the statement was cut short inside it (it ends
/// there, or with an ellipsis).
fn value_list_end(statement: &str, toks: &[Tok], at: usize) -> Option<usize> {
    let text = |tok: &Tok| &statement[tok.start..tok.end];
    if toks
        .get(at)
        .is_none_or(|t| t.kind != TokKind::Other || text(t) != "(")
    {
        return None;
    }
    let last = toks.len() - 1;
    let mut j = at + 1;
    loop {
        // A value is due: the statement may end here, or an ellipsis may say it was cut.
        let Some(tok) = toks.get(j) else {
            return Some(last);
        };
        if let Some(n) = ellipsis_len(statement, toks, j) {
            return match toks.get(j + n) {
                None => Some(last),
                Some(close) if text(close) == ")" => Some(j + n),
                Some(_) => None,
            };
        }
        if tok.kind != TokKind::Value {
            return None;
        }
        // A separator is due.
        let Some(sep) = toks.get(j + 1) else {
            return Some(last);
        };
        if let Some(n) = ellipsis_len(statement, toks, j + 1) {
            return match toks.get(j + 1 + n) {
                None => Some(last),
                Some(close) if text(close) == ")" => Some(j + 1 + n),
                Some(_) => None,
            };
        }
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

/// The longest verb or function name looked up; longer words are none of them.
const MAX_KEYWORD_LEN: usize = 24;

/// `word` in ASCII upper case, in `buf`; `None` when too long to be a keyword.
fn upper<'b>(word: &str, buf: &'b mut [u8; MAX_KEYWORD_LEN]) -> Option<&'b [u8]> {
    let word = word.trim_matches(['"', '`']);
    let out = buf.get_mut(..word.len())?;
    for (to, from) in out.iter_mut().zip(word.as_bytes()) {
        *to = from.to_ascii_uppercase();
    }
    Some(out)
}

/// The effect of a statement starting with `verb` (then the word `next`, if any): SQL verbs and
/// key-value commands in one table, the few that both languages use told apart by `language`.
/// Anything unknown reads.
fn verb_effect(verb: &str, next: Option<&str>, language: Language) -> Effect {
    let mut buf = [0u8; MAX_KEYWORD_LEN];
    let Some(verb) = upper(verb, &mut buf) else {
        return Effect::Read;
    };
    let mut next_buf = [0u8; MAX_KEYWORD_LEN];
    let next = next.and_then(|word| upper(word, &mut next_buf));
    match verb {
        b"BEGIN" => match next {
            // `BEGIN`, `BEGIN TRANSACTION`, `BEGIN ISOLATION LEVEL ..`, SQLite's modes; any
            // other word makes a block of code (PL/SQL, T-SQL).
            None
            | Some(
                b"TRANSACTION" | b"TRAN" | b"WORK" | b"ISOLATION" | b"READ" | b"NOT"
                | b"DEFERRABLE" | b"DEFERRED" | b"IMMEDIATE" | b"EXCLUSIVE" | b"DISTRIBUTED",
            ) => Effect::Begin,
            Some(_) => Effect::Call,
        },
        b"START" if next == Some(b"TRANSACTION") => Effect::Begin,
        b"MULTI" => Effect::Begin,
        b"COMMIT" | b"END" | b"ABORT" => Effect::End,
        b"ROLLBACK" if next == Some(b"TO") => Effect::Control,
        b"ROLLBACK" => Effect::End,
        // Redis's `EXEC` ends a `MULTI`; T-SQL's `EXEC proc` calls one.
        b"EXEC" | b"DISCARD" if next.is_none() => Effect::End,
        b"EXEC" | b"EXECUTE" | b"CALL" | b"DO" | b"DECLARE" | b"EVAL" | b"EVALSHA" | b"FCALL" => {
            Effect::Call
        }
        b"SET" if language == Language::Command => Effect::Write,
        b"SET" | b"SAVEPOINT" | b"RELEASE" | b"USE" | b"RESET" | b"DISCARD" | b"UNLOCK"
        | b"WATCH" | b"UNWATCH" | b"PREPARE" | b"DEALLOCATE" | b"LISTEN" | b"UNLISTEN" => {
            Effect::Control
        }
        b"LOCK" => Effect::Lock,
        // SQL writes and DDL.
        b"INSERT" | b"UPDATE" | b"DELETE" | b"MERGE" | b"UPSERT" | b"REPLACE" | b"TRUNCATE"
        | b"COPY" | b"CREATE" | b"ALTER" | b"DROP" | b"GRANT" | b"REVOKE" | b"COMMENT"
        | b"VACUUM" | b"ANALYZE" | b"REINDEX" | b"REFRESH" | b"LOAD" | b"RENAME" | b"NOTIFY"
        // Redis writes.
        | b"SETEX" | b"SETNX" | b"PSETEX" | b"GETSET" | b"GETDEL" | b"GETEX" | b"MSET"
        | b"MSETNX" | b"APPEND" | b"INCR" | b"INCRBY" | b"INCRBYFLOAT" | b"DECR" | b"DECRBY"
        | b"DEL" | b"UNLINK" | b"EXPIRE" | b"EXPIREAT" | b"PEXPIRE" | b"PEXPIREAT"
        | b"PERSIST" | b"RENAMENX" | b"HSET" | b"HSETNX" | b"HMSET" | b"HDEL" | b"HINCRBY"
        | b"HINCRBYFLOAT" | b"LPUSH" | b"RPUSH" | b"LPUSHX" | b"RPUSHX" | b"LPOP" | b"RPOP"
        | b"BLPOP" | b"BRPOP" | b"LREM" | b"LSET" | b"LTRIM" | b"LINSERT" | b"LMOVE"
        | b"BLMOVE" | b"RPOPLPUSH" | b"SADD" | b"SREM" | b"SPOP" | b"SMOVE" | b"SINTERSTORE"
        | b"SUNIONSTORE" | b"SDIFFSTORE" | b"ZADD" | b"ZREM" | b"ZINCRBY" | b"ZPOPMIN"
        | b"ZPOPMAX" | b"BZPOPMIN" | b"BZPOPMAX" | b"ZREMRANGEBYSCORE" | b"ZREMRANGEBYRANK"
        | b"ZREMRANGEBYLEX" | b"ZUNIONSTORE" | b"ZINTERSTORE" | b"XADD" | b"XDEL" | b"XTRIM"
        | b"XACK" | b"XCLAIM" | b"XAUTOCLAIM" | b"XREADGROUP" | b"SETRANGE" | b"SETBIT"
        | b"PFADD" | b"PFMERGE" | b"FLUSHDB" | b"FLUSHALL" | b"PUBLISH" | b"SPUBLISH"
        | b"RESTORE" | b"MIGRATE" | b"MOVE"
        // Memcached writes.
        | b"ADD" | b"PREPEND" | b"CAS" | b"TOUCH" | b"FLUSH_ALL" => Effect::Write,
        _ => Effect::Read,
    }
}

/// Functions that return something new on every call, so a statement calling them is not
/// repeatable.
fn is_volatile_function(name: &[u8]) -> bool {
    matches!(
        name,
        b"NEXTVAL"
            | b"SETVAL"
            | b"RANDOM"
            | b"RAND"
            | b"NEWID"
            | b"UUID"
            | b"GEN_RANDOM_UUID"
            | b"UUID_GENERATE_V4"
    )
}

/// The effect of a SQL text: each `;`-separated statement by its verb and what follows it
/// (a locking clause, a volatile function, a writing CTE), combined with [`Effect::then`].
fn sql_effect(statement: &str, toks: &[Tok]) -> Effect {
    let text = |tok: &Tok| &statement[tok.start..tok.end];
    let mut total: Option<Effect> = None;
    let mut idx = 0;
    while idx < toks.len() {
        let end = toks[idx..]
            .iter()
            .position(|t| t.kind == TokKind::Other && text(t) == ";")
            .map_or(toks.len(), |at| idx + at);
        let part = &toks[idx..end];
        idx = end + 1;
        let mut words = part.iter().filter(|t| t.kind == TokKind::Word);
        let Some(verb) = words.next() else {
            continue;
        };
        let next = words.next().map(text);
        let mut effect = verb_effect(text(verb), next, Language::Sql);
        if effect == Effect::Read {
            effect = clause_effect(statement, part, text(verb));
        }
        total = Some(total.map_or(effect, |total| total.then(effect)));
        // A block of code (`BEGIN .. END;`, `DECLARE ..`) runs to the end of the text.
        if effect == Effect::Call
            && ["BEGIN", "DECLARE"]
                .iter()
                .any(|block| text(verb).eq_ignore_ascii_case(block))
        {
            break;
        }
    }
    total.unwrap_or(Effect::Read)
}

/// The effect of a statement whose verb reads: a call where it draws a new value
/// (`nextval(..)`, `seq.NEXTVAL`, `NEXT VALUE FOR`), a write where a CTE writes
/// (`WITH x AS (DELETE ..) SELECT ..`), a lock where it locks (`FOR UPDATE`, `FOR SHARE`,
/// `LOCK IN SHARE MODE`), else a read.
fn clause_effect(statement: &str, part: &[Tok], verb: &str) -> Effect {
    let is_with = verb.eq_ignore_ascii_case("WITH");
    let mut locks = false;
    let mut writes = false;
    let mut previous = [0u8; MAX_KEYWORD_LEN];
    let mut previous_len = 0;
    for (at, tok) in part.iter().enumerate() {
        if tok.kind != TokKind::Word {
            previous_len = 0;
            continue;
        }
        let mut buf = [0u8; MAX_KEYWORD_LEN];
        let Some(word) = upper(&statement[tok.start..tok.end], &mut buf) else {
            previous_len = 0;
            continue;
        };
        let before = &previous[..previous_len];
        let called = part
            .get(at + 1)
            .is_some_and(|t| &statement[t.start..t.end] == "(");
        if (called && is_volatile_function(word))
            || word == b"NEXTVAL"
            || (word == b"VALUE" && before == b"NEXT")
        {
            return Effect::Call;
        }
        match word {
            b"UPDATE" if matches!(before, b"FOR" | b"KEY") => locks = true,
            b"SHARE" if matches!(before, b"FOR" | b"KEY" | b"IN") => locks = true,
            b"INSERT" | b"UPDATE" | b"DELETE" | b"MERGE" if is_with => writes = true,
            _ => {}
        }
        previous[..word.len()].copy_from_slice(word);
        previous_len = word.len();
    }
    if writes {
        Effect::Write
    } else if locks {
        Effect::Lock
    } else {
        Effect::Read
    }
}

/// Commands whose first argument is a subcommand (`CLIENT SETNAME`, `CONFIG GET`), not a key.
fn is_container_command(command: &str) -> bool {
    let mut buf = [0u8; MAX_KEYWORD_LEN];
    upper(command, &mut buf).is_some_and(|command| {
        matches!(
            command,
            b"CLIENT"
                | b"CONFIG"
                | b"SCRIPT"
                | b"OBJECT"
                | b"MEMORY"
                | b"CLUSTER"
                | b"COMMAND"
                | b"FUNCTION"
                | b"ACL"
                | b"XINFO"
                | b"XGROUP"
                | b"PUBSUB"
                | b"MODULE"
                | b"LATENCY"
                | b"SLOWLOG"
                | b"DEBUG"
        )
    })
}

/// Writes a key with the id-like parts of its `:`-separated segments (and of their `.`- and
/// `/`-separated parts) as `?`; returns how many were replaced.
fn template_key(key: &str, out: &mut String) -> u32 {
    let mut n_ids = 0;
    for (n, segment) in key.split(':').enumerate() {
        if n > 0 {
            out.push(':');
        }
        if is_id(segment) {
            out.push('?');
            n_ids += 1;
            continue;
        }
        let mut rest = segment;
        while let Some(at) = rest.find(['.', '/']) {
            n_ids += template_key_part(&rest[..at], out);
            out.push_str(&rest[at..=at]);
            rest = &rest[at + 1..];
        }
        n_ids += template_key_part(rest, out);
    }
    n_ids
}

fn template_key_part(part: &str, out: &mut String) -> u32 {
    if is_id(part) {
        out.push('?');
        1
    } else {
        out.push_str(part);
        0
    }
}

/// Scans a key-value command (or a pipeline of them, one per line): each command with its
/// subcommand, its key templated, its other arguments dropped.
pub fn scan_command(statement: &str) -> Scanned {
    let mut normalized = String::with_capacity(statement.len().min(64));
    let mut n_literals = 0u32;
    let mut n_placeholders = 0u32;
    let mut total: Option<Effect> = None;
    for line in statement.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(command) = words.next() else {
            continue;
        };
        if !normalized.is_empty() {
            normalized.push_str("; ");
        }
        normalized.push_str(command);
        let mut key = words.next();
        if is_container_command(command)
            && let Some(subcommand) = key
        {
            normalized.push(' ');
            normalized.push_str(subcommand);
            key = words.next();
        }
        if let Some(key) = key {
            normalized.push(' ');
            if key == "?" {
                // Already sanitized by the SDK: the key is a parameter nobody recorded.
                normalized.push('?');
                n_placeholders += 1;
            } else {
                n_literals += template_key(key, &mut normalized);
            }
        }
        // Values, fields, options: the key says what the command is about.
        n_literals += u32::try_from(words.count()).unwrap_or(u32::MAX);
        let effect = verb_effect(command, key, Language::Command);
        total = Some(total.map_or(effect, |total| total.then(effect)));
    }
    Scanned {
        normalized,
        n_literals,
        n_placeholders,
        effect: total.unwrap_or(Effect::Read),
        has_comment: false,
    }
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
    fn every_dialects_placeholders_are_parameters() {
        // SqlClient, EF Core and Dapper name them `@p0`, `@__id_0`, `@name`; Oracle numbers them
        // `:1`; SQLite and JDBC escapes `?1`. System variables, operators, slices and cache keys
        // are not placeholders.
        check(
            r#"
SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = @__id_0
INSERT INTO [Posts] ([Title], [BlogId]) VALUES (@p0, @p1)
SELECT * FROM users WHERE name = @name AND id IN (@ids1, @ids2)
SELECT * FROM users WHERE id = :1 AND org = :2
SELECT * FROM users WHERE id = ?1
SELECT @@ROWCOUNT, tags @> ARRAY[1], arr[1:2], a@b FROM t
"#,
            expect![[r#"
                0 1 | SELECT [b].[Id] FROM [Blogs] AS [b] WHERE [b].[Id] = ?
                0 2 | INSERT INTO [Posts] ([Title], [BlogId]) VALUES (...)
                0 3 | SELECT * FROM users WHERE name = ? AND id IN (?)
                0 2 | SELECT * FROM users WHERE id = ? AND org = ?
                0 1 | SELECT * FROM users WHERE id = ?
                3 0 | SELECT @@ROWCOUNT, tags @> ARRAY[?], arr[?:?], a@b FROM t
            "#]],
        );
    }

    #[test]
    fn trace_comments_are_dropped_from_shape_and_identity() {
        let executions = [
            "SELECT * FROM t WHERE id = 7 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',controller='orders'*/",
            "SELECT * FROM t WHERE id = 7/*traceparent='00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01'*/",
            "/*controller='orders'*/ SELECT * FROM t WHERE id = 7",
            "SELECT * FROM t WHERE id = 7",
        ];
        let mut shapes = Vec::new();
        let mut identities = Vec::new();
        for statement in executions {
            let scanned = scan(statement);
            identities.push(identity(statement, &scanned).into_owned());
            shapes.push(scanned.normalized);
        }
        assert_eq!(shapes, ["SELECT * FROM t WHERE id = ?"; 4]);
        assert_eq!(identities, ["SELECT * FROM t WHERE id = 7"; 4]);
        assert!(matches!(
            identity(executions[3], &scan(executions[3])),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn truncated_in_lists_collapse_like_whole_ones() {
        check(
            r#"
SELECT * FROM t WHERE id IN (1, 2, 3, ...
SELECT * FROM t WHERE id IN (1, 2, 3...
SELECT * FROM t WHERE id IN (1, 2, …
SELECT * FROM t WHERE id IN (1, 2, ...) AND x = 1
SELECT * FROM t WHERE id IN (1, 2, 3
SELECT * FROM t WHERE id IN (1, 2,
SELECT * FROM t WHERE id IN ('a', 'b
SELECT * FROM t WHERE id IN (
INSERT INTO t (a, b) VALUES (1, 2), (3,
SELECT * FROM t WHERE id IN (1, x
"#,
            expect![[r#"
                3 0 | SELECT * FROM t WHERE id IN (?)
                3 0 | SELECT * FROM t WHERE id IN (?)
                2 0 | SELECT * FROM t WHERE id IN (?)
                3 0 | SELECT * FROM t WHERE id IN (?) AND x = ?
                3 0 | SELECT * FROM t WHERE id IN (?)
                2 0 | SELECT * FROM t WHERE id IN (?)
                2 0 | SELECT * FROM t WHERE id IN (?)
                0 0 | SELECT * FROM t WHERE id IN (?)
                3 0 | INSERT INTO t (a, b) VALUES (...)
                1 0 | SELECT * FROM t WHERE id IN (?, x
            "#]],
        );
    }

    /// One statement per line; renders `effect | statement`.
    #[track_caller]
    fn check_effects(language: Language, statements: &str, expect: Expect) {
        let mut out = String::new();
        for line in statements.lines().filter(|l| !l.trim().is_empty()) {
            let scanned = scan_as(&line.replace("\\n", "\n"), language);
            out.push_str(&format!("{:?} | {line}\n", scanned.effect));
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn what_a_statement_does() {
        check_effects(
            Language::Sql,
            r#"
SELECT * FROM t WHERE id = 1
/* app */ (SELECT 1) UNION (SELECT 2)
WITH x AS (SELECT 1) SELECT * FROM x
SET NOCOUNT ON; SELECT * FROM t
SELECT * FROM t WHERE id = $1 FOR UPDATE
SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED
SELECT * FROM t LOCK IN SHARE MODE
SELECT * FROM t WHERE on_update = 1 AND uuid = $1
INSERT INTO t (a) VALUES ($1)
update t set a = 1
DELETE FROM t WHERE id = 1
MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1
WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone
SET NOCOUNT ON; INSERT INTO [Posts] ([Title]) VALUES (@p0)
{"insert": "users", "documents": []}
SELECT nextval('orders_id_seq')
SELECT orders_seq.NEXTVAL FROM dual
SELECT NEXT VALUE FOR orders_seq
SELECT gen_random_uuid()
CALL refresh_totals($1)
EXEC dbo.refresh_totals @p0
BEGIN my_package.refresh(:1); END;
BEGIN
begin transaction
START TRANSACTION READ ONLY
COMMIT
ROLLBACK
ROLLBACK TO SAVEPOINT s1
SAVEPOINT s1
SET search_path TO app
BEGIN; INSERT INTO t VALUES (1); COMMIT
"#,
            expect![[r#"
                Read | SELECT * FROM t WHERE id = 1
                Read | /* app */ (SELECT 1) UNION (SELECT 2)
                Read | WITH x AS (SELECT 1) SELECT * FROM x
                Read | SET NOCOUNT ON; SELECT * FROM t
                Lock | SELECT * FROM t WHERE id = $1 FOR UPDATE
                Lock | SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED
                Lock | SELECT * FROM t LOCK IN SHARE MODE
                Read | SELECT * FROM t WHERE on_update = 1 AND uuid = $1
                Write | INSERT INTO t (a) VALUES ($1)
                Write | update t set a = 1
                Write | DELETE FROM t WHERE id = 1
                Write | MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1
                Write | WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone
                Write | SET NOCOUNT ON; INSERT INTO [Posts] ([Title]) VALUES (@p0)
                Write | {"insert": "users", "documents": []}
                Call | SELECT nextval('orders_id_seq')
                Call | SELECT orders_seq.NEXTVAL FROM dual
                Call | SELECT NEXT VALUE FOR orders_seq
                Call | SELECT gen_random_uuid()
                Call | CALL refresh_totals($1)
                Call | EXEC dbo.refresh_totals @p0
                Call | BEGIN my_package.refresh(:1); END;
                Begin | BEGIN
                Begin | begin transaction
                Begin | START TRANSACTION READ ONLY
                End | COMMIT
                End | ROLLBACK
                Control | ROLLBACK TO SAVEPOINT s1
                Control | SAVEPOINT s1
                Control | SET search_path TO app
                Write | BEGIN; INSERT INTO t VALUES (1); COMMIT
            "#]],
        );
    }

    /// One command per line; renders `literals placeholders effect | normalized | key`.
    #[track_caller]
    fn check_commands(statements: &str, expect: Expect) {
        let mut out = String::new();
        for line in statements.lines().filter(|l| !l.trim().is_empty()) {
            let statement = line.replace("\\n", "\n");
            let scanned = scan_command(&statement);
            out.push_str(&format!(
                "{} {} {:?} | {} | {}\n",
                scanned.n_literals,
                scanned.n_placeholders,
                scanned.effect,
                scanned.normalized,
                command_key(&statement).unwrap_or("-"),
            ));
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn cache_keys_are_templated_and_values_dropped() {
        check_commands(
            r#"
GET session:8f3a9c2e41d07b65
GET session:ann
GET user:12345:profile
get SESSION:550E8400-E29B-41D4-A716-446655440000
HMSET user:42 name ann email ann@acme.example
SET session:8f3a9c2e41d07b65 {"user":42} EX 3600
HGET cart:order-12345 total
DEL rate:2024-05-01:ann@acme.example
SET [1 other arguments]
GET ?
SETEX ? ? ?
MULTI
EXEC
CLIENT SETNAME worker-1
GET :1:views.decorators.cache.cache_page.d41d8cd98f00b204e9800998ecf8427e
GET a:1\nGET b:2
set user_42 0 3600 5
INCR hits:2024-05-01
"#,
            expect![[r#"
                1 0 Read | GET session:? | session:8f3a9c2e41d07b65
                0 0 Read | GET session:ann | session:ann
                1 0 Read | GET user:?:profile | user:12345:profile
                1 0 Read | get SESSION:? | SESSION:550E8400-E29B-41D4-A716-446655440000
                5 0 Write | HMSET user:? | user:42
                4 0 Write | SET session:? | session:8f3a9c2e41d07b65
                2 0 Read | HGET cart:? | cart:order-12345
                2 0 Write | DEL rate:?:? | rate:2024-05-01:ann@acme.example
                2 0 Write | SET [1 | [1
                0 1 Read | GET ? | ?
                2 1 Write | SETEX ? | ?
                0 0 Begin | MULTI | -
                0 0 End | EXEC | -
                0 0 Read | CLIENT SETNAME worker-1 | worker-1
                2 0 Read | GET :?:views.decorators.cache.cache_page.? | :1:views.decorators.cache.cache_page.d41d8cd98f00b204e9800998ecf8427e
                2 0 Read | GET a:?; GET b:? | a:1
                4 0 Write | set ? | user_42
                1 0 Write | INCR hits:? | hits:2024-05-01
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
            assert!(scans[0].contains_key(parameterized));
            assert!(
                !scans[0].contains_key(literal),
                "texts with values are not kept"
            );
        });
        for n in 0..REMEMBERED_STATEMENTS + 10 {
            scan_shared(&format!("SELECT * FROM t{n} WHERE id = ?"));
        }
        SCANS.with_borrow(|scans| assert!(scans[0].len() <= REMEMBERED_STATEMENTS));
    }

    proptest::proptest! {
        #[test]
        fn any_text_scans_without_panicking(text in "(?s).{0,64}", sqlish in "[ '$:?%()@a-z0-9.,E*/\\n-]{0,64}") {
            for input in [text, sqlish] {
                for language in [Language::Sql, Language::Command] {
                    let scanned = scan_as(&input, language);
                    proptest::prop_assert!(scanned.normalized.len() <= input.len() * 2 + 8);
                    identity(&input, &scanned);
                }
                command_key(&input);
            }
        }
    }
}
