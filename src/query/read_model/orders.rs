//! `order_view`: one row per order as of its latest applied event, its lines
//! in a jsonb array. Every statement on the table, its row decoding and its
//! `COPY` rows live here.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Row, postgres::PgRow};
use uuid::Uuid;

use super::{copy::CopyRows, corrupt, to_i64, to_u64};
use crate::{
    domain::{
        CancelReason, CurrencyCode, CustomerId, Order, OrderLine, OrderStatus, ProductId, Quantity,
        TrackingNumber, UnitPrice,
    },
    query::QueryError,
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

/// The columns `order_from_row` reads, for `SELECT`s of `order_view`.
const COLUMNS: &str = "order_id, customer_id, status, currency_code, version, placed_at, \
                       updated_at, tracking_number, cancel_reason, lines::text AS lines";

/// An `OrderView` from a row with `COLUMNS`.
pub(super) fn order_from_row(row: &PgRow) -> Result<OrderView, QueryError> {
    let order_id: Uuid = row.try_get("order_id")?;
    let status: String = row.try_get("status")?;
    let status = status_from_name(&status).ok_or_else(|| corrupt(order_id, "status", &status))?;
    let text = |column: &str| row.try_get::<Option<String>, _>(column);
    let customer_id = text("customer_id")?
        .map(|c| parsed(order_id, "customer_id", CustomerId::parse(&c)))
        .transpose()?;
    let currency = text("currency_code")?
        .map(|c| parsed(order_id, "currency_code", CurrencyCode::parse(&c)))
        .transpose()?;
    let tracking_number = text("tracking_number")?
        .map(|t| parsed(order_id, "tracking_number", TrackingNumber::parse(&t)))
        .transpose()?;
    let cancel_reason = text("cancel_reason")?
        .map(|r| parsed(order_id, "cancel_reason", CancelReason::parse(&r)))
        .transpose()?;
    let lines: String = row.try_get("lines")?;
    Ok(OrderView {
        order_id,
        order: Order {
            version: to_u64(row.try_get("version")?),
            status,
            customer_id,
            currency,
            lines: lines_from_json(order_id, &lines)?,
            tracking_number,
            cancel_reason,
        },
        placed_at: row.try_get("placed_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The statements on `order_view` of one generation.
#[derive(Debug)]
pub(super) struct Sql {
    /// One order and the projection's freshness, in one statement.
    pub(super) get: String,
    pub(super) load: String,
    pub(super) version: String,
    /// By bits: customer filter (1), status filter (2), cursor (4).
    pub(super) list: [String; 8],
    pub(super) projected_among: String,
    pub(super) copy: String,
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

impl Sql {
    pub(super) fn new(s: &str) -> Self {
        let select = format!("SELECT {COLUMNS} FROM {s}.order_view v");
        let list = std::array::from_fn(|bits| {
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
                "{select}{filter} {unused} ORDER BY v.placed_at DESC, v.order_id DESC LIMIT $1",
                unused = unused_params(customer, status, cursor, filter.is_empty()),
            )
        });
        Self {
            get: format!(
                "SELECT {COLUMNS}, (SELECT last_applied_at FROM {s}.projection_meta) AS projected_at \
                 FROM {s}.order_view WHERE order_id = $1"
            ),
            load: format!("{select} WHERE v.order_id = ANY($1)"),
            version: format!("SELECT version FROM {s}.order_view WHERE order_id = $1"),
            list,
            projected_among: format!(
                "SELECT v.order_id FROM {s}.order_view v \
                 JOIN UNNEST($1::uuid[]) AS u(order_id) ON u.order_id = v.order_id"
            ),
            copy: format!(
                "COPY {s}.order_view ({}) FROM STDIN (FORMAT binary)",
                COPY_COLUMNS.join(", ")
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
    fn list_variants_bind_every_parameter() {
        let sql = Sql::new("s");
        for (bits, statement) in sql.list.iter().enumerate() {
            for p in ["$1", "$2", "$3", "$4", "$5"] {
                assert!(
                    statement.contains(p),
                    "variant {bits} lacks {p}: {statement}"
                );
            }
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
