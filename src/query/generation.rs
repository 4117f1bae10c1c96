//! Generations of the projection: the control table `public.projection_generation`
//! and the live generation as one process sees it.
//!
//! A generation is a schema holding a complete projection. Exactly one is
//! `live`: readers serve it and the query servers' projectors write it. A
//! rebuild fills a `building` generation beside it and switches in one
//! transaction that retires the old one and notifies `GENERATION_CHANNEL`.
//!
//! Every projection write first takes a share lock on its generation's row and
//! checks the state it expects (`WriteCondition`), in the write's own
//! transaction. The switch updates those rows, so it waits for writes in
//! flight, and every write after it sees the new states: nothing is ever
//! written to a retired generation, and a projector that finds its generation
//! retired moves to the live one.

use std::{fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, Utc};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::watch;

pub use crate::query::control::{GenerationState, WriteCondition};
use crate::query::{
    QueryError,
    control::lock_migrations,
    read_model::{DEFAULT_SCHEMA, ReadModel, checked_schema},
};

/// NOTIFY channel announcing a switch of the live generation (payload: its number).
pub const GENERATION_CHANNEL: &str = "projection_generation";

/// Migrations of the control table, applied in schema `public`.
static CONTROL_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/read/control");

/// Where a rebuild reads the history it projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenerationSource {
    /// The events topic, from its beginning.
    Topic,
    /// The event store of the write database, then the topic from the end
    /// offsets captured before the store was read.
    Store,
}

impl GenerationSource {
    /// The name stored in the control table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Store => "store",
        }
    }
}

impl fmt::Display for GenerationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GenerationSource {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "topic" => Ok(Self::Topic),
            "store" => Ok(Self::Store),
            other => Err(QueryError::Corrupt(format!(
                "unknown generation source {other:?}"
            ))),
        }
    }
}

/// One row of the control table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Its number, increasing from 1.
    pub generation: i32,
    /// The schema holding its tables.
    pub schema: String,
    /// Where it is in its life.
    pub state: GenerationState,
    /// Where its rebuild reads history.
    pub source: GenerationSource,
    /// Consumer group of its rebuild's projector.
    pub consumer_group: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it became live.
    pub switched_at: Option<DateTime<Utc>>,
    /// When it was retired.
    pub retired_at: Option<DateTime<Utc>>,
    /// When its schema was dropped.
    pub dropped_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub note: Option<String>,
}

/// A control table row as selected.
struct GenerationRow {
    generation: i32,
    schema_name: String,
    state: String,
    source: String,
    consumer_group: Option<String>,
    created_at: DateTime<Utc>,
    switched_at: Option<DateTime<Utc>>,
    retired_at: Option<DateTime<Utc>>,
    dropped_at: Option<DateTime<Utc>>,
    note: Option<String>,
}

impl TryFrom<GenerationRow> for Generation {
    type Error = QueryError;

    fn try_from(row: GenerationRow) -> Result<Self, QueryError> {
        Ok(Self {
            generation: row.generation,
            schema: row.schema_name,
            state: row.state.parse()?,
            source: row.source.parse()?,
            consumer_group: row.consumer_group,
            created_at: row.created_at,
            switched_at: row.switched_at,
            retired_at: row.retired_at,
            dropped_at: row.dropped_at,
            note: row.note,
        })
    }
}

/// The schema of generation `n`: `read_model` for the first, `read_model_g<n>` after.
pub fn schema_of(generation: i32) -> String {
    if generation == 1 {
        DEFAULT_SCHEMA.to_owned()
    } else {
        format!("{DEFAULT_SCHEMA}_g{generation}")
    }
}

/// The control table of the read database.
#[derive(Debug, Clone)]
pub struct Generations {
    pool: PgPool,
}

impl Generations {
    /// The control table on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the control table if needed and, in a read database without
    /// generations, makes `read_model` generation 1, live; returns the live one.
    pub async fn bootstrap(&self) -> Result<Generation, QueryError> {
        let mut conn = self.pool.acquire().await?.detach();
        let migrated = async {
            lock_migrations(&mut conn).await?;
            conn.execute("SET search_path TO public").await?;
            CONTROL_MIGRATOR.run(&mut conn).await?;
            sqlx::query!(
                "INSERT INTO public.projection_generation
                     (generation, schema_name, state, source, switched_at)
                 SELECT 1, $1, 'live', 'topic', now()
                 WHERE NOT EXISTS (SELECT 1 FROM public.projection_generation)
                 ON CONFLICT DO NOTHING",
                schema_of(1)
            )
            .execute(&mut conn)
            .await?;
            Ok::<_, QueryError>(())
        }
        .await;
        conn.close().await?;
        migrated?;
        self.live().await
    }

