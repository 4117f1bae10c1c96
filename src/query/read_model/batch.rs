//! Writing one folded batch. `BatchWrite` holds what a batch changes; live
//! batches go through `apply_batch` (migration 0003) in one call, one round
//! trip and one implicit transaction; bulk loads write new orders and history
//! with `COPY` inside a transaction that calls `apply_batch` for the rest.

use std::collections::BTreeMap;

use sqlx::PgExecutor;
use uuid::Uuid;

use super::{
    ReadModel,
    copy::CopyRows,
    history::{self, HistoryRecord},
    orders::{self, OrderView, lines_json, status_name},
    parked::{self, DeadLetter, ParkedEvent},
    to_i64,
};
use crate::query::{QueryError, announce, control::WriteCondition};

/// SQLSTATE `apply_batch` raises when another owner moved a position.
const FENCED: &str = "OR001";
/// SQLSTATE `apply_batch` raises when an order is not where the fold started.
const STALE: &str = "OR002";
/// PostgreSQL's `unique_violation`: a `COPY` of an order or event already there.
const UNIQUE_VIOLATION: &str = "23505";

/// What one batch changes in a generation.
#[derive(Debug, Default)]
pub struct BatchWrite<'a> {
    /// The generation state the write requires (none: write whatever it is).
    pub condition: Option<WriteCondition>,
    /// The topic its events were read from (empty for the event store).
    pub topic: &'a str,
    /// Per partition, ascending: the position the batch started from (`None`:
    /// nothing stored) and the next offset after it.
    pub advances: Option<&'a BTreeMap<i32, (Option<i64>, i64)>>,
    /// Changed orders, each with the version the fold started from (0: new).
    pub orders: Vec<(&'a OrderView, u64)>,
    /// Orders folded as new without a lookup: none may be projected or parked.
    pub unseen: Vec<Uuid>,
    /// Applied events.
    pub history: &'a [HistoryRecord],
    /// Events newly parked behind a gap.
    pub parked: Vec<&'a ParkedEvent>,
    /// Parked events applied now.
    pub unparked: &'a [(Uuid, u64)],
    /// Messages that cannot be applied.
    pub dead: &'a [DeadLetter],
    /// Events applied (moves the freshness row when above 0).
    pub applied: u64,
    /// Whether to announce the changed orders on the generation's channel.
    pub notify: bool,
}

/// What became of a batch's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Committed.
    Committed,
    /// Another owner had moved a partition's position; nothing written.
    Fenced,
    /// An order was not at the version the fold started from (or a new one
    /// existed already); nothing written. Fold again from loaded state.
    Stale,
    /// The generation is not in the required state; nothing written.
    Closed,
}

/// Maps `apply_batch`'s and `COPY`'s refusals to outcomes; other errors pass.
fn outcome(result: Result<Applied, QueryError>) -> Result<Applied, QueryError> {
    match result {
        Err(QueryError::Database(sqlx::Error::Database(db))) => match db.code().as_deref() {
            Some(FENCED) => Ok(Applied::Fenced),
            Some(STALE | UNIQUE_VIOLATION) => Ok(Applied::Stale),
            _ => Err(QueryError::Database(sqlx::Error::Database(db))),
        },
        other => other,
    }
}

