//! The command side: the `OrderCommands` gRPC edge, the batching writer, the
//! event store, its migrations and the outbox relay.

pub mod app;
pub mod grpc;
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
    /// The server is shutting down.
    #[error("the server is shutting down; retry")]
    Unavailable,
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
            CommandError::Unavailable => Status::unavailable(message),
            CommandError::Internal => Status::internal(message),
        }
    }
}
