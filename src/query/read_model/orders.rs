//! `order_view`: one row per order as of its latest applied event, its lines
//! in a jsonb array. Every statement on the table, its row decoding and its
//! `COPY` rows live here.

use std::{borrow::Cow, collections::HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Executor;
use uuid::Uuid;

use super::{ReadModel, copy::CopyRows, corrupt, to_i64, to_u64};
use crate::{
    domain::{
        CancelReason, CurrencyCode, CustomerId, Order, OrderLine, OrderStatus, ProductId, Quantity,
        TrackingNumber, UnitPrice,
    },
    query::{
        QueryError,
        page_token::{ListFilter, OrdersCursor},
    },
};

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

/// One element of `order_view.lines`.
#[derive(Debug, Serialize, Deserialize)]
struct LineJson<'a> {
    #[serde(borrow)]
    product_id: Cow<'a, str>,
    quantity: u32,
    unit_price_minor: i64,
}

/// The order's lines as the JSON text stored in `order_view.lines`.
pub(crate) fn lines_json(order: &Order) -> String {
    let lines: Vec<LineJson<'_>> = order
        .lines
        .iter()
        .map(|line| LineJson {
            product_id: Cow::Borrowed(line.product_id.as_str()),
            quantity: line.quantity.get(),
            unit_price_minor: line.unit_price.get(),
        })
        .collect();
    serde_json::to_string(&lines).expect("lines serialise")
}

fn lines_from_json(order_id: Uuid, json: &str) -> Result<Vec<OrderLine>, QueryError> {
    let lines: Vec<LineJson<'_>> =
        serde_json::from_str(json).map_err(|e| corrupt(order_id, "lines", e))?;
    lines
        .into_iter()
        .map(|line| {
            Ok(OrderLine {
                product_id: parsed(order_id, "product_id", ProductId::parse(&line.product_id))?,
                quantity: parsed(order_id, "quantity", Quantity::parse(line.quantity))?,
                unit_price: parsed(
                    order_id,
                    "unit_price_minor",
                    UnitPrice::parse(line.unit_price_minor),
                )?,
            })
        })
        .collect()
}

fn parsed<T>(
    order_id: Uuid,
    what: &str,
    parsed: Result<T, crate::domain::ValidationError>,
) -> Result<T, QueryError> {
    parsed.map_err(|e| corrupt(order_id, what, e))
}

/// An `order_view` row as the reads select it (`lines` as JSON text).
pub(super) struct OrderRow {
    pub(super) order_id: Uuid,
    pub(super) customer_id: Option<String>,
    pub(super) status: String,
    pub(super) currency_code: Option<String>,
    pub(super) version: i64,
    pub(super) placed_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) tracking_number: Option<String>,
    pub(super) cancel_reason: Option<String>,
    pub(super) lines: String,
}

impl OrderRow {
    /// The order, validated as the domain would.
    pub(super) fn into_view(self) -> Result<OrderView, QueryError> {
        let order_id = self.order_id;
        let status = status_from_name(&self.status)
            .ok_or_else(|| corrupt(order_id, "status", &self.status))?;
        Ok(OrderView {
            order_id,
            order: Order {
                version: to_u64(self.version),
                status,
                customer_id: self
                    .customer_id
                    .map(|c| parsed(order_id, "customer_id", CustomerId::parse(&c)))
                    .transpose()?,
                currency: self
                    .currency_code
                    .map(|c| parsed(order_id, "currency_code", CurrencyCode::parse(&c)))
                    .transpose()?,
                lines: lines_from_json(order_id, &self.lines)?,
                tracking_number: self
                    .tracking_number
                    .map(|t| parsed(order_id, "tracking_number", TrackingNumber::parse(&t)))
                    .transpose()?,
                cancel_reason: self
                    .cancel_reason
                    .map(|r| parsed(order_id, "cancel_reason", CancelReason::parse(&r)))
                    .transpose()?,
            },
            placed_at: self.placed_at,
            updated_at: self.updated_at,
        })
    }
}

/// One list variant: `$1` limit, `$2` customer, `$3` status, `$4`/`$5` the
/// cursor's (placed_at, order_id). Each variant binds all five; those it does
/// not filter on are cast, so that PostgreSQL can infer their types.
macro_rules! list_orders {
    ($pool:expr, $limit:expr, $customer:expr, $status:expr, $placed_at:expr, $after:expr, $sql:literal) => {
        sqlx::query_as!(
            OrderRow, $sql, $limit, $customer, $status, $placed_at, $after
        )
        .fetch_all($pool)
        .await?
    };
}

