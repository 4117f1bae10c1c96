//! The event store in the write database: loading orders by folding their
//! events, and appending events, outbox rows and idempotency keys in one
//! transaction. Also the reads that audits and rebuilds make of the whole
//! store (`orderctl`): snapshots, event streams, per-order digests and the
//! outbox backlog, so that no other module queries these tables.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt};
use sqlx::{Executor, PgConnection, PgPool, Postgres, Transaction};
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
    let rows = sqlx::query!(
        "SELECT position, order_id, payload FROM events \
         WHERE order_id = ANY($1) ORDER BY order_id, version",
        &uuids,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut orders: HashMap<OrderId, Order> =
        ids.iter().map(|id| (*id, Order::default())).collect();
    for row in rows {
        let position = row.position;
        let order_id = OrderId::from_uuid(row.order_id);
        let (_, event) = codec::decode_event(&row.payload)
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
    let rows = sqlx::query!(
        "SELECT request_id, rpc, request, order_id, version FROM idempotency_keys \
         WHERE request_id = ANY($1)",
        request_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.request_id,
                StoredAnswer {
                    rpc: row.rpc,
                    request: row.request,
                    order_id: OrderId::from_uuid(row.order_id),
                    version: row.version as u64,
                },
            )
        })
        .collect())
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
    let event_types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    let request_ids: Vec<Option<&str>> = events.iter().map(|e| e.request_id.as_deref()).collect();
    let correlation_ids: Vec<&str> = events.iter().map(|e| e.correlation_id.as_str()).collect();
    let causation_ids: Vec<&str> = events.iter().map(|e| e.causation_id.as_str()).collect();
    let traceparents: Vec<Option<&str>> = events.iter().map(|e| e.traceparent.as_deref()).collect();
    let key_ids: Vec<&str> = keys.iter().map(|k| k.request_id.as_str()).collect();
    let key_rpcs: Vec<&str> = keys.iter().map(|k| k.answer.rpc.as_str()).collect();
    let key_requests: Vec<&[u8]> = keys.iter().map(|k| k.answer.request.as_slice()).collect();
    // The borrowed arrays are bound as they are (the macro's checks expect
    // owned elements): `as` names their type and skips that check.
    sqlx::query!(
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
        &events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        &events.iter().map(|e| e.order_id.as_uuid()).collect::<Vec<_>>(),
        &events.iter().map(|e| e.version as i64).collect::<Vec<_>>(),
        &event_types as &[&str],
        &payloads as &[&[u8]],
        &events.iter().map(|e| e.occurred_at).collect::<Vec<_>>(),
        &request_ids as &[Option<&str>],
        &correlation_ids as &[&str],
        &causation_ids as &[&str],
        &traceparents as &[Option<&str>],
        &key_ids as &[&str],
        &key_rpcs as &[&str],
        &key_requests as &[&[u8]],
        &keys.iter().map(|k| k.answer.order_id.as_uuid()).collect::<Vec<_>>(),
        &keys.iter().map(|k| k.answer.version as i64).collect::<Vec<_>>(),
        OUTBOX_CHANNEL,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Queues the stored events with positions in `from..=to` for publication once
/// more, in position order, and notifies the relay (on commit when `conn` is in
/// a transaction); returns how many. Consumers skip what they already applied.
pub async fn republish(conn: &mut PgConnection, from: i64, to: i64) -> Result<u64, StoreError> {
    let queued = sqlx::query!(
        "INSERT INTO outbox (event_position) \
         SELECT position FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position",
        from,
        to,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query!("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(queued)
}

/// An event as stored, undecoded.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its position in the store.
    pub position: i64,
    /// Its id.
    pub event_id: Uuid,
    /// Its order.
    pub order_id: OrderId,
    /// The order's version after it.
    pub version: i64,
    /// The encoded `OrderEvent` envelope.
    pub payload: Vec<u8>,
}

/// One order's stream summarised (`order_digests`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDigest {
    /// The order.
    pub order_id: OrderId,
    /// How many events it has.
    pub events: i64,
    /// The highest version Kafka has acknowledged with every version below it:
    /// one below the lowest version still in the outbox, else the last version.
    pub published_through: i64,
    /// `HISTORY_DIGEST` over all its events.
    pub digest: String,
}

/// The outbox: events committed but not yet acknowledged by Kafka.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxBacklog {
    /// How many.
    pub events: i64,
    /// Age of the oldest, in seconds.
    pub oldest_age_seconds: Option<f64>,
}

/// A read-only transaction that sees one snapshot of the store, taken when
/// this returns: later commits are invisible to every statement run in it.
pub async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    // Plain-text session statements (nothing to bind or check) stay runtime.
    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    // The snapshot is taken by the first statement, not by BEGIN.
    tx.execute("SELECT 1").await?;
    Ok(tx)
}

/// How many events are stored.
pub async fn event_count(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar!(r#"SELECT count(*) AS "events!" FROM events"#)
            .fetch_one(conn)
            .await?,
    )
}

