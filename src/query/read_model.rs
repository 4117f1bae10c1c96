//! The read database: every SQL statement of one projection generation lives
//! here (the generations' control table is `generation`'s).
//!
//! All tables of a generation sit in one PostgreSQL schema whose name is a
//! parameter (`DEFAULT_SCHEMA` for the first generation, `read_model_g<N>`
//! after). Statements are schema-qualified once, when a `ReadModel` is made,
//! so a generation being rebuilt beside the live one is another `ReadModel`
//! over another schema.
//!
//! Statements are built at run time, not with `sqlx::query!`, because the
//! schema name is not known at compile time.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Executor, PgPool, Postgres, Row, Transaction, postgres::PgRow};
use uuid::Uuid;

use crate::domain::{
    CancelReason, CurrencyCode, CustomerId, Order, OrderLine, OrderStatus, ProductId, Quantity,
    TrackingNumber, UnitPrice,
};
use crate::query::{
    QueryError,
    generation::{LOCK_FOR_WRITE, MIGRATE_LOCK, WriteCondition},
    page_token::{ListFilter, OrdersCursor},
};

/// Schema of the live projection.
pub const DEFAULT_SCHEMA: &str = "read_model";

/// Read migrations, applied inside the projection's schema.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/read");

/// Longest payload of one NOTIFY; PostgreSQL's limit is 8000 bytes.
const NOTIFY_PAYLOAD_MAX: usize = 7_000;

/// Name of a status in the read model (`order_view.status`).
pub fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::New => "new",
        OrderStatus::Placed => "placed",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Shipped => "shipped",
        OrderStatus::Cancelled => "cancelled",
    }
}

fn status_from_name(name: &str) -> Option<OrderStatus> {
    Some(match name {
        "new" => OrderStatus::New,
        "placed" => OrderStatus::Placed,
        "confirmed" => OrderStatus::Confirmed,
        "shipped" => OrderStatus::Shipped,
        "cancelled" => OrderStatus::Cancelled,
        _ => return None,
    })
}

/// An order as projected: its folded domain state and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    /// The order's id.
    pub order_id: Uuid,
    /// The state folded from versions 1..=`order.version`.
    pub order: Order,
    /// `occurred_at` of the first event.
    pub placed_at: DateTime<Utc>,
    /// `occurred_at` of the latest applied event.
    pub updated_at: DateTime<Utc>,
}

/// Where an applied or parked event was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOrigin {
    /// Consumed from a partition of the events topic.
    Kafka {
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// Read from the event store by a rebuild `--from-store`.
    Store {
        /// Its position in the store.
        position: i64,
    },
}

impl EventOrigin {
    fn partition(self) -> Option<i32> {
        match self {
            Self::Kafka { partition, .. } => Some(partition),
            Self::Store { .. } => None,
        }
    }

    fn offset(self) -> Option<i64> {
        match self {
            Self::Kafka { offset, .. } => Some(offset),
            Self::Store { .. } => None,
        }
    }

    fn store_position(self) -> Option<i64> {
        match self {
            Self::Kafka { .. } => None,
            Self::Store { position } => Some(position),
        }
    }

    fn from_columns(partition: Option<i32>, offset: Option<i64>, position: Option<i64>) -> Self {
        match (partition, offset) {
            (Some(partition), Some(offset)) => Self::Kafka { partition, offset },
            _ => Self::Store {
                position: position.unwrap_or(0),
            },
        }
    }
}

/// One applied event, for `order_history`.
#[derive(Debug, Clone)]
pub struct HistoryRecord {
    /// The order.
    pub order_id: Uuid,
    /// The order's version after the event.
    pub version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// Its type name, e.g. `OrderPlaced`.
    pub event_type: &'static str,
    /// The encoded `OrderEvent` exactly as consumed.
    pub payload: Vec<u8>,
    /// When the command was accepted.
    pub occurred_at: DateTime<Utc>,
    /// Correlation id from the envelope.
    pub correlation_id: String,
    /// Causation id from the envelope.
    pub causation_id: String,
    /// Where it was read.
    pub origin: EventOrigin,
}

/// An event held back until the versions before it arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    /// The order.
    pub order_id: Uuid,
    /// Its version.
    pub version: u64,
    /// The encoded `OrderEvent`.
    pub payload: Vec<u8>,
    /// Where it was read.
    pub origin: EventOrigin,
}

/// A message that cannot be applied, kept verbatim with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Partition it was consumed from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any.
    pub value: Option<Vec<u8>>,
    /// Its headers as a JSON array of `{"key", "value" | "value_base64"}`.
    pub headers_json: String,
    /// Why it was not applied.
    pub error: String,
}

/// A parked message as stored, with its id.
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    /// Its id in `dead_letter`.
    pub id: i64,
    /// The topic it was consumed from.
    pub topic: String,
    /// The message and why it was parked.
    pub letter: DeadLetter,
    /// When it was parked.
    pub dead_lettered_at: DateTime<Utc>,
}