impl ReadModel {
    /// One order, read in one snapshot with the projection's freshness
    /// (when the projection last applied an event).
    pub async fn get_order_fresh(
        &self,
        order_id: Uuid,
    ) -> Result<Option<(OrderView, Option<DateTime<Utc>>)>, QueryError> {
        let Some(row) = sqlx::query!(
            r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                      updated_at, tracking_number, cancel_reason, lines::text AS "lines!",
                      (SELECT last_applied_at FROM projection_meta) AS projected_at
               FROM order_view WHERE order_id = $1"#,
            order_id
        )
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let view = OrderRow {
            order_id: row.order_id,
            customer_id: row.customer_id,
            status: row.status,
            currency_code: row.currency_code,
            version: row.version,
            placed_at: row.placed_at,
            updated_at: row.updated_at,
            tracking_number: row.tracking_number,
            cancel_reason: row.cancel_reason,
            lines: row.lines,
        }
        .into_view()?;
        Ok(Some((view, row.projected_at)))
    }

    /// The order's projected version, if it is projected.
    pub async fn order_version(&self, order_id: Uuid) -> Result<Option<u64>, QueryError> {
        let version = sqlx::query_scalar!(
            "SELECT version FROM order_view WHERE order_id = $1",
            order_id
        )
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
        let placed_at = after
            .map(|c| {
                DateTime::from_timestamp_micros(c.placed_at_micros)
                    .ok_or_else(|| QueryError::invalid("page_token", "is out of range"))
            })
            .transpose()?;
        let (pool, limit) = (&self.pool, i64::from(limit));
        let (customer, status) = (filter.customer_id.as_deref(), filter.status.as_deref());
        let after = after.map(|c| c.order_id);
        let rows = match (customer.is_some(), status.is_some(), after.is_some()) {
            (false, false, false) => list_orders!(
                pool,
                limit,
                customer,
                status,
                placed_at,
                after,
                r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                          updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
                   FROM order_view
                   WHERE $2::text IS NULL AND $3::text IS NULL
                     AND $4::timestamptz IS NULL AND $5::uuid IS NULL
                   ORDER BY placed_at DESC, order_id DESC LIMIT $1"#
            ),
            (true, false, false) => list_orders!(
                pool,
                limit,
                customer,
                status,
                placed_at,
                after,
                r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                          updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
                   FROM order_view
                   WHERE customer_id = $2 AND $3::text IS NULL
                     AND $4::timestamptz IS NULL AND $5::uuid IS NULL
                   ORDER BY placed_at DESC, order_id DESC LIMIT $1"#
            ),
            (false, true, false) => list_orders!(
                pool,
                limit,
                customer,
                status,
                placed_at,
                after,
                r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                          updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
                   FROM order_view
                   WHERE status = $3 AND $2::text IS NULL
                     AND $4::timestamptz IS NULL AND $5::uuid IS NULL
                   ORDER BY placed_at DESC, order_id DESC LIMIT $1"#
            ),
            (true, true, false) => list_orders!(
                pool,
                limit,
                customer,
                status,
                placed_at,
                after,
                r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                          updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
                   FROM order_view
                   WHERE customer_id = $2 AND status = $3
                     AND $4::timestamptz IS NULL AND $5::uuid IS NULL
                   ORDER BY placed_at DESC, order_id DESC LIMIT $1"#
            ),
            (false, false, true) => list_orders!(
                pool,
                limit,
                customer,
                status,
                placed_at,
                after,
                r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                          updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
                   FROM order_view
                   WHERE (placed_at, order_id) < ($4, $5) AND $2::text IS NULL AND $3::text IS NULL
                   ORDER BY placed_at DESC, order_id DESC LIMIT $1"#
            ),
            (true, false, true) => list_orders!(
                pool,
                limit,
                customer,
                status,
                placed_at,
                after,
                r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                          updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
                   FROM order_view
                   WHERE customer_id = $2 AND (placed_at, order_id) < ($4, $5) AND $3::text IS NULL
                   ORDER BY placed_at DESC, order_id DESC LIMIT $1"#
            ),
            (false, true, true) => list_orders!(
                pool,
                limit,
                customer,
                status,
                placed_at,
                after,
                r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                          updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
                   FROM order_view
                   WHERE status = $3 AND (placed_at, order_id) < ($4, $5) AND $2::text IS NULL
                   ORDER BY placed_at DESC, order_id DESC LIMIT $1"#
            ),
            (true, true, true) => list_orders!(
                pool,
                limit,
                customer,
                status,
                placed_at,
                after,
                r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                          updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
                   FROM order_view
                   WHERE customer_id = $2 AND status = $3 AND (placed_at, order_id) < ($4, $5)
                   ORDER BY placed_at DESC, order_id DESC LIMIT $1"#
            ),
        };
        rows.into_iter().map(OrderRow::into_view).collect()
    }

