//! The projector: consumes the events topic in the `order-query` group and
//! applies each batch to the read model in one PostgreSQL transaction,
//! together with the partitions' next offsets. Kafka offsets are committed
//! only afterwards, now and then, and only as a courtesy (lag monitoring): the
//! positions in the database are the source of truth. A partition starts at
//! its stored position from the moment it is assigned: the rebalance callback
//! hands librdkafka the positions the projector last loaded or committed, so
//! no message of a new assignment is fetched from anywhere else, and nothing
//! has to be sought before the fetcher runs. Where that start turns out stale
//! (another owner moved the position), the batch's fence rolls back and the
//! partition is sought, off the async runtime, to the stored position.
//!
//! Per event, the order's projected version decides: at or below it, a
//! duplicate (skipped); one above, applied with `domain::evolve` and followed
//! by any parked successors; further above, a gap: the event is parked in
//! `pending_event` and counted, and only that order waits for the missing
//! versions. Messages that cannot be applied go to `dead_letter`; the
//! partition keeps moving.
//!
//! Several instances are safe: each batch first moves every partition's
//! stored position from the value the batch started from (a fence). If
//! another owner moved it, the transaction is rolled back and the partition
//! is sought back to the stored position.
//!
//! Generations: the query servers' projector follows the live generation
//! (`Projector::following`); a rebuild's projector fills one generation while
//! it is being built (`Projector::building`). Each batch checks, in its own
//! transaction, that its generation is still in that state (see
//! `generation`); a follower that finds its generation retired moves to the
//! live one and resumes from the positions stored there. The same apply path
//! serves events read from the event store (`apply_stored`) and dead letters
//! replayed by an operator (`replay_dead_letter`).

mod consumer;
mod metrics;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::FutureExt;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
    message::OwnedMessage,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use consumer::{FreezeSwitch, ProjectorContext};
pub use metrics::ProjectorMetrics;

