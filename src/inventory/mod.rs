//! The Inventory service (`inventory.v1.Inventory`): stock per product and
//! reservations against it, for the fulfilment saga. Edge (`grpc`) → pure
//! rules (`domain`) → SQL (`store`); `app` starts the server.
//!
//! Every mutation but `SetStock` (an absolute value) is keyed by its
//! `reservation_id`: the key's row is claimed first in each transaction, so
//! two requests with one key are serialised, and stock rows are locked in
//! product id order, so reservations of overlapping products never deadlock.

pub mod app;
pub mod domain;
pub mod grpc;
pub mod store;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

use self::domain::InventoryError;
use crate::codec::InvalidRequest;

/// The `google.rpc.PreconditionFailure` violation type of a short product.
pub const STOCK_VIOLATION: &str = "STOCK";

/// Why an Inventory request was not done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; nothing was touched.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// A business rule refused it.
    #[error(transparent)]
    Rejected(#[from] InventoryError),
    /// No database connection became free in time.
    #[error("the server is busy: no database connection was free in time; retry")]
    Busy,
    /// Something failed inside; the detail is in the log.
    #[error("internal error")]
    Internal,
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            return Self::Busy;
        }
        tracing::error!(%error, "inventory database error");
        Self::Internal
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Invalid(InvalidRequest(violations)) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                ),
            ),
            Error::Rejected(InventoryError::Insufficient { product }) => {
                Status::with_error_details(
                    Code::FailedPrecondition,
                    message,
                    ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                        STOCK_VIOLATION,
                        product.as_str(),
                        "not enough stock available",
                    )]),
                )
            }
            Error::Rejected(InventoryError::KeyReused) => Status::already_exists(message),
            Error::Rejected(InventoryError::NotFound) => Status::not_found(message),
            Error::Rejected(_) => Status::failed_precondition(message),
            Error::Busy => Status::unavailable(message),
            Error::Internal => Status::internal(message),
        }
    }
}
