//! The write database's migrations (`migrations/write`): applied by the role
//! that owns the event store (`orderctl migrate`, as the migrator), and
//! checked by `order-command` at start-up, which applies them itself only
//! when its role may (a superuser on a throwaway database); see
//! ARCHITECTURE.md, "Database roles".

use std::collections::HashMap;

use sqlx::{PgPool, migrate::MigrateError, migrate::Migrator};

/// The write migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/write");

/// Why the write database's migrations are not in order.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying failed, or the applied migrations are not this build's.
    #[error("write migrations: {0}")]
    Migrate(#[from] MigrateError),
    /// Migrations are missing and the server's role may not apply them.
    #[error(
        "the write database lacks migrations ({missing}) and role {role} may not apply them: \
         apply them as the event store's owner with `orderctl migrate` \
         (ORDERS_WRITE_MIGRATE_DATABASE_URL)"
    )]
    NotApplied {
        /// The missing versions, or why they are unknown.
        missing: String,
        /// The role the server connects as.
        role: String,
    },
}

/// The versions of this build's migrations that the database of `pool` has
/// not applied. An applied migration that differs from this build's, failed
/// half-way or is unknown to it is an error, as it is for `Migrator::run`.
pub async fn missing(pool: &PgPool) -> Result<Vec<i64>, MigrationError> {
    let bookkept =
        sqlx::query_scalar!(r#"SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS "bookkept!""#)
            .fetch_one(pool)
            .await?;
    let applied: HashMap<i64, (bool, Vec<u8>)> = if bookkept {
        // sqlx's own bookkeeping table: not in the database the macros check
        // statements against, so this statement stays runtime text.
        sqlx::query_as::<_, (i64, bool, Vec<u8>)>(
            "SELECT version, success, checksum FROM _sqlx_migrations",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(version, success, checksum)| (version, (success, checksum)))
        .collect()
    } else {
        HashMap::new()
    };
    let known: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    if let Some(&unknown) = applied
        .keys()
        .find(|v| !known.iter().any(|m| m.version == **v))
    {
        return Err(MigrateError::VersionMissing(unknown).into());
    }
    let mut missing = vec![];
    for migration in known {
        match applied.get(&migration.version) {
            None => missing.push(migration.version),
            Some((false, _)) => return Err(MigrateError::Dirty(migration.version).into()),
            Some((true, checksum)) if checksum[..] != migration.checksum[..] => {
                return Err(MigrateError::VersionMismatch(migration.version).into());
            }
            Some(_) => {}
        }
    }
    Ok(missing)
}

/// Applies the missing migrations (as a role that may: the event store's
/// owner); returns the versions applied.
pub async fn apply(pool: &PgPool) -> Result<Vec<i64>, MigrationError> {
    let missing = missing(pool).await?;
    if !missing.is_empty() {
        MIGRATOR.run(pool).await?;
    }
    Ok(missing)
}

/// At a server's start: passes when every migration is applied; else applies
/// them if the server's role may, and otherwise says who should.
pub async fn ensure_applied(pool: &PgPool) -> Result<(), MigrationError> {
    let missing = match missing(pool).await {
        Ok(missing) if missing.is_empty() => return Ok(()),
        Ok(missing) => missing
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        // The grants that let the servers read it come with migration 2.
        Err(MigrationError::Database(error)) if is_permission_denied(&error) => {
            "unknown: the role may not read _sqlx_migrations".to_owned()
        }
        Err(error) => return Err(error),
    };
    // Migrations may take longer than the server's statement timeout.
    let mut conn = pool.acquire().await?.detach();
    crate::limits::lift_session_timeouts(&mut conn).await?;
    let applied = MIGRATOR.run(&mut conn).await;
    let _ = sqlx::Connection::close(conn).await;
    match applied {
        Ok(()) => Ok(()),
        Err(MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _))
            if is_permission_denied(&error) =>
        {
            let role = sqlx::query_scalar!(r#"SELECT current_user AS "role!""#)
                .fetch_one(pool)
                .await?;
            Err(MigrationError::NotApplied { missing, role })
        }
        Err(error) => Err(error.into()),
    }
}

/// SQLSTATE 42501, insufficient_privilege.
fn is_permission_denied(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("42501"))
}