fn dead_letter_from_row(row: &PgRow) -> Result<StoredDeadLetter, QueryError> {
    Ok(StoredDeadLetter {
        id: row.try_get("id")?,
        topic: row.try_get("topic")?,
        letter: DeadLetter {
            partition: row.try_get("kafka_partition")?,
            offset: row.try_get("kafka_offset")?,
            key: row.try_get("message_key")?,
            value: row.try_get("message_value")?,
            headers_json: row.try_get("headers")?,
            error: row.try_get("error")?,
        },
        dead_lettered_at: row.try_get("dead_lettered_at")?,
    })
}

/// The schema-qualified statements of one projection generation.
#[derive(Debug)]
struct Statements {
    schema: String,
    channel: String,
    get_order: String,
    load_orders: String,
    projected_among: String,
    list_orders: [String; 8],
    order_version: String,
    history_page: String,
    projected_at: String,
    load_positions: String,
    all_positions: String,
    seed_positions: String,
    fence_update: String,
    fence_insert: String,
    load_pending: String,
    park: String,
    unpark: String,
    upsert_orders: String,
    delete_lines: String,
    insert_lines: String,
    insert_history: String,
    dead_letter: String,
    dead_letters: String,
    dead_letter_count: String,
    take_dead_letter: String,
    delete_dead_letter: String,
    touch_meta: String,
    copy_orders: String,
    copy_lines: String,
    copy_history: String,
}

