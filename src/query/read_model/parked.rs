//! `pending_event` (events parked behind a missing version) and `dead_letter`
//! (messages that cannot be applied): their types and statements.

use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow};
use uuid::Uuid;

use super::history::EventOrigin;
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

pub(super) fn dead_letter_from_row(row: &PgRow) -> Result<StoredDeadLetter, QueryError> {
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

/// The statements on `pending_event` and `dead_letter` of one generation.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) load_pending: String,
    pub(super) dead_letters: String,
    pub(super) dead_letter_count: String,
    pub(super) dead_letter: String,
    pub(super) lock_dead_letter: String,
    pub(super) delete_dead_letter: String,
}

impl Sql {
    pub(super) fn new(s: &str) -> Self {
        let letter_columns = "id, topic, kafka_partition, kafka_offset, message_key, \
                              message_value, headers::text AS headers, error, dead_lettered_at";
        Self {
            load_pending: format!(
                "SELECT order_id, version, payload, kafka_partition, kafka_offset, store_position \
                 FROM {s}.pending_event WHERE order_id = ANY($1) ORDER BY order_id, version"
            ),
            dead_letters: format!("SELECT {letter_columns} FROM {s}.dead_letter ORDER BY id"),
            dead_letter_count: format!("SELECT count(*) FROM {s}.dead_letter"),
            dead_letter: format!("SELECT {letter_columns} FROM {s}.dead_letter WHERE id = $1"),
            lock_dead_letter: format!("SELECT id FROM {s}.dead_letter WHERE id = $1 FOR UPDATE"),
            delete_dead_letter: format!("DELETE FROM {s}.dead_letter WHERE id = $1"),
        }
    }
}

/// A `pending_event` row as loaded.
pub(super) type PendingRow = (Uuid, i64, Vec<u8>, Option<i32>, Option<i64>, Option<i64>);

pub(super) fn parked_from_row(row: PendingRow) -> ParkedEvent {
    let (order_id, version, payload, partition, offset, position) = row;
    ParkedEvent {
        order_id,
        version: super::to_u64(version),
        payload,
        origin: EventOrigin::from_columns(partition, offset, position),
    }
}
