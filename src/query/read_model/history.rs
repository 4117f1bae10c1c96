//! `order_history`: every applied event once per (order, version), as it
//! arrived, for GetOrderHistory, reads as of a version or an instant, and
//! audit. Its reads and `COPY` rows (the audit's are in `digest`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{OrderView, ReadModel, copy::CopyRows, to_i64, to_u64};
use crate::{
    codec,
    domain::{Order, evolve},
    query::QueryError,
};

/// Up to where an order's history is folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Through this version.
    Version(u64),
    /// Through the last event that occurred at or before this instant.
    Time(DateTime<Utc>),
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
    pub(crate) fn partition(self) -> Option<i32> {
        match self {
            Self::Kafka { partition, .. } => Some(partition),
            Self::Store { .. } => None,
        }
    }

    pub(crate) fn offset(self) -> Option<i64> {
        match self {
            Self::Kafka { offset, .. } => Some(offset),
            Self::Store { .. } => None,
        }
    }

    pub(crate) fn store_position(self) -> Option<i64> {
        match self {
            Self::Kafka { .. } => None,
            Self::Store { position } => Some(position),
        }
    }

    pub(super) fn from_columns(
        partition: Option<i32>,
        offset: Option<i64>,
        position: Option<i64>,
    ) -> Self {
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

/// The columns of a `COPY` row, in order.
const COPY_COLUMNS: [&str; 12] = [
    "order_id",
    "version",
    "event_id",
    "event_type",
    "payload",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "topic",
    "kafka_partition",
    "kafka_offset",
    "store_position",
];

/// The `COPY` that `copy_row`'s rows feed (the macros do not take `COPY`).
pub(super) fn copy_statement() -> String {
    format!(
        "COPY order_history ({}) FROM STDIN (FORMAT binary)",
        COPY_COLUMNS.join(", ")
    )
}

impl ReadModel {
    /// Up to `limit` encoded events of the order with versions above
    /// `after_version`, oldest first. Versions are contiguous, so a limit of
    /// `through - after_version` reads the events through version `through`.
    pub async fn history(
        &self,
        order_id: Uuid,
        after_version: u64,
        limit: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, QueryError> {
        let rows = sqlx::query!(
            "SELECT version, payload FROM order_history
             WHERE order_id = $1 AND version > $2 ORDER BY version LIMIT $3",
            order_id,
            to_i64(after_version),
            to_i64(limit.min(i64::MAX as u64))
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (to_u64(row.version), row.payload))
            .collect())
    }
}

impl ReadModel {
    /// The order as it was `until` a version or an instant, folded from its
    /// history with the domain's `evolve` (the fold the projector applies);
    /// `None` when no event of it is that old.
    pub async fn order_until(
        &self,
        order_id: Uuid,
        until: Until,
    ) -> Result<Option<OrderView>, QueryError> {
        let through = match until {
            Until::Version(version) => version,
            Until::Time(_) => u64::MAX,
        };
        let mut view = None;
        for (version, payload) in self.history(order_id, 0, through).await? {
            let (meta, event) = decode(order_id, version, &payload)?;
            if let Until::Time(at) = until
                && meta.occurred_at > at
            {
                break;
            }
            fold(&mut view, order_id, version, &meta, &event)?;
        }
        Ok(view)
    }

    /// Every version of the order after `base` (the state at some version;
    /// `None`: before the first) through `through`, each folded from `base`
    /// with the events after it.
    pub async fn versions_after(
        &self,
        order_id: Uuid,
        base: Option<&OrderView>,
        through: u64,
    ) -> Result<Vec<OrderView>, QueryError> {
        let after = base.map_or(0, |b| b.order.version);
        let mut view = base.cloned();
        let mut views = Vec::new();
        for (version, payload) in self
            .history(order_id, after, through.saturating_sub(after))
            .await?
        {
            let (meta, event) = decode(order_id, version, &payload)?;
            fold(&mut view, order_id, version, &meta, &event)?;
            views.extend(view.clone());
        }
        Ok(views)
    }
}

fn decode(
    order_id: Uuid,
    version: u64,
    payload: &[u8],
) -> Result<(codec::EventMeta, crate::domain::Event), QueryError> {
    codec::decode_event(payload)
        .map_err(|e| QueryError::Corrupt(format!("history of {order_id} v{version}: {e}")))
}

/// Applies the event of `version` to `view` (`None`: nothing yet).
fn fold(
    view: &mut Option<OrderView>,
    order_id: Uuid,
    version: u64,
    meta: &codec::EventMeta,
    event: &crate::domain::Event,
) -> Result<(), QueryError> {
    let current = view.get_or_insert_with(|| OrderView {
        order_id,
        order: Order::default(),
        placed_at: meta.occurred_at,
        updated_at: meta.occurred_at,
    });
    if current.order.version + 1 != version {
        return Err(QueryError::Corrupt(format!(
            "history of {order_id} jumps from v{} to v{version}",
            current.order.version
        )));
    }
    current.order = evolve(std::mem::take(&mut current.order), event);
    current.updated_at = meta.occurred_at;
    Ok(())
}

/// Appends `record`, read from `topic` when it came from Kafka, as a `COPY` row.
pub(super) fn copy_row(rows: &mut CopyRows, topic: &str, r: &HistoryRecord) {
    rows.row(&COPY_COLUMNS);
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
