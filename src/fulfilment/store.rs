//! The saga's tables (migrations/fulfilment): every change of a saga is one
//! transaction that locks its row, runs `saga::decide`, and stores the new
//! state with the intents it adds, together with what caused the change: the
//! event (its id, for deduplication, and the consumer's position) or the
//! answer (whose intent it deletes).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::saga::{
    Call, CallStatus, Decision, Input, Now, OrderFacts, Outcome, Phase, Refusal, Saga, Step,
    Timings, decide,
};

/// Why a saga could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row does not read back as a saga.
    #[error("corrupt saga {order_id}: {what}")]
    Corrupt {
        /// The saga.
        order_id: Uuid,
        /// What is wrong.
        what: String,
    },
}

/// What became of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Stored: the saga as it is now and the calls added.
    Changed(Box<Decision>),
    /// `decide` refused it; nothing changed but the position.
    Refused(Refusal),
    /// The event was applied before (by its id); nothing changed.
    Duplicate,
}

/// Where an event came from: its id and its place in the topic.
#[derive(Debug, Clone, Copy)]
pub struct EventSource<'a> {
    /// The event's id.
    pub event_id: Uuid,
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// An intent to call, with the saga it belongs to.
#[derive(Debug, Clone)]
pub struct Intent {
    /// The call.
    pub call: Call,
    /// The saga as stored when the intent was read.
    pub saga: Saga,
}

/// Which sagas `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only sagas in this phase.
    pub phase: Option<Phase>,
    /// Only sagas not finished with no change for at least this long.
    pub stuck_for: Option<std::time::Duration>,
    /// Only sagas whose next attempt is overdue by at least this long.
    pub overdue_by: Option<std::time::Duration>,
    /// Only sagas whose current step has had at least this many attempts.
    pub min_attempts: Option<u32>,
    /// At most this many (newest change first).
    pub limit: u32,
}

/// A saga as listed: the saga and when it last changed.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The saga.
    pub saga: Saga,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The saga tables of one database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    timings: Timings,
}

