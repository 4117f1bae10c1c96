//! The event store in the write database: loading orders by folding their
//! events, and appending events, outbox rows and idempotency keys in one
//! transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{
    codec,
    domain::{Order, OrderId, evolve},
};

/// Channel the writer notifies on commit, and the relay listens to.
pub const OUTBOX_CHANNEL: &str = "orders_outbox";

/// Failure of an event-store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended the same order version or used the same
    /// request id first (unique violation): re-decide on fresh state.
    #[error("concurrent append: {0}")]
    Conflict(String),
    /// A stored event no longer decodes.
    #[error("stored event {position} is unreadable: {source}")]
    Corrupt {
        /// Position of the event.
        position: i64,
        /// Why it failed to decode.
        source: codec::DecodeError,
    },
    /// The database failed.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                Self::Conflict(db.constraint().unwrap_or("unique").to_owned())
            }
            _ => Self::Database(error),
        }
    }
}

/// One event ready to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Globally unique id.
    pub event_id: Uuid,
    /// Its order.
    pub order_id: OrderId,
    /// The order's version after it.
    pub version: u64,
    /// `Event::type_name`.
    pub event_type: &'static str,
    /// Encoded `OrderEvent` envelope.
    pub payload: Vec<u8>,
    /// When it was decided.
    pub occurred_at: DateTime<Utc>,
    /// Idempotency key of the command, if any.
    pub request_id: Option<String>,
    /// Correlation id.
    pub correlation_id: String,
    /// Causation id.
    pub causation_id: String,
    /// W3C trace context of the request, if any.
    pub traceparent: Option<String>,
}

/// The first answer stored under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The RPC the key was used with.
    pub rpc: String,
    /// The encoded request.
    pub request: Vec<u8>,
    /// The order it addressed.
    pub order_id: OrderId,
    /// The order's version after it.
    pub version: u64,
}

/// An idempotency key to store with the events of its command.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The key.
    pub request_id: String,
    /// What was first answered under it.
    pub answer: StoredAnswer,
}

/// Current state of each given order, folded from its events (absent orders are `Order::default()`).
pub async fn load_orders(
    conn: &mut PgConnection,
    ids: &[OrderId],
) -> Result<HashMap<OrderId, Order>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let uuids: Vec<Uuid> = ids.iter().map(OrderId::as_uuid).collect();
    let rows = sqlx::query(
        "SELECT position, order_id, payload FROM events \
         WHERE order_id = ANY($1) ORDER BY order_id, version",
    )
    .bind(&uuids)
    .fetch_all(&mut *conn)
    .await?;
    let mut orders: HashMap<OrderId, Order> =
        ids.iter().map(|id| (*id, Order::default())).collect();
    for row in rows {
        let position: i64 = row.try_get("position")?;
        let order_id = OrderId::from_uuid(row.try_get("order_id")?);
        let payload: Vec<u8> = row.try_get("payload")?;
        let (_, event) = codec::decode_event(&payload)
            .map_err(|source| StoreError::Corrupt { position, source })?;
        let order = orders.remove(&order_id).unwrap_or_default();
        orders.insert(order_id, evolve(order, &event));
    }
    Ok(orders)
}

/// Answers stored under any of the given idempotency keys.
pub async fn load_answers(
    conn: &mut PgConnection,
    request_ids: &[String],
) -> Result<HashMap<String, StoredAnswer>, StoreError> {
    if request_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT request_id, rpc, request, order_id, version FROM idempotency_keys \
         WHERE request_id = ANY($1)",
    )
    .bind(request_ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let version: i64 = row.try_get("version")?;
            Ok((
                row.try_get("request_id")?,
                StoredAnswer {
                    rpc: row.try_get("rpc")?,
                    request: row.try_get("request")?,
                    order_id: OrderId::from_uuid(row.try_get("order_id")?),
                    version: version as u64,
                },
            ))
        })
        .collect()
}

/// Appends events (in the given order), their outbox rows and the keys, and
/// notifies the relay on commit, in one statement (one round trip). Must run
/// inside the caller's transaction.
pub async fn append(
    conn: &mut PgConnection,
    events: &[NewEvent],
    keys: &[NewKey],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH inserted AS ( \
           INSERT INTO events (event_id, order_id, version, event_type, payload, occurred_at, \
                               request_id, correlation_id, causation_id, traceparent) \
           SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::bytea[], \
                                $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[]) \
           RETURNING position), \
         queued AS ( \
           INSERT INTO outbox (event_position) SELECT position FROM inserted ORDER BY position), \
         keyed AS ( \
           INSERT INTO idempotency_keys (request_id, rpc, request, order_id, version) \
           SELECT * FROM UNNEST($11::text[], $12::text[], $13::bytea[], $14::uuid[], $15::int8[])) \
         SELECT pg_notify($16, '')",
    )
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.order_id.as_uuid()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.version as i64).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.payload.as_slice()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.request_id.as_deref()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.correlation_id.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.causation_id.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.traceparent.as_deref()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.request_id.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.answer.rpc.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.answer.request.as_slice()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.answer.order_id.as_uuid()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.answer.version as i64).collect::<Vec<_>>())
    .bind(OUTBOX_CHANNEL)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Queues the stored events with positions in `from..=to` for publication once
/// more, in position order, and notifies the relay (on commit when `conn` is in
/// a transaction); returns how many. Consumers skip what they already applied.
pub async fn republish(conn: &mut PgConnection, from: i64, to: i64) -> Result<u64, StoreError> {
    let queued = sqlx::query(
        "INSERT INTO outbox (event_position) \
         SELECT position FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(OUTBOX_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(queued)
}
