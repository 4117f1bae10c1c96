//! The saga's worker: a consumer of the events topic that starts and cancels
//! sagas, and an executor that makes the stored intents' calls, feeds their
//! answers back, and wakes sagas whose next attempt is due.
//!
//! The consumer reads every partition with `assign()` from the positions
//! stored with the sagas (the topic's start or end, by `StartAt`, where none
//! is stored): an event is applied in the transaction that moves its
//! position, and once per event id. Its order's facts (customer, lines,
//! total) are read from OrderQueries at the confirmed version.
//!
//! The executor makes a call only from a stored intent and stores its answer
//! in the transaction that deletes the intent. A crash between the two
//! leaves the intent: the call is made again, with the same key, and the
//! service answers it as the first time. One worker runs at a time (the
//! caller holds the leader lock), so no intent is called twice at once.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use rdkafka::{
    Message as _, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    message::BorrowedMessage,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    calls::Services,
    saga::{Call, Input, Now, OrderFacts, Saga, Step},
    store::{Applied, EventSource, Store, StoreError},
};
use crate::{
    auth::AuthedChannel,
    codec,
    config::KafkaSettings,
    domain::Event,
    kafka,
    proto::{self, order_queries_client::OrderQueriesClient},
};

/// Where a partition with no stored position is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartAt {
    /// Its first event: every order confirmed so far is fulfilled.
    Earliest,
    /// Its end: only orders confirmed from now on.
    Latest,
}

/// A point where the worker kills itself, for crash tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    /// After the call (`true`) or before it.
    pub after_call: bool,
    /// The step.
    pub step: Step,
}

impl std::str::FromStr for CrashPoint {
    type Err = String;

    /// `before-call:<step>` or `after-call:<step>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (when, step) = s
            .split_once(':')
            .ok_or("expected before-call:<step> or after-call:<step>")?;
        let after_call = match when {
            "before-call" => false,
            "after-call" => true,
            _ => return Err(format!("unknown crash point {when}")),
        };
        let step = Step::named(step).ok_or_else(|| format!("unknown step {step}"))?;
        Ok(Self { after_call, step })
    }
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Kafka failed for good.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The store failed for good.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The worker's parts.
#[derive(Clone)]
pub struct Worker {
    /// The saga tables.
    pub store: Store,
    /// The services the sagas call.
    pub services: Services,
    /// OrderQueries, for the facts of a confirmed order.
    pub queries: OrderQueriesClient<AuthedChannel>,
    /// The events topic and how to reach it.
    pub kafka: KafkaSettings,
    /// Where a partition with no stored position starts.
    pub start_at: StartAt,
    /// Calls in flight at most.
    pub max_calls: usize,
    /// Where to kill the process, in crash tests.
    pub crash: Option<CrashPoint>,
    /// Wakes the executor: new intents (the admin service's too).
    pub work: Arc<Notify>,
}

/// How long to wait before retrying after a failure of the store or a service.
const RETRY: Duration = Duration::from_millis(500);
/// How often due wake-ups and intents are looked for without a notification.
const TICK: Duration = Duration::from_millis(100);
/// How often the positions of events that concern no saga are stored.
const POSITION_FLUSH: Duration = Duration::from_secs(1);

fn now() -> Now {
    Now {
        at: Utc::now(),
        jitter: (Uuid::new_v4().as_u128() >> 64) as f64 / (u64::MAX as f64 + 1.0),
    }
}

impl Worker {
    /// Consumes and executes until `stop`.
    pub async fn run(self, stop: CancellationToken) -> Result<(), WorkerError> {
        let work = self.work.clone();
        let consuming = tokio::spawn(self.clone().consume(work.clone(), stop.clone()));
        let executing = self.execute(work, stop.clone()).await;
        stop.cancel();
        let consumed = consuming.await.unwrap_or(Ok(()));
        executing.and(consumed)
    }