/// Every stored event in position order, read as it is consumed.
pub fn events_in_position_order(
    conn: &mut PgConnection,
) -> impl Stream<Item = Result<StoredEvent, StoreError>> + '_ {
    sqlx::query_as!(
        EventRow,
        "SELECT position, event_id, order_id, version, payload FROM events ORDER BY position"
    )
    .fetch(conn)
    .map_err(StoreError::from)
    .map_ok(StoredEvent::from)
}

/// Every stored event by order id, each order's in version order, read as it
/// is consumed.
pub fn events_by_order(
    conn: &mut PgConnection,
) -> impl Stream<Item = Result<StoredEvent, StoreError>> + '_ {
    sqlx::query_as!(
        EventRow,
        "SELECT position, event_id, order_id, version, payload FROM events \
         ORDER BY order_id, version"
    )
    .fetch(conn)
    .map_err(StoreError::from)
    .map_ok(StoredEvent::from)
}

/// An `events` row as the whole-store reads select it.
struct EventRow {
    position: i64,
    event_id: Uuid,
    order_id: Uuid,
    version: i64,
    payload: Vec<u8>,
}

impl From<EventRow> for StoredEvent {
    fn from(row: EventRow) -> Self {
        Self {
            position: row.position,
            event_id: row.event_id,
            order_id: OrderId::from_uuid(row.order_id),
            version: row.version,
            payload: row.payload,
        }
    }
}

/// Every order's `OrderDigest`, by order id, read as it is consumed. The
/// outbox and the events are read in one statement, so `published_through`
/// agrees with the events seen.
pub fn order_digests(
    conn: &mut PgConnection,
) -> impl Stream<Item = Result<OrderDigest, StoreError>> + '_ {
    // The digest is `crate::digest::HISTORY_DIGEST`, written out.
    sqlx::query!(
        r#"WITH unpublished AS (
             SELECT e.order_id, min(e.version) AS version
             FROM outbox o JOIN events e ON e.position = o.event_position
             GROUP BY e.order_id)
           SELECT d.order_id, d.events AS "events!",
                  coalesce(u.version - 1, d.last_version) AS "through!",
                  d.digest AS "digest!"
           FROM (SELECT order_id, count(*) AS events, max(version) AS last_version,
                        md5(string_agg(event_id::text || ':' || version::text, ',' ORDER BY version)) AS digest
                 FROM events GROUP BY order_id) d
           LEFT JOIN unpublished u ON u.order_id = d.order_id
           ORDER BY d.order_id"#
    )
    .fetch(conn)
    .map_err(StoreError::from)
    .map_ok(|row| OrderDigest {
        order_id: OrderId::from_uuid(row.order_id),
        events: row.events,
        published_through: row.through,
        digest: row.digest,
    })
}

/// `HISTORY_DIGEST` of each given order's events up to the given version
/// (absent orders are left out). Stored events never change, so any snapshot
/// that holds those versions gives the same answer.
pub async fn digests_through(
    conn: &mut PgConnection,
    orders: &[(OrderId, i64)],
) -> Result<HashMap<OrderId, String>, StoreError> {
    if orders.is_empty() {
        return Ok(HashMap::new());
    }
    let (ids, versions): (Vec<Uuid>, Vec<i64>) =
        orders.iter().map(|(id, v)| (id.as_uuid(), *v)).unzip();
    // The digest is `crate::digest::HISTORY_DIGEST`, written out.
    let rows = sqlx::query!(
        r#"SELECT e.order_id,
                  md5(string_agg(event_id::text || ':' || version::text, ',' ORDER BY version)) AS "digest!"
           FROM UNNEST($1::uuid[], $2::int8[]) AS u(order_id, through)
           JOIN events e ON e.order_id = u.order_id AND e.version <= u.through
           GROUP BY e.order_id"#,
        &ids,
        &versions,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (OrderId::from_uuid(row.order_id), row.digest))
        .collect())
}

/// The ids of an order's events with versions `1..=through`, in version order.
pub async fn event_ids(
    conn: &mut PgConnection,
    order_id: OrderId,
    through: i64,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT event_id FROM events WHERE order_id = $1 AND version <= $2 ORDER BY version",
        order_id.as_uuid(),
        through,
    )
    .fetch_all(conn)
    .await?)
}

/// What the outbox holds now.
pub async fn outbox_backlog(pool: &PgPool) -> Result<OutboxBacklog, StoreError> {
    let backlog = sqlx::query!(
        r#"SELECT count(*) AS "events!",
                  extract(epoch FROM now() - min(enqueued_at))::float8 AS oldest_age_seconds
           FROM outbox"#
    )
    .fetch_one(pool)
    .await?;
    Ok(OutboxBacklog {
        events: backlog.events,
        oldest_age_seconds: backlog.oldest_age_seconds,
    })
}
