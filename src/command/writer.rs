//! The batching writer (group commit). RPC handlers send validated commands
//! here; each writer task takes whatever is queued (up to a bound), decides the
//! commands in arrival order on the evolving state, appends every resulting
//! event in one transaction, and answers each RPC only after the commit.
//!
//! A lone command is written at once: batching never waits on a timer. Each
//! task keeps its own connection, and a batch costs four round trips (BEGIN,
//! one load, one append, COMMIT), three when it only places orders: on a first
//! attempt a PlaceOrder's order and idempotency key are taken as unused, and
//! the unique constraints check that. If another writer wins a race (unique
//! violation), the whole batch is rolled back and re-decided on loaded state,
//! so only commands that really conflict fail (with `expected_version`) or see
//! the new state (without it).

use std::time::Instant;

use chrono::Utc;
use prost::Message as _;
use sqlx::{Acquire as _, PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{
    CommandError,
    metrics::WriterMetrics,
    store::{self, NewEvent, NewKey, StoreError, StoredAnswer},
};
use crate::{
    auth::Caller,
    codec::{self, Actor, EventMeta, ParsedCommand},
    domain::{Command, CustomerId, Order, OrderError, OrderId, decide, evolve},
    telemetry,
};

/// Times a batch is re-decided after losing a race before its commands are ABORTED.
const MAX_ATTEMPTS: usize = 8;

/// Request facts carried into the events' metadata.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// `x-request-id` metadata, if sent.
    pub x_request_id: Option<String>,
    /// The W3C `traceparent` stored with the events: the RPC span's when
    /// spans are exported, else the caller's, if sent.
    pub traceparent: Option<String>,
    /// The verified caller, when the server authenticates callers; a
    /// customer-confined caller finds other customers' orders absent.
    pub caller: Option<Caller>,
}

/// What an accepted command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The order.
    pub order_id: OrderId,
    /// Its version after the command.
    pub version: u64,
}

/// One command on its way to a writer task.
struct Submission {
    rpc: &'static str,
    parsed: ParsedCommand,
    request: Vec<u8>,
    meta: RequestMeta,
    /// The RPC's span: the batch's parent (the first command's) or a link.
    span: tracing::Span,
    reply: oneshot::Sender<Result<Accepted, CommandError>>,
}

impl Submission {
    fn answer(&self, accepted: Accepted) -> StoredAnswer {
        StoredAnswer {
            rpc: self.rpc.to_owned(),
            request: self.request.clone(),
            order_id: accepted.order_id,
            version: accepted.version,
        }
    }

    fn same_request(&self, stored: &StoredAnswer) -> bool {
        stored.rpc == self.rpc && stored.request == self.request
    }
}

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    shards: Vec<mpsc::Sender<Submission>>,
}

impl Writer {
    /// Prepares `tasks` writer tasks on `pool`, each committing at most
    /// `max_batch` commands at once; the caller spawns them. Each ends once
    /// every `Writer` handle is dropped and its queue is drained.
    ///
    /// `abort_mid_batch` is fault injection for crash tests, `None` in service:
    /// with `Some(n)` the process aborts once a batch of at least `n` commands
    /// has inserted its events, before its COMMIT.
    pub fn start(
        pool: PgPool,
        tasks: usize,
        max_batch: usize,
        abort_mid_batch: Option<usize>,
        metrics: WriterMetrics,
    ) -> (Self, Vec<impl Future<Output = ()> + Send + 'static>) {
        if let Some(n) = abort_mid_batch {
            tracing::warn!(
                batch_size = n,
                "FAULT INJECTION ARMED: the process aborts before committing a batch this large \
                 (ORDERS_FAULT_ABORT_MID_BATCH; for crash tests only)"
            );
        }
        let (shards, handles) = (0..tasks.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(max_batch.max(1) * 4);
                let task = WriterTask {
                    pool: pool.clone(),
                    conn: None,
                    max_batch: max_batch.max(1),
                    abort_mid_batch,
                    metrics: metrics.clone(),
                };
                (tx, task.run(rx))
            })
            .unzip();
        (Self { shards }, handles)
    }

    /// Decides and commits one command; resolves after the commit.
    pub async fn submit<R: prost::Message>(
        &self,
        rpc: &'static str,
        parsed: ParsedCommand,
        request: &R,
        meta: RequestMeta,
    ) -> Result<Accepted, CommandError> {
        let shard = (parsed.order_id.as_uuid().as_u128() % self.shards.len() as u128) as usize;
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            rpc,
            parsed,
            request: request.encode_to_vec(),
            meta,
            span: tracing::Span::current(),
            reply,
        };
        self.shards[shard]
            .send(submission)
            .await
            .map_err(|_| CommandError::Unavailable)?;
        answer.await.map_err(|_| CommandError::Unavailable)?
    }
}

