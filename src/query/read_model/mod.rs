//! The read database: one projection generation's tables, one module per
//! table (`orders`, `history`, `positions`, `parked`), the `COPY` encoder
//! (`copy`) and the batch write (`batch`). The generations' control table is
//! `generation`'s; the condition every write checks is `control`'s.
//!
//! All tables of a generation sit in one PostgreSQL schema whose name is a
//! parameter (`DEFAULT_SCHEMA` for the first generation, `read_model_g<N>`
//! after). A `ReadModel` has a connection pool of its own whose connections
//! have `search_path` set to its schema, so every statement names its tables
//! unqualified and is checked when it is compiled (`sqlx::query!` against
//! `.sqlx/`, written by `scripts/sqlx-prepare`); a generation being rebuilt
//! beside the live one is another `ReadModel` over another schema.

mod batch;
mod copy;
pub mod digest;
mod history;
mod orders;
mod parked;
mod positions;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Executor, PgPool};
use uuid::Uuid;

pub use batch::{Applied, BatchWrite};
pub use history::{EventOrigin, HistoryRecord, Until};
pub use orders::{OrderView, status_name};
pub use parked::{DeadLetter, ParkedEvent, StoredDeadLetter};

use crate::query::{QueryError, control::lock_migrations};

/// Schema of the live projection.
pub const DEFAULT_SCHEMA: &str = "read_model";

/// Read migrations, applied inside the projection's schema.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/read");

/// Checks that a schema name is a plain lower-case SQL identifier.
fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 40
}

/// `schema` if it is a plain lower-case SQL identifier (safe to splice into DDL).
pub fn checked_schema(schema: &str) -> Result<&str, QueryError> {
    if valid_schema(schema) {
        Ok(schema)
    } else {
        Err(QueryError::Config(format!(
            "projection schema {schema:?} must be a lower-case SQL identifier"
        )))
    }
}

/// Handle on one projection generation in the read database.
#[derive(Debug, Clone)]
pub struct ReadModel {
    /// Connections whose `search_path` is `schema` alone.
    pool: PgPool,
    schema: Arc<str>,
    channel: Arc<str>,
}

/// The orders and parked events a batch continues from.
#[derive(Debug, Default)]
pub struct LoadedStates {
    /// Projected orders, by id (absent: not projected).
    pub views: HashMap<Uuid, OrderView>,
    /// Their parked events.
    pub parked: Vec<ParkedEvent>,
}

impl ReadModel {
    /// The projection in `schema` (a plain lower-case identifier), on a pool
    /// of its own with `pool`'s settings and database whose connections have
    /// `search_path` set to `schema`. It connects when first used.
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, QueryError> {
        let schema = checked_schema(schema)?;
        let options = pool
            .connect_options()
            .as_ref()
            .clone()
            .options([("search_path", schema)]);
        Ok(Self {
            pool: pool.options().clone().connect_lazy_with(options),
            schema: schema.into(),
            channel: format!("{schema}.order_projected").into(),
        })
    }

    /// The schema holding this projection's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The NOTIFY channel announcing `order_id:version` pairs after each commit.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the schema if needed and applies the read migrations inside it.
    pub async fn migrate(&self) -> Result<(), QueryError> {
        // A connection of its own: its search_path must not leak into the pool.
        let mut conn = self.pool.acquire().await?.detach();
        lock_migrations(&mut conn).await?;
        // DDL: the schema name is checked by `new`.
        conn.execute(&*format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}",
            schema = self.schema()
        ))
        .await?;
        let migrated = MIGRATOR.run(&mut conn).await;
        sqlx::Connection::close(conn).await?;
        Ok(migrated?)
    }

    /// Whether the database answers `SELECT 1` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let ping = sqlx::query_scalar!("SELECT 1 AS one").fetch_one(&self.pool);
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }

    /// When the projection last applied an event.
    pub async fn projected_at(&self) -> Result<Option<DateTime<Utc>>, QueryError> {
        Ok(
            sqlx::query_scalar!("SELECT last_applied_at FROM projection_meta")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The projected state and parked events of `order_ids`; with
    /// `probe_first`, only the orders that turn out projected are loaded
    /// (cheaper when most are not, as in a bulk load).
    pub async fn load_states(
        &self,
        order_ids: &[Uuid],
        probe_first: bool,
    ) -> Result<LoadedStates, QueryError> {
        if order_ids.is_empty() {
            return Ok(LoadedStates::default());
        }
        let projected: Vec<Uuid>;
        let to_load = if probe_first {
            projected = self.projected_among(order_ids).await?;
            &projected[..]
        } else {
            order_ids
        };
        let views = if to_load.is_empty() {
            HashMap::new()
        } else {
            self.load_views(to_load).await?
        };
        Ok(LoadedStates {
            views,
            parked: self.load_parked(order_ids).await?,
        })
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn corrupt(order_id: Uuid, what: &str, detail: impl std::fmt::Display) -> QueryError {
    QueryError::Corrupt(format!("order {order_id}: {what}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("read_model"));
        assert!(valid_schema("read_model_g2"));
        for bad in ["", "2x", "Read", "a-b", "a;drop", "a.b", "\"x\""] {
            assert!(!valid_schema(bad), "{bad:?}");
        }
    }
}
