//! The order aggregate: its commands, events and errors, the pure `decide`
//! function that turns a command into events, and the `evolve` fold step that
//! rebuilds an order from its events.

use std::collections::HashSet;
use std::fmt;

use crate::domain::types::{
    CancelReason, CurrencyCode, CustomerId, MAX_LINES, OrderLine, ProductId, Quantity,
    TrackingNumber,
};

/// Where an order is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderStatus {
    /// No events yet: the order does not exist.
    #[default]
    New,
    /// Placed and still open to line changes.
    Placed,
    /// Confirmed; lines are frozen and it awaits shipping.
    Confirmed,
    /// Handed to a carrier; final.
    Shipped,
    /// Cancelled before shipping; final.
    Cancelled,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderStatus::New => "new",
            OrderStatus::Placed => "placed",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        })
    }
}

/// An order's current state, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Order {
    /// How many events have been folded; the stream position for optimistic concurrency.
    pub version: u64,
    /// Where the order is in its life cycle.
    pub status: OrderStatus,
    /// Who placed the order; `None` until placed.
    pub customer_id: Option<CustomerId>,
    /// The currency of every price on the order; `None` until placed.
    pub currency: Option<CurrencyCode>,
    /// The lines in first-added order, one per product.
    pub lines: Vec<OrderLine>,
    /// Set once shipped.
    pub tracking_number: Option<TrackingNumber>,
    /// Set once cancelled.
    pub cancel_reason: Option<CancelReason>,
}

impl Order {
    /// The sum of the line totals, in minor units.
    pub fn total_minor(&self) -> i64 {
        self.lines
            .iter()
            .fold(0, |sum, line| sum.saturating_add(line.total_minor()))
    }

    /// Whether the order has been placed, i.e. has any status but `New`.
    pub fn exists(&self) -> bool {
        self.status != OrderStatus::New
    }

    /// Rebuilds an order by folding its events, oldest first, with `evolve`.
    #[must_use]
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Order {
        events.into_iter().fold(Order::default(), evolve)
    }

    fn line(&self, product_id: &ProductId) -> Option<&OrderLine> {
        self.lines
            .iter()
            .find(|line| &line.product_id == product_id)
    }
}

/// A request to change an order, already validated at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create the order with its first lines.
    PlaceOrder {
        /// Who places it.
        customer_id: CustomerId,
        /// The currency of every price on it.
        currency: CurrencyCode,
        /// 1-100 lines, each for a different product.
        lines: Vec<OrderLine>,
    },
    /// Add a product, or more units of a product already on the order.
    AddOrderLine {
        /// The product, quantity and unit price to add.
        line: OrderLine,
    },
    /// Remove a product's line.
    RemoveOrderLine {
        /// The product whose line goes.
        product_id: ProductId,
    },
    /// Accept a placed order, freezing its lines.
    ConfirmOrder,
    /// Hand a confirmed order to a carrier.
    ShipOrder {
        /// The carrier's tracking number.
        tracking_number: TrackingNumber,
    },
    /// Cancel an order that has not shipped.
    CancelOrder {
        /// Why, possibly empty.
        reason: CancelReason,
    },
}

impl Command {
    /// The command's name, as used in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::PlaceOrder { .. } => "PlaceOrder",
            Command::AddOrderLine { .. } => "AddOrderLine",
            Command::RemoveOrderLine { .. } => "RemoveOrderLine",
            Command::ConfirmOrder => "ConfirmOrder",
            Command::ShipOrder { .. } => "ShipOrder",
            Command::CancelOrder { .. } => "CancelOrder",
        }
    }
}