impl Statements {
    fn new(schema: &str) -> Self {
        let s = schema;
        let select_orders = format!(
            "SELECT v.order_id, v.customer_id, v.status, v.currency_code, v.version, v.placed_at, \
                    v.updated_at, v.tracking_number, v.cancel_reason, \
                    l.product_ids, l.quantities, l.unit_prices \
             FROM {s}.order_view v \
             CROSS JOIN LATERAL ( \
                 SELECT array_agg(product_id ORDER BY line_no) AS product_ids, \
                        array_agg(quantity ORDER BY line_no) AS quantities, \
                        array_agg(unit_price_minor ORDER BY line_no) AS unit_prices \
                 FROM {s}.order_view_line WHERE order_id = v.order_id) l"
        );
        let list_orders = std::array::from_fn(|bits| {
            let (customer, status, cursor) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let mut conditions = vec![];
            if customer {
                conditions.push("v.customer_id = $2");
            }
            if status {
                conditions.push("v.status = $3");
            }
            if cursor {
                conditions.push("(v.placed_at, v.order_id) < ($4, $5)");
            }
            let filter = if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            };
            // Every variant binds all five parameters; unused ones are cast so
            // that PostgreSQL can infer their types.
            format!(
                "{select_orders}{filter} \
                 {unused} \
                 ORDER BY v.placed_at DESC, v.order_id DESC LIMIT $1",
                unused = unused_params(customer, status, cursor, filter.is_empty()),
            )
        });
        Self {
            schema: s.to_owned(),
            channel: format!("{s}.order_projected"),
            get_order: format!("{select_orders} WHERE v.order_id = $1"),
            load_orders: format!("{select_orders} WHERE v.order_id = ANY($1)"),
            projected_among: format!(
                "SELECT v.order_id FROM {s}.order_view v \
                 JOIN UNNEST($1::uuid[]) AS u(order_id) ON u.order_id = v.order_id"
            ),
            list_orders,
            order_version: format!("SELECT version FROM {s}.order_view WHERE order_id = $1"),
            history_page: format!(
                "SELECT version, payload FROM {s}.order_history \
                 WHERE order_id = $1 AND version > $2 ORDER BY version LIMIT $3"
            ),
            projected_at: format!("SELECT last_applied_at FROM {s}.projection_meta"),
            load_positions: format!(
                "SELECT kafka_partition, next_offset FROM {s}.consumer_position \
                 WHERE topic = $1 AND kafka_partition = ANY($2)"
            ),
            all_positions: format!(
                "SELECT kafka_partition, next_offset FROM {s}.consumer_position WHERE topic = $1"
            ),
            seed_positions: format!(
                "INSERT INTO {s}.consumer_position (topic, kafka_partition, next_offset) \
                 SELECT $1, p, o FROM UNNEST($2::int4[], $3::int8[]) AS u(p, o) \
                 ON CONFLICT DO NOTHING"
            ),
            fence_update: format!(
                "UPDATE {s}.consumer_position SET next_offset = $4, updated_at = now() \
                 WHERE topic = $1 AND kafka_partition = $2 AND next_offset = $3"
            ),
            fence_insert: format!(
                "INSERT INTO {s}.consumer_position (topic, kafka_partition, next_offset) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            ),
            load_pending: format!(
                "SELECT order_id, version, payload, kafka_partition, kafka_offset, store_position \
                 FROM {s}.pending_event WHERE order_id = ANY($1) ORDER BY order_id, version"
            ),
            park: format!(
                "INSERT INTO {s}.pending_event \
                     (order_id, version, payload, topic, kafka_partition, kafka_offset, store_position) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
            ),
            unpark: format!(
                "DELETE FROM {s}.pending_event p \
                 USING UNNEST($1::uuid[], $2::int8[]) AS d(order_id, version) \
                 WHERE p.order_id = d.order_id AND p.version = d.version"
            ),
            // The update applies only over the state the batch loaded: a
            // concurrent writer of the same order makes the batch fail.
            upsert_orders: format!(
                "WITH input AS ( \
                     SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], \
                         $5::int8[], $6::int8[], $7::timestamptz[], $8::timestamptz[], \
                         $9::text[], $10::text[], $11::int8[]) \
                     AS u(order_id, customer_id, status, currency_code, total_minor, version, \
                          placed_at, updated_at, tracking_number, cancel_reason, loaded_version)) \
                 INSERT INTO {s}.order_view AS v (order_id, customer_id, status, currency_code, \
                     total_minor, version, placed_at, updated_at, tracking_number, cancel_reason) \
                 SELECT order_id, customer_id, status, currency_code, total_minor, version, \
                     placed_at, updated_at, tracking_number, cancel_reason FROM input \
                 ON CONFLICT (order_id) DO UPDATE SET \
                     customer_id = EXCLUDED.customer_id, status = EXCLUDED.status, \
                     currency_code = EXCLUDED.currency_code, total_minor = EXCLUDED.total_minor, \
                     version = EXCLUDED.version, placed_at = EXCLUDED.placed_at, \
                     updated_at = EXCLUDED.updated_at, tracking_number = EXCLUDED.tracking_number, \
                     cancel_reason = EXCLUDED.cancel_reason \
                 WHERE v.version = \
                     (SELECT loaded_version FROM input WHERE input.order_id = EXCLUDED.order_id)"
            ),
            delete_lines: format!("DELETE FROM {s}.order_view_line WHERE order_id = ANY($1)"),
            insert_lines: format!(
                "INSERT INTO {s}.order_view_line \
                     (order_id, line_no, product_id, quantity, unit_price_minor) \
                 SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::int4[], $5::int8[])"
            ),
            insert_history: format!(
                "INSERT INTO {s}.order_history (order_id, version, event_id, event_type, payload, \
                     occurred_at, correlation_id, causation_id, topic, kafka_partition, kafka_offset, \
                     store_position) \
                 SELECT u.order_id, u.version, u.event_id, u.event_type, u.payload, u.occurred_at, \
                     u.correlation_id, u.causation_id, \
                     CASE WHEN u.kafka_offset IS NULL THEN NULL ELSE $11::text END, \
                     u.kafka_partition, u.kafka_offset, u.store_position \
                 FROM UNNEST($1::uuid[], $2::int8[], $3::uuid[], $4::text[], $5::bytea[], \
                     $6::timestamptz[], $7::text[], $8::text[], $9::int4[], $10::int8[], \
                     $12::int8[]) \
                     AS u(order_id, version, event_id, event_type, payload, occurred_at, \
                          correlation_id, causation_id, kafka_partition, kafka_offset, \
                          store_position) \
                 ON CONFLICT (order_id, version) DO NOTHING"
            ),
            dead_letter: format!(
                "INSERT INTO {s}.dead_letter (topic, kafka_partition, kafka_offset, message_key, \
                     message_value, headers, error) \
                 VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7) ON CONFLICT DO NOTHING"
            ),
            dead_letters: format!(
                "SELECT id, topic, kafka_partition, kafka_offset, message_key, message_value, \
                        headers::text AS headers, error, dead_lettered_at \
                 FROM {s}.dead_letter ORDER BY id"
            ),
            dead_letter_count: format!("SELECT count(*) FROM {s}.dead_letter"),
            take_dead_letter: format!(
                "SELECT id, topic, kafka_partition, kafka_offset, message_key, message_value, \
                        headers::text AS headers, error, dead_lettered_at \
                 FROM {s}.dead_letter WHERE id = $1 FOR UPDATE"
            ),
            delete_dead_letter: format!("DELETE FROM {s}.dead_letter WHERE id = $1"),
            touch_meta: format!(
                "UPDATE {s}.projection_meta \
                 SET last_applied_at = now(), events_applied = events_applied + $1"
            ),
            copy_orders: format!(
                "COPY {s}.order_view (order_id, customer_id, status, currency_code, total_minor, \
                     version, placed_at, updated_at, tracking_number, cancel_reason) FROM STDIN (FORMAT binary)"
            ),
            copy_lines: format!(
                "COPY {s}.order_view_line \
                     (order_id, line_no, product_id, quantity, unit_price_minor) FROM STDIN (FORMAT binary)"
            ),
            copy_history: format!(
                "COPY {s}.order_history (order_id, version, event_id, event_type, payload, \
                     occurred_at, correlation_id, causation_id, topic, kafka_partition, \
                     kafka_offset, store_position) FROM STDIN (FORMAT binary)"
            ),
        }
    }
}