    /// The projected orders among `order_ids`, by id.
    pub(super) async fn load_views(
        &self,
        order_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, OrderView>, QueryError> {
        sqlx::query_as!(
            OrderRow,
            r#"SELECT order_id, customer_id, status, currency_code, version, placed_at,
                      updated_at, tracking_number, cancel_reason, lines::text AS "lines!"
               FROM order_view WHERE order_id = ANY($1)"#,
            order_ids
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| row.into_view().map(|view| (view.order_id, view)))
        .collect()
    }

    /// Which of `order_ids` are projected.
    pub(super) async fn projected_among(
        &self,
        order_ids: &[Uuid],
    ) -> Result<Vec<Uuid>, QueryError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT v.order_id FROM order_view v
               JOIN UNNEST($1::uuid[]) AS u(order_id) ON u.order_id = v.order_id"#,
            order_ids
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Drops `order_view`'s secondary indexes if no order is projected yet,
    /// for a bulk load; `restore_indexes` creates them again. Returns whether
    /// they were dropped.
    pub async fn defer_indexes(&self) -> Result<bool, QueryError> {
        let mut tx = self.pool.begin().await?;
        // Locks out every other writer of the table until the decision commits.
        sqlx::query!("LOCK TABLE order_view IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let empty =
            sqlx::query_scalar!(r#"SELECT NOT EXISTS (SELECT 1 FROM order_view) AS "empty!""#)
                .fetch_one(&mut *tx)
                .await?;
        if !empty {
            tx.rollback().await?;
            return Ok(false);
        }
        for (name, _) in DEFERRABLE_INDEXES {
            // DDL: the index name is one of the constants below.
            tx.execute(&*format!("DROP INDEX IF EXISTS {name}")).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Creates whatever `defer_indexes` dropped (nothing when all are there).
    pub async fn restore_indexes(&self) -> Result<(), QueryError> {
        // Each on a connection of its own: index builds share the table (SHARE
        // locks), so they run side by side on the server's cores.
        let built =
            futures::future::join_all(DEFERRABLE_INDEXES.iter().map(|(name, definition)| {
                // DDL from the constants below.
                let statement = format!("CREATE INDEX IF NOT EXISTS {name} {definition}");
                async move { self.pool.execute(&*statement).await }
            }))
            .await;
        for result in built {
            result?;
        }
        Ok(())
    }
}

/// The columns of a `COPY` row, in order.
const COPY_COLUMNS: [&str; 11] = [
    "order_id",
    "customer_id",
    "status",
    "currency_code",
    "total_minor",
    "version",
    "placed_at",
    "updated_at",
    "tracking_number",
    "cancel_reason",
    "lines",
];

/// The `COPY` that `copy_row`'s rows feed (the macros do not take `COPY`).
pub(super) fn copy_statement() -> String {
    format!(
        "COPY order_view ({}) FROM STDIN (FORMAT binary)",
        COPY_COLUMNS.join(", ")
    )
}

/// Appends `view` as a `COPY` row.
pub(super) fn copy_row(rows: &mut CopyRows, view: &OrderView) {
    let order = &view.order;
    rows.row(&COPY_COLUMNS);
    rows.uuid(view.order_id);
    rows.text(order.customer_id.as_ref().map(|c| c.as_str()));
    rows.text(Some(status_name(order.status)));
    rows.text(order.currency.as_ref().map(|c| c.as_str()));
    rows.int8(Some(order.total_minor()));
    rows.int8(Some(to_i64(order.version)));
    rows.time(view.placed_at);
    rows.time(view.updated_at);
    rows.text(order.tracking_number.as_ref().map(|t| t.as_str()));
    rows.text(order.cancel_reason.as_ref().map(|r| r.as_str()));
    rows.jsonb(&lines_json(order));
}

/// The secondary indexes of `order_view` as the migrations leave them: a bulk
/// load into an empty generation drops them and creates them again once
/// loaded, which is several times faster than maintaining them row by row.
/// (A unit test checks them against the migrations.)
pub(super) const DEFERRABLE_INDEXES: [(&str, &str); 3] = [
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
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_name_reads_back() {
        use OrderStatus::*;
        for status in [New, Placed, Confirmed, Shipped, Cancelled] {
            assert_eq!(status_from_name(status_name(status)), Some(status));
        }
    }

    #[test]
    fn deferred_indexes_are_the_migrations() {
        let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let created = flat(include_str!(
            "../../../migrations/read/0001_read_model.up.sql"
        ));
        let later = flat(include_str!(
            "../../../migrations/read/0003_batch_apply.up.sql"
        ));
        for (name, definition) in DEFERRABLE_INDEXES {
            assert!(
                created.contains(&format!("CREATE INDEX {name} {definition};")),
                "{name}"
            );
            assert!(!later.contains(&format!("DROP INDEX {name};")), "{name}");
        }
    }

    #[test]
    fn lines_read_back_from_their_json() {
        let order = Order {
            lines: vec![OrderLine {
                product_id: ProductId::parse("sku-1").unwrap(),
                quantity: Quantity::parse(2).unwrap(),
                unit_price: UnitPrice::parse(150).unwrap(),
            }],
            ..Order::default()
        };
        let json = lines_json(&order);
        assert_eq!(
            json,
            r#"[{"product_id":"sku-1","quantity":2,"unit_price_minor":150}]"#
        );
        assert_eq!(lines_from_json(Uuid::nil(), &json).unwrap(), order.lines);
        assert!(lines_from_json(Uuid::nil(), "{").is_err());
    }
}