/// A fact that happened to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The order was created with its first lines.
    OrderPlaced {
        /// Who placed it.
        customer_id: CustomerId,
        /// The currency of every price on it.
        currency: CurrencyCode,
        /// Its first lines.
        lines: Vec<OrderLine>,
    },
    /// A line was added, or units were added to a product already present.
    OrderLineAdded {
        /// The product, the units added and the unit price.
        line: OrderLine,
    },
    /// A product's line was removed.
    OrderLineRemoved {
        /// The product whose line went.
        product_id: ProductId,
    },
    /// The order was confirmed.
    OrderConfirmed,
    /// The order was handed to a carrier.
    OrderShipped {
        /// The carrier's tracking number.
        tracking_number: TrackingNumber,
    },
    /// The order was cancelled.
    OrderCancelled {
        /// Why, possibly empty.
        reason: CancelReason,
    },
}

impl Event {
    /// The event's type name, used as the suffix of the `CloudEvents` type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::OrderPlaced { .. } => "OrderPlaced",
            Event::OrderLineAdded { .. } => "OrderLineAdded",
            Event::OrderLineRemoved { .. } => "OrderLineRemoved",
            Event::OrderConfirmed => "OrderConfirmed",
            Event::OrderShipped { .. } => "OrderShipped",
            Event::OrderCancelled { .. } => "OrderCancelled",
        }
    }
}

/// Why `decide` rejected a command; each message states the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The order was already placed.
    #[error("order already exists")]
    AlreadyExists,
    /// The order has not been placed.
    #[error("order not found")]
    NotFound,
    /// The command is not allowed in the order's current status.
    #[error("cannot {action} an order that is {status}")]
    InvalidStatus {
        /// What was attempted, e.g. "ship".
        action: &'static str,
        /// The status that forbids it.
        status: OrderStatus,
    },
    /// The order would have no lines or more than `MAX_LINES`.
    #[error("an order must have 1-100 lines")]
    LineCount,
    /// A new order listed one product twice.
    #[error("product {product_id} is listed more than once; an order has one line per product")]
    DuplicateProduct {
        /// The product listed twice.
        product_id: ProductId,
    },
    /// A product already on the order was added at another unit price.
    #[error(
        "product {product_id} is already on the order at another unit price; a product has one unit price per order"
    )]
    PriceMismatch {
        /// The product added.
        product_id: ProductId,
    },
    /// Adding would push a line's quantity above `Quantity::MAX`.
    #[error("a line holds at most 10000 units; adding would exceed that for product {product_id}")]
    QuantityLimit {
        /// The product whose line would overflow.
        product_id: ProductId,
    },
    /// The product to remove is not on the order.
    #[error("product {product_id} is not on the order")]
    LineNotFound {
        /// The product asked for.
        product_id: ProductId,
    },
    /// Removing would leave the order without lines.
    #[error("cannot remove the last line; an order must have at least one line")]
    LastLine,
}

impl OrderError {
    /// Whether the command targeted an order that does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, OrderError::NotFound)
    }

    /// Whether the command tried to place an order that already exists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, OrderError::AlreadyExists)
    }
}

/// Pure decision: the events a command produces on an order, or why it is rejected.
pub fn decide(order: &Order, command: &Command) -> Result<Vec<Event>, OrderError> {
    use OrderStatus::{Confirmed, Placed};

    let require = |allowed: &[OrderStatus], action: &'static str| {
        if allowed.contains(&order.status) {
            Ok(())
        } else {
            Err(OrderError::InvalidStatus {
                action,
                status: order.status,
            })
        }
    };

    let event = match command {
        Command::PlaceOrder {
            customer_id,
            currency,
            lines,
        } => place(order, customer_id, currency, lines)?,
        _ if !order.exists() => return Err(OrderError::NotFound),
        Command::AddOrderLine { line } => {
            require(&[Placed], "add a line to")?;
            check_addition(order, line)?;
            Event::OrderLineAdded { line: line.clone() }
        }
        Command::RemoveOrderLine { product_id } => {
            require(&[Placed], "remove a line from")?;
            if order.line(product_id).is_none() {
                return Err(OrderError::LineNotFound {
                    product_id: product_id.clone(),
                });
            }
            if order.lines.len() == 1 {
                return Err(OrderError::LastLine);
            }
            Event::OrderLineRemoved {
                product_id: product_id.clone(),
            }
        }
        Command::ConfirmOrder => {
            require(&[Placed], "confirm")?;
            Event::OrderConfirmed
        }
        Command::ShipOrder { tracking_number } => {
            require(&[Confirmed], "ship")?;
            Event::OrderShipped {
                tracking_number: tracking_number.clone(),
            }
        }
        Command::CancelOrder { reason } => {
            require(&[Placed, Confirmed], "cancel")?;
            Event::OrderCancelled {
                reason: reason.clone(),
            }
        }
    };
    Ok(vec![event])
}

