//! Conversions between the `orders.v1` protobuf types and the domain: the only
//! module that sees both. Requests are parsed here into validated commands
//! (collecting one violation per bad field, at most `MAX_VIOLATIONS` listed);
//! events are encoded and decoded.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    CancelReason, Command, CurrencyCode, CustomerId, Event, MAX_LINES, OrderId, OrderLine,
    OrderStatus, ProductId, Quantity, RequestId, TrackingNumber, UnitPrice, ValidationError,
};
use crate::proto;

/// One invalid request field: its path (`lines[2].quantity`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message.
    pub field: String,
    /// Why the value was refused.
    pub description: String,
}

/// Every violation found in one request; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
pub struct InvalidRequest(pub Vec<FieldViolation>);

/// Most field violations one refusal lists. The rest are only counted, in a
/// last violation, so that an error's metadata stays a few kilobytes whatever
/// the request held (a default grpcio client reads at most 8 KiB of it).
pub const MAX_VIOLATIONS: usize = 20;

/// Collects field violations while a request is parsed.
#[derive(Debug, Default)]
pub struct Violations {
    listed: Vec<FieldViolation>,
    unlisted: usize,
}

impl Violations {
    /// Records a violation for `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.listed.len() == MAX_VIOLATIONS {
            self.unlisted += 1;
            return;
        }
        self.listed.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Keeps the parsed value, or records why it was refused.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, ValidationError>) -> Option<T> {
        parsed.map_err(|e| self.add(field, e.0)).ok()
    }

    /// `Ok(value)` when nothing was recorded; else the listed violations and,
    /// past `MAX_VIOLATIONS`, one on the whole request (`field` empty) saying
    /// how many more there were.
    pub fn finish<T>(mut self, value: impl FnOnce() -> T) -> Result<T, InvalidRequest> {
        if self.listed.is_empty() {
            return Ok(value());
        }
        if self.unlisted > 0 {
            self.listed.push(FieldViolation {
                field: String::new(),
                description: format!("{} more violations not listed", self.unlisted),
            });
        }
        Err(InvalidRequest(self.listed))
    }
}

/// A command parsed from a request, with everything the write path needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand {
    /// The order the command addresses.
    pub order_id: OrderId,
    /// Optimistic-concurrency check, when the client asked for one.
    pub expected_version: Option<u64>,
    /// Idempotency key, when the client gave one.
    pub request_id: Option<RequestId>,
    /// The validated command.
    pub command: Command,
}

fn parse_request_id(v: &mut Violations, raw: &str) -> Option<Option<RequestId>> {
    if raw.is_empty() {
        return Some(None);
    }
    v.check("request_id", RequestId::parse(raw)).map(Some)
}

fn parse_order_id(v: &mut Violations, raw: &str) -> Option<OrderId> {
    if raw.is_empty() {
        v.add("order_id", "is required");
        return None;
    }
    v.check("order_id", OrderId::parse(raw))
}

/// Parses one proto line; violations are reported under `path`.
fn parse_line(v: &mut Violations, path: &str, line: &proto::OrderLine) -> Option<OrderLine> {
    let product_id = v.check(
        &format!("{path}.product_id"),
        ProductId::parse(&line.product_id),
    );
    let quantity = v.check(&format!("{path}.quantity"), Quantity::parse(line.quantity));
    let unit_price = v.check(
        &format!("{path}.unit_price_minor"),
        UnitPrice::parse(line.unit_price_minor),
    );
    Some(OrderLine {
        product_id: product_id?,
        quantity: quantity?,
        unit_price: unit_price?,
    })
}

macro_rules! parse_fields {
    ($v:ident, $req:ident, $($body:tt)*) => {{
        let request_id = parse_request_id(&mut $v, &$req.request_id);
        let order_id = parse_order_id(&mut $v, &$req.order_id);
        let command: Option<Command> = { $($body)* };
        $v.finish(|| ParsedCommand {
            order_id: order_id.expect("checked"),
            expected_version: $req.expected_version,
            request_id: request_id.expect("checked"),
            command: command.expect("checked"),
        })
    }};
}

impl TryFrom<&proto::PlaceOrderRequest> for ParsedCommand {
    type Error = InvalidRequest;