struct Row {
    order_id: Uuid,
    customer_id: String,
    lines: String,
    amount_minor: i64,
    currency_code: String,
    phase: String,
    step: String,
    attempt: i32,
    pending: Vec<String>,
    step_started: DateTime<Utc>,
    wake_at: Option<DateTime<Utc>>,
    in_flight: bool,
    tracking_number: Option<String>,
    cancel_reason: Option<String>,
    order_cancelled: bool,
    last_status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The phase named `name` as stored.
pub fn phase_named(name: &str) -> Option<Phase> {
    [
        Phase::Forward,
        Phase::Compensating,
        Phase::Completed,
        Phase::Cancelled,
        Phase::Failed,
    ]
    .into_iter()
    .find(|p| p.name() == name)
}

impl Row {
    fn into_listed(self) -> Result<Listed, StoreError> {
        let order_id = self.order_id;
        let corrupt = |what: String| StoreError::Corrupt { order_id, what };
        let step = |name: &str| Step::named(name).ok_or_else(|| corrupt(format!("step {name}")));
        let json = |text: &str, what: &str| {
            serde_json::from_str::<Value>(text).map_err(|_| corrupt(what.into()))
        };
        let lines = json(&self.lines, "lines")?;
        let last_status = json(&self.last_status, "last_status")?;
        let lines = lines
            .as_array()
            .ok_or_else(|| corrupt("lines".into()))?
            .iter()
            .map(|l| {
                Some((
                    l["product_id"].as_str()?.to_owned(),
                    u32::try_from(l["quantity"].as_u64()?).ok()?,
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt("lines".into()))?;
        let mut statuses = BTreeMap::new();
        for (name, status) in last_status.as_object().into_iter().flatten() {
            let read = || {
                Some(CallStatus {
                    code: status["code"].as_str()?.to_owned(),
                    attempt: u32::try_from(status["attempt"].as_u64()?).ok()?,
                    at: DateTime::parse_from_rfc3339(status["at"].as_str()?)
                        .ok()?
                        .with_timezone(&Utc),
                })
            };
            statuses.insert(
                step(name)?,
                read().ok_or_else(|| corrupt(format!("last_status of {name}")))?,
            );
        }
        let saga = Saga {
            order: OrderFacts {
                order_id,
                customer_id: self.customer_id,
                lines,
                amount_minor: self.amount_minor,
                currency_code: self.currency_code,
            },
            phase: phase_named(&self.phase)
                .ok_or_else(|| corrupt(format!("phase {}", self.phase)))?,
            step: step(&self.step)?,
            attempt: u32::try_from(self.attempt).map_err(|_| corrupt("attempt".into()))?,
            pending: self
                .pending
                .iter()
                .map(|s| step(s))
                .collect::<Result<_, _>>()?,
            step_started: self.step_started,
            wake_at: self.wake_at,
            in_flight: self.in_flight,
            tracking_number: self.tracking_number,
            cancel_reason: self.cancel_reason,
            order_cancelled: self.order_cancelled,
            last_status: statuses,
        };
        Ok(Listed {
            saga,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn last_status_json(saga: &Saga) -> Value {
    Value::Object(
        saga.last_status
            .iter()
            .map(|(step, s)| {
                (
                    step.name().to_owned(),
                    json!({"code": s.code, "attempt": s.attempt, "at": s.at.to_rfc3339()}),
                )
            })
            .collect(),
    )
}

fn lines_json(order: &OrderFacts) -> Value {
    Value::Array(
        order
            .lines
            .iter()
            .map(|(product_id, quantity)| json!({"product_id": product_id, "quantity": quantity}))
            .collect(),
    )
}

fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Store {
    /// The tables in `pool`'s database, deciding with `timings`.
    pub fn new(pool: PgPool, timings: Timings) -> Self {
        Self { pool, timings }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The saga of `order_id`, locked until `tx` ends.
    async fn lock(
        tx: &mut Transaction<'_, Postgres>,
        order_id: Uuid,
    ) -> Result<Option<Saga>, StoreError> {
        let row = sqlx::query_as!(
            Row,
            r#"SELECT order_id, customer_id, lines::text AS "lines!", amount_minor, currency_code,
                      phase, step, attempt, pending, step_started, wake_at, in_flight,
                      tracking_number, cancel_reason, order_cancelled,
                      last_status::text AS "last_status!", created_at, updated_at
               FROM saga WHERE order_id = $1 FOR UPDATE"#,
            order_id
        )
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|r| r.into_listed().map(|l| l.saga)).transpose()
    }

    /// Stores `decision` (the saga and its new intents).
    async fn store(
        tx: &mut Transaction<'_, Postgres>,
        decision: &Decision,
    ) -> Result<(), StoreError> {
        let saga = &decision.saga;
        let pending: Vec<String> = saga.pending.iter().map(|s| s.name().to_owned()).collect();
        sqlx::query!(
            r#"INSERT INTO saga (order_id, customer_id, lines, amount_minor, currency_code, phase,
                                 step, attempt, pending, step_started, wake_at, in_flight,
                                 tracking_number, cancel_reason, order_cancelled, last_status)
               VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                       $16::text::jsonb)
               ON CONFLICT (order_id) DO UPDATE SET
                 phase = EXCLUDED.phase, step = EXCLUDED.step, attempt = EXCLUDED.attempt,
                 pending = EXCLUDED.pending, step_started = EXCLUDED.step_started,
                 wake_at = EXCLUDED.wake_at, in_flight = EXCLUDED.in_flight,
                 tracking_number = EXCLUDED.tracking_number,
                 cancel_reason = EXCLUDED.cancel_reason,
                 order_cancelled = EXCLUDED.order_cancelled,
                 last_status = EXCLUDED.last_status, updated_at = now()"#,
            saga.order.order_id,
            saga.order.customer_id,
            lines_json(&saga.order).to_string(),
            saga.order.amount_minor,
            saga.order.currency_code,
            saga.phase.name(),
            saga.step.name(),
            i32_of(saga.attempt),
            &pending,
            saga.step_started,
            saga.wake_at,
            saga.in_flight,
            saga.tracking_number,
            saga.cancel_reason,
            saga.order_cancelled,
            last_status_json(saga).to_string(),
        )
        .execute(&mut **tx)
        .await?;
        for call in &decision.calls {
            sqlx::query!(
                "INSERT INTO saga_intent (order_id, step, attempt) VALUES ($1, $2, $3)",
                saga.order.order_id,
                call.step.name(),
                i32_of(call.attempt),
            )
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Locks the saga, decides `input` and stores the result, in `tx`.
    async fn decide_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        order_id: Uuid,
        input: &Input,
        now: Now,
    ) -> Result<Applied, StoreError> {
        let saga = Self::lock(tx, order_id).await?;
        match decide(saga.as_ref(), input, now, &self.timings) {
            Ok(decision) => {
                Self::store(tx, &decision).await?;
                Ok(Applied::Changed(Box::new(decision)))
            }
            Err(refusal) => Ok(Applied::Refused(refusal)),
        }
    }

    /// Applies an event's `input` to the saga of `order_id` once (by the
    /// event's id), moving the consumer's position past it.
    pub async fn apply_event(
        &self,
        source: EventSource<'_>,
        order_id: Uuid,
        input: &Input,
        now: Now,
    ) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query!(
            "INSERT INTO saga_event (event_id, order_id) VALUES ($1, $2)
             ON CONFLICT (event_id) DO NOTHING",
            source.event_id,
            order_id
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let applied = if fresh {
            self.decide_in(&mut tx, order_id, input, now).await?
        } else {
            Applied::Duplicate
        };
        Self::advance_in(&mut tx, source.topic, source.partition, source.offset + 1).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Records an answer to `call` of the saga of `order_id`: deletes its
    /// intent and decides. An answer whose intent is gone is a duplicate.
    pub async fn answer(
        &self,
        order_id: Uuid,
        call: Call,
        outcome: Outcome,
        now: Now,
    ) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The saga first: every change locks the saga row before its intents.
        let saga = Self::lock(&mut tx, order_id).await?;
        let deleted = sqlx::query!(
            "DELETE FROM saga_intent WHERE order_id = $1 AND step = $2 AND attempt = $3",
            order_id,
            call.step.name(),
            i32_of(call.attempt),
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted == 0 {
            return Ok(Applied::Duplicate);
        }
        let input = Input::Answer {
            step: call.step,
            attempt: call.attempt,
            outcome,
        };
        let applied = match decide(saga.as_ref(), &input, now, &self.timings) {
            Ok(decision) => {
                Self::store(&mut tx, &decision).await?;
                Applied::Changed(Box::new(decision))
            }
            Err(refusal) => Applied::Refused(refusal),
        };
        tx.commit().await?;
        Ok(applied)
    }

    /// Decides `input` (a wake-up or an operator's request) for the saga of
    /// `order_id`.
    pub async fn input(
        &self,
        order_id: Uuid,
        input: &Input,
        now: Now,
    ) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let applied = self.decide_in(&mut tx, order_id, input, now).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn advance_in(
        tx: &mut Transaction<'_, Postgres>,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO saga_position (topic, partition, next_offset) VALUES ($1, $2, $3)
             ON CONFLICT (topic, partition) DO UPDATE
             SET next_offset = GREATEST(saga_position.next_offset, EXCLUDED.next_offset)",
            topic,
            partition,
            next_offset
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Moves the consumer's position of `partition` to `next_offset` (past
    /// events that concern no saga).
    pub async fn advance(
        &self,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::advance_in(&mut tx, topic, partition, next_offset).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The consumer's stored positions in `topic`, by partition.
    pub async fn positions(&self, topic: &str) -> Result<HashMap<i32, i64>, StoreError> {
        Ok(sqlx::query!(
            "SELECT partition, next_offset FROM saga_position WHERE topic = $1",
            topic
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.partition, r.next_offset))
        .collect())
    }

    /// Up to `limit` intents, oldest first, with their sagas.
    pub async fn intents(&self, limit: i64) -> Result<Vec<Intent>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT i.step AS intent_step, i.attempt AS intent_attempt,
                      s.order_id, s.customer_id, s.lines::text AS "lines!", s.amount_minor,
                      s.currency_code, s.phase, s.step, s.attempt, s.pending, s.step_started,
                      s.wake_at, s.in_flight, s.tracking_number, s.cancel_reason,
                      s.order_cancelled, s.last_status::text AS "last_status!", s.created_at,
                      s.updated_at
               FROM saga_intent i JOIN saga s USING (order_id)
               ORDER BY i.created_at LIMIT $1"#,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let corrupt = |what: &str| StoreError::Corrupt {
                    order_id: r.order_id,
                    what: what.into(),
                };
                let step = Step::named(&r.intent_step).ok_or_else(|| corrupt("intent step"))?;
                let attempt =
                    u32::try_from(r.intent_attempt).map_err(|_| corrupt("intent attempt"))?;
                let listed = Row {
                    order_id: r.order_id,
                    customer_id: r.customer_id,
                    lines: r.lines,
                    amount_minor: r.amount_minor,
                    currency_code: r.currency_code,
                    phase: r.phase,
                    step: r.step,
                    attempt: r.attempt,
                    pending: r.pending,
                    step_started: r.step_started,
                    wake_at: r.wake_at,
                    in_flight: r.in_flight,
                    tracking_number: r.tracking_number,
                    cancel_reason: r.cancel_reason,
                    order_cancelled: r.order_cancelled,
                    last_status: r.last_status,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                }
                .into_listed()?;
                Ok(Intent {
                    call: Call { step, attempt },
                    saga: listed.saga,
                })
            })
            .collect()
    }

    /// Up to `limit` sagas whose wake-up is due at `now`.
    pub async fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar!(
            "SELECT order_id FROM saga WHERE wake_at <= $1 ORDER BY wake_at LIMIT $2",
            now,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The saga of `order_id`.
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Listed>, StoreError> {
        sqlx::query_as!(
            Row,
            r#"SELECT order_id, customer_id, lines::text AS "lines!", amount_minor, currency_code,
                      phase, step, attempt, pending, step_started, wake_at, in_flight,
                      tracking_number, cancel_reason, order_cancelled,
                      last_status::text AS "last_status!", created_at, updated_at
               FROM saga WHERE order_id = $1"#,
            order_id
        )
        .fetch_optional(&self.pool)
        .await?
        .map(Row::into_listed)
        .transpose()
    }

    /// The sagas `filter` selects at `now`, the latest change first.
    pub async fn list(
        &self,
        filter: &ListFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<Listed>, StoreError> {
        let seconds = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64());
        sqlx::query_as!(
            Row,
            r#"SELECT order_id, customer_id, lines::text AS "lines!", amount_minor, currency_code,
                      phase, step, attempt, pending, step_started, wake_at, in_flight,
                      tracking_number, cancel_reason, order_cancelled,
                      last_status::text AS "last_status!", created_at, updated_at
               FROM saga
               WHERE ($1::text IS NULL OR phase = $1)
                 AND ($2::float8 IS NULL
                      OR (phase IN ('forward', 'compensating')
                          AND updated_at <= $6::timestamptz - make_interval(secs => $2)))
                 AND ($3::float8 IS NULL
                      OR (wake_at IS NOT NULL AND wake_at <= $6::timestamptz - make_interval(secs => $3)))
                 AND ($4::int4 IS NULL OR attempt >= $4)
               ORDER BY updated_at DESC, order_id
               LIMIT $5"#,
            filter.phase.map(Phase::name),
            seconds(filter.stuck_for),
            seconds(filter.overdue_by),
            filter.min_attempts.map(i32_of),
            i64::from(filter.limit.max(1)),
            now,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Row::into_listed)
        .collect()
    }
}