pub use crate::query::apply::BatchSummary;
use crate::{
    config::QuerySettings,
    kafka,
    query::{
        QueryError,
        apply::{self, Incoming, Mode, OrderStates, Outcome, Timings},
        cache::{self, ReadCache},
        generation::{GenerationState, LiveProjection, WriteCondition},
        liveness::Liveness,
        read_model::ReadModel,
        watch::ProjectionWatch,
    },
};
use consumer::{Rebalances, Start, StartOffsets, consumer_config, partitions_of};
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
const KEPT_STATES: usize = 16_384;

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
        let config = consumer_config(settings);
        let cache = ReadCache::new(cache::DEFAULT_CAPACITY);
        let consumer = ProjectorContext::consumer(&config, &topic, &rebalances, &starts, &cache)?;
        Ok(Self {
            liveness: Liveness::new(kafka::base_config(&settings.kafka), topic.clone()),
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

    fn note_rebalances(&mut self) {
        let mut changes = self.rebalances.lock().expect("rebalance lock");
        if !changes.revoked.is_empty() {
            // Another owner may write those partitions' orders from now on.
            self.states.clear();
        }
        for partition in changes.revoked.drain() {
            self.positions.remove(&partition);
            self.unpositioned.remove(&partition);
        }
        for (partition, start) in changes.assigned.drain() {
            match start {
                Start::Stored(next) => {
                    self.positions.insert(partition, next);
                    self.unpositioned.remove(&partition);
                }
                Start::Unknown => {
                    self.positions.remove(&partition);
                    self.unpositioned.insert(partition);
                }
            }
        }
    }

    /// Loads the stored positions of every partition, where newly assigned
    /// partitions start.
    async fn load_starts(&self) -> Result<(), QueryError> {
        let stored = self.read_model.all_positions(&self.topic).await?;
        *self.starts.lock().expect("start offsets lock") = Some(stored);
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

    /// Forgets what the projector knew of `partitions`; they are sought again.
    fn rewind(&mut self, partitions: impl IntoIterator<Item = i32>) {
        self.states.clear();
        self.cache.clear();
        for partition in partitions {
            self.positions.remove(&partition);
            self.unpositioned.insert(partition);
        }
    }

    /// Seeks partitions whose start is not known (after a fence, a switch or
    /// an assignment made before the positions were loaded) to their stored
    /// positions (the beginning when none). The seeks block, so they run off
    /// the async runtime.
    async fn position_partitions(&mut self) -> Result<(), QueryError> {
        if self.starts.lock().expect("start offsets lock").is_none() {
            self.load_starts().await?;
        }
        if self.unpositioned.is_empty() {
            return Ok(());
        }
        let assigned: HashSet<i32> = partitions_of(&self.consumer.assignment()?, &self.topic)
            .into_iter()
            .collect();
        self.unpositioned.retain(|p| assigned.contains(p));
        let partitions: Vec<i32> = self.unpositioned.iter().copied().collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let stored = self.read_model.positions(&self.topic, &partitions).await?;
        let targets: Vec<(i32, Option<i64>)> = partitions
            .into_iter()
            .map(|p| (p, stored.get(&p).copied()))
            .collect();
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let sought = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|(partition, next)| {
                    let offset = next.map_or(Offset::Beginning, Offset::Offset);
                    let result = consumer.seek(&topic, partition, offset, SEEK_TIMEOUT);
                    (partition, next, result)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|error| QueryError::Config(format!("seek task failed: {error}")))?;
        let mut starts = self.starts.lock().expect("start offsets lock");
        for (partition, next, result) in sought {
            if let (Some(known), Some(next)) = (starts.as_mut(), next) {
                known.insert(partition, next);
            }
            match result {
                Ok(()) => {
                    tracing::debug!(partition, ?next, "partition positioned");
                    self.unpositioned.remove(&partition);
                    self.positions.insert(partition, next);
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "seek to the stored position failed; retrying")
                }
            }
        }
        Ok(())
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

    /// Applies one batch in one transaction with its positions.
    async fn apply(&mut self, batch: Vec<OwnedMessage>) -> Result<StepOutcome, QueryError> {
        let mut summary = BatchSummary {
            messages: batch.len(),
            ..BatchSummary::default()
        };
        // Per partition: (position the batch starts from, next offset after it).
        let mut advances: BTreeMap<i32, (Option<i64>, i64)> = BTreeMap::new();
        let decoding = Instant::now();
        let mut items = Vec::with_capacity(batch.len());
        let mut lags = Vec::with_capacity(batch.len());
        for message in batch {
            let partition = message.partition();
            let Some(&stored) = self.positions.get(&partition) else {
                summary.deferred += 1;
                if !self.unpositioned.contains(&partition) {
                    tracing::debug!(partition, "message of an unpositioned partition deferred");
                    self.unpositioned.insert(partition);
                }
                continue;
            };
            let next = advances.get(&partition).map_or(stored, |a| Some(a.1));
            if next.is_some_and(|next| message.offset() < next) {
                summary.duplicates += 1;
                continue;
            }
            if next.is_some_and(|next| message.offset() > next) {
                // Offsets of one partition are consecutive: a message beyond
                // the next expected one means the fetch position is not where
                // the projector thinks. Nothing past the gap is applied; the
                // partition is sought back to its stored position.
                tracing::warn!(
                    partition,
                    offset = message.offset(),
                    ?next,
                    "message beyond the expected offset; seeking the partition again"
                );
                summary.deferred += 1;
                self.positions.remove(&partition);
                self.unpositioned.insert(partition);
                continue;
            }
            advances.entry(partition).or_insert((stored, 0)).1 = message.offset() + 1;
            let item = Incoming::from_message(&message);
            if let Incoming::Event { meta, .. } = &item {
                lags.push((
                    meta.occurred_at.timestamp_millis(),
                    message.timestamp().to_millis(),
                ));
            }
            items.push(item);
        }
        self.metrics.phase(Phase::Decode, decoding.elapsed());
        if advances.is_empty() {
            ProjectorMetrics::add(&self.metrics.duplicates_total, summary.duplicates);
            return Ok(StepOutcome::Applied(summary));
        }
        let partitions: Vec<i32> = advances.keys().copied().collect();
        let target = apply::Target {
            read_model: &self.read_model,
            condition: self.condition,
            topic: &self.topic,
            mode: Mode::Live,
            gaps_before: Some(self.metrics.gaps_total.load(Ordering::Relaxed)),
        };
        let mut timings = Timings::default();
        let begun: HashMap<Uuid, i32> = items
            .iter()
            .filter_map(|item| match item {
                Incoming::Event { meta, origin, .. } => {
                    Some((meta.order_id.as_uuid(), origin.partition().unwrap_or(-1)))
                }
                Incoming::Dead(_) => None,
            })
            .collect();
        self.cache.begin(&begun);
        let applied = apply::apply(
            &target,
            Some(&advances),
            &items,
            &mut self.states,
            &mut timings,
        )
        .await;
        self.metrics.phase(Phase::Load, timings.load);
        self.metrics.phase(Phase::Write, timings.write);
        self.metrics.phase(Phase::Commit, timings.commit);
        match applied {
            Ok(Outcome::Committed {
                counts,
                orders,
                changed,
            }) => {
                summary.add(counts);
                summary.orders = orders;
                let notifying = Instant::now();
                let versions: Vec<(Uuid, u64)> = changed
                    .iter()
                    .map(|view| (view.order_id, view.order.version))
                    .collect();
                let generation = self.condition.map_or(0, |c| c.generation);
                self.cache
                    .committed(generation, &begun, changed, chrono::Utc::now());
                if let Some(watch) = &self.announce {
                    watch.announce_versions(&versions);
                }
                self.metrics.phase(Phase::Notify, notifying.elapsed());
            }
            Ok(Outcome::Closed) => {
                self.cache.abandon(&begun);
                self.rewind(partitions);
                return self.generation_closed().await;
            }
            Ok(Outcome::Fenced) => {
                ProjectorMetrics::add(&self.metrics.fenced_total, 1);
                tracing::warn!(
                    ?partitions,
                    "another owner moved a partition's position: batch abandoned, seeking back"
                );
                self.rewind(partitions.iter().copied());
                return Ok(StepOutcome::Rewound { partitions });
            }
            Err(error) => {
                self.cache.abandon(&begun);
                self.rewind(partitions);
                return Err(error);
            }
        }
        if let Some(known) = self.starts.lock().expect("start offsets lock").as_mut() {
            for (&partition, &(_, next)) in &advances {
                known.insert(partition, next);
            }
        }
        for (&partition, &(_, next)) in &advances {
            self.positions.insert(partition, Some(next));
        }
        let m = &self.metrics;
        m.committed(items.len(), &lags, chrono::Utc::now().timestamp_millis());
        ProjectorMetrics::add(&m.batches_total, 1);
        ProjectorMetrics::add(&m.events_applied_total, summary.applied);
        ProjectorMetrics::add(&m.duplicates_total, summary.duplicates);
        ProjectorMetrics::add(&m.gaps_total, summary.parked);
        ProjectorMetrics::add(&m.dead_letters_total, summary.dead_lettered);
        self.commit_offsets_now_and_then()?;
        tracing::debug!(?summary, "batch committed");
        Ok(StepOutcome::Applied(summary))
    }

    /// Commits the positions to Kafka when the last commit is older than
    /// `OFFSET_COMMIT_INTERVAL`, asynchronously.
    fn commit_offsets_now_and_then(&mut self) -> Result<(), QueryError> {
        if self.offsets_committed.elapsed() < OFFSET_COMMIT_INTERVAL {
            return Ok(());
        }
        self.offsets_committed = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for (&partition, &next) in &self.positions {
            if let Some(next) = next {
                offsets.add_partition_offset(&self.topic, partition, Offset::Offset(next))?;
            }
        }
        if offsets.count() > 0
            && let Err(error) = self.consumer.commit(&offsets, CommitMode::Async)
        {
            tracing::debug!(%error, "offset commit failed; the stored positions stand");
        }
        Ok(())
    }

    /// The generation written is no longer in the state this projector writes
    /// it in: a follower moves to the live generation, a rebuild's projector stops.
    async fn generation_closed(&mut self) -> Result<StepOutcome, QueryError> {
        match &self.target {
            Target::Live(live) => {
                live.refresh().await?;
                let generation = live.generation();
                let read_model = live.read_model();
                self.retarget(generation, read_model);
                Ok(StepOutcome::Switched { generation })
            }
            Target::Building(generation) => Err(QueryError::GenerationClosed(*generation)),
            Target::Fixed => unreachable!("a fixed target has no write condition"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaSettings;

    #[test]
    fn the_consumer_is_configured_from_the_query_settings() {
        let mut settings = QuerySettings::new(
            "postgres://db/read",
            KafkaSettings::new("127.0.0.1:9092", "orders.events.v1"),
            "order-query",
        );
        settings.consumer.max_poll_interval_ms = 45_000;
        let config = consumer_config(&settings);
        assert_eq!(config.get("group.id"), Some("order-query"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("session.timeout.ms"), Some("45000"));
        assert_eq!(config.get("heartbeat.interval.ms"), Some("3000"));
        assert_eq!(
            config.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(config.get("max.poll.interval.ms"), Some("45000"));
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(config.get("debug"), None);
    }
}
