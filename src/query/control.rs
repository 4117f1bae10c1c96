//! The generations' control table as every projection write sees it: the
//! states a generation goes through, a write's condition on its generation,
//! and the locks that serialise migrations and switches. Below both
//! `read_model` (which checks the condition in each write) and `generation`
//! (which owns the table).

use std::{fmt, str::FromStr};

use crate::query::QueryError;

/// Takes the advisory lock serialising every migration of the read database,
/// for the session of `conn` (its migration ends by closing it). The session
/// loses the server's statement and lock timeouts: it may wait for another
/// process's migration and rewrite large tables.
pub(crate) async fn lock_migrations(conn: &mut sqlx::PgConnection) -> Result<(), QueryError> {
    crate::limits::lift_session_timeouts(conn).await?;
    sqlx::query!("SELECT pg_advisory_lock(hashtext('orders.read_model.migrate'))")
        .execute(conn)
        .await?;
    Ok(())
}

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenerationState {
    /// Being filled by a rebuild; not read.
    Building,
    /// Read and written by the query servers.
    Live,
    /// Replaced by a newer generation; kept until dropped.
    Retired,
    /// Failed its verification or was abandoned; never read.
    Failed,
}

impl GenerationState {
    /// The name stored in the control table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Live => "live",
            Self::Retired => "retired",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for GenerationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GenerationState {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "building" => Self::Building,
            "live" => Self::Live,
            "retired" => Self::Retired,
            "failed" => Self::Failed,
            other => {
                return Err(QueryError::Corrupt(format!(
                    "unknown generation state {other:?}"
                )));
            }
        })
    }
}

/// A projection write's condition: `generation` is still in `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteCondition {
    /// The generation written.
    pub generation: i32,
    /// The state it must be in.
    pub state: GenerationState,
}
