//! `verify`: the projection equals a fold of the event store, field by field.
//!
//! Every order's events are read from the event store and folded with
//! `domain::evolve`; the result is compared with the projected row (customer,
//! status, currency, lines, total, version, tracking number, cancel reason,
//! placed_at, updated_at), and its history with the store's event ids and
//! versions.
//!
//! Memory does not grow with the number of orders: nothing is loaded whole.
//! Four streams, each sorted by order id, are read side by side (a task and a
//! small channel each) and merged, one order at a time (`merge`):
//!
//! - the store's per-order digests, with `published_through` (step 1 below);
//! - the projection's per-order history digests and its `order_view` rows
//!   (step 3, two connections sharing one snapshot);
//! - the store's events in order id and version order (step 4).
//!
//! A history is compared by digest (`digest::HISTORY_DIGEST`, the
//! same expression on both sides). When the order's projected version is the
//! store's version of step 1, the two streamed digests are compared; otherwise
//! (a lagging order, or one that moved between the snapshots) the store's
//! digest up to the projected version is asked for, for up to `HISTORY_BATCH`
//! orders at a time. Only an order whose history differs has its history
//! rows read, to name the first difference.
//!
//! Under load the projection trails the store. Reads happen in this order:
//!
//! 1. the write database, in one snapshot: per order, the highest committed
//!    version and the lowest still in the outbox; every version below that was
//!    acknowledged by Kafka already (`published_through`);
//! 2. the topic's end offsets;
//! 3. the projection and its positions, in one snapshot;
//! 4. the event store, folded (a later snapshot, so nothing projected is missing).
//!
//! If the positions of (3) reach the end offsets of (2) on every partition,
//! every event published before (2) has been applied, so each order must be
//! projected at least up to its `published_through` version. An order behind
//! its store version but not behind that bound is *lagging* when the projection
//! equals the fold of the store up to the projected version; otherwise it is a
//! difference. With `exact` (after waiting for quiescence), nothing may lag.

mod compare;
mod merge;

use std::{
    fmt,
    time::{Duration, Instant},
};

use futures::{Stream, TryStreamExt};
use serde::Serialize;
use sqlx::PgPool;
use tokio::{sync::mpsc, task::JoinHandle};
use uuid::Uuid;

use crate::{
    admin::{
        AdminError, live_generation, read_pool,
        topic::{self, TopicOffsets},
        write_pool,
    },
    command::store,
    config::AdminSettings,
    query::{Generations, ReadModel},
};

/// Rows each stream reads ahead of the merge.
const ROWS_AHEAD: usize = 256;

/// How `verify` runs.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// First wait up to this long for the outbox to drain and the live
    /// projection to reach the end of the topic, then demand exact equality.
    pub wait_caught_up: Option<Duration>,
}

/// One field of one order where the projection and the event store disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The order.
    pub order_id: Uuid,
    /// The field, e.g. `status`, `lines`, `version`.
    pub field: String,
    /// What the projection holds.
    pub projected: String,
    /// What the fold of the event store gives.
    pub expected: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "order {}: {}: projected {}, event store {}",
            self.order_id, self.field, self.projected, self.expected
        )
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The generation checked.
    pub generation: i32,
    /// Its schema.
    pub schema: String,
    /// Orders in the event store.
    pub orders: u64,
    /// Events in the event store.
    pub events: u64,
    /// Orders behind the store only because of consumer lag.
    pub lagging: Vec<Uuid>,
    /// Every disagreement.
    pub differences: Vec<Difference>,
    /// Whether the live positions had reached the topic's end (step 2).
    pub caught_up: bool,
    /// Whether lagging was disallowed.
    pub exact: bool,
    /// Events parked behind a gap in the projection.
    pub pending_events: i64,
    /// Messages in the projection's dead-letter table.
    pub dead_letters: i64,
}