    fn try_from(req: &proto::PlaceOrderRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let request_id = parse_request_id(&mut v, &req.request_id);
        let order_id = if req.order_id.is_empty() {
            Some(OrderId::generate())
        } else {
            v.check("order_id", OrderId::parse(&req.order_id))
        };
        let customer_id = v.check("customer_id", CustomerId::parse(&req.customer_id));
        let currency = v.check("currency_code", CurrencyCode::parse(&req.currency_code));
        // The count is checked before any line is parsed: a request costs at
        // most MAX_LINES lines of work, whatever it holds.
        let lines: Vec<Option<OrderLine>> = if (1..=MAX_LINES).contains(&req.lines.len()) {
            req.lines
                .iter()
                .enumerate()
                .map(|(i, l)| parse_line(&mut v, &format!("lines[{i}]"), l))
                .collect()
        } else {
            v.add("lines", format!("must hold 1-{MAX_LINES} lines"));
            Vec::new()
        };
        v.finish(|| ParsedCommand {
            order_id: order_id.expect("checked"),
            expected_version: None,
            request_id: request_id.expect("checked"),
            command: Command::PlaceOrder {
                customer_id: customer_id.expect("checked"),
                currency: currency.expect("checked"),
                lines: lines.into_iter().map(|l| l.expect("checked")).collect(),
            },
        })
    }
}

impl TryFrom<&proto::AddOrderLineRequest> for ParsedCommand {
    type Error = InvalidRequest;

    fn try_from(req: &proto::AddOrderLineRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        parse_fields!(
            v,
            req,
            match &req.line {
                Some(line) =>
                    parse_line(&mut v, "line", line).map(|line| Command::AddOrderLine { line }),
                None => {
                    v.add("line", "is required");
                    None
                }
            }
        )
    }
}

impl TryFrom<&proto::RemoveOrderLineRequest> for ParsedCommand {
    type Error = InvalidRequest;

    fn try_from(req: &proto::RemoveOrderLineRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        parse_fields!(
            v,
            req,
            v.check("product_id", ProductId::parse(&req.product_id))
                .map(|product_id| Command::RemoveOrderLine { product_id })
        )
    }
}

impl TryFrom<&proto::ConfirmOrderRequest> for ParsedCommand {
    type Error = InvalidRequest;

    fn try_from(req: &proto::ConfirmOrderRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        parse_fields!(v, req, Some(Command::ConfirmOrder))
    }
}

impl TryFrom<&proto::ShipOrderRequest> for ParsedCommand {
    type Error = InvalidRequest;

    fn try_from(req: &proto::ShipOrderRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        parse_fields!(
            v,
            req,
            v.check(
                "tracking_number",
                TrackingNumber::parse(&req.tracking_number)
            )
            .map(|tracking_number| Command::ShipOrder { tracking_number })
        )
    }
}

impl TryFrom<&proto::CancelOrderRequest> for ParsedCommand {
    type Error = InvalidRequest;

    fn try_from(req: &proto::CancelOrderRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        parse_fields!(
            v,
            req,
            v.check("reason", CancelReason::parse(&req.reason))
                .map(|reason| Command::CancelOrder { reason })
        )
    }
}

/// Envelope facts of one stored event, besides the domain event itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// Globally unique event id.
    pub event_id: Uuid,
    /// The order (stream) the event belongs to.
    pub order_id: OrderId,
    /// The order's version after the event.
    pub version: u64,
    /// When the command was accepted.
    pub occurred_at: DateTime<Utc>,
    /// Correlation id (the request id when one was given).
    pub correlation_id: String,
    /// Id of the command that caused the event.
    pub causation_id: String,
    /// Who asked for it, when the server authenticates callers.
    pub actor: Option<Actor>,
}

/// The verified caller behind an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's subject.
    pub subject: String,
    /// The customer the token was confined to, if it was.
    pub customer_id: Option<String>,
}

/// Why a message could not be read as an `OrderEvent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a protobuf `OrderEvent`.
    #[error("not an OrderEvent: {0}")]
    Malformed(String),
    /// The envelope carries an event case this build does not know.
    #[error("unknown event type")]
    UnknownType,
    /// A field holds a value the domain refuses.
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// Path of the field.
        field: String,
        /// Why it was refused.
        reason: String,
    },
}