fn place(
    order: &Order,
    customer_id: &CustomerId,
    currency: &CurrencyCode,
    lines: &[OrderLine],
) -> Result<Event, OrderError> {
    if order.exists() {
        return Err(OrderError::AlreadyExists);
    }
    if !(1..=MAX_LINES).contains(&lines.len()) {
        return Err(OrderError::LineCount);
    }
    let mut seen = HashSet::with_capacity(lines.len());
    for line in lines {
        if !seen.insert(&line.product_id) {
            return Err(OrderError::DuplicateProduct {
                product_id: line.product_id.clone(),
            });
        }
    }
    Ok(Event::OrderPlaced {
        customer_id: customer_id.clone(),
        currency: currency.clone(),
        lines: lines.to_vec(),
    })
}

fn check_addition(order: &Order, line: &OrderLine) -> Result<(), OrderError> {
    match order.line(&line.product_id) {
        Some(present) if present.unit_price != line.unit_price => Err(OrderError::PriceMismatch {
            product_id: line.product_id.clone(),
        }),
        Some(present) if present.quantity.checked_add(line.quantity).is_none() => {
            Err(OrderError::QuantityLimit {
                product_id: line.product_id.clone(),
            })
        }
        Some(_) => Ok(()),
        None if order.lines.len() >= MAX_LINES => Err(OrderError::LineCount),
        None => Ok(()),
    }
}

/// Pure fold step: the order after one more event; `version` grows by one.
///
/// Never fails, because events are facts that already happened: one that does
/// not fit the state is applied as well as possible (removing an absent product
/// is a no-op; a merged quantity is capped at `Quantity::MAX`).
#[must_use]
pub fn evolve(mut order: Order, event: &Event) -> Order {
    order.version += 1;
    match event {
        Event::OrderPlaced {
            customer_id,
            currency,
            lines,
        } => {
            order.status = OrderStatus::Placed;
            order.customer_id = Some(customer_id.clone());
            order.currency = Some(currency.clone());
            order.lines.clear();
            for line in lines {
                add_line(&mut order.lines, line);
            }
        }
        Event::OrderLineAdded { line } => add_line(&mut order.lines, line),
        Event::OrderLineRemoved { product_id } => {
            order.lines.retain(|line| &line.product_id != product_id);
        }
        Event::OrderConfirmed => order.status = OrderStatus::Confirmed,
        Event::OrderShipped { tracking_number } => {
            order.status = OrderStatus::Shipped;
            order.tracking_number = Some(tracking_number.clone());
        }
        Event::OrderCancelled { reason } => {
            order.status = OrderStatus::Cancelled;
            order.cancel_reason = Some(reason.clone());
        }
    }
    order
}

/// Appends a line, or adds its quantity to the present line for that product,
/// keeping the present unit price so the order holds one line per product.
fn add_line(lines: &mut Vec<OrderLine>, line: &OrderLine) {
    match lines.iter_mut().find(|l| l.product_id == line.product_id) {
        Some(present) => {
            present.quantity = present
                .quantity
                .checked_add(line.quantity)
                .unwrap_or(Quantity::MAX);
        }
        None => lines.push(line.clone()),
    }
}
