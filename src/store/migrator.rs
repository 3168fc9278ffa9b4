//! A backend's embedded migrations as sqlx runs them: each store's list of files lives beside
//! its backend (`sqlite.rs`, `postgres.rs`), the files under `migrations/`.
//!
//! Invariant: a migration that has been applied is never edited; a change is a new one.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Migrations as (version, description, SQL), in order.
///
/// `migrations!("sqlite": 1 "init" "0001_init", ..)` lists the files under
/// `migrations/sqlite/`, one line each.
macro_rules! migrations {
    ($dir:literal: $($version:literal $description:literal $file:literal),* $(,)?) => {
        &[$((
            $version,
            $description,
            include_str!(concat!("migrations/", $dir, "/", $file, ".sql")),
        )),*]
    };
}

pub(super) type Migrations = [(i64, &'static str, &'static str)];

/// The migrations of `migrations` up to version `last`: `i64::MAX` for all of them; tests make
/// stores as an older release left them.
pub(super) fn migrator(migrations: &Migrations, last: i64) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .filter(|(version, ..)| *version <= last)
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}
