//! The saga's calls over gRPC: one step of one saga → one RPC with a deadline
//! and the step's idempotency key, and its status → an `Outcome`.
//!
//! Keys: the reservation and the payment are keyed by the order id (one of
//! each per order); ShipOrder and CancelOrder carry the request id
//! `fulfilment:<order id>:<step>`, so a retried command is applied once.

use std::time::Duration;

use tonic::{Code, Status};

use super::saga::{Outcome, Saga, Step, is_transient_code};
use crate::{
    auth::AuthedChannel,
    proto::{
        self,
        inventory::v1::{self as inventory, inventory_client::InventoryClient},
        order_commands_client::OrderCommandsClient,
        payments::v1::{self as payments, payments_client::PaymentsClient},
    },
};

/// The clients the saga calls.
#[derive(Debug, Clone)]
pub struct Services {
    /// `inventory.v1.Inventory`.
    pub inventory: InventoryClient<AuthedChannel>,
    /// `payments.v1.Payments`.
    pub payments: PaymentsClient<AuthedChannel>,
    /// `orders.v1.OrderCommands`.
    pub commands: OrderCommandsClient<AuthedChannel>,
    /// The deadline of one attempt.
    pub timeout: Duration,
}

/// The request id of the order command `step` makes for the saga of `order_id`.
pub fn request_id(order_id: uuid::Uuid, step: Step) -> String {
    format!("fulfilment:{order_id}:{}", step.name())
}

/// How a status ends an attempt: transient ones (`saga::is_transient_code`)
/// are retried with the same key, the others are answers.
pub fn outcome_of(status: &Status) -> Outcome {
    let code = code_name(status.code()).to_owned();
    if is_transient_code(&code) {
        Outcome::Transient { code }
    } else {
        Outcome::Refused {
            code,
            reason: status.message().to_owned(),
        }
    }
}

/// The canonical name of a gRPC code (`UNAVAILABLE`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn done() -> Outcome {
    Outcome::Done {
        tracking_number: None,
    }
}

impl Services {
    /// Makes `step`'s call for `saga`; never fails, the outcome says how it went.
    pub async fn call(&self, step: Step, saga: &Saga) -> Outcome {
        let order = &saga.order;
        let key = order.order_id.to_string();
        let timeout = self.timeout;
        let result: Result<Outcome, Status> = match step {
            Step::Reserve => self
                .inventory
                .clone()
                .reserve_stock(with_deadline(
                    inventory::ReserveStockRequest {
                        reservation_id: key,
                        lines: order
                            .lines
                            .iter()
                            .map(|(product_id, quantity)| inventory::ReservationLine {
                                product_id: product_id.clone(),
                                quantity: *quantity,
                            })
                            .collect(),
                    },
                    timeout,
                ))
                .await
                .map(|_| done()),
            Step::Release => self
                .inventory
                .clone()
                .release_reservation(with_deadline(
                    inventory::ReleaseReservationRequest {
                        reservation_id: key,
                    },
                    timeout,
                ))
                .await
                .map(|_| done()),
            Step::Dispatch => self
                .inventory
                .clone()
                .dispatch_reservation(with_deadline(
                    inventory::DispatchReservationRequest {
                        reservation_id: key,
                    },
                    timeout,
                ))
                .await
                .map(|reply| Outcome::Done {
                    tracking_number: Some(reply.into_inner().tracking_number),
                }),
            Step::Authorize => self
                .payments
                .clone()
                .authorize_payment(with_deadline(
                    payments::AuthorizePaymentRequest {
                        payment_id: key,
                        customer_id: order.customer_id.clone(),
                        amount_minor: order.amount_minor,
                        currency_code: order.currency_code.clone(),
                    },
                    timeout,
                ))
                .await
                .map(|_| done()),
            Step::Capture => self
                .payments
                .clone()
                .capture_payment(with_deadline(
                    payments::CapturePaymentRequest { payment_id: key },
                    timeout,
                ))
                .await
                .map(|_| done()),
            Step::Void => self
                .payments
                .clone()
                .void_payment(with_deadline(
                    payments::VoidPaymentRequest { payment_id: key },
                    timeout,
                ))
                .await
                .map(|_| done()),
            Step::Ship => self
                .commands
                .clone()
                .ship_order(with_deadline(
                    proto::ShipOrderRequest {
                        order_id: key,
                        tracking_number: saga.tracking_number.clone().unwrap_or_default(),
                        request_id: request_id(order.order_id, step),
                        ..Default::default()
                    },
                    timeout,
                ))
                .await
                .map(|_| done()),
            Step::CancelOrder => self
                .commands
                .clone()
                .cancel_order(with_deadline(
                    proto::CancelOrderRequest {
                        order_id: key,
                        reason: saga.cancel_reason.clone().unwrap_or_default(),
                        request_id: request_id(order.order_id, step),
                        ..Default::default()
                    },
                    timeout,
                ))
                .await
                .map(|_| done()),
        };
        result.unwrap_or_else(|status| outcome_of(&status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_retried_and_the_others_end_the_step() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::Unauthenticated,
        ] {
            assert!(matches!(
                outcome_of(&Status::new(code, "x")),
                Outcome::Transient { .. }
            ));
        }
        assert_eq!(
            outcome_of(&Status::failed_precondition("payment declined")),
            Outcome::Refused {
                code: "FAILED_PRECONDITION".into(),
                reason: "payment declined".into()
            }
        );
    }
}
