//! The projector: consumes the events topic in the `order-query` group and
//! applies each batch to the read model in one statement (`apply_batch`, its
//! own transaction), together with the partitions' next offsets. Kafka
//! offsets are committed only afterwards, now and then, and only as a
//! courtesy (lag monitoring): the positions in the database are the source of
//! truth. A partition starts at its stored position from the moment it is
//! assigned: the rebalance callback (`consumer`) hands librdkafka the
//! positions the projector last loaded or committed, so no message of a new
//! assignment is fetched from anywhere else, and nothing has to be sought
//! before the fetcher runs. Where that start turns out stale (another owner
//! moved the position), the batch's fence rolls back and the partition is
//! sought, off the async runtime, to the stored position (`positions`).
//!
//! A batch (`batch`) goes through the one apply path (`query::apply`): per
//! event, the order's projected version decides: at or below it, a duplicate
//! (skipped); one above, applied and followed by any parked successors;
//! further above, a gap (parked, and only that order waits). Messages that
//! cannot be applied go to `dead_letter`; the partition keeps moving. The
//! states of recently written orders are kept, so a batch loads only the
//! orders it does not know. After each commit the read cache holds the new
//! views and this process's waiters are woken (`query::cache`).
//!
//! Several instances are safe: each batch first moves every partition's
//! stored position from the value the batch started from (a fence). If
//! another owner moved it, the write is rolled back and the partition is
//! sought back to the stored position.
//!
//! Generations: the query servers' projector follows the live generation
//! (`Projector::following`); a rebuild's projector fills one generation while
//! it is being built (`Projector::building`). Each batch checks, in its own
//! transaction, that its generation is still in that state (see
//! `generation`); a follower that finds its generation retired moves to the
//! live one and resumes from the positions stored there. Each batch's phase
//! times and lags are recorded (`metrics`).

mod batch;
mod consumer;
mod metrics;
mod positions;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::FutureExt;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
    message::OwnedMessage,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use consumer::{FreezeSwitch, ProjectorContext};
pub use metrics::ProjectorMetrics;

pub use crate::query::apply::BatchSummary;
use crate::{
    config::QuerySettings,
    kafka,
    query::{
        QueryError,
        apply::OrderStates,
        cache::{self, ReadCache},
        generation::{GenerationState, LiveProjection, WriteCondition},
        liveness::Liveness,
        read_model::ReadModel,
        watch::ProjectionWatch,
    },
};
use consumer::{Rebalances, StartOffsets, consumer_config};
use metrics::Phase;

/// Most messages applied in one transaction.
const MAX_BATCH: usize = 1_000;
/// Longest a step waits for the first message of a batch.
const POLL_WAIT: Duration = Duration::from_millis(500);
/// Longest a seek to a stored position may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the stored positions are also committed to Kafka (a courtesy for
/// lag monitoring). Rare on purpose: the group coordinator answers a
/// connection's requests in order, and an offset commit after every batch
/// queues the consumer's heartbeats behind it on a saturated machine.
const OFFSET_COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Orders whose state the projector keeps between batches (about 300 bytes each).
const KEPT_STATES: usize = 8_192;

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// No message arrived within the wait.
    Idle,
    /// A batch was consumed and, where it held anything new, committed.
    Applied(BatchSummary),
    /// Another owner had moved these partitions' positions: nothing was
    /// written, and they were sought back to their stored positions.
    Rewound {
        /// The partitions of the abandoned batch.
        partitions: Vec<i32>,
    },
    /// The live generation changed: nothing was written, and every assigned
    /// partition is sought to its position stored in the new generation.
    Switched {
        /// The generation now written.
        generation: i32,
    },
}

/// Which generation a projector writes.
enum Target {
    /// The given read model, whatever the control table says (tests, tools).
    Fixed,
    /// The live generation, followed across switches.
    Live(LiveProjection),
    /// A generation while it is being built; its writes stop once it is not.
    Building(i32),
}

/// Projects the events topic into the read model, one batch per `step`.
pub struct Projector {
    consumer: Arc<StreamConsumer<ProjectorContext>>,
    /// Whether the consumer has subscribed (on the first step, once the start
    /// offsets are loaded).
    subscribed: bool,
    starts: StartOffsets,
    read_model: ReadModel,
    target: Target,
    /// The condition every batch's transaction checks (none for `Target::Fixed`).
    condition: Option<WriteCondition>,
    topic: String,
    rebalances: Arc<Mutex<Rebalances>>,
    /// Positioned partitions and their next offset (`None`: nothing stored, from the start).
    positions: HashMap<i32, Option<i64>>,
    /// Assigned partitions still to be sought to their stored positions.
    unpositioned: BTreeSet<i32>,
    /// The pool the projector writes through, when it is not the read model's own.
    write_pool: Option<PgPool>,
    metrics: Arc<ProjectorMetrics>,
    /// When the positions were last committed to Kafka.
    offsets_committed: Instant,
    /// A test hook: while set, `run` does not step.
    frozen: FreezeSwitch,
    /// The consumer's configuration, for a replacement.
    config: ClientConfig,
    liveness: Liveness,
    /// The states of recently written orders, so batches need no load for them.
    states: OrderStates,
    /// Committed views of the owned partitions' orders, for readers.
    cache: ReadCache,
    /// How long the cache may answer after a step: half the session timeout,
    /// so it stops before another member can own this process's partitions.
    lease: Duration,
    /// Read-your-writes waiters of this process, woken at each commit.
    announce: Option<ProjectionWatch>,
    /// Test hook: a pause between a commit and filling the read cache.
    cache_fill_delay: Option<Duration>,
}