    /// The live generation.
    pub async fn live(&self) -> Result<Generation, QueryError> {
        sqlx::query_as!(
            GenerationRow,
            "SELECT generation, schema_name, state, source, consumer_group, created_at,
                    switched_at, retired_at, dropped_at, note
             FROM public.projection_generation WHERE state = 'live'"
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| QueryError::Config("the read database has no live generation".into()))?
        .try_into()
    }

    /// The generation being built, if any.
    pub async fn building(&self) -> Result<Option<Generation>, QueryError> {
        sqlx::query_as!(
            GenerationRow,
            "SELECT generation, schema_name, state, source, consumer_group, created_at,
                    switched_at, retired_at, dropped_at, note
             FROM public.projection_generation WHERE state = 'building'"
        )
        .fetch_optional(&self.pool)
        .await?
        .map(Generation::try_from)
        .transpose()
    }

    /// Every generation, oldest first.
    pub async fn all(&self) -> Result<Vec<Generation>, QueryError> {
        sqlx::query_as!(
            GenerationRow,
            "SELECT generation, schema_name, state, source, consumer_group, created_at,
                    switched_at, retired_at, dropped_at, note
             FROM public.projection_generation ORDER BY generation"
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Generation::try_from)
        .collect()
    }

    /// Registers the next generation as `building`; its consumer group is
    /// `<group_prefix>-rebuild-g<n>`. Its schema is not created here.
    pub async fn create_building(
        &self,
        source: GenerationSource,
        group_prefix: &str,
    ) -> Result<Generation, QueryError> {
        // Callers hold the rebuild lock; a racing creator would fail on the
        // primary key or on the one-building index, never share a generation.
        let mut tx = self.pool.begin().await?;
        let next = sqlx::query_scalar!(
            r#"SELECT coalesce(max(generation), 0) + 1 AS "next!"
               FROM public.projection_generation"#
        )
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query_as!(
            GenerationRow,
            "INSERT INTO public.projection_generation
                 (generation, schema_name, state, source, consumer_group)
             VALUES ($1, $2, 'building', $3, $4)
             RETURNING generation, schema_name, state, source, consumer_group, created_at,
                       switched_at, retired_at, dropped_at, note",
            next,
            schema_of(next),
            source.as_str(),
            format!("{group_prefix}-rebuild-g{next}")
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.try_into()
    }

    /// Marks a building generation failed, with the reason.
    pub async fn fail(&self, generation: i32, note: &str) -> Result<(), QueryError> {
        sqlx::query!(
            "UPDATE public.projection_generation SET state = 'failed', note = $2
             WHERE generation = $1 AND state = 'building'",
            generation,
            note
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Freezes the live generation `live`: its projectors' writes wait until
    /// the freeze ends (in a switch or a release). Waits at most `lock_timeout_ms`
    /// for writes in flight.
    pub async fn freeze(&self, live: i32, lock_timeout_ms: u64) -> Result<Freeze, QueryError> {
        let mut tx = self.pool.begin().await?;
        // A session setting of the transaction, not a statement with parameters.
        tx.execute(&*format!("SET LOCAL lock_timeout = {lock_timeout_ms}"))
            .await?;
        let state = sqlx::query_scalar!(
            "SELECT state FROM public.projection_generation WHERE generation = $1 FOR UPDATE",
            live
        )
        .fetch_optional(&mut *tx)
        .await?;
        if state.as_deref() != Some("live") {
            return Err(QueryError::Config(format!(
                "generation {live} is no longer live"
            )));
        }
        Ok(Freeze { tx, live })
    }

    /// Drops the schema of every retired or failed generation not dropped yet;
    /// returns the schemas dropped.
    pub async fn drop_retired(&self) -> Result<Vec<String>, QueryError> {
        let doomed = sqlx::query!(
            "SELECT generation, schema_name FROM public.projection_generation
             WHERE state IN ('retired', 'failed') AND dropped_at IS NULL ORDER BY generation"
        )
        .fetch_all(&self.pool)
        .await?;
        let mut dropped = vec![];
        for row in doomed {
            let generation = row.generation;
            // Validated before it is spliced into DDL.
            let schema = checked_schema(&row.schema_name)?.to_owned();
            let mut tx = self.pool.begin().await?;
            sqlx::query!("SET LOCAL lock_timeout = '30s'")
                .execute(&mut *tx)
                .await?;
            tx.execute(&*format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await?;
            sqlx::query!(
                "UPDATE public.projection_generation SET dropped_at = now() WHERE generation = $1",
                generation
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(generation, %schema, "retired generation dropped");
            dropped.push(schema);
        }
        Ok(dropped)
    }
}

/// The live generation held still (its row locked) while a rebuild catches up with it.
pub struct Freeze {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    live: i32,
}

impl Freeze {
    /// Makes `building` live and retires the frozen generation, in one
    /// transaction that notifies every query server.
    pub async fn switch(mut self, building: i32) -> Result<(), QueryError> {
        let retired = sqlx::query!(
            "UPDATE public.projection_generation SET state = 'retired', retired_at = now()
             WHERE generation = $1 AND state = 'live'",
            self.live
        )
        .execute(&mut *self.tx)
        .await?;
        let promoted = sqlx::query!(
            "UPDATE public.projection_generation SET state = 'live', switched_at = now()
             WHERE generation = $1 AND state = 'building'",
            building
        )
        .execute(&mut *self.tx)
        .await?;
        if retired.rows_affected() != 1 || promoted.rows_affected() != 1 {
            self.tx.rollback().await?;
            return Err(QueryError::Config(format!(
                "cannot switch from generation {} to {building}: states changed",
                self.live
            )));
        }
        sqlx::query!(
            "SELECT pg_notify($1, $2)",
            GENERATION_CHANNEL,
            building.to_string()
        )
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Lets the live generation's projectors write again.
    pub async fn release(self) -> Result<(), QueryError> {
        Ok(self.tx.rollback().await?)
    }
}

/// The live generation of one process: what its readers read and its projector
/// writes. Refreshed from the control table on NOTIFY, on a timer, and when a
/// write finds its generation retired; it only ever moves forward.
#[derive(Debug, Clone)]
pub struct LiveProjection {
    generations: Generations,
    current: Arc<watch::Sender<(i32, ReadModel)>>,
}

impl LiveProjection {
    /// The live generation of the control table (which must be bootstrapped).
    pub async fn load(generations: Generations) -> Result<Self, QueryError> {
        let live = generations.live().await?;
        let read_model = ReadModel::new(generations.pool().clone(), &live.schema)?;
        Ok(Self {
            generations,
            current: Arc::new(watch::Sender::new((live.generation, read_model))),
        })
    }

    /// The live generation's read model, as last seen.
    pub fn read_model(&self) -> ReadModel {
        self.current.borrow().1.clone()
    }

    /// The live generation's number, as last seen.
    pub fn generation(&self) -> i32 {
        self.current.borrow().0
    }

    /// The control table.
    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    /// A receiver that sees every switch this process makes.
    pub fn subscribe(&self) -> watch::Receiver<(i32, ReadModel)> {
        self.current.subscribe()
    }

    /// Re-reads the live generation; returns whether this process switched.
    pub async fn refresh(&self) -> Result<bool, QueryError> {
        let live = self.generations.live().await?;
        // A ReadModel brings a pool of its own: made only for a newer generation.
        if live.generation <= self.generation() {
            return Ok(false);
        }
        let read_model = ReadModel::new(self.generations.pool().clone(), &live.schema)?;
        let switched = self.current.send_if_modified(|current| {
            if live.generation > current.0 {
                *current = (live.generation, read_model);
                true
            } else {
                false
            }
        });
        if switched {
            tracing::info!(
                generation = live.generation,
                schema = %live.schema,
                "switched to the live projection generation"
            );
        }
        Ok(switched)
    }
}

/// Takes `lock` (a session advisory lock named by text) on a connection of its
/// own, if free; the lock lasts as long as the returned connection.
pub async fn try_session_lock(
    database_url: &str,
    lock: &str,
) -> Result<Option<PgConnection>, QueryError> {
    let mut conn = PgConnection::connect(database_url).await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock(hashtext($1)) AS "locked!""#,
        lock
    )
    .fetch_one(&mut conn)
    .await?;
    if locked {
        Ok(Some(conn))
    } else {
        conn.close().await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_generation_is_the_default_schema_and_later_ones_are_numbered() {
        assert_eq!(schema_of(1), "read_model");
        assert_eq!(schema_of(2), "read_model_g2");
        assert_eq!(schema_of(17), "read_model_g17");
    }

    #[test]
    fn states_and_sources_read_back() {
        use GenerationState::*;
        for state in [Building, Live, Retired, Failed] {
            assert_eq!(state.as_str().parse::<GenerationState>().unwrap(), state);
        }
        for source in [GenerationSource::Topic, GenerationSource::Store] {
            assert_eq!(source.as_str().parse::<GenerationSource>().unwrap(), source);
        }
        assert!("sideways".parse::<GenerationState>().is_err());
    }
}