    async fn consume(self, work: Arc<Notify>, stop: CancellationToken) -> Result<(), WorkerError> {
        let consumer: StreamConsumer = kafka::base_config(&self.kafka)?
            .set("group.id", "order-fulfilment")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let topic = self.kafka.topic.clone();
        let partitions = loop {
            let reader = kafka::partition_reader(&self.kafka, "order-fulfilment-metadata")?;
            let name = topic.clone();
            let found = tokio::task::spawn_blocking(move || {
                kafka::watermarks(&reader, &name, Duration::from_secs(5))
            })
            .await
            .expect("metadata task");
            match found {
                Ok(found) if !found.is_empty() => break found,
                Ok(_) => tracing::warn!(%topic, "the events topic has no partitions yet"),
                Err(error) => tracing::warn!(%error, "cannot read the events topic's metadata"),
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(RETRY) => {}
            }
        };
        let stored = self
            .with_retry(&stop, || self.store.positions(&topic))
            .await;
        let Some(stored) = stored else {
            return Ok(());
        };
        // A partition with no stored position starts at its first or its
        // next event, stored at once: a restart resumes there, missing
        // nothing published while the process was down.
        let mut assignment = TopicPartitionList::new();
        for (&partition, &(low, high)) in &partitions {
            let next = match (stored.get(&partition), self.start_at) {
                (Some(&next), _) => next,
                (None, StartAt::Earliest) => low,
                (None, StartAt::Latest) => high,
            };
            if !stored.contains_key(&partition)
                && self
                    .with_retry(&stop, || self.store.advance(&topic, partition, next))
                    .await
                    .is_none()
            {
                return Ok(());
            }
            assignment.add_partition_offset(&topic, partition, Offset::Offset(next))?;
        }
        consumer.assign(&assignment)?;
        tracing::info!(
            partitions = partitions.len(),
            "fulfilment consumer assigned"
        );

        // Positions past events that concern no saga, stored now and then.
        let mut skipped: BTreeMap<i32, i64> = BTreeMap::new();
        let mut flush = tokio::time::interval(POSITION_FLUSH);
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                _ = flush.tick() => {
                    self.flush(&topic, &mut skipped).await;
                    continue;
                }
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "fulfilment consumer error");
                    continue;
                }
            };
            let applied = self.on_message(&topic, &message, &stop).await;
            match applied {
                Some(true) => work.notify_one(),
                Some(false) => {
                    skipped.insert(message.partition(), message.offset() + 1);
                }
                None => break,
            }
        }
        self.flush(&topic, &mut skipped).await;
        Ok(())
    }

    async fn flush(&self, topic: &str, skipped: &mut BTreeMap<i32, i64>) {
        for (partition, next) in std::mem::take(skipped) {
            if let Err(error) = self.store.advance(topic, partition, next).await {
                tracing::warn!(%error, "cannot store the fulfilment consumer's position");
            }
        }
    }

    /// Applies one message: `Some(true)` when it changed a saga, `Some(false)`
    /// when it concerns none, `None` when stopped.
    async fn on_message(
        &self,
        topic: &str,
        message: &BorrowedMessage<'_>,
        stop: &CancellationToken,
    ) -> Option<bool> {
        let Some((meta, event)) = message.payload().and_then(|p| match codec::decode_event(p) {
            Ok(decoded) => Some(decoded),
            Err(error) => {
                tracing::warn!(%error, offset = message.offset(), "an unreadable event; skipped");
                None
            }
        }) else {
            return Some(false);
        };
        let order_id = meta.order_id.as_uuid();
        let input = match event {
            Event::OrderConfirmed => {
                Input::Confirmed(self.facts(order_id, meta.version, stop).await?)
            }
            Event::OrderCancelled { .. } => Input::OrderCancelled,
            _ => return Some(false),
        };
        let source = EventSource {
            event_id: meta.event_id,
            topic,
            partition: message.partition(),
            offset: message.offset(),
        };
        let applied = self
            .with_retry(stop, || {
                self.store.apply_event(source, order_id, &input, now())
            })
            .await?;
        if let Applied::Refused(refusal) = &applied {
            tracing::debug!(%order_id, %refusal, "event changes no saga");
        }
        Some(matches!(applied, Applied::Changed(_)))
    }

    /// The facts of `order_id` at `version` (at least), from OrderQueries.
    async fn facts(
        &self,
        order_id: Uuid,
        version: u64,
        stop: &CancellationToken,
    ) -> Option<OrderFacts> {
        let mut attempt = 0u32;
        loop {
            let mut request = tonic::Request::new(proto::GetOrderRequest {
                order_id: order_id.to_string(),
                min_version: Some(version),
                ..Default::default()
            });
            request.set_timeout(self.services.timeout);
            match self.queries.clone().get_order(request).await {
                Ok(reply) => {
                    if let Some(order) = reply.into_inner().order {
                        return Some(OrderFacts {
                            order_id,
                            customer_id: order.customer_id,
                            lines: order
                                .lines
                                .into_iter()
                                .map(|l| (l.product_id, l.quantity))
                                .collect(),
                            amount_minor: order.total_minor,
                            currency_code: order.currency_code,
                        });
                    }
                }
                Err(status) => {
                    tracing::warn!(%order_id, code = ?status.code(), message = status.message(),
                        "cannot read a confirmed order's facts yet; retrying");
                }
            }
            attempt += 1;
            let delay = RETRY.saturating_mul(attempt.min(10));
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Runs `op` until it succeeds or `stop`; failures are logged and retried.
    async fn with_retry<T, F, Fut>(&self, stop: &CancellationToken, op: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        loop {
            match op().await {
                Ok(value) => return Some(value),
                Err(error) => tracing::warn!(%error, "fulfilment store failed; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    async fn execute(&self, work: Arc<Notify>, stop: CancellationToken) -> Result<(), WorkerError> {
        let busy: Arc<Mutex<HashSet<(Uuid, Call)>>> = Arc::default();
        let mut calls = tokio::task::JoinSet::new();
        loop {
            if stop.is_cancelled() {
                break;
            }
            // Wake-ups that are due.
            match self.store.due(Utc::now(), 256).await {
                Ok(due) => {
                    for order_id in due {
                        if let Err(error) = self.store.input(order_id, &Input::Wake, now()).await {
                            tracing::warn!(%error, %order_id, "cannot wake a saga");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot read due sagas"),
            }
            // Intents not being called yet.
            let in_flight = busy.lock().expect("busy lock").len();
            if in_flight < self.max_calls {
                match self
                    .store
                    .intents((self.max_calls + in_flight) as i64)
                    .await
                {
                    Ok(intents) => {
                        for intent in intents {
                            let key = (intent.saga.order.order_id, intent.call);
                            if !busy.lock().expect("busy lock").insert(key) {
                                continue;
                            }
                            let (worker, claims, work) = (self.clone(), busy.clone(), work.clone());
                            let stop = stop.clone();
                            calls.spawn(async move {
                                worker.make(intent.call, intent.saga, &claims, &stop).await;
                                work.notify_one();
                            });
                            if busy.lock().expect("busy lock").len() >= self.max_calls {
                                break;
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot read intents"),
                }
            }
            while calls.try_join_next().is_some() {}
            tokio::select! {
                () = stop.cancelled() => break,
                () = work.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
        calls.abort_all();
        Ok(())
    }

    /// Makes `call` for `saga` (claimed in `busy`) and stores its answer;
    /// then makes the call that answer decided, if it claims it first (the
    /// executor may have read it already), and so on: a saga's steps follow
    /// one another without a round through the executor.
    async fn make(
        &self,
        mut call: Call,
        mut saga: Saga,
        busy: &Mutex<HashSet<(Uuid, Call)>>,
        stop: &CancellationToken,
    ) {
        let order_id = saga.order.order_id;
        loop {
            self.crash_at(false, call.step);
            let outcome = self.services.call(call.step, &saga).await;
            self.crash_at(true, call.step);
            let applied = self
                .with_retry(stop, || {
                    self.store.answer(order_id, call, outcome.clone(), now())
                })
                .await;
            tracing::debug!(%order_id, step = call.step.name(), attempt = call.attempt, ?outcome, ?applied, "call answered");
            busy.lock().expect("busy lock").remove(&(order_id, call));
            let Some(Applied::Changed(decision)) = applied else {
                return;
            };
            let Some(&next) = decision.calls.first() else {
                return;
            };
            if !busy.lock().expect("busy lock").insert((order_id, next)) {
                return;
            }
            (call, saga) = (next, decision.saga);
        }
    }

    fn crash_at(&self, after_call: bool, step: Step) {
        if self.crash == Some(CrashPoint { after_call, step }) {
            tracing::error!(
                step = step.name(),
                after_call,
                "crash point reached: killing the process"
            );
            std::process::abort();
        }
    }
}
