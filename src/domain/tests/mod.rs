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

mod status;
