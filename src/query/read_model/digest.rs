//! A whole generation read for an audit (`orderctl verify`): its positions and
//! counts, a digest of each order's `order_history` and its `order_view` rows
//! as stored (unvalidated), streamed in order id order by connections that
//! share one snapshot, so that memory does not grow with the projection.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt};
use serde::Deserialize;
use sqlx::{Executor, Postgres, Transaction};
use uuid::Uuid;

use super::{
    ReadModel,
    positions::{Position, by_partition},
};
use crate::query::QueryError;

/// One order's `order_history`, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryDigest {
    /// The order.
    pub order_id: Uuid,
    /// How many rows it has.
    pub events: i64,
    /// `HISTORY_DIGEST` over them.
    pub digest: String,
}

/// An `order_view` row exactly as stored: nothing is validated, so a row
/// changed by hand still reads and can be compared.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    /// The order.
    pub order_id: Uuid,
    /// Its customer.
    pub customer_id: Option<String>,
    /// Its status name.
    pub status: String,
    /// Its currency.
    pub currency_code: Option<String>,
    /// Its stored total.
    pub total_minor: i64,
    /// Its version.
    pub version: i64,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When its latest applied event happened.
    pub updated_at: DateTime<Utc>,
    /// Its tracking number.
    pub tracking_number: Option<String>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Its `lines` column as JSON text.
    pub lines: String,
}

/// One element of `order_view.lines`, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredLine {
    /// Its product.
    pub product_id: String,
    /// Its quantity.
    pub quantity: i64,
    /// Its unit price in minor units.
    pub unit_price_minor: i64,
}

impl StoredOrder {
    /// The lines, if `lines` is an array of line objects.
    pub fn parsed_lines(&self) -> Result<Vec<StoredLine>, serde_json::Error> {
        serde_json::from_str(&self.lines)
    }
}

/// A generation as of one instant: its positions and counts, and readers
/// that all see that same instant.
pub struct ProjectionSnapshot {
    /// The stored next offset of every positioned partition of the topic.
    pub positions: HashMap<i32, i64>,
    /// Events parked behind a gap.
    pub pending_events: i64,
    /// Messages in the dead-letter table.
    pub dead_letters: i64,
    /// One read-only transaction per reader asked for, each on its own
    /// connection, so their streams can be read side by side.
    pub readers: Vec<SnapshotReader>,
}

/// A read-only transaction in a `ProjectionSnapshot`.
pub struct SnapshotReader {
    tx: Transaction<'static, Postgres>,
}

impl ReadModel {
    /// Reads the positions of `topic` and the counts in one snapshot, and
    /// opens `readers` (at least one) transactions that all see it.
    pub async fn snapshot(
        &self,
        topic: &str,
        readers: usize,
    ) -> Result<ProjectionSnapshot, QueryError> {
        const READ_ONLY: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";
        let mut first = self.pool().begin().await?;
        first.execute(READ_ONLY).await?;
        // Takes the snapshot; the others import it while `first` is open.
        let id = sqlx::query_scalar!(r#"SELECT pg_export_snapshot() AS "id!""#)
            .fetch_one(&mut *first)
            .await?;
        if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(QueryError::Corrupt(format!(
                "unexpected snapshot id {id:?}"
            )));
        }
        let mut others = Vec::with_capacity(readers.saturating_sub(1));
        for _ in 1..readers {
            let mut tx = self.pool().begin().await?;
            // Session settings; the snapshot id is checked above.
            tx.execute(&*format!("{READ_ONLY}; SET TRANSACTION SNAPSHOT '{id}'"))
                .await?;
            others.push(SnapshotReader { tx });
        }
        let positions = sqlx::query_as!(
            Position,
            "SELECT kafka_partition, next_offset FROM consumer_position WHERE topic = $1",
            topic
        )
        .fetch_all(&mut *first)
        .await?;
        let pending_events =
            sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM pending_event"#)
                .fetch_one(&mut *first)
                .await?;
        let dead_letters = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM dead_letter"#)
            .fetch_one(&mut *first)
            .await?;
        let mut all = vec![SnapshotReader { tx: first }];
        all.extend(others);
        Ok(ProjectionSnapshot {
            positions: by_partition(positions),
            pending_events,
            dead_letters,
            readers: all,
        })
    }
}

impl SnapshotReader {
    /// Every order's `HistoryDigest`, by order id, read as it is consumed.
    pub fn history_digests(
        &mut self,
    ) -> impl Stream<Item = Result<HistoryDigest, QueryError>> + '_ {
        // The digest is `crate::digest::HISTORY_DIGEST`, written out.
        sqlx::query_as!(
            HistoryDigest,
            r#"SELECT order_id, count(*) AS "events!",
                      md5(string_agg(event_id::text || ':' || version::text, ',' ORDER BY version)) AS "digest!"
               FROM order_history GROUP BY order_id ORDER BY order_id"#
        )
        .fetch(&mut *self.tx)
        .map_err(QueryError::from)
    }

    /// Every `order_view` row, by order id, read as it is consumed.
    pub fn orders(&mut self) -> impl Stream<Item = Result<StoredOrder, QueryError>> + '_ {
        sqlx::query_as!(
            StoredOrder,
            r#"SELECT order_id, customer_id, status, currency_code, total_minor, version,
                      placed_at, updated_at, tracking_number, cancel_reason,
                      lines::text AS "lines!"
               FROM order_view ORDER BY order_id"#
        )
        .fetch(&mut *self.tx)
        .map_err(QueryError::from)
    }

    /// One order's `order_history` as (version, event id), in version order.
    pub async fn history(&mut self, order_id: Uuid) -> Result<Vec<(i64, Uuid)>, QueryError> {
        let rows = sqlx::query!(
            "SELECT version, event_id FROM order_history WHERE order_id = $1 ORDER BY version",
            order_id
        )
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.version, row.event_id))
            .collect())
    }

    /// Ends the transaction.
    pub async fn close(self) -> Result<(), QueryError> {
        Ok(self.tx.commit().await?)
    }
}