impl Projector {
    /// A consumer of `settings.kafka.topic` in `settings.consumer_group`, writing
    /// to `read_model` whatever its generation's state.
    pub fn new(settings: &QuerySettings, read_model: ReadModel) -> Result<Self, QueryError> {
        Self::with_target(settings, read_model, Target::Fixed, None)
    }

    /// A projector of the query servers: writes the live generation and follows
    /// it when a rebuild switches.
    pub fn following(settings: &QuerySettings, live: LiveProjection) -> Result<Self, QueryError> {
        let condition = WriteCondition {
            generation: live.generation(),
            state: GenerationState::Live,
        };
        Self::with_target(
            settings,
            live.read_model(),
            Target::Live(live),
            Some(condition),
        )
    }

    /// A rebuild's projector: writes `read_model`, generation `generation`, as
    /// long as it is being built.
    pub fn building(
        settings: &QuerySettings,
        read_model: ReadModel,
        generation: i32,
    ) -> Result<Self, QueryError> {
        let condition = WriteCondition {
            generation,
            state: GenerationState::Building,
        };
        Self::with_target(
            settings,
            read_model,
            Target::Building(generation),
            Some(condition),
        )
    }

    fn with_target(
        settings: &QuerySettings,
        read_model: ReadModel,
        target: Target,
        condition: Option<WriteCondition>,
    ) -> Result<Self, QueryError> {
        let topic = settings.kafka.topic.clone();
        let rebalances = Arc::new(Mutex::new(Rebalances::default()));
        let starts = StartOffsets::default();
        let config = consumer_config(settings)?;
        let cache = ReadCache::new(cache::DEFAULT_CAPACITY);
        let consumer = ProjectorContext::consumer(&config, &topic, &rebalances, &starts, &cache)?;
        Ok(Self {
            liveness: Liveness::new(kafka::base_config(&settings.kafka)?, topic.clone()),
            config,
            consumer: Arc::new(consumer),
            subscribed: false,
            starts,
            read_model,
            target,
            condition,
            topic,
            rebalances,
            positions: HashMap::new(),
            unpositioned: BTreeSet::new(),
            write_pool: None,
            metrics: Arc::default(),
            offsets_committed: Instant::now(),
            frozen: FreezeSwitch::default(),
            states: OrderStates::new(KEPT_STATES),
            cache,
            lease: Duration::from_millis(u64::from(settings.consumer.session_timeout_ms) / 2),
            announce: None,
            cache_fill_delay: settings
                .fault_cache_fill_delay_ms
                .map(Duration::from_millis),
        })
    }

    /// The read cache this projector fills (share it with the readers).
    pub fn read_cache(&self) -> ReadCache {
        self.cache.clone()
    }

    /// Wakes `watch`'s waiters at each commit, without waiting for the NOTIFY.
    pub fn announcing_to(mut self, watch: ProjectionWatch) -> Self {
        self.announce = Some(watch);
        self
    }

    /// A switch that freezes `run` while it is on (tests of the stall watchdog).
    pub fn freeze_switch(&self) -> FreezeSwitch {
        self.frozen.clone()
    }

    /// Writes through `pool` instead of the read model's pool, in this
    /// generation and in every one it follows to (for instance a pool whose
    /// sessions commit with `synchronous_commit=off`).
    pub fn with_write_pool(mut self, pool: PgPool) -> Self {
        self.write_pool = Some(pool);
        self.read_model = self.on_write_pool(self.read_model.clone());
        self
    }

    /// `read_model` on the write pool, if there is one.
    fn on_write_pool(&self, read_model: ReadModel) -> ReadModel {
        match &self.write_pool {
            Some(pool) => ReadModel::new(pool.clone(), read_model.schema())
                .expect("the schema of an existing read model is valid"),
            None => read_model,
        }
    }

    /// The projector's counters.
    pub fn metrics(&self) -> Arc<ProjectorMetrics> {
        self.metrics.clone()
    }

    /// The read model this projector writes now.
    pub fn read_model(&self) -> &ReadModel {
        &self.read_model
    }

    /// Polls one batch (waiting at most 500 ms for its first message), applies it
    /// and commits it with the positions, then commits the Kafka offsets.
    pub async fn step(&mut self) -> Result<StepOutcome, QueryError> {
        self.step_until(&CancellationToken::new()).await
    }

