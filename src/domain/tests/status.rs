//! Confirming, shipping and cancelling, and the fold of every status.

use super::*;

#[test]
fn confirms_a_placed_order() {
    given(&[placed()])
        .when(Command::ConfirmOrder)
        .then(&[Event::OrderConfirmed]);
}

#[test]
fn rejects_confirming_a_confirmed_order() {
    given(&[placed(), Event::OrderConfirmed])
        .when(Command::ConfirmOrder)
        .then_err(invalid("confirm", OrderStatus::Confirmed));
}

#[test]
fn rejects_confirming_a_shipped_order() {
    given(&[placed(), Event::OrderConfirmed, shipped()])
        .when(Command::ConfirmOrder)
        .then_err(invalid("confirm", OrderStatus::Shipped));
}

#[test]
fn rejects_confirming_a_cancelled_order() {
    given(&[placed(), cancelled()])
        .when(Command::ConfirmOrder)
        .then_err(invalid("confirm", OrderStatus::Cancelled));
}

// ShipOrder

#[test]
fn ships_a_confirmed_order() {
    given(&[placed(), Event::OrderConfirmed])
        .when(Command::ShipOrder {
            tracking_number: tracking(),
        })
        .then(&[shipped()]);
}

#[test]
fn rejects_shipping_a_placed_order() {
    given(&[placed()])
        .when(Command::ShipOrder {
            tracking_number: tracking(),
        })
        .then_err(invalid("ship", OrderStatus::Placed));
}

#[test]
fn rejects_shipping_a_shipped_order() {
    given(&[placed(), Event::OrderConfirmed, shipped()])
        .when(Command::ShipOrder {
            tracking_number: tracking(),
        })
        .then_err(invalid("ship", OrderStatus::Shipped));
}

#[test]
fn rejects_shipping_a_cancelled_order() {
    given(&[placed(), Event::OrderConfirmed, cancelled()])
        .when(Command::ShipOrder {
            tracking_number: tracking(),
        })
        .then_err(invalid("ship", OrderStatus::Cancelled));
}

// CancelOrder

#[test]
fn cancels_a_placed_order() {
    given(&[placed()])
        .when(Command::CancelOrder { reason: reason() })
        .then(&[cancelled()]);
}

#[test]
fn cancels_a_confirmed_order() {
    given(&[placed(), Event::OrderConfirmed])
        .when(Command::CancelOrder { reason: reason() })
        .then(&[cancelled()]);
}

#[test]
fn cancels_with_an_empty_reason() {
    let empty = CancelReason::parse("").unwrap();
    given(&[placed()])
        .when(Command::CancelOrder {
            reason: empty.clone(),
        })
        .then(&[Event::OrderCancelled { reason: empty }]);
}

#[test]
fn rejects_cancelling_a_shipped_order() {
    given(&[placed(), Event::OrderConfirmed, shipped()])
        .when(Command::CancelOrder { reason: reason() })
        .then_err(invalid("cancel", OrderStatus::Shipped));
}

#[test]
fn rejects_cancelling_a_cancelled_order() {
    given(&[placed(), cancelled()])
        .when(Command::CancelOrder { reason: reason() })
        .then_err(invalid("cancel", OrderStatus::Cancelled));
}

// evolve and fold

#[test]
fn an_order_without_events_does_not_exist() {
    let order = Order::fold(&[]);
    assert_eq!(order, Order::default());
    assert_eq!(order.status, OrderStatus::New);
    assert!(!order.exists());
    assert_eq!(order.total_minor(), 0);
}

#[test]
fn each_event_increments_the_version() {
    let history = [
        placed(),
        Event::OrderLineAdded {
            line: line("plum", 1, 80),
        },
        Event::OrderLineRemoved {
            product_id: product("plum"),
        },
        Event::OrderConfirmed,
        shipped(),
    ];
    let mut order = Order::default();
    for (i, event) in history.iter().enumerate() {
        order = evolve(order, event);
        assert_eq!(order.version, i as u64 + 1);
    }
}

