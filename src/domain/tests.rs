//! Given/when/then tests for `decide` and `evolve`: one per command outcome
//! and one per rejection, plus the fold rules.

use super::*;

/// The order folded from past events, ready for a command.
struct Given(Order);

/// The outcome of deciding one command.
struct Then(Result<Vec<Event>, OrderError>);

fn given(events: &[Event]) -> Given {
    Given(events.iter().fold(Order::default(), evolve))
}

impl Given {
    fn when(self, command: Command) -> Then {
        Then(decide(&self.0, &command))
    }
}

impl Then {
    #[track_caller]
    fn then(self, expected: &[Event]) {
        assert_eq!(self.0, Ok(expected.to_vec()));
    }

    #[track_caller]
    fn then_err(self, expected: OrderError) {
        assert_eq!(self.0, Err(expected));
    }
}

fn product(id: &str) -> ProductId {
    ProductId::parse(id).unwrap()
}

fn line(id: &str, quantity: u32, unit_price: i64) -> OrderLine {
    OrderLine {
        product_id: product(id),
        quantity: Quantity::parse(quantity).unwrap(),
        unit_price: UnitPrice::parse(unit_price).unwrap(),
    }
}

fn lines(count: usize) -> Vec<OrderLine> {
    (0..count).map(|i| line(&format!("p{i}"), 1, 100)).collect()
}

fn customer() -> CustomerId {
    CustomerId::parse("customer-1").unwrap()
}

fn eur() -> CurrencyCode {
    CurrencyCode::parse("EUR").unwrap()
}

fn tracking() -> TrackingNumber {
    TrackingNumber::parse("1Z999AA10123456784").unwrap()
}

fn reason() -> CancelReason {
    CancelReason::parse("changed my mind").unwrap()
}

fn place_order(lines: Vec<OrderLine>) -> Command {
    Command::PlaceOrder {
        customer_id: customer(),
        currency: eur(),
        lines,
    }
}

fn order_placed(lines: Vec<OrderLine>) -> Event {
    Event::OrderPlaced {
        customer_id: customer(),
        currency: eur(),
        lines,
    }
}

/// An order of two units of "apple" at 150 and one "pear" at 300.
fn placed() -> Event {
    order_placed(vec![line("apple", 2, 150), line("pear", 1, 300)])
}

fn shipped() -> Event {
    Event::OrderShipped {
        tracking_number: tracking(),
    }
}

fn cancelled() -> Event {
    Event::OrderCancelled { reason: reason() }
}

fn invalid(action: &'static str, status: OrderStatus) -> OrderError {
    OrderError::InvalidStatus { action, status }
}

// PlaceOrder

#[test]
fn places_a_new_order() {
    given(&[])
        .when(place_order(vec![line("apple", 2, 150)]))
        .then(&[order_placed(vec![line("apple", 2, 150)])]);
}

#[test]
fn places_an_order_with_100_lines() {
    given(&[])
        .when(place_order(lines(MAX_LINES)))
        .then(&[order_placed(lines(MAX_LINES))]);
}

#[test]
fn rejects_placing_an_order_without_lines() {
    given(&[])
        .when(place_order(vec![]))
        .then_err(OrderError::LineCount);
}

#[test]
fn rejects_placing_an_order_with_101_lines() {
    given(&[])
        .when(place_order(lines(MAX_LINES + 1)))
        .then_err(OrderError::LineCount);
}

#[test]
fn rejects_placing_an_order_that_lists_a_product_twice() {
    given(&[])
        .when(place_order(vec![
            line("apple", 1, 150),
            line("pear", 1, 300),
            line("apple", 3, 150),
        ]))
        .then_err(OrderError::DuplicateProduct {
            product_id: product("apple"),
        });
}

#[test]
fn rejects_placing_a_placed_order_again() {
    given(&[placed()])
        .when(place_order(vec![line("apple", 1, 150)]))
        .then_err(OrderError::AlreadyExists);
}

#[test]
fn rejects_placing_an_order_that_exists_in_any_later_status() {
    for history in [
        vec![placed(), Event::OrderConfirmed],
        vec![placed(), Event::OrderConfirmed, shipped()],
        vec![placed(), cancelled()],
    ] {
        given(&history)
            .when(place_order(vec![line("apple", 1, 150)]))
            .then_err(OrderError::AlreadyExists);
    }
}

// Any other command before the order exists

#[test]
fn rejects_every_other_command_on_an_order_that_does_not_exist() {
    for command in [
        Command::AddOrderLine {
            line: line("apple", 1, 150),
        },
        Command::RemoveOrderLine {
            product_id: product("apple"),
        },
        Command::ConfirmOrder,
        Command::ShipOrder {
            tracking_number: tracking(),
        },
        Command::CancelOrder { reason: reason() },
    ] {
        given(&[]).when(command).then_err(OrderError::NotFound);
    }
}

// AddOrderLine

