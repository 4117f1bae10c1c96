//! The read database: one projection generation's tables, one module per
//! table (`orders`, `history`, `positions`, `parked`), the `COPY` encoder
//! (`copy`) and the batch write (`batch`). The generations' control table is
//! `generation`'s; the condition every write checks is `control`'s.
//!
//! All tables of a generation sit in one PostgreSQL schema whose name is a
//! parameter (`DEFAULT_SCHEMA` for the first generation, `read_model_g<N>`
//! after). Statements are schema-qualified once, when a `ReadModel` is made,
//! so a generation being rebuilt beside the live one is another `ReadModel`
//! over another schema.

mod batch;
mod copy;
pub mod digest;
mod history;
mod orders;
mod parked;
mod positions;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Executor, PgPool, Row};
use uuid::Uuid;

pub use batch::{Applied, BatchWrite, parse_notification};
pub use history::{EventOrigin, HistoryRecord};
pub use orders::{OrderView, status_name};
pub use parked::{DeadLetter, ParkedEvent, StoredDeadLetter};

use crate::query::{
    QueryError,
    control::MIGRATE_LOCK,
    page_token::{ListFilter, OrdersCursor},
};

/// Schema of the live projection.
pub const DEFAULT_SCHEMA: &str = "read_model";

/// Read migrations, applied inside the projection's schema.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/read");

/// The schema-qualified statements of one projection generation.
#[derive(Debug)]
struct Statements {
    schema: String,
    channel: String,
    orders: orders::Sql,
    history: history::Sql,
    positions: positions::Sql,
    parked: parked::Sql,
    projected_at: String,
    apply: String,
}

impl Statements {
    fn new(s: &str) -> Self {
        Self {
            schema: s.to_owned(),
            channel: format!("{s}.order_projected"),
            orders: orders::Sql::new(s),
            history: history::Sql::new(s),
            positions: positions::Sql::new(s),
            parked: parked::Sql::new(s),
            projected_at: format!("SELECT last_applied_at FROM {s}.projection_meta"),
            apply: batch::statement(s),
        }
    }
}

/// Checks that a schema name is a plain lower-case SQL identifier.
fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 40
}

/// Handle on one projection generation in the read database.
#[derive(Debug, Clone)]
pub struct ReadModel {
    pool: PgPool,
    sql: Arc<Statements>,
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
    /// The projection in `schema` (a plain lower-case identifier) on `pool`.
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, QueryError> {
        if !valid_schema(schema) {
            return Err(QueryError::Config(format!(
                "projection schema {schema:?} must be a lower-case SQL identifier"
            )));
        }
        Ok(Self {
            pool,
            sql: Arc::new(Statements::new(schema)),
        })
    }

    /// The schema holding this projection's tables.
    pub fn schema(&self) -> &str {
        &self.sql.schema
    }

