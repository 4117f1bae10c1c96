//! Operations on a running system, behind `orderctl`: `status`, `verify`,
//! `rebuild`, `republish`, `dead_letter` and `migrate`. They use both sides
//! through their APIs, never their tables: the event store and outbox through
//! `command::store`, the projection generations through `query::ReadModel`
//! (`read_model::digest` for whole-generation reads) and `query::Generations`,
//! and the topic through `topic`. Each operation is a library function taking
//! `AdminSettings`, so tests call it directly; the binary only prints.

pub mod dead_letter;
pub mod migrate;
pub mod rebuild;
pub mod republish;
pub mod status;
pub mod topic;
pub mod verify;

use std::time::Duration;

use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    command::{migrations::MigrationError, store::StoreError},
    config::AdminSettings,
    query::{Generations, QueryError, ReadModel, generation::Generation},
};

pub use migrate::migrate;
pub use rebuild::{RebuildOptions, RebuildReport, rebuild};
pub use republish::republish;
pub use status::{Rates, Status, Watcher, status};
pub use verify::{VerifyOptions, VerifyReport, verify};

/// Why an operation could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A setting the operation needs is missing.
    #[error("{0} is not set (flag or environment variable)")]
    Missing(&'static str),
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The query side's code failed (read model, projector, generations).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The event store failed.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// The write migrations failed.
    #[error(transparent)]
    Migrations(#[from] MigrationError),
    /// A Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The events topic is missing.
    #[error("topic {0} does not exist or has no partitions")]
    NoTopic(String),
    /// A stored event does not decode.
    #[error("stored event at position {position} does not decode: {reason}")]
    CorruptEvent {
        /// Its position.
        position: i64,
        /// Why.
        reason: String,
    },
    /// Another `orderctl rebuild` holds the rebuild lock.
    #[error("another rebuild is running (it holds the rebuild lock in the read database)")]
    RebuildRunning,
    /// The rebuilt generation differs from the event store; it was not switched to.
    #[error(
        "generation {generation} differs from the event store in {differences} places and was \
         marked failed; the live generation is unchanged"
    )]
    RebuildUnverified {
        /// The generation built.
        generation: i32,
        /// How many differences `verify` found.
        differences: usize,
    },
    /// The system did not become quiescent in time.
    #[error("not caught up within {waited:?}: {detail}")]
    NotCaughtUp {
        /// How long was waited.
        waited: Duration,
        /// What was still behind.
        detail: String,
    },
}

/// A small pool on the read database whose connections act as the role
/// that owns its generations (the query servers' role), when the login role
/// is a member of it: what `orderctl` creates there, a rebuild's generation,
/// must belong to the query servers, which write and migrate it.
pub async fn read_pool(settings: &AdminSettings) -> Result<PgPool, AdminError> {
    let url = settings
        .read_database_url
        .as_ref()
        .ok_or(AdminError::Missing("ORDERS_ADMIN_READ_DATABASE_URL"))?;
    let options: PgConnectOptions = url.expose().parse()?;
    let owner = generations_owner(&options).await?;
    Ok(pool(match owner {
        Some(owner) => options.options([("role", owner)]),
        None => options,
    })
    .await?)
}

/// The owner of the generations' control table (of the database while there
/// is none), when it is not the login role and the login role may act as it.
async fn generations_owner(options: &PgConnectOptions) -> Result<Option<String>, sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    let owner = sqlx::query!(
        r#"SELECT o.owner::text AS "owner!",
                  o.owner <> current_user AND pg_has_role(o.owner, 'MEMBER') AS "act_as!"
           FROM (SELECT coalesce(
                   (SELECT tableowner FROM pg_tables
                    WHERE schemaname = 'public' AND tablename = 'projection_generation'),
                   (SELECT pg_get_userbyid(datdba) FROM pg_database
                    WHERE datname = current_database())) AS owner) o"#
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(owner.act_as.then_some(owner.owner))
}

/// A small pool on the write database.
pub async fn write_pool(settings: &AdminSettings) -> Result<PgPool, AdminError> {
    let url = settings
        .write_database_url
        .as_ref()
        .ok_or(AdminError::Missing("ORDERS_ADMIN_WRITE_DATABASE_URL"))?;
    Ok(pool(url.expose().parse()?).await?)
}

async fn pool(options: PgConnectOptions) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// The live generation and its read model, bootstrapping the control table
/// (and the first generation's schema) in a new read database.
pub async fn live_generation(read: &PgPool) -> Result<(Generation, ReadModel), AdminError> {
    let generations = Generations::new(read.clone());
    generations.bootstrap().await?;
    let live = generations.live().await?;
    let read_model = ReadModel::new(read.clone(), &live.schema)?;
    read_model.migrate().await?;
    Ok((live, read_model))
}