/// Runs `apply_batch` for `write` on `executor`; history goes with it unless
/// `history` is false (a bulk load copies it).
///
/// Arrays of optional or borrowed elements bind with `as _`: the macros check
/// only owned, non-null element types, and the casts in the statement (checked
/// against the function's signature when compiled) fix their SQL types.
async fn call<'e>(
    read_model: &ReadModel,
    executor: impl PgExecutor<'e>,
    write: &BatchWrite<'_>,
    orders: &[(&OrderView, u64)],
    with_history: bool,
) -> Result<Applied, QueryError> {
    let condition = write.condition;
    let advances = write.advances.into_iter().flatten();
    let history: &[HistoryRecord] = if with_history { write.history } else { &[] };
    let o = orders.iter().map(|(view, _)| *view);
    let h = history.iter();
    let k = write.parked.iter();
    let d = write.dead.iter();
    let column = |f: fn(&OrderView) -> Option<&str>| o.clone().map(f).collect::<Vec<_>>();
    let state = sqlx::query_scalar!(
        r#"SELECT apply_batch(
             $1::int4, $2::text, $3::text,
             $4::int4[], $5::int8[], $6::int8[],
             $7::uuid[], $8::text[], $9::text[], $10::text[], $11::int8[], $12::int8[],
             $13::timestamptz[], $14::timestamptz[], $15::text[], $16::text[], $17::text[],
             $18::int8[],
             $19::uuid[],
             $20::uuid[], $21::int8[], $22::uuid[], $23::text[], $24::bytea[],
             $25::timestamptz[], $26::text[], $27::text[], $28::int4[], $29::int8[], $30::int8[],
             $31::uuid[], $32::int8[], $33::bytea[], $34::int4[], $35::int8[], $36::int8[],
             $37::uuid[], $38::int8[],
             $39::int4[], $40::int8[], $41::bytea[], $42::bytea[], $43::text[], $44::text[],
             $45::int8, $46::text, $47::text[]) AS "state!""#,
        // The condition and the fence.
        condition.map(|c| c.generation),
        condition.map(|c| c.state.as_str()),
        write.topic,
        &advances.clone().map(|(p, _)| *p).collect::<Vec<_>>(),
        advances.clone().map(|(_, a)| a.0).collect::<Vec<_>>() as _,
        &advances.map(|(_, a)| a.1).collect::<Vec<_>>(),
        // The orders, each with the version its fold started from.
        &o.clone().map(|v| v.order_id).collect::<Vec<_>>(),
        column(|v| v.order.customer_id.as_ref().map(|c| c.as_str())) as _,
        column(|v| Some(status_name(v.order.status))) as _,
        column(|v| v.order.currency.as_ref().map(|c| c.as_str())) as _,
        &o.clone().map(|v| v.order.total_minor()).collect::<Vec<_>>(),
        &o.clone()
            .map(|v| to_i64(v.order.version))
            .collect::<Vec<_>>(),
        &o.clone().map(|v| v.placed_at).collect::<Vec<_>>(),
        &o.clone().map(|v| v.updated_at).collect::<Vec<_>>(),
        column(|v| v.order.tracking_number.as_ref().map(|t| t.as_str())) as _,
        column(|v| v.order.cancel_reason.as_ref().map(|r| r.as_str())) as _,
        &o.map(|v| lines_json(&v.order)).collect::<Vec<_>>(),
        &orders
            .iter()
            .map(|(_, loaded)| to_i64(*loaded))
            .collect::<Vec<_>>(),
        &write.unseen,
        // History.
        &h.clone().map(|r| r.order_id).collect::<Vec<_>>(),
        &h.clone().map(|r| to_i64(r.version)).collect::<Vec<_>>(),
        &h.clone().map(|r| r.event_id).collect::<Vec<_>>(),
        h.clone().map(|r| r.event_type).collect::<Vec<_>>() as _,
        h.clone().map(|r| r.payload.as_slice()).collect::<Vec<_>>() as _,
        &h.clone().map(|r| r.occurred_at).collect::<Vec<_>>(),
        h.clone()
            .map(|r| r.correlation_id.as_str())
            .collect::<Vec<_>>() as _,
        h.clone()
            .map(|r| r.causation_id.as_str())
            .collect::<Vec<_>>() as _,
        h.clone().map(|r| r.origin.partition()).collect::<Vec<_>>() as _,
        h.clone().map(|r| r.origin.offset()).collect::<Vec<_>>() as _,
        h.map(|r| r.origin.store_position()).collect::<Vec<_>>() as _,
        // Newly parked events.
        &k.clone().map(|p| p.order_id).collect::<Vec<_>>(),
        &k.clone().map(|p| to_i64(p.version)).collect::<Vec<_>>(),
        k.clone().map(|p| p.payload.as_slice()).collect::<Vec<_>>() as _,
        k.clone().map(|p| p.origin.partition()).collect::<Vec<_>>() as _,
        k.clone().map(|p| p.origin.offset()).collect::<Vec<_>>() as _,
        k.map(|p| p.origin.store_position()).collect::<Vec<_>>() as _,
        // Unparked events.
        &write.unparked.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        &write
            .unparked
            .iter()
            .map(|(_, v)| to_i64(*v))
            .collect::<Vec<_>>(),
        // Dead letters.
        &d.clone().map(|l| l.partition).collect::<Vec<_>>(),
        &d.clone().map(|l| l.offset).collect::<Vec<_>>(),
        d.clone().map(|l| l.key.as_deref()).collect::<Vec<_>>() as _,
        d.clone().map(|l| l.value.as_deref()).collect::<Vec<_>>() as _,
        d.clone()
            .map(|l| l.headers_json.as_str())
            .collect::<Vec<_>>() as _,
        d.map(|l| l.error.as_str()).collect::<Vec<_>>() as _,
        // Freshness and NOTIFY.
        to_i64(write.applied),
        read_model.channel(),
        &if write.notify {
            announce::payloads(orders.iter().map(|(view, _)| {
                (
                    view.order_id,
                    view.order.version,
                    view.order.customer_id.as_ref(),
                )
            }))
        } else {
            vec![]
        },
    )
    .fetch_one(executor)
    .await?;
    Ok(match state.as_str() {
        "committed" => Applied::Committed,
        _ => Applied::Closed,
    })
}

