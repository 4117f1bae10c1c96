//! The proto forms of what the reads return: a projected order and the
//! freshness of an answer. Shared by the unary edge (`grpc`) and the streams
//! (`live`).

use chrono::{DateTime, Utc};

use crate::{codec, proto, query::read_model::OrderView};

/// The freshness of an answer: the order's projected version (0 for lists)
/// and when the projection last applied an event.
pub fn freshness(version: u64, projected_at: Option<DateTime<Utc>>) -> proto::Freshness {
    proto::Freshness {
        projected_version: version,
        projected_at: projected_at.map(codec::timestamp),
    }
}

/// The proto form of a projected order.
pub fn order_to_proto(view: &OrderView) -> proto::Order {
    let order = &view.order;
    proto::Order {
        order_id: view.order_id.to_string(),
        customer_id: order
            .customer_id
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        status: codec::status_to_proto(order.status) as i32,
        currency_code: order
            .currency
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        lines: order.lines.iter().map(codec::line_to_proto).collect(),
        total_minor: order.total_minor(),
        version: order.version,
        placed_at: Some(codec::timestamp(view.placed_at)),
        updated_at: Some(codec::timestamp(view.updated_at)),
        tracking_number: order
            .tracking_number
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        cancel_reason: order
            .cancel_reason
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
    }
}