fn field<T>(name: &str, parsed: Result<T, ValidationError>) -> Result<T, DecodeError> {
    parsed.map_err(|e| DecodeError::InvalidField {
        field: name.to_owned(),
        reason: e.0,
    })
}

/// Protobuf timestamp of a UTC instant.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// UTC instant of a protobuf timestamp, if it is in range.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

/// Proto form of a domain line.
pub fn line_to_proto(line: &OrderLine) -> proto::OrderLine {
    proto::OrderLine {
        product_id: line.product_id.as_str().to_owned(),
        quantity: line.quantity.get(),
        unit_price_minor: line.unit_price.get(),
    }
}

fn line_from_event(path: &str, line: &proto::OrderLine) -> Result<OrderLine, DecodeError> {
    Ok(OrderLine {
        product_id: field(
            &format!("{path}.product_id"),
            ProductId::parse(&line.product_id),
        )?,
        quantity: field(&format!("{path}.quantity"), Quantity::parse(line.quantity))?,
        unit_price: field(
            &format!("{path}.unit_price_minor"),
            UnitPrice::parse(line.unit_price_minor),
        )?,
    })
}

/// Proto status of a domain status (`New` has no proto form: UNSPECIFIED).
pub fn status_to_proto(status: OrderStatus) -> proto::OrderStatus {
    match status {
        OrderStatus::New => proto::OrderStatus::Unspecified,
        OrderStatus::Placed => proto::OrderStatus::Placed,
        OrderStatus::Confirmed => proto::OrderStatus::Confirmed,
        OrderStatus::Shipped => proto::OrderStatus::Shipped,
        OrderStatus::Cancelled => proto::OrderStatus::Cancelled,
    }
}

/// Domain status of a proto status, `None` for UNSPECIFIED.
pub fn status_from_proto(status: proto::OrderStatus) -> Option<OrderStatus> {
    match status {
        proto::OrderStatus::Unspecified => None,
        proto::OrderStatus::Placed => Some(OrderStatus::Placed),
        proto::OrderStatus::Confirmed => Some(OrderStatus::Confirmed),
        proto::OrderStatus::Shipped => Some(OrderStatus::Shipped),
        proto::OrderStatus::Cancelled => Some(OrderStatus::Cancelled),
    }
}

/// The wire envelope of a domain event.
pub fn event_to_proto(meta: &EventMeta, event: &Event) -> proto::OrderEvent {
    use proto::order_event::Event as P;
    let body = match event {
        Event::OrderPlaced {
            customer_id,
            currency,
            lines,
        } => P::OrderPlaced(proto::OrderPlaced {
            customer_id: customer_id.as_str().to_owned(),
            currency_code: currency.as_str().to_owned(),
            lines: lines.iter().map(line_to_proto).collect(),
        }),
        Event::OrderLineAdded { line } => P::OrderLineAdded(proto::OrderLineAdded {
            line: Some(line_to_proto(line)),
        }),
        Event::OrderLineRemoved { product_id } => P::OrderLineRemoved(proto::OrderLineRemoved {
            product_id: product_id.as_str().to_owned(),
        }),
        Event::OrderConfirmed => P::OrderConfirmed(proto::OrderConfirmed {}),
        Event::OrderShipped { tracking_number } => P::OrderShipped(proto::OrderShipped {
            tracking_number: tracking_number.as_str().to_owned(),
        }),
        Event::OrderCancelled { reason } => P::OrderCancelled(proto::OrderCancelled {
            reason: reason.as_str().to_owned(),
        }),
    };
    proto::OrderEvent {
        event_id: meta.event_id.to_string(),
        order_id: meta.order_id.to_string(),
        version: meta.version,
        occurred_at: Some(timestamp(meta.occurred_at)),
        correlation_id: meta.correlation_id.clone(),
        causation_id: meta.causation_id.clone(),
        actor: meta.actor.as_ref().map(|a| proto::Actor {
            subject: a.subject.clone(),
            customer_id: a.customer_id.clone().unwrap_or_default(),
        }),
        event: Some(body),
    }
}