impl ReadModel {
    /// Applies a live batch in one statement (its own transaction).
    pub async fn apply(&self, write: &BatchWrite<'_>) -> Result<Applied, QueryError> {
        outcome(call(self, &self.pool, write, &write.orders, true).await)
    }

    /// Applies a bulk batch in one transaction: new orders and all history
    /// with `COPY`, the rest through `apply_batch` (which checks the
    /// condition and the fence first). No NOTIFY: nobody reads a generation
    /// while it is being built.
    pub async fn apply_bulk(&self, write: &BatchWrite<'_>) -> Result<Applied, QueryError> {
        outcome(self.apply_bulk_inner(write).await)
    }

    /// Applies the replay of dead letter `id` and removes it, in one
    /// transaction; `None` when it is no longer there.
    pub async fn apply_replay(
        &self,
        write: &BatchWrite<'_>,
        id: i64,
    ) -> Result<Option<Applied>, QueryError> {
        let mut tx = self.pool.begin().await?;
        if !parked::lock_dead_letter(&mut tx, id).await? {
            return Ok(None);
        }
        let applied = outcome(call(self, &mut *tx, write, &write.orders, true).await)?;
        if applied == Applied::Committed {
            parked::delete_dead_letter(&mut tx, id).await?;
            tx.commit().await?;
        }
        Ok(Some(applied))
    }

    async fn apply_bulk_inner(&self, write: &BatchWrite<'_>) -> Result<Applied, QueryError> {
        let (new, moved): (Vec<_>, Vec<_>) =
            write.orders.iter().partition(|(_, loaded)| *loaded == 0);
        let mut tx = self.pool.begin().await?;
        let applied = call(self, &mut *tx, write, &moved, false).await?;
        if applied != Applied::Committed {
            tx.rollback().await?;
            return Ok(applied);
        }
        let mut rows = CopyRows::new();
        for (view, _) in &new {
            orders::copy_row(&mut rows, view);
        }
        copy_in(&mut tx, &orders::copy_statement(), rows).await?;
        let mut rows = CopyRows::new();
        for record in write.history {
            history::copy_row(&mut rows, write.topic, record);
        }
        copy_in(&mut tx, &history::copy_statement(), rows).await?;
        tx.commit().await?;
        Ok(Applied::Committed)
    }
}

async fn copy_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    statement: &str,
    rows: CopyRows,
) -> Result<(), QueryError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut copy = tx.copy_in_raw(statement).await?;
    if let Err(error) = copy.send(rows.finish()).await {
        let _ = copy.abort("send failed").await;
        return Err(error.into());
    }
    copy.finish().await?;
    Ok(())
}