/// What a command whose batch failed with `error` answers: a pool timeout is
/// load the client may retry, anything else an internal error.
fn failed(error: &StoreError) -> CommandError {
    match error {
        StoreError::Database(sqlx::Error::PoolTimedOut) => CommandError::Busy,
        _ => CommandError::Internal,
    }
}

struct WriterTask {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    max_batch: usize,
    abort_mid_batch: Option<usize>,
    metrics: WriterMetrics,
}

/// How one submission of a batch was settled during an attempt.
enum Settled {
    /// Answered already (rejected, or a stored idempotent answer).
    Answered(Result<Accepted, CommandError>),
    /// Accepted: answered after the commit.
    Accepted(Accepted),
}

/// Why an attempt did not commit.
enum Failure {
    /// Another writer won a race (unique violation): the batch is re-decided.
    Lost,
    /// The connection failed at BEGIN: nothing of the batch reached the database.
    Begin(StoreError),
    /// Anything else fails the batch.
    Store(StoreError),
}

impl WriterTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Submission>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while rx.recv_many(&mut batch, self.max_batch).await > 0 {
            let batch = std::mem::take(&mut batch);
            let (size, started) = (batch.len(), Instant::now());
            let span = batch_span(&batch);
            self.process(batch).instrument(span).await;
            self.metrics.batch_size.observe(size as f64);
            self.metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// The task's own connection (kept between batches, so its prepared statements
    /// stay warm and no batch pays a pool round trip), and whether it was reused.
    async fn connection(&mut self) -> Result<(PoolConnection<Postgres>, bool), StoreError> {
        match self.conn.take() {
            Some(conn) => Ok((conn, true)),
            None => Ok((self.pool.acquire().await?, false)),
        }
    }

