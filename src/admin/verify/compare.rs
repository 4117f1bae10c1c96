//! One order's projected row against the fold of its stored events, field by
//! field, and its history rows against the store's event ids.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Difference;
use crate::{
    codec::EventMeta,
    domain::{Event, Order, evolve},
    query::read_model::{digest::StoredOrder, status_name},
};

/// An order folded from the event store up to some version.
pub(super) struct Folded {
    order: Order,
    placed_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

/// Folds `events` (versions 1, 2, …) with `domain::evolve`.
pub(super) fn fold(events: &[(EventMeta, Event)]) -> Folded {
    let mut folded = Folded {
        order: Order::default(),
        placed_at: None,
        updated_at: None,
    };
    for (meta, event) in events {
        folded.order = evolve(std::mem::take(&mut folded.order), event);
        folded.placed_at.get_or_insert(meta.occurred_at);
        folded.updated_at = Some(meta.occurred_at);
    }
    folded
}

/// Every field of `projected` that differs from `folded`, in a fixed order.
pub(super) fn fields(projected: &StoredOrder, folded: &Folded) -> Vec<Difference> {
    let order = &folded.order;
    let mut differences = vec![];
    let mut field = |name: &str, projected_text: String, expected: String| {
        if projected_text != expected {
            differences.push(Difference {
                order_id: projected.order_id,
                field: name.into(),
                projected: projected_text,
                expected,
            });
        }
    };
    let text = |value: Option<&str>| value.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"));
    let micros = |at: Option<DateTime<Utc>>| {
        at.map_or_else(
            || "none".to_owned(),
            |at| {
                DateTime::from_timestamp_micros(at.timestamp_micros())
                    .unwrap_or(at)
                    .to_rfc3339()
            },
        )
    };
    field(
        "customer_id",
        text(projected.customer_id.as_deref()),
        text(order.customer_id.as_ref().map(|c| c.as_str())),
    );
    field(
        "status",
        projected.status.clone(),
        status_name(order.status).to_owned(),
    );
    field(
        "currency_code",
        text(projected.currency_code.as_deref()),
        text(order.currency.as_ref().map(|c| c.as_str())),
    );
    let projected_lines = match projected.parsed_lines() {
        Ok(lines) => lines_text(
            lines
                .iter()
                .map(|l| line_text(&l.product_id, l.quantity, l.unit_price_minor)),
        ),
        // Not an array of lines: shown as stored.
        Err(_) => projected.lines.clone(),
    };
    field(
        "lines",
        projected_lines,
        lines_text(order.lines.iter().map(|l| {
            line_text(
                l.product_id.as_str(),
                i64::from(l.quantity.get()),
                l.unit_price.get(),
            )
        })),
    );
    field(
        "total_minor",
        projected.total_minor.to_string(),
        order.total_minor().to_string(),
    );
    field(
        "tracking_number",
        text(projected.tracking_number.as_deref()),
        text(order.tracking_number.as_ref().map(|t| t.as_str())),
    );
    field(
        "cancel_reason",
        text(projected.cancel_reason.as_deref()),
        text(order.cancel_reason.as_ref().map(|r| r.as_str())),
    );
    field(
        "placed_at",
        micros(Some(projected.placed_at)),
        micros(folded.placed_at),
    );
    field(
        "updated_at",
        micros(Some(projected.updated_at)),
        micros(folded.updated_at),
    );
    differences
}

fn line_text(product_id: &str, quantity: i64, unit_price_minor: i64) -> String {
    format!("{product_id:?} x{quantity} @{unit_price_minor}")
}

fn lines_text(lines: impl Iterator<Item = String>) -> String {
    format!("[{}]", lines.collect::<Vec<_>>().join(", "))
}

/// The `history` difference between an order's history rows and the store's
/// event ids for versions 1, 2, …, if they differ.
pub(super) fn history(
    order_id: Uuid,
    projected: &[(i64, Uuid)],
    stored: &[Uuid],
) -> Option<Difference> {
    let expected: Vec<(i64, Uuid)> = (1..).zip(stored.iter().copied()).collect();
    if projected == expected {
        return None;
    }
    let first_difference = expected
        .iter()
        .zip(projected)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(projected.len()));
    Some(Difference {
        order_id,
        field: "history".into(),
        projected: format!(
            "{} events, first difference at index {first_difference}",
            projected.len()
        ),
        expected: format!("{} events", expected.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_names_its_first_difference() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(history(a, &[(1, a), (2, b)], &[a, b]), None);
        let swapped = history(a, &[(1, a), (2, c)], &[a, b]).unwrap();
        assert_eq!(swapped.field, "history");
        assert_eq!(swapped.projected, "2 events, first difference at index 1");
        assert_eq!(swapped.expected, "2 events");
        let short = history(a, &[(1, a)], &[a, b]).unwrap();
        assert_eq!(short.projected, "1 events, first difference at index 1");
        let empty = history(a, &[], &[a]).unwrap();
        assert_eq!(empty.projected, "0 events, first difference at index 0");
    }
}