impl VerifyReport {
    /// Whether the projection agrees with the event store.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares the live generation with the event store (see the module doc).
pub async fn verify(
    settings: &AdminSettings,
    options: VerifyOptions,
) -> Result<VerifyReport, AdminError> {
    let read = read_pool(settings).await?;
    let write = write_pool(settings).await?;
    let offsets = TopicOffsets::new(&settings.kafka)?;
    live_generation(&read).await?;
    let generations = Generations::new(read.clone());
    if let Some(timeout) = options.wait_caught_up {
        wait_caught_up(&write, &generations, &offsets, timeout).await?;
    }
    let live = generations.live().await?;
    let read_model = ReadModel::new(read, &live.schema)?;
    verify_generation(
        &write,
        &read_model,
        live.generation,
        &offsets,
        options.wait_caught_up.is_some(),
    )
    .await
}

/// Waits until the outbox is empty and the live generation's positions reach
/// the topic's end offsets, checking every 100 ms, for at most `timeout`.
pub async fn wait_caught_up(
    write: &PgPool,
    generations: &Generations,
    offsets: &TopicOffsets,
    timeout: Duration,
) -> Result<(), AdminError> {
    let started = Instant::now();
    loop {
        // The outbox first: what it no longer holds is below the end offsets read next.
        let backlog = store::outbox_backlog(write).await?.events;
        let ends = offsets.end_offsets().await?;
        let live = generations.live().await?;
        let read_model = ReadModel::new(generations.pool().clone(), &live.schema)?;
        let positions = read_model.all_positions(offsets.topic()).await?;
        if backlog == 0 && topic::reached(&positions, &ends) {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(AdminError::NotCaughtUp {
                waited: timeout,
                detail: format!(
                    "outbox backlog {backlog}, consumer lag {} of generation {}",
                    topic::lag(&positions, &ends),
                    live.generation
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Compares `read_model` (generation `generation`) with the event store; see the module doc.
pub async fn verify_generation(
    write: &PgPool,
    read_model: &ReadModel,
    generation: i32,
    offsets: &TopicOffsets,
    exact: bool,
) -> Result<VerifyReport, AdminError> {
    // 1. What Kafka had acknowledged, per order.
    let mut published = store::snapshot(write).await?;
    // 2. The end of the topic.
    let ends = offsets.end_offsets().await?;
    // 3. The projection, in one snapshot: one reader per stream, one for lookups.
    let snapshot = read_model.snapshot(offsets.topic(), 3).await?;
    // 4. The event store, a later snapshot.
    let mut stored = store::snapshot(write).await?;
    let report = VerifyReport {
        generation,
        schema: read_model.schema().to_owned(),
        orders: 0,
        events: 0,
        lagging: vec![],
        differences: vec![],
        caught_up: topic::reached(&snapshot.positions, &ends),
        exact,
        pending_events: snapshot.pending_events,
        dead_letters: snapshot.dead_letters,
    };
    let [mut digests, mut rows, lookups]: [_; 3] = snapshot
        .readers
        .try_into()
        .map_err(|_| AdminError::Invalid("projection snapshot without its readers".into()))?;

    let (to_merge, store_digests) = mpsc::channel(ROWS_AHEAD);
    let store_digests_read = tokio::spawn(async move {
        if forward(store::order_digests(&mut published), to_merge).await? {
            published.commit().await?;
        }
        Ok(())
    });
    let (to_merge, history_digests) = mpsc::channel(ROWS_AHEAD);
    let history_digests_read = tokio::spawn(async move {
        if forward(digests.history_digests(), to_merge).await? {
            digests.close().await?;
        }
        Ok(())
    });
    let (to_merge, events) = mpsc::channel(ROWS_AHEAD);
    let events_read = tokio::spawn(async move {
        if forward(store::events_by_order(&mut stored), to_merge).await? {
            stored.commit().await?;
        }
        Ok(())
    });
    let (to_merge, projected) = mpsc::channel(ROWS_AHEAD);
    let projected_read = tokio::spawn(async move {
        if forward(rows.orders(), to_merge).await? {
            rows.close().await?;
        }
        Ok(())
    });

    let merged = merge::Merge::new(report, write.acquire().await?, lookups)
        .run(merge::Streams {
            store_digests: store_digests.into(),
            events: events.into(),
            history_digests: history_digests.into(),
            projected: projected.into(),
        })
        .await;
    // A stream that failed ends early; its error is the one to report.
    for read in [
        store_digests_read,
        history_digests_read,
        events_read,
        projected_read,
    ] {
        joined(read).await?;
    }
    merged
}

/// Sends every row of `rows` to the merge; returns whether all were sent
/// (`false` when the merge stopped first).
async fn forward<T, E>(
    rows: impl Stream<Item = Result<T, E>>,
    to_merge: mpsc::Sender<T>,
) -> Result<bool, AdminError>
where
    AdminError: From<E>,
{
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await? {
        if to_merge.send(row).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn joined(read: JoinHandle<Result<(), AdminError>>) -> Result<(), AdminError> {
    read.await
        .map_err(|e| AdminError::Invalid(format!("verify reader failed: {e}")))?
}
