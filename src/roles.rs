//! The PostgreSQL roles the processes connect as (ARCHITECTURE.md, "Database
//! roles"). A server refuses to start as a superuser, which could rewrite the
//! event store or drop its append-only trigger, unless told it may
//! (`--allow-superuser`, for tests and throwaway databases).

use sqlx::PgPool;

/// Why a server may not use its database connection.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The connection's role is a superuser and that was not allowed.
    #[error(
        "the database role {role} is a PostgreSQL superuser: connect as the server's own role \
         (see ARCHITECTURE.md, \"Database roles\"), or pass --allow-superuser \
         (ORDERS_ALLOW_SUPERUSER=true) for a throwaway database"
    )]
    Superuser {
        /// The role.
        role: String,
    },
    /// The role could not be looked up.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Checks the role `pool` connects as: a superuser is refused unless
/// `allow_superuser`, and then logged.
pub async fn refuse_superuser(pool: &PgPool, allow_superuser: bool) -> Result<(), RoleError> {
    let role = sqlx::query!(
        r#"SELECT current_user AS "name!", rolsuper AS "superuser!"
           FROM pg_roles WHERE rolname = current_user"#
    )
    .fetch_one(pool)
    .await?;
    if !role.superuser {
        return Ok(());
    }
    if !allow_superuser {
        return Err(RoleError::Superuser { role: role.name });
    }
    tracing::warn!(role = %role.name, "connected to PostgreSQL as a superuser (--allow-superuser)");
    Ok(())
}