    async fn process(&mut self, mut pending: Vec<Submission>) {
        // A caller whose deadline passed is gone: its command is not applied at all.
        pending.retain(|s| !s.reply.is_closed());
        for attempt in 1..=MAX_ATTEMPTS {
            if pending.is_empty() {
                return;
            }
            let (mut conn, reused) = match self.connection().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::error!(%error, size = pending.len(), "no database connection");
                    for submission in pending.drain(..) {
                        let _ = submission.reply.send(Err(failed(&error)));
                    }
                    return;
                }
            };
            // The first attempt takes new orders as absent; a lost race re-decides on loaded state.
            match self.attempt(&mut conn, &pending, attempt == 1).await {
                Ok(settled) => {
                    self.conn = Some(conn);
                    for (submission, outcome) in pending.drain(..).zip(settled) {
                        let result = match outcome {
                            Settled::Answered(result) => result,
                            Settled::Accepted(accepted) => Ok(accepted),
                        };
                        if matches!(result, Err(CommandError::VersionConflict { .. })) {
                            self.metrics.conflicts.inc();
                        }
                        let _ = submission.reply.send(result);
                    }
                    return;
                }
                Err(Failure::Lost) => {
                    self.conn = Some(conn);
                    self.metrics.retries.inc();
                    tracing::debug!(
                        attempt,
                        size = pending.len(),
                        "batch lost a race; re-deciding"
                    );
                }
                Err(Failure::Begin(error)) if reused => {
                    // A kept connection went stale (database restart): take a fresh one.
                    conn.close_on_drop();
                    tracing::warn!(%error, "writer connection lost; reconnecting");
                }
                Err(Failure::Begin(error) | Failure::Store(error)) => {
                    conn.close_on_drop();
                    tracing::error!(%error, size = pending.len(), "batch failed");
                    for submission in pending.drain(..) {
                        let _ = submission.reply.send(Err(failed(&error)));
                    }
                    return;
                }
            }
        }
        for submission in pending {
            let _ = submission.reply.send(Err(CommandError::Contention));
        }
    }

    /// Decides the batch and commits it in one transaction: BEGIN, one load (none
    /// for a batch of new orders on the first attempt), one append, COMMIT.
    ///
    /// With `optimistic`, a PlaceOrder's order and idempotency key are taken as
    /// unused without reading them: if either exists, the unique constraints
    /// refuse the append and the batch is re-decided on loaded state.
    async fn attempt(
        &self,
        conn: &mut PgConnection,
        batch: &[Submission],
        optimistic: bool,
    ) -> Result<Vec<Settled>, Failure> {
        let mut tx = conn
            .begin()
            .await
            .map_err(|e| Failure::Begin(StoreError::from(e)))?;
        let loaded = |s: &&Submission| {
            !(optimistic && matches!(s.parsed.command, Command::PlaceOrder { .. }))
        };
        let keys: Vec<String> = batch
            .iter()
            .filter(loaded)
            .filter_map(|s| s.parsed.request_id.as_ref().map(|k| k.as_str().to_owned()))
            .collect();
        let stored = store::load_answers(&mut tx, &keys).await.map_err(fail)?;
        let mut ids: Vec<OrderId> = batch
            .iter()
            .filter(loaded)
            .map(|s| s.parsed.order_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut orders = store::load_orders(&mut tx, &ids).await.map_err(fail)?;

        let occurred_at = Utc::now();
        let mut events = Vec::new();
        let mut new_keys: Vec<NewKey> = Vec::new();
        let mut settled = Vec::with_capacity(batch.len());
        for submission in batch {
            let key = submission.parsed.request_id.as_ref().map(|k| k.as_str());
            let earlier = key.and_then(|k| {
                stored.get(k).or_else(|| {
                    new_keys
                        .iter()
                        .find(|n| n.request_id == k)
                        .map(|n| &n.answer)
                })
            });
            if let Some(answer) = earlier {
                settled.push(if submission.same_request(answer) {
                    Settled::Answered(Ok(Accepted {
                        order_id: answer.order_id,
                        version: answer.version,
                    }))
                } else {
                    Settled::Answered(Err(CommandError::RequestIdReused))
                });
                continue;
            }
            let order = orders.entry(submission.parsed.order_id).or_default();
            let confined = submission
                .meta
                .caller
                .as_ref()
                .and_then(|c| c.customer_id.as_ref());
            match decide_one(order, &submission.parsed, confined) {
                Err(error) => settled.push(Settled::Answered(Err(error))),
                Ok(decided) => {
                    let accepted = Accepted {
                        order_id: submission.parsed.order_id,
                        version: order.version + decided.len() as u64,
                    };
                    let causation_id =
                        key.map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
                    let correlation_id = submission
                        .meta
                        .x_request_id
                        .clone()
                        .unwrap_or_else(|| causation_id.clone());
                    for event in decided {
                        let meta = EventMeta {
                            event_id: Uuid::now_v7(),
                            order_id: submission.parsed.order_id,
                            version: order.version + 1,
                            occurred_at,
                            correlation_id: correlation_id.clone(),
                            causation_id: causation_id.clone(),
                            actor: submission.meta.caller.as_ref().map(|c| Actor {
                                subject: c.subject.clone(),
                                customer_id: c.customer_id.as_ref().map(|c| c.as_str().to_owned()),
                            }),
                        };
                        events.push(NewEvent {
                            event_id: meta.event_id,
                            order_id: meta.order_id,
                            version: meta.version,
                            event_type: event.type_name(),
                            payload: codec::event_to_proto(&meta, &event).encode_to_vec(),
                            occurred_at,
                            request_id: key.map(str::to_owned),
                            correlation_id: meta.correlation_id,
                            causation_id: meta.causation_id,
                            traceparent: submission.meta.traceparent.clone(),
                        });
                        *order = evolve(std::mem::take(order), &event);
                    }
                    if let Some(key) = key {
                        new_keys.push(NewKey {
                            request_id: key.to_owned(),
                            answer: submission.answer(accepted),
                        });
                    }
                    settled.push(Settled::Accepted(accepted));
                }
            }
        }
        if events.is_empty() {
            return Ok(settled);
        }
        // Events of one order must get increasing positions: keep them grouped in version order.
        events.sort_by_key(|e| (e.order_id, e.version));
        store::append(&mut tx, &events, &new_keys)
            .await
            .map_err(fail)?;
        if self.abort_mid_batch.is_some_and(|n| batch.len() >= n) {
            tracing::error!(
                size = batch.len(),
                events = events.len(),
                "fault injection: aborting with the batch inserted but not committed"
            );
            std::process::abort();
        }
        tx.commit().await.map_err(|e| fail(StoreError::from(e)))?;
        Ok(settled)
    }
}

/// The span of one batch: a child of its first command's RPC span, linked
/// to the others'.
fn batch_span(batch: &[Submission]) -> tracing::Span {
    let Some(first) = batch.first() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(parent: &first.span, "writer.batch", commands = batch.len());
    for submission in batch.iter().skip(1).take(telemetry::MAX_LINKS) {
        telemetry::link_span(&span, &submission.span);
    }
    span
}

/// A unique violation means another writer won: retry; anything else fails the batch.
fn fail(error: StoreError) -> Failure {
    match error {
        StoreError::Conflict(_) => Failure::Lost,
        other => Failure::Store(other),
    }
}

/// Checks existence and `expected_version`, then decides.
fn decide_one(
    order: &Order,
    parsed: &ParsedCommand,
    confined: Option<&CustomerId>,
) -> Result<Vec<crate::domain::Event>, CommandError> {
    let placing = matches!(parsed.command, Command::PlaceOrder { .. });
    if !order.exists() && !placing {
        return Err(CommandError::Rejected(OrderError::NotFound));
    }
    // Another customer's order looks absent to a confined caller: no hint
    // that it exists, not even a version conflict.
    if order.exists() && confined.is_some_and(|c| order.customer_id.as_ref() != Some(c)) {
        return Err(CommandError::Rejected(OrderError::NotFound));
    }
    if let Some(expected) = parsed.expected_version
        && expected != order.version
    {
        return Err(CommandError::VersionConflict {
            expected,
            actual: order.version,
        });
    }
    decide(order, &parsed.command).map_err(CommandError::Rejected)
}