    /// The NOTIFY channel announcing `order_id:version` pairs after each commit.
    pub fn channel(&self) -> &str {
        &self.sql.channel
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the schema if needed and applies the read migrations inside it.
    pub async fn migrate(&self) -> Result<(), QueryError> {
        // A connection of its own: its search_path must not leak into the pool.
        let mut conn = self.pool.acquire().await?.detach();
        conn.execute(MIGRATE_LOCK).await?;
        conn.execute(&*format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}",
            schema = self.schema()
        ))
        .await?;
        let migrated = MIGRATOR.run(&mut conn).await;
        sqlx::Connection::close(conn).await?;
        Ok(migrated?)
    }

    /// Drops `order_view`'s secondary indexes if no order is projected yet,
    /// for a bulk load; `restore_indexes` creates them again. Returns whether
    /// they were dropped.
    pub async fn defer_indexes(&self) -> Result<bool, QueryError> {
        let s = self.schema();
        let mut tx = self.pool.begin().await?;
        // Locks out every other writer of the table until the decision commits.
        tx.execute(&*format!(
            "LOCK TABLE {s}.order_view IN SHARE ROW EXCLUSIVE MODE"
        ))
        .await?;
        let empty: bool =
            sqlx::query_scalar(&format!("SELECT NOT EXISTS (SELECT 1 FROM {s}.order_view)"))
                .fetch_one(&mut *tx)
                .await?;
        if !empty {
            tx.rollback().await?;
            return Ok(false);
        }
        for (name, _) in orders::DEFERRABLE_INDEXES {
            tx.execute(&*format!("DROP INDEX IF EXISTS {s}.{name}"))
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Creates whatever `defer_indexes` dropped (nothing when all are there).
    pub async fn restore_indexes(&self) -> Result<(), QueryError> {
        let s = self.schema();
        // Each on a connection of its own: index builds share the table (SHARE
        // locks), so they run side by side on the server's cores.
        let built = futures::future::join_all(orders::DEFERRABLE_INDEXES.iter().map(
            |(name, definition)| {
                let statement = format!(
                    "CREATE INDEX IF NOT EXISTS {name} {}",
                    definition.replacen("order_view", &format!("{s}.order_view"), 1)
                );
                async move { self.pool.execute(&*statement).await }
            },
        ))
        .await;
        for result in built {
            result?;
        }
        Ok(())
    }

    /// Whether the database answers `SELECT 1` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }

    /// One order, read in one snapshot with the projection's freshness
    /// (when the projection last applied an event).
    pub async fn get_order_fresh(
        &self,
        order_id: Uuid,
    ) -> Result<Option<(OrderView, Option<DateTime<Utc>>)>, QueryError> {
        let Some(row) = sqlx::query(&self.sql.orders.get)
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((
            orders::order_from_row(&row)?,
            row.try_get("projected_at")?,
        )))
    }

    /// The order's projected version, if it is projected.
    pub async fn order_version(&self, order_id: Uuid) -> Result<Option<u64>, QueryError> {
        let version: Option<i64> = sqlx::query_scalar(&self.sql.orders.version)
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(version.map(to_u64))
    }

    /// Up to `limit` orders matching `filter`, newest first, strictly after `after`.
    pub async fn list_orders(
        &self,
        filter: &ListFilter,
        after: Option<OrdersCursor>,
        limit: u32,
    ) -> Result<Vec<OrderView>, QueryError> {
        let variant = usize::from(filter.customer_id.is_some())
            | usize::from(filter.status.is_some()) << 1
            | usize::from(after.is_some()) << 2;
        let placed_at = after
            .map(|c| {
                DateTime::from_timestamp_micros(c.placed_at_micros)
                    .ok_or_else(|| QueryError::invalid("page_token", "is out of range"))
            })
            .transpose()?;
        sqlx::query(&self.sql.orders.list[variant])
            .bind(i64::from(limit))
            .bind(filter.customer_id.as_deref())
            .bind(filter.status.as_deref())
            .bind(placed_at)
            .bind(after.map(|c| c.order_id))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(orders::order_from_row)
            .collect()
    }

    /// Up to `limit` encoded events of the order with versions above `after_version`, oldest first.
    pub async fn history(
        &self,
        order_id: Uuid,
        after_version: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, QueryError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&self.sql.history.page)
            .bind(order_id)
            .bind(to_i64(after_version))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(v, p)| (to_u64(v), p)).collect())
    }

    /// When the projection last applied an event.
    pub async fn projected_at(&self) -> Result<Option<DateTime<Utc>>, QueryError> {
        Ok(sqlx::query_scalar(&self.sql.projected_at)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The stored next offsets of `partitions` of `topic`; absent partitions have none.
    pub async fn positions(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, QueryError> {
        let rows: Vec<(i32, i64)> = sqlx::query_as(&self.sql.positions.load)
            .bind(topic)
            .bind(partitions)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// The stored next offset of every positioned partition of `topic`.
    pub async fn all_positions(&self, topic: &str) -> Result<HashMap<i32, i64>, QueryError> {
        let rows: Vec<(i32, i64)> = sqlx::query_as(&self.sql.positions.all)
            .bind(topic)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Stores `positions` of a projection that has none yet (a rebuild from the
    /// event store); positions already stored are kept.
    pub async fn seed_positions(
        &self,
        topic: &str,
        positions: &HashMap<i32, i64>,
    ) -> Result<(), QueryError> {
        let (partitions, offsets): (Vec<i32>, Vec<i64>) = positions.iter().unzip();
        sqlx::query(&self.sql.positions.seed)
            .bind(topic)
            .bind(partitions)
            .bind(offsets)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every parked message, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<StoredDeadLetter>, QueryError> {
        sqlx::query(&self.sql.parked.dead_letters)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(parked::dead_letter_from_row)
            .collect()
    }

    /// How many messages are parked.
    pub async fn dead_letter_count(&self) -> Result<i64, QueryError> {
        Ok(sqlx::query_scalar(&self.sql.parked.dead_letter_count)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The dead letter `id`, if it is there.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<StoredDeadLetter>, QueryError> {
        sqlx::query(&self.sql.parked.dead_letter)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(parked::dead_letter_from_row)
            .transpose()
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
            projected = sqlx::query_scalar(&self.sql.orders.projected_among)
                .bind(order_ids)
                .fetch_all(&self.pool)
                .await?;
            &projected[..]
        } else {
            order_ids
        };
        let views = if to_load.is_empty() {
            HashMap::new()
        } else {
            sqlx::query(&self.sql.orders.load)
                .bind(to_load)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| orders::order_from_row(row).map(|view| (view.order_id, view)))
                .collect::<Result<_, QueryError>>()?
        };
        let rows: Vec<parked::PendingRow> = sqlx::query_as(&self.sql.parked.load_pending)
            .bind(order_ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(LoadedStates {
            views,
            parked: rows.into_iter().map(parked::parked_from_row).collect(),
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
