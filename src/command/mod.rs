//! The command side: the `OrderCommands` gRPC edge, the batching writer, the
//! event store, its migrations and the outbox relay.

pub mod app;
pub mod grpc;
pub mod metrics;
pub mod migrations;
pub mod relay;
pub mod store;
pub mod writer;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{codec::InvalidRequest, domain::OrderError};

/// Why a command was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request is malformed; nothing was touched.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// A business rule refused the command.
    #[error(transparent)]
    Rejected(OrderError),
    /// `expected_version` is not the order's version.
    #[error("expected version {expected} but the order is at version {actual}")]
    VersionConflict {
        /// What the client expected.
        expected: u64,
        /// The order's current version.
        actual: u64,
    },
    /// The idempotency key was first used for a different request.
    #[error("request_id was already used for a different request")]
    RequestIdReused,
    /// Concurrent writers kept winning; the client may retry.
    #[error("too much contention on the order; retry")]
    Contention,
    /// The caller may not do this (a customer-confined token placing an
    /// order for another customer).
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The server is shutting down.
    #[error("the server is shutting down; retry")]
    Unavailable,
    /// No database connection became free in time (the pool is exhausted).
    #[error("the server is busy: no database connection was free in time; retry")]
    Busy,
    /// Something failed inside; the detail is in the log.
    #[error("internal error")]
    Internal,
}

impl From<CommandError> for Status {
    fn from(error: CommandError) -> Self {
        let message = error.to_string();
        match error {
            CommandError::Invalid(InvalidRequest(violations)) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                ),
            ),
            CommandError::Rejected(OrderError::NotFound) => Status::not_found(message),
            CommandError::Rejected(OrderError::AlreadyExists) | CommandError::RequestIdReused => {
                Status::already_exists(message)
            }
            CommandError::Rejected(_) => Status::failed_precondition(message),
            CommandError::VersionConflict { .. } | CommandError::Contention => {
                Status::aborted(message)
            }
            CommandError::PermissionDenied(_) => Status::permission_denied(message),
            CommandError::Unavailable | CommandError::Busy => Status::unavailable(message),
            CommandError::Internal => Status::internal(message),
        }
    }
}