#[test]
fn a_placed_order_records_its_customer_currency_and_lines() {
    let order = Order::fold(&[placed()]);
    assert!(order.exists());
    assert_eq!(order.status, OrderStatus::Placed);
    assert_eq!(order.customer_id, Some(customer()));
    assert_eq!(order.currency, Some(eur()));
    assert_eq!(
        order.lines,
        vec![line("apple", 2, 150), line("pear", 1, 300)]
    );
}

#[test]
fn an_order_totals_its_lines() {
    let order = Order::fold(&[
        placed(),
        Event::OrderLineAdded {
            line: line("apple", 1, 150),
        },
        Event::OrderLineAdded {
            line: line("plum", 4, 25),
        },
    ]);
    assert_eq!(order.total_minor(), 3 * 150 + 300 + 4 * 25);
}

#[test]
fn the_largest_possible_order_totals_without_overflow() {
    let biggest: Vec<_> = (0..MAX_LINES)
        .map(|i| line(&format!("p{i}"), 10_000, 1_000_000_000_000))
        .collect();
    let order = Order::fold(&[order_placed(biggest)]);
    assert_eq!(order.total_minor(), 1_000_000_000_000_000_000);
}

#[test]
fn new_products_keep_their_first_added_order() {
    let order = Order::fold(&[
        placed(),
        Event::OrderLineAdded {
            line: line("plum", 1, 80),
        },
        Event::OrderLineRemoved {
            product_id: product("apple"),
        },
        Event::OrderLineAdded {
            line: line("apple", 1, 150),
        },
    ]);
    let products: Vec<_> = order.lines.iter().map(|l| l.product_id.as_str()).collect();
    assert_eq!(products, ["pear", "plum", "apple"]);
}

#[test]
fn removing_an_absent_product_is_a_no_op_but_counts_as_an_event() {
    let before = Order::fold(&[placed()]);
    let after = evolve(
        before.clone(),
        &Event::OrderLineRemoved {
            product_id: product("plum"),
        },
    );
    assert_eq!(after.lines, before.lines);
    assert_eq!(after.version, before.version + 1);
}

#[test]
fn a_merged_quantity_beyond_the_limit_is_capped() {
    let order = Order::fold(&[
        placed(),
        Event::OrderLineAdded {
            line: line("apple", 10_000, 150),
        },
    ]);
    assert_eq!(order.lines[0].quantity, Quantity::MAX);
}

#[test]
fn shipping_records_the_tracking_number() {
    let order = Order::fold(&[placed(), Event::OrderConfirmed, shipped()]);
    assert_eq!(order.status, OrderStatus::Shipped);
    assert_eq!(order.tracking_number, Some(tracking()));
}

#[test]
fn cancelling_records_the_reason() {
    let order = Order::fold(&[placed(), cancelled()]);
    assert_eq!(order.status, OrderStatus::Cancelled);
    assert_eq!(order.cancel_reason, Some(reason()));
}

// Names and messages other layers rely on

#[test]
fn commands_and_events_are_named_for_the_wire() {
    assert_eq!(Command::ConfirmOrder.name(), "ConfirmOrder");
    assert_eq!(place_order(vec![]).name(), "PlaceOrder");
    assert_eq!(placed().type_name(), "OrderPlaced");
    assert_eq!(cancelled().type_name(), "OrderCancelled");
}

#[test]
fn errors_say_which_rule_was_broken() {
    assert_eq!(
        invalid("ship", OrderStatus::Cancelled).to_string(),
        "cannot ship an order that is cancelled"
    );
    assert_eq!(OrderError::NotFound.to_string(), "order not found");
    assert!(OrderError::NotFound.is_not_found());
    assert!(!OrderError::NotFound.is_already_exists());
    assert!(OrderError::AlreadyExists.is_already_exists());
    assert!(!OrderError::LastLine.is_not_found());
}
