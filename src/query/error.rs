//! The query side's error type and its single mapping to gRPC statuses.

use tonic::{Code, Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// Everything that can go wrong on the query side, from start-up to a read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A request field is invalid; sent as a `google.rpc.BadRequest` violation.
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        /// Path of the field in the request.
        field: &'static str,
        /// What is wrong with it.
        description: String,
    },
    /// The order is not in the projection.
    #[error("order {0} not found")]
    NotFound(Uuid),
    /// `as_of_version` is beyond the order's projected version.
    #[error("order {order_id} is at version {projected}; as_of_version {wanted} is beyond it")]
    BeyondVersion {
        /// The order asked for.
        order_id: Uuid,
        /// Its projected version.
        projected: u64,
        /// The `as_of_version` asked for.
        wanted: u64,
    },
    /// `min_version` was not reached before the deadline.
    #[error("order {order_id} is at version {projected}, waited for {wanted}")]
    NotYetProjected {
        /// The order asked for.
        order_id: Uuid,
        /// Its projected version (0 when not projected at all).
        projected: u64,
        /// The `min_version` asked for.
        wanted: u64,
    },
    /// A PostgreSQL error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the read migrations failed.
    #[error("read migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database role is refused (a superuser).
    #[error(transparent)]
    Role(#[from] crate::roles::RoleError),
    /// A Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Binding the listener failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The authentication or TLS settings are unusable.
    #[error(transparent)]
    Edge(#[from] crate::server::EdgeError),
    /// Another writer changed an order under a projector batch; the batch is retried.
    #[error("conflicting projection write: {0}")]
    Conflict(String),
    /// A stored row does not hold what the projector writes.
    #[error("corrupt read model: {0}")]
    Corrupt(String),
    /// The projection generation is no longer in the state the write expects
    /// (a rebuild switched, or it was retired); nothing was written.
    #[error("projection generation {0} is no longer writable")]
    GenerationClosed(i32),
    /// A background task (projector, NOTIFY listener) failed; the server stops.
    #[error(transparent)]
    Task(#[from] crate::supervisor::TaskFailed),
}

impl QueryError {
    /// Whether a read failed because its generation's schema is gone (dropped
    /// after a switch): the read is retried on the live generation.
    pub fn is_generation_gone(&self) -> bool {
        matches!(
            self,
            Self::Database(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42P01" | "3F000"))
        )
    }

    /// An invalid request field.
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            description: description.into(),
        }
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::InvalidArgument { field, description } => Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid {field}: {description}"),
                ErrorDetails::with_bad_request_violation(field, description),
            ),
            QueryError::NotFound(_) => Status::not_found(error.to_string()),
            QueryError::BeyondVersion { projected, .. } => {
                let mut status = Status::out_of_range(error.to_string());
                status
                    .metadata_mut()
                    .insert("x-projected-version", MetadataValue::from(projected));
                status
            }
            QueryError::Database(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("no database connection was free in time");
                Status::unavailable(
                    "the server is busy: no database connection was free in time; retry",
                )
            }
            QueryError::NotYetProjected { projected, .. } => {
                let mut status = Status::unavailable(error.to_string());
                status
                    .metadata_mut()
                    .insert("x-projected-version", MetadataValue::from(projected));
                status
            }
            internal => {
                tracing::error!(error = %internal, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_leak_their_detail() {
        let status = Status::from(QueryError::Corrupt("status column holds 'x'".into()));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn a_missed_min_version_is_unavailable_with_the_projected_version() {
        let status = Status::from(QueryError::NotYetProjected {
            order_id: Uuid::nil(),
            projected: 2,
            wanted: 7,
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("at version 2, waited for 7"));
        assert_eq!(status.metadata().get("x-projected-version").unwrap(), "2");
    }

    #[test]
    fn a_version_beyond_the_projection_is_out_of_range_with_the_projected_version() {
        let status = Status::from(QueryError::BeyondVersion {
            order_id: Uuid::nil(),
            projected: 4,
            wanted: 9,
        });
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.metadata().get("x-projected-version").unwrap(), "4");
    }

    #[test]
    fn a_pool_timeout_is_unavailable_for_the_client_to_retry() {
        let status = Status::from(QueryError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[test]
    fn an_invalid_field_carries_a_bad_request_violation() {
        let status = Status::from(QueryError::invalid("order_id", "must be a UUID"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("BadRequest details");
        assert_eq!(bad.field_violations[0].field, "order_id");
    }
}
