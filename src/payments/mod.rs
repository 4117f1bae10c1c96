//! The Payments service (`payments.v1.Payments`): a stand-in for an external
//! payment provider, for the fulfilment saga and its tests. Edge (`grpc`,
//! with the fault switch) → pure rules (`domain`) → SQL (`store`); `app`
//! starts the server.
//!
//! Every mutation is keyed by its `payment_id`; the key's row is claimed (or
//! locked) first in each transaction, so two requests with one key are
//! serialised.

pub mod app;
pub mod domain;
pub mod fault;
pub mod grpc;
pub mod store;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use self::domain::PaymentError;
use crate::codec::InvalidRequest;

/// Why a Payments request was not done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; nothing was touched.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// A business rule (or the provider) refused it.
    #[error(transparent)]
    Rejected(#[from] PaymentError),
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
        tracing::error!(%error, "payments database error");
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
            Error::Rejected(PaymentError::KeyReused) => Status::already_exists(message),
            Error::Rejected(PaymentError::NotFound) => Status::not_found(message),
            Error::Rejected(_) => Status::failed_precondition(message),
            Error::Busy => Status::unavailable(message),
            Error::Internal => Status::internal(message),
        }
    }
}