#[test]
fn adds_a_line_for_a_new_product() {
    given(&[placed()])
        .when(Command::AddOrderLine {
            line: line("plum", 5, 80),
        })
        .then(&[Event::OrderLineAdded {
            line: line("plum", 5, 80),
        }]);
}

#[test]
fn adding_a_present_product_adds_to_its_quantity() {
    given(&[placed()])
        .when(Command::AddOrderLine {
            line: line("apple", 3, 150),
        })
        .then(&[Event::OrderLineAdded {
            line: line("apple", 3, 150),
        }]);

    let order = Order::fold(&[
        placed(),
        Event::OrderLineAdded {
            line: line("apple", 3, 150),
        },
    ]);
    assert_eq!(
        order.lines,
        vec![line("apple", 5, 150), line("pear", 1, 300)]
    );
}

#[test]
fn adds_units_up_to_10000_on_a_line() {
    given(&[placed()])
        .when(Command::AddOrderLine {
            line: line("apple", 9_998, 150),
        })
        .then(&[Event::OrderLineAdded {
            line: line("apple", 9_998, 150),
        }]);
}

#[test]
fn adds_units_to_a_present_product_when_100_lines_exist() {
    given(&[order_placed(lines(MAX_LINES))])
        .when(Command::AddOrderLine {
            line: line("p0", 1, 100),
        })
        .then(&[Event::OrderLineAdded {
            line: line("p0", 1, 100),
        }]);
}

#[test]
fn rejects_adding_a_present_product_at_another_unit_price() {
    given(&[placed()])
        .when(Command::AddOrderLine {
            line: line("apple", 1, 151),
        })
        .then_err(OrderError::PriceMismatch {
            product_id: product("apple"),
        });
}

#[test]
fn rejects_adding_units_that_push_a_line_above_10000() {
    given(&[placed()])
        .when(Command::AddOrderLine {
            line: line("apple", 9_999, 150),
        })
        .then_err(OrderError::QuantityLimit {
            product_id: product("apple"),
        });
}

#[test]
fn rejects_adding_a_101st_line() {
    given(&[order_placed(lines(MAX_LINES))])
        .when(Command::AddOrderLine {
            line: line("plum", 1, 80),
        })
        .then_err(OrderError::LineCount);
}

#[test]
fn rejects_adding_a_line_to_a_confirmed_order() {
    given(&[placed(), Event::OrderConfirmed])
        .when(Command::AddOrderLine {
            line: line("plum", 1, 80),
        })
        .then_err(invalid("add a line to", OrderStatus::Confirmed));
}

#[test]
fn rejects_adding_a_line_to_a_shipped_order() {
    given(&[placed(), Event::OrderConfirmed, shipped()])
        .when(Command::AddOrderLine {
            line: line("plum", 1, 80),
        })
        .then_err(invalid("add a line to", OrderStatus::Shipped));
}

#[test]
fn rejects_adding_a_line_to_a_cancelled_order() {
    given(&[placed(), cancelled()])
        .when(Command::AddOrderLine {
            line: line("plum", 1, 80),
        })
        .then_err(invalid("add a line to", OrderStatus::Cancelled));
}

// RemoveOrderLine

#[test]
fn removes_a_line() {
    given(&[placed()])
        .when(Command::RemoveOrderLine {
            product_id: product("pear"),
        })
        .then(&[Event::OrderLineRemoved {
            product_id: product("pear"),
        }]);
}

#[test]
fn rejects_removing_a_product_not_on_the_order() {
    given(&[placed()])
        .when(Command::RemoveOrderLine {
            product_id: product("plum"),
        })
        .then_err(OrderError::LineNotFound {
            product_id: product("plum"),
        });
}

#[test]
fn rejects_removing_the_last_line() {
    given(&[
        placed(),
        Event::OrderLineRemoved {
            product_id: product("pear"),
        },
    ])
    .when(Command::RemoveOrderLine {
        product_id: product("apple"),
    })
    .then_err(OrderError::LastLine);
}

#[test]
fn rejects_removing_a_line_from_a_confirmed_order() {
    given(&[placed(), Event::OrderConfirmed])
        .when(Command::RemoveOrderLine {
            product_id: product("pear"),
        })
        .then_err(invalid("remove a line from", OrderStatus::Confirmed));
}

#[test]
fn rejects_removing_a_line_from_a_shipped_order() {
    given(&[placed(), Event::OrderConfirmed, shipped()])
        .when(Command::RemoveOrderLine {
            product_id: product("pear"),
        })
        .then_err(invalid("remove a line from", OrderStatus::Shipped));
}

#[test]
fn rejects_removing_a_line_from_a_cancelled_order() {
    given(&[placed(), cancelled()])
        .when(Command::RemoveOrderLine {
            product_id: product("pear"),
        })
        .then_err(invalid("remove a line from", OrderStatus::Cancelled));
}

// ConfirmOrder

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
