//! The store's own settings (`[store]` in the config file).
//!
//! Invariant: plain values; the store reads them once when it opens.

use std::str::FromStr;

use serde::Deserialize;

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

#[cfg(test)]
mod tests {
    use super::*;

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
