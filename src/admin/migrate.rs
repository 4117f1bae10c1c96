//! `migrate`: applies the write database's migrations as the event store's
//! owner (the migrator role), before the command servers start; they only
//! check them (see `command::migrations`).

use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::PgPoolOptions;

use crate::{admin::AdminError, command::migrations};

/// What `migrate` did.
#[derive(Debug, Clone, Serialize)]
pub struct Migrated {
    /// The versions applied now, oldest first (none: already up to date).
    pub applied: Vec<i64>,
    /// The latest version this build knows.
    pub latest: i64,
}

/// Applies the missing write migrations with a connection to `database_url`.
pub async fn migrate(database_url: &str) -> Result<Migrated, AdminError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await?;
    let applied = migrations::apply(&pool).await;
    pool.close().await;
    Ok(Migrated {
        applied: applied?,
        latest: migrations::MIGRATOR
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0),
    })
}