    /// Steps until `stop`, finishing the batch in hand, then leaves the group.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            if self.frozen.requested.load(Ordering::Relaxed) {
                self.frozen.held.store(true, Ordering::Relaxed);
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            self.frozen.held.store(false, Ordering::Relaxed);
            match self.step_until(&stop).await {
                Ok(_) => {
                    self.cache.renew(self.lease);
                    backoff = Duration::from_millis(100);
                }
                Err(error) => {
                    tracing::error!(%error, "projector step failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.close().await;
    }

    /// Commits the Kafka offsets of the stored positions and leaves the group.
    pub async fn close(self) {
        let Self {
            consumer,
            positions,
            topic,
            ..
        } = self;
        let left = tokio::task::spawn_blocking(move || {
            let consumer = Arc::try_unwrap(consumer).ok();
            let mut list = TopicPartitionList::new();
            for (&partition, &next) in &positions {
                if let Some(next) = next {
                    let _ = list.add_partition_offset(&topic, partition, Offset::Offset(next));
                }
            }
            let Some(consumer) = consumer else {
                return; // a seek still holds it; dropping the last reference leaves the group
            };
            if list.count() > 0
                && let Err(error) = consumer.commit(&list, CommitMode::Sync)
            {
                tracing::debug!(%error, "final offset commit failed");
            }
            consumer.unsubscribe();
            // Dropping the consumer closes it, which leaves the group.
            drop(consumer);
        })
        .await;
        if let Err(error) = left {
            tracing::warn!(%error, "closing the consumer failed");
        }
        tracing::info!("projector stopped");
    }

    /// One step whose wait for the first message ends early on `stop`.
    async fn step_until(&mut self, stop: &CancellationToken) -> Result<StepOutcome, QueryError> {
        if let Target::Live(live) = &self.target
            && Some(live.generation()) != self.condition.map(|c| c.generation)
        {
            // This process already switched (NOTIFY): follow before polling.
            let generation = live.generation();
            self.retarget(generation, live.read_model());
            return Ok(StepOutcome::Switched { generation });
        }
        if !self.subscribed {
            self.load_starts().await?;
            self.consumer.subscribe(&[&self.topic])?;
            self.subscribed = true;
        }
        self.note_rebalances();
        self.position_partitions().await?;
        let polling = Instant::now();
        let batch = self.poll(stop).await?;
        if batch.is_empty() {
            if self.liveness.is_wedged(&self.consumer).await {
                self.replace_consumer()?;
            }
            return Ok(StepOutcome::Idle);
        }
        // A rebalance served during the poll makes its partitions' messages stale.
        self.note_rebalances();
        self.metrics.phase(Phase::Fetch, polling.elapsed());
        self.apply(batch).await
    }

    /// Replaces a wedged consumer with a new one, which joins the group from
    /// the stored positions on the next step.
    fn replace_consumer(&mut self) -> Result<(), QueryError> {
        tracing::error!(
            "the consumer has had no broker for a while although the broker answers others; \
             replacing it"
        );
        let consumer = ProjectorContext::consumer(
            &self.config,
            &self.topic,
            &self.rebalances,
            &self.starts,
            &self.cache,
        )?;
        let wedged = std::mem::replace(&mut self.consumer, Arc::new(consumer));
        // Closing it may wait for the group it cannot reach: off the runtime.
        tokio::task::spawn_blocking(move || drop(wedged));
        *self.rebalances.lock().expect("rebalance lock") = Rebalances::default();
        self.positions.clear();
        self.unpositioned.clear();
        self.states.clear();
        self.cache.clear();
        self.subscribed = false;
        self.liveness.reset();
        Ok(())
    }

    /// Writes `read_model` (generation `generation`) from now on: every assigned
    /// partition is sought to its position stored there.
    fn retarget(&mut self, generation: i32, read_model: ReadModel) {
        tracing::info!(
            generation,
            schema = %read_model.schema(),
            "projector writes the new live generation"
        );
        self.read_model = self.on_write_pool(read_model);
        if let Some(condition) = &mut self.condition {
            condition.generation = generation;
        }
        // The new generation's positions are loaded before the next seek.
        *self.starts.lock().expect("start offsets lock") = None;
        let positioned: Vec<i32> = self.positions.keys().copied().collect();
        self.rewind(positioned);
    }

    /// Up to `MAX_BATCH` messages: waits for the first, then takes what is ready.
    ///
    /// Consumer errors that librdkafka recovers from by itself (a broker
    /// down, a failed reconnect) are logged and skipped, not returned: it
    /// queues one per failed connection attempt, on the same queue as the
    /// group's rebalance events, so backing off per error after an outage
    /// would leave a new assignment waiting behind minutes of them.
    async fn poll(&self, stop: &CancellationToken) -> Result<Vec<OwnedMessage>, QueryError> {
        let deadline = tokio::time::Instant::now() + POLL_WAIT;
        let first = loop {
            let received = tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(vec![]),
                received = tokio::time::timeout_at(deadline, self.consumer.recv()) => received,
            };
            match received {
                Err(_elapsed) => return Ok(vec![]),
                Ok(Ok(message)) => break message.detach(),
                Ok(Err(KafkaError::MessageConsumption(code))) => {
                    tracing::debug!(?code, "consumer error; librdkafka retries by itself");
                }
                Ok(Err(error)) => return Err(error.into()),
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    break;
                }
                None => break,
            }
        }
        Ok(batch)
    }
}