/// Decodes and validates an encoded `OrderEvent`.
pub fn decode_event(bytes: &[u8]) -> Result<(EventMeta, Event), DecodeError> {
    let envelope = <proto::OrderEvent as prost::Message>::decode(bytes)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    event_from_proto(&envelope)
}

/// Validates a decoded envelope into its meta and domain event.
pub fn event_from_proto(p: &proto::OrderEvent) -> Result<(EventMeta, Event), DecodeError> {
    use proto::order_event::Event as P;
    let event = match p.event.as_ref().ok_or(DecodeError::UnknownType)? {
        P::OrderPlaced(e) => Event::OrderPlaced {
            customer_id: field("customer_id", CustomerId::parse(&e.customer_id))?,
            currency: field("currency_code", CurrencyCode::parse(&e.currency_code))?,
            lines: e
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| line_from_event(&format!("lines[{i}]"), l))
                .collect::<Result<_, _>>()?,
        },
        P::OrderLineAdded(e) => Event::OrderLineAdded {
            line: line_from_event(
                "line",
                e.line.as_ref().ok_or_else(|| DecodeError::InvalidField {
                    field: "line".into(),
                    reason: "missing".into(),
                })?,
            )?,
        },
        P::OrderLineRemoved(e) => Event::OrderLineRemoved {
            product_id: field("product_id", ProductId::parse(&e.product_id))?,
        },
        P::OrderConfirmed(_) => Event::OrderConfirmed,
        P::OrderShipped(e) => Event::OrderShipped {
            tracking_number: field("tracking_number", TrackingNumber::parse(&e.tracking_number))?,
        },
        P::OrderCancelled(e) => Event::OrderCancelled {
            reason: field("reason", CancelReason::parse(&e.reason))?,
        },
    };
    let event_id = Uuid::parse_str(&p.event_id).map_err(|e| DecodeError::InvalidField {
        field: "event_id".into(),
        reason: e.to_string(),
    })?;
    if p.version == 0 {
        return Err(DecodeError::InvalidField {
            field: "version".into(),
            reason: "must be at least 1".into(),
        });
    }
    let occurred_at = p
        .occurred_at
        .as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| DecodeError::InvalidField {
            field: "occurred_at".into(),
            reason: "missing or out of range".into(),
        })?;
    let meta = EventMeta {
        event_id,
        order_id: field("order_id", OrderId::parse(&p.order_id))?,
        version: p.version,
        occurred_at,
        correlation_id: p.correlation_id.clone(),
        causation_id: p.causation_id.clone(),
        actor: p.actor.as_ref().map(|a| Actor {
            subject: a.subject.clone(),
            customer_id: Some(a.customer_id.clone()).filter(|c| !c.is_empty()),
        }),
    };
    Ok((meta, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(lines: usize) -> proto::PlaceOrderRequest {
        proto::PlaceOrderRequest {
            customer_id: "ann".into(),
            currency_code: "EUR".into(),
            lines: vec![proto::OrderLine::default(); lines],
            ..Default::default()
        }
    }

    fn violations(request: &proto::PlaceOrderRequest) -> Vec<FieldViolation> {
        ParsedCommand::try_from(request).unwrap_err().0
    }

    #[test]
    fn too_many_lines_are_refused_before_any_line_is_parsed() {
        let refused = violations(&place(MAX_LINES + 1));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].field, "lines");
        assert_eq!(violations(&place(0))[0].field, "lines");
    }

    #[test]
    fn at_most_twenty_violations_are_listed_and_the_rest_counted() {
        // Two violations per empty line: product_id and quantity.
        let refused = violations(&place(MAX_LINES));
        assert_eq!(refused.len(), MAX_VIOLATIONS + 1);
        assert_eq!(refused[0].field, "lines[0].product_id");
        let last = refused.last().unwrap();
        assert_eq!(last.field, "");
        assert_eq!(last.description, "180 more violations not listed");
    }

    #[test]
    fn twenty_violations_are_listed_without_a_count() {
        let refused = violations(&place(MAX_VIOLATIONS / 2));
        assert_eq!(refused.len(), MAX_VIOLATIONS);
        assert!(refused.iter().all(|v| !v.field.is_empty()));
    }
}
