//! `pending_event` (events parked behind a missing version) and `dead_letter`
//! (messages that cannot be applied): their types and reads.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ReadModel, history::EventOrigin};
use crate::query::QueryError;

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

/// A `dead_letter` row as the reads select it.
struct DeadLetterRow {
    id: i64,
    topic: String,
    kafka_partition: i32,
    kafka_offset: i64,
    message_key: Option<Vec<u8>>,
    message_value: Option<Vec<u8>>,
    headers: String,
    error: String,
    dead_lettered_at: DateTime<Utc>,
}

impl From<DeadLetterRow> for StoredDeadLetter {
    fn from(row: DeadLetterRow) -> Self {
        Self {
            id: row.id,
            topic: row.topic,
            letter: DeadLetter {
                partition: row.kafka_partition,
                offset: row.kafka_offset,
                key: row.message_key,
                value: row.message_value,
                headers_json: row.headers,
                error: row.error,
            },
            dead_lettered_at: row.dead_lettered_at,
        }
    }
}

impl ReadModel {
    /// Every parked message, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<StoredDeadLetter>, QueryError> {
        let rows = sqlx::query_as!(
            DeadLetterRow,
            r#"SELECT id, topic, kafka_partition, kafka_offset, message_key, message_value,
                      headers::text AS "headers!", error, dead_lettered_at
               FROM dead_letter ORDER BY id"#
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(StoredDeadLetter::from).collect())
    }

    /// How many events wait behind a missing version.
    pub async fn pending_event_count(&self) -> Result<i64, QueryError> {
        Ok(
            sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM pending_event"#)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// How many messages are parked.
    pub async fn dead_letter_count(&self) -> Result<i64, QueryError> {
        Ok(
            sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM dead_letter"#)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The dead letter `id`, if it is there.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<StoredDeadLetter>, QueryError> {
        let row = sqlx::query_as!(
            DeadLetterRow,
            r#"SELECT id, topic, kafka_partition, kafka_offset, message_key, message_value,
                      headers::text AS "headers!", error, dead_lettered_at
               FROM dead_letter WHERE id = $1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(StoredDeadLetter::from))
    }

    /// The events parked for `order_ids`, by order and version.
    pub(super) async fn load_parked(
        &self,
        order_ids: &[Uuid],
    ) -> Result<Vec<ParkedEvent>, QueryError> {
        let rows = sqlx::query!(
            "SELECT order_id, version, payload, kafka_partition, kafka_offset, store_position
             FROM pending_event WHERE order_id = ANY($1) ORDER BY order_id, version",
            order_ids
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| ParkedEvent {
                order_id: row.order_id,
                version: super::to_u64(row.version),
                payload: row.payload,
                origin: EventOrigin::from_columns(
                    row.kafka_partition,
                    row.kafka_offset,
                    row.store_position,
                ),
            })
            .collect())
    }
}

/// Locks dead letter `id` for its replay; false when it is gone.
pub(super) async fn lock_dead_letter(
    conn: &mut sqlx::PgConnection,
    id: i64,
) -> Result<bool, QueryError> {
    let locked = sqlx::query_scalar!("SELECT id FROM dead_letter WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(conn)
        .await?;
    Ok(locked.is_some())
}

/// Removes dead letter `id` (replayed).
pub(super) async fn delete_dead_letter(
    conn: &mut sqlx::PgConnection,
    id: i64,
) -> Result<(), QueryError> {
    sqlx::query!("DELETE FROM dead_letter WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(())
}