/// `WHERE`/`AND` clause that mentions the parameters a list variant does not filter on.
fn unused_params(customer: bool, status: bool, cursor: bool, no_where: bool) -> String {
    let mut unused = vec![];
    if !customer {
        unused.push("$2::text IS NULL");
    }
    if !status {
        unused.push("$3::text IS NULL");
    }
    if !cursor {
        unused.push("$4::timestamptz IS NULL AND $5::uuid IS NULL");
    }
    if unused.is_empty() {
        return String::new();
    }
    format!(
        "{} ({})",
        if no_where { "WHERE" } else { "AND" },
        unused.join(" AND ")
    )
}

/// The secondary indexes and foreign key of `order_view`, as migration 0001
/// creates them: a bulk load into an empty generation drops them and creates
/// them again once loaded, which is several times faster than maintaining
/// them row by row. (A unit test checks them against the migration.)
const DEFERRABLE_INDEXES: [(&str, &str); 4] = [
    (
        "order_view_recent",
        "ON order_view (placed_at DESC, order_id DESC)",
    ),
    (
        "order_view_by_customer",
        "ON order_view (customer_id, placed_at DESC, order_id DESC)",
    ),
    (
        "order_view_by_status",
        "ON order_view (status, placed_at DESC, order_id DESC)",
    ),
    (
        "order_view_by_customer_status",
        "ON order_view (customer_id, status, placed_at DESC, order_id DESC)",
    ),
];
const LINE_FOREIGN_KEY: (&str, &str) = (
    "order_view_line_order_id_fkey",
    "REFERENCES order_view (order_id) ON DELETE CASCADE",
);

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

    /// Drops `order_view`'s secondary indexes and the lines' foreign key if
    /// no order is projected yet, for a bulk load; `restore_indexes` creates
    /// them again. Returns whether they were dropped.
    pub async fn defer_indexes(&self) -> Result<bool, QueryError> {
        let s = self.schema();
        let mut tx = self.pool.begin().await?;
        // Locks out every other writer of the tables until the decision commits.
        tx.execute(&*format!(
            "LOCK TABLE {s}.order_view, {s}.order_view_line IN SHARE ROW EXCLUSIVE MODE"
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
        for (name, _) in DEFERRABLE_INDEXES {
            tx.execute(&*format!("DROP INDEX IF EXISTS {s}.{name}"))
                .await?;
        }
        tx.execute(&*format!(
            "ALTER TABLE {s}.order_view_line DROP CONSTRAINT IF EXISTS {}",
            LINE_FOREIGN_KEY.0
        ))
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Creates whatever `defer_indexes` dropped (nothing when all are there).
    pub async fn restore_indexes(&self) -> Result<(), QueryError> {
        let s = self.schema();
        // Each on a connection of its own: index builds share the table (SHARE
        // locks), so they run side by side on the server's cores.
        let built =
            futures::future::join_all(DEFERRABLE_INDEXES.iter().map(|(name, definition)| {
                let statement = format!(
                    "CREATE INDEX IF NOT EXISTS {name} {}",
                    definition.replacen("order_view", &format!("{s}.order_view"), 1)
                );
                async move { self.pool.execute(&*statement).await }
            }))
            .await;
        for result in built {
            result?;
        }
        let mut tx = self.pool.begin().await?;
        let has_key: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint c \
                 JOIN pg_namespace n ON n.oid = c.connamespace \
             WHERE n.nspname = $1 AND c.conname = $2)",
        )
        .bind(s)
        .bind(LINE_FOREIGN_KEY.0)
        .fetch_one(&mut *tx)
        .await?;
        if !has_key {
            tx.execute(&*format!(
                "ALTER TABLE {s}.order_view_line ADD CONSTRAINT {} FOREIGN KEY (order_id) {}",
                LINE_FOREIGN_KEY.0,
                LINE_FOREIGN_KEY
                    .1
                    .replacen("order_view", &format!("{s}.order_view"), 1)
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the database answers `SELECT 1` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&self.pool)).await,
            Ok(Ok(_))
        )
    }

    /// One order with its lines, read in one snapshot.
    pub async fn get_order(&self, order_id: Uuid) -> Result<Option<OrderView>, QueryError> {
        sqlx::query(&self.sql.get_order)
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| order_from_row(&row))
            .transpose()
    }

    /// The order's projected version, if it is projected.
    pub async fn order_version(&self, order_id: Uuid) -> Result<Option<u64>, QueryError> {
        let version: Option<i64> = sqlx::query_scalar(&self.sql.order_version)
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
        sqlx::query(&self.sql.list_orders[variant])
            .bind(i64::from(limit))
            .bind(filter.customer_id.as_deref())
            .bind(filter.status.as_deref())
            .bind(placed_at)
            .bind(after.map(|c| c.order_id))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(order_from_row)
            .collect()
    }

    /// Up to `limit` encoded events of the order with versions above `after_version`, oldest first.
    pub async fn history(
        &self,
        order_id: Uuid,
        after_version: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, QueryError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&self.sql.history_page)
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
        let rows: Vec<(i32, i64)> = sqlx::query_as(&self.sql.load_positions)
            .bind(topic)
            .bind(partitions)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// The stored next offset of every positioned partition of `topic`.
    pub async fn all_positions(&self, topic: &str) -> Result<HashMap<i32, i64>, QueryError> {
        let rows: Vec<(i32, i64)> = sqlx::query_as(&self.sql.all_positions)
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
        sqlx::query(&self.sql.seed_positions)
            .bind(topic)
            .bind(partitions)
            .bind(offsets)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every parked message, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<StoredDeadLetter>, QueryError> {
        sqlx::query(&self.sql.dead_letters)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(dead_letter_from_row)
            .collect()
    }

    /// How many messages are parked.
    pub async fn dead_letter_count(&self) -> Result<i64, QueryError> {
        Ok(sqlx::query_scalar(&self.sql.dead_letter_count)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Starts the transaction that applies one batch.
    pub async fn begin(&self) -> Result<ProjectionTx, QueryError> {
        Ok(ProjectionTx {
            tx: self.pool.begin().await?,
            sql: self.sql.clone(),
        })
    }
}

/// The transaction applying one batch: projection writes and positions commit together.
pub struct ProjectionTx {
    tx: Transaction<'static, Postgres>,
    sql: Arc<Statements>,
}

impl ProjectionTx {
    /// Share-locks the generation's row until commit and tells whether it is
    /// still in the state the write expects (a switch waits for this write).
    pub async fn holds(&mut self, condition: WriteCondition) -> Result<bool, QueryError> {
        let state: Option<String> = sqlx::query_scalar(LOCK_FOR_WRITE)
            .bind(condition.generation)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(state.as_deref() == Some(condition.state.as_str()))
    }

    /// Locks and returns the parked message `id`, if it is there.
    pub async fn take_dead_letter(
        &mut self,
        id: i64,
    ) -> Result<Option<StoredDeadLetter>, QueryError> {
        sqlx::query(&self.sql.take_dead_letter)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(dead_letter_from_row)
            .transpose()
    }

    /// Removes the parked message `id`.
    pub async fn delete_dead_letter(&mut self, id: i64) -> Result<(), QueryError> {
        sqlx::query(&self.sql.delete_dead_letter)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Moves a partition's position from `expected` to `next`, or returns `false`
    /// when the stored position is not `expected` (another owner moved it).
    ///
    /// Locks the position row until commit, so owners of one partition serialise.
    pub async fn advance_position(
        &mut self,
        topic: &str,
        partition: i32,
        expected: Option<i64>,
        next: i64,
    ) -> Result<bool, QueryError> {
        let done = match expected {
            Some(expected) => sqlx::query(&self.sql.fence_update)
                .bind(topic)
                .bind(partition)
                .bind(expected)
                .bind(next),
            None => sqlx::query(&self.sql.fence_insert)
                .bind(topic)
                .bind(partition)
                .bind(next),
        }
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The projected state of the given orders (absent ones are not projected yet).
    pub async fn load_orders(
        &mut self,
        order_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, OrderView>, QueryError> {
        sqlx::query(&self.sql.load_orders)
            .bind(order_ids)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|row| order_from_row(row).map(|view| (view.order_id, view)))
            .collect()
    }

    /// Which of the given orders are projected (cheaper than loading them all
    /// when most are not, as in a bulk load).
    pub async fn projected_among(&mut self, order_ids: &[Uuid]) -> Result<Vec<Uuid>, QueryError> {
        Ok(sqlx::query_scalar(&self.sql.projected_among)
            .bind(order_ids)
            .fetch_all(&mut *self.tx)
            .await?)
    }

    /// The parked events of the given orders.
    pub async fn load_parked(
        &mut self,
        order_ids: &[Uuid],
    ) -> Result<Vec<ParkedEvent>, QueryError> {
        type Row = (Uuid, i64, Vec<u8>, Option<i32>, Option<i64>, Option<i64>);
        let rows: Vec<Row> = sqlx::query_as(&self.sql.load_pending)
            .bind(order_ids)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(order_id, version, payload, partition, offset, position)| ParkedEvent {
                    order_id,
                    version: to_u64(version),
                    payload,
                    origin: EventOrigin::from_columns(partition, offset, position),
                },
            )
            .collect())
    }

    /// Parks an event until the versions before it arrive.
    pub async fn park(&mut self, topic: &str, event: &ParkedEvent) -> Result<(), QueryError> {
        sqlx::query(&self.sql.park)
            .bind(event.order_id)
            .bind(to_i64(event.version))
            .bind(&event.payload)
            .bind(event.origin.offset().map(|_| topic))
            .bind(event.origin.partition())
            .bind(event.origin.offset())
            .bind(event.origin.store_position())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Deletes parked events that have now been applied.
    pub async fn unpark(&mut self, applied: &[(Uuid, u64)]) -> Result<(), QueryError> {
        if applied.is_empty() {
            return Ok(());
        }
        let (ids, versions): (Vec<Uuid>, Vec<i64>) =
            applied.iter().map(|&(id, v)| (id, to_i64(v))).unzip();
        sqlx::query(&self.sql.unpark)
            .bind(ids)
            .bind(versions)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Writes the new state of the given orders, lines included, each over the
    /// version it was loaded at (0: not projected); fails if one has moved since.
    pub async fn save_orders(&mut self, views: &[(&OrderView, u64)]) -> Result<(), QueryError> {
        if views.is_empty() {
            return Ok(());
        }
        let n = views.len();
        let mut ids = Vec::with_capacity(n);
        let mut customers = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut currencies = Vec::with_capacity(n);
        let mut totals = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut placed = Vec::with_capacity(n);
        let mut updated = Vec::with_capacity(n);
        let mut tracking = Vec::with_capacity(n);
        let mut reasons = Vec::with_capacity(n);
        let mut loaded = Vec::with_capacity(n);
        let (mut line_ids, mut line_nos, mut products, mut quantities, mut prices) =
            (vec![], vec![], vec![], vec![], vec![]);
        for &(view, loaded_version) in views {
            let order = &view.order;
            loaded.push(to_i64(loaded_version));
            ids.push(view.order_id);
            customers.push(order.customer_id.as_ref().map(|c| c.as_str().to_owned()));
            statuses.push(status_name(order.status));
            currencies.push(order.currency.as_ref().map(|c| c.as_str().to_owned()));
            totals.push(order.total_minor());
            versions.push(to_i64(order.version));
            placed.push(view.placed_at);
            updated.push(view.updated_at);
            tracking.push(
                order
                    .tracking_number
                    .as_ref()
                    .map(|t| t.as_str().to_owned()),
            );
            reasons.push(order.cancel_reason.as_ref().map(|r| r.as_str().to_owned()));
            for (no, line) in order.lines.iter().enumerate() {
                line_ids.push(view.order_id);
                line_nos.push(i32::try_from(no).expect("at most MAX_LINES lines"));
                products.push(line.product_id.as_str().to_owned());
                quantities.push(i32::try_from(line.quantity.get()).expect("quantity fits i32"));
                prices.push(line.unit_price.get());
            }
        }
        let saved = sqlx::query(&self.sql.upsert_orders)
            .bind(&ids)
            .bind(customers)
            .bind(statuses)
            .bind(currencies)
            .bind(totals)
            .bind(versions)
            .bind(placed)
            .bind(updated)
            .bind(tracking)
            .bind(reasons)
            .bind(loaded)
            .execute(&mut *self.tx)
            .await?;
        if saved.rows_affected() != n as u64 {
            return Err(QueryError::Conflict(format!(
                "{} of {n} orders changed under the batch",
                n as u64 - saved.rows_affected()
            )));
        }
        sqlx::query(&self.sql.delete_lines)
            .bind(&ids)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(&self.sql.insert_lines)
            .bind(line_ids)
            .bind(line_nos)
            .bind(products)
            .bind(quantities)
            .bind(prices)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Inserts orders that are not projected yet, lines included, with `COPY`
    /// (fails if one is); for bulk loads.
    pub async fn copy_new_orders(&mut self, views: &[&OrderView]) -> Result<(), QueryError> {
        if views.is_empty() {
            return Ok(());
        }
        let mut orders = CopyRows::new();
        let mut lines = CopyRows::new();
        for view in views {
            let order = &view.order;
            orders.row(10);
            orders.uuid(view.order_id);
            orders.text(order.customer_id.as_ref().map(|c| c.as_str()));
            orders.text(Some(status_name(order.status)));
            orders.text(order.currency.as_ref().map(|c| c.as_str()));
            orders.int8(Some(order.total_minor()));
            orders.int8(Some(to_i64(order.version)));
            orders.time(view.placed_at);
            orders.time(view.updated_at);
            orders.text(order.tracking_number.as_ref().map(|t| t.as_str()));
            orders.text(order.cancel_reason.as_ref().map(|r| r.as_str()));
            for (no, line) in order.lines.iter().enumerate() {
                lines.row(5);
                lines.uuid(view.order_id);
                lines.int4(Some(i32::try_from(no).expect("at most MAX_LINES lines")));
                lines.text(Some(line.product_id.as_str()));
                lines.int4(Some(
                    i32::try_from(line.quantity.get()).expect("quantity fits i32"),
                ));
                lines.int8(Some(line.unit_price.get()));
            }
        }
        let sql = self.sql.clone();
        self.copy_in(&sql.copy_orders, orders).await?;
        self.copy_in(&sql.copy_lines, lines).await?;
        Ok(())
    }

    /// Appends applied events to `order_history` with `COPY` (fails on a
    /// version already recorded); for bulk loads.
    pub async fn copy_history(
        &mut self,
        topic: &str,
        records: &[HistoryRecord],
    ) -> Result<(), QueryError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut rows = CopyRows::new();
        for r in records {
            rows.row(12);
            rows.uuid(r.order_id);
            rows.int8(Some(to_i64(r.version)));
            rows.uuid(r.event_id);
            rows.text(Some(r.event_type));
            rows.bytes(&r.payload);
            rows.time(r.occurred_at);
            rows.text(Some(&r.correlation_id));
            rows.text(Some(&r.causation_id));
            rows.text(r.origin.offset().map(|_| topic));
            rows.int4(r.origin.partition());
            rows.int8(r.origin.offset());
            rows.int8(r.origin.store_position());
        }
        let sql = self.sql.clone();
        self.copy_in(&sql.copy_history, rows).await
    }

    async fn copy_in(&mut self, statement: &str, rows: CopyRows) -> Result<(), QueryError> {
        let mut copy = self.tx.copy_in_raw(statement).await?;
        if let Err(error) = copy.send(rows.finish()).await {
            let _ = copy.abort("send failed").await;
            return Err(error.into());
        }
        copy.finish().await?;
        Ok(())
    }

    /// Appends applied events to `order_history`.
    pub async fn append_history(
        &mut self,
        topic: &str,
        records: &[HistoryRecord],
    ) -> Result<(), QueryError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut q = sqlx::query(&self.sql.insert_history);
        q = q
            .bind(records.iter().map(|r| r.order_id).collect::<Vec<_>>())
            .bind(
                records
                    .iter()
                    .map(|r| to_i64(r.version))
                    .collect::<Vec<_>>(),
            )
            .bind(records.iter().map(|r| r.event_id).collect::<Vec<_>>())
            .bind(records.iter().map(|r| r.event_type).collect::<Vec<_>>())
            .bind(
                records
                    .iter()
                    .map(|r| r.payload.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(records.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
            .bind(
                records
                    .iter()
                    .map(|r| r.correlation_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                records
                    .iter()
                    .map(|r| r.causation_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                records
                    .iter()
                    .map(|r| r.origin.partition())
                    .collect::<Vec<_>>(),
            )
            .bind(
                records
                    .iter()
                    .map(|r| r.origin.offset())
                    .collect::<Vec<_>>(),
            )
            .bind(topic)
            .bind(
                records
                    .iter()
                    .map(|r| r.origin.store_position())
                    .collect::<Vec<_>>(),
            );
        q.execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Stores a message that cannot be applied.
    pub async fn dead_letter(
        &mut self,
        topic: &str,
        letter: &DeadLetter,
    ) -> Result<(), QueryError> {
        sqlx::query(&self.sql.dead_letter)
            .bind(topic)
            .bind(letter.partition)
            .bind(letter.offset)
            .bind(letter.key.as_deref())
            .bind(letter.value.as_deref())
            .bind(&letter.headers_json)
            .bind(&letter.error)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records that `applied` events were applied now.
    pub async fn touch_meta(&mut self, applied: u64) -> Result<(), QueryError> {
        sqlx::query(&self.sql.touch_meta)
            .bind(to_i64(applied))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Queues `order_id:version` notifications, delivered when the transaction commits.
    pub async fn notify(&mut self, versions: &[(Uuid, u64)]) -> Result<(), QueryError> {
        let mut payloads: Vec<String> = vec![];
        let mut current = String::new();
        for (order_id, version) in versions {
            let pair = format!("{order_id}:{version}");
            if !current.is_empty() && current.len() + 1 + pair.len() > NOTIFY_PAYLOAD_MAX {
                payloads.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push(',');
            }
            current.push_str(&pair);
        }
        if !current.is_empty() {
            payloads.push(current);
        }
        if payloads.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
            .bind(&self.sql.channel)
            .bind(payloads)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Commits the batch.
    pub async fn commit(self) -> Result<(), QueryError> {
        Ok(self.tx.commit().await?)
    }

    /// Abandons the batch.
    pub async fn rollback(self) -> Result<(), QueryError> {
        Ok(self.tx.rollback().await?)
    }
}

/// Rows in `COPY … FROM STDIN (FORMAT binary)`: each field's length, then
/// its value in PostgreSQL's binary send format (no text to parse).
#[derive(Debug)]
struct CopyRows {
    bytes: Vec<u8>,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl CopyRows {
    fn new() -> Self {
        let mut bytes = b"PGCOPY\n\xff\r\n\0".to_vec();
        bytes.extend_from_slice(&0i32.to_be_bytes()); // flags
        bytes.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { bytes }
    }

    fn row(&mut self, fields: i16) {
        self.bytes.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, value: Option<&[u8]>) {
        match value {
            Some(value) => {
                let len = i32::try_from(value.len()).expect("a field is under 2 GiB");
                self.bytes.extend_from_slice(&len.to_be_bytes());
                self.bytes.extend_from_slice(value);
            }
            None => self.bytes.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    fn text(&mut self, value: Option<&str>) {
        self.field(value.map(str::as_bytes));
    }

    fn int4(&mut self, value: Option<i32>) {
        self.field(value.map(i32::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    fn int8(&mut self, value: Option<i64>) {
        self.field(value.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    fn uuid(&mut self, value: Uuid) {
        self.field(Some(value.as_bytes()));
    }

    /// Microseconds since 2000-01-01, truncated like a bound parameter.
    fn time(&mut self, value: DateTime<Utc>) {
        self.int8(Some(value.timestamp_micros() - PG_EPOCH_MICROS));
    }

    fn bytes(&mut self, value: &[u8]) {
        self.field(Some(value));
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&(-1i16).to_be_bytes());
        self.bytes
    }
}

/// Parses `order_id:version[,order_id:version…]`, skipping malformed pairs.
pub fn parse_notification(payload: &str) -> impl Iterator<Item = (Uuid, u64)> + '_ {
    payload.split(',').filter_map(|pair| {
        let (id, version) = pair.split_once(':')?;
        Some((Uuid::parse_str(id).ok()?, version.parse().ok()?))
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn corrupt(order_id: Uuid, what: &str, detail: impl std::fmt::Display) -> QueryError {
    QueryError::Corrupt(format!("order {order_id}: {what}: {detail}"))
}

fn stored<T>(
    order_id: Uuid,
    what: &str,
    parsed: Result<T, crate::domain::ValidationError>,
) -> Result<T, QueryError> {
    parsed.map_err(|e| corrupt(order_id, what, e))
}

fn order_from_row(row: &PgRow) -> Result<OrderView, QueryError> {
    let order_id: Uuid = row.try_get("order_id")?;
    let status: String = row.try_get("status")?;
    let status = status_from_name(&status).ok_or_else(|| corrupt(order_id, "status", &status))?;
    let customer_id = row
        .try_get::<Option<String>, _>("customer_id")?
        .map(|c| stored(order_id, "customer_id", CustomerId::parse(&c)))
        .transpose()?;
    let currency = row
        .try_get::<Option<String>, _>("currency_code")?
        .map(|c| stored(order_id, "currency_code", CurrencyCode::parse(&c)))
        .transpose()?;
    let tracking_number = row
        .try_get::<Option<String>, _>("tracking_number")?
        .map(|t| stored(order_id, "tracking_number", TrackingNumber::parse(&t)))
        .transpose()?;
    let cancel_reason = row
        .try_get::<Option<String>, _>("cancel_reason")?
        .map(|r| stored(order_id, "cancel_reason", CancelReason::parse(&r)))
        .transpose()?;
    let products: Vec<String> = row
        .try_get::<Option<_>, _>("product_ids")?
        .unwrap_or_default();
    let quantities: Vec<i32> = row
        .try_get::<Option<_>, _>("quantities")?
        .unwrap_or_default();
    let prices: Vec<i64> = row
        .try_get::<Option<_>, _>("unit_prices")?
        .unwrap_or_default();
    let lines = products
        .iter()
        .zip(&quantities)
        .zip(&prices)
        .map(|((product, &quantity), &price)| {
            Ok(OrderLine {
                product_id: stored(order_id, "product_id", ProductId::parse(product))?,
                quantity: stored(
                    order_id,
                    "quantity",
                    Quantity::parse(u32::try_from(quantity).unwrap_or(0)),
                )?,
                unit_price: stored(order_id, "unit_price_minor", UnitPrice::parse(price))?,
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    Ok(OrderView {
        order_id,
        order: Order {
            version: to_u64(row.try_get("version")?),
            status,
            customer_id,
            currency,
            lines,
            tracking_number,
            cancel_reason,
        },
        placed_at: row.try_get("placed_at")?,
        updated_at: row.try_get("updated_at")?,
    })
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

    #[test]
    fn deferred_indexes_are_the_migrations() {
        let migration = include_str!("../../migrations/read/0001_read_model.up.sql")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for (name, definition) in DEFERRABLE_INDEXES {
            assert!(
                migration.contains(&format!("CREATE INDEX {name} {definition};")),
                "{name}"
            );
        }
        assert!(migration.contains(&format!("order_id uuid NOT NULL {},", LINE_FOREIGN_KEY.1)));
    }

    #[test]
    fn copy_rows_are_length_prefixed_with_a_header_and_trailer() {
        let mut rows = CopyRows::new();
        rows.row(3);
        rows.text(Some("ab"));
        rows.int4(None);
        rows.time(DateTime::from_timestamp(946_684_801, 0).unwrap());
        let bytes = rows.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 3, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(&1_000_000i64.to_be_bytes());
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn every_status_name_reads_back() {
        use OrderStatus::*;
        for status in [New, Placed, Confirmed, Shipped, Cancelled] {
            assert_eq!(status_from_name(status_name(status)), Some(status));
        }
    }

    #[test]
    fn notifications_parse_back_and_skip_garbage() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let payload = format!("{a}:3,junk,{b}:x,{b}:12");
        assert_eq!(
            parse_notification(&payload).collect::<Vec<_>>(),
            vec![(a, 3), (b, 12)]
        );
    }

    #[test]
    fn list_variants_bind_every_parameter() {
        let sql = Statements::new("s");
        for (bits, statement) in sql.list_orders.iter().enumerate() {
            for p in ["$1", "$2", "$3", "$4", "$5"] {
                assert!(
                    statement.contains(p),
                    "variant {bits} lacks {p}: {statement}"
                );
            }
        }
    }
}
