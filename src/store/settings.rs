//! The store's own settings: where it lives (`database_url`), how it commits (`[store]`) and how
//! long it keeps data (`[retention]`).
//!
//! Invariant: plain values; the store reads them once when it opens or a task starts.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use crate::time::duration_text;

/// The store when nothing names one: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "bottleneck.db";

/// Where the store lives.
#[derive(Clone, PartialEq)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

/// Shows a PostgreSQL URL without its password (in the user part or a `password=` parameter),
/// so that start-up errors, which print the URL, never print the password.
impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

fn redact_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The last '@' ends the user part: a password may itself hold an '@'.
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl DatabaseUrl {
    /// A `sqlite:` URL or a plain path selects SQLite; `postgres://` or `postgresql://`, PostgreSQL.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_owned()));
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            bail!("database url {text:?} names no file");
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// When an SQLite commit counts as done (`PRAGMA synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Each commit waits for the write-ahead log to reach the disk (fsync): an acknowledged
    /// export survives a power loss. The default, because an export is acknowledged only once
    /// durable, and group commit makes it one fsync per group, not per export.
    #[default]
    Full,
    /// The log reaches the disk only at checkpoints: a commit survives a crash of the process
    /// but a power loss (or a kernel crash) can take the last commits back, acknowledged or not.
    Normal,
}

impl FromStr for SqliteSynchronous {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Self::Full),
            "normal" => Ok(Self::Normal),
            other => Err(format!(
                "sqlite_synchronous {other:?} is neither \"full\" nor \"normal\""
            )),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// SQLite only; PostgreSQL follows the server's own `synchronous_commit`.
    pub sqlite_synchronous: SqliteSynchronous,
}

/// Spans and request rows are kept a week: it covers a release cycle's traces.
pub const DEFAULT_SPANS_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Minute and hourly rollups are kept 90 days: they cover a quarter's SLO windows.
pub const DEFAULT_ROLLUPS_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// Retention runs hourly: day partitions need no more, and SQLite batches stay small.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(3_600);

/// `[retention]`: how long data is kept, spans (blocks, their index, request rows) and rollups
/// separately, because rollups are small and answer long-range questions spans cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Spans and request rows older than this go.
    #[serde(deserialize_with = "duration_text")]
    pub spans: Duration,
    /// Minute and hourly rollups older than this go.
    #[serde(deserialize_with = "duration_text")]
    pub rollups: Duration,
    /// How often retention runs.
    #[serde(deserialize_with = "duration_text")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            spans: DEFAULT_SPANS_RETENTION,
            rollups: DEFAULT_ROLLUPS_RETENTION,
            interval: DEFAULT_RETENTION_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("bottleneck.db").unwrap(),
            DatabaseUrl::Sqlite("bottleneck.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:data.db?mode=rwc").unwrap(),
            DatabaseUrl::Sqlite("data.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@h/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(DatabaseUrl::parse("sqlite:").is_err());
    }

    #[test]
    fn database_urls_are_shown_without_their_password() {
        let shown = |text: &str| DatabaseUrl::parse(text).unwrap().to_string();
        assert_eq!(
            shown("postgres://app:s3cr@t@db.internal:5432/traces?sslmode=require"),
            "postgres://app:***@db.internal:5432/traces?sslmode=require"
        );
        assert_eq!(
            shown("postgresql://db/traces?user=app&password=s3cret"),
            "postgresql://db/traces?user=app&password=***"
        );
        assert_eq!(
            shown("postgres://app@db/traces"),
            "postgres://app@db/traces"
        );
        assert_eq!(shown("sqlite:data.db"), "data.db");
    }

    #[test]
    fn synchronous_is_full_unless_set_to_normal() {
        assert_eq!(
            StoreSettings::default().sqlite_synchronous,
            SqliteSynchronous::Full
        );
        let settings: StoreSettings = toml::from_str("sqlite_synchronous = \"normal\"").unwrap();
        assert_eq!(settings.sqlite_synchronous, SqliteSynchronous::Normal);
        assert_eq!("FULL".parse(), Ok(SqliteSynchronous::Full));
        assert!("extra".parse::<SqliteSynchronous>().is_err());
        assert!(toml::from_str::<StoreSettings>("synchronous = \"full\"").is_err());
    }
}
