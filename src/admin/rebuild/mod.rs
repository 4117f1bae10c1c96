//! `rebuild`: builds a new generation of the projection beside the live one,
//! verifies it and switches every reader to it atomically.
//!
//! 1. Takes the rebuild lock (one rebuild at a time) and drops the schemas
//!    that earlier rebuilds retired.
//! 2. Resumes the `building` generation if there is one (its positions are in
//!    its schema), else registers generation N with schema `read_model_gN` and
//!    applies the read migrations there.
//! 3. `--from-store` only: captures the topic's end offsets, stores them as the
//!    generation's positions, then applies every stored event in position
//!    order, from one snapshot taken after the capture, in chunks (`bulk`).
//!    Every event below those offsets is in that snapshot; every later one is
//!    consumed from Kafka in step 4.
//! 4. Reads the topic from the stored positions (the beginning where none)
//!    with `assign()`, no consumer group, and applies it in chunks, each in one
//!    transaction with the positions it reached (`bulk`: the projector's
//!    rules, folded in memory, new rows written with `COPY`), until the
//!    positions reach end offsets captured less than a couple of seconds
//!    earlier.
//! 5. Verifies the new generation against the event store (`verify`, lag
//!    allowed); a generation with differences is marked failed, never live.
//! 6. Freezes the live generation (its row locked: its projectors' next
//!    batches wait), lets the new one reach the frozen positions (step 4's
//!    reader, to those positions), then in one
//!    transaction makes it live, retires the old one and notifies. Readers
//!    move on the notification, projectors at their next batch, resuming
//!    from the positions stored in the new schema. No read sees a partial
//!    generation or goes back in time, and nothing is written to the old one
//!    after the switch.
//!
//! Memory is bounded by the chunks: at most `CHUNK_EVENTS` events per chunk.
//! From the store, orders are dealt by id to `STORE_WRITERS` writers, each
//! with one chunk being filled, `CHUNKS_IN_FLIGHT` queued and one written.
//! From the topic, each partition has a writer of its own (one transaction at
//! a time per partition; an order's events all live in one partition), with
//! one chunk being filled, `CHUNKS_IN_FLIGHT` queued and one written per
//! partition. Add the folded state of the orders of the chunks being written.
//! Nothing is kept between chunks: each loads the orders it touches.
//!
//! This module orchestrates (steps 1, 2, 5 and 6); step 3 is `store`, step 4
//! `loader`, and `progress` the bar the CLI shows on a terminal.

mod loader;
mod progress;
mod store;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions},
    client::DefaultClientContext,
};
use serde::Serialize;

use crate::{
    admin::{
        AdminError, live_generation, read_pool,
        topic::{self, TopicOffsets},
        verify, write_pool,
    },
    config::{AdminSettings, KafkaSettings},
    kafka,
    query::{
        Generations, QueryError, ReadModel,
        apply::{self, Incoming, Mode, OrderStates, Outcome, Timings},
        generation::{
            Generation, GenerationSource, GenerationState, WriteCondition, try_session_lock,
        },
    },
};

use self::{loader::Loader, progress::Progress, store::seed_from_store};

/// Advisory lock (by name) that admits one rebuild at a time per read database.
pub const REBUILD_LOCK: &str = "orders.rebuild";
/// Caught up: the positions reached end offsets captured less than this long before.
const CAUGHT_UP_ROUND: Duration = Duration::from_secs(2);
/// Longest the live generation stays frozen while the new one catches up with it.
const FREEZE_BUDGET: Duration = Duration::from_secs(5);
/// Longest the freeze waits for the live projectors' batches in flight.
const FREEZE_LOCK_TIMEOUT_MS: u64 = 10_000;
/// Freezes tried before giving up (each after catching up again).
const SWITCH_ATTEMPTS: usize = 5;
/// Most events (or messages, of one partition) read and applied per transaction.
const CHUNK_EVENTS: usize = 10_000;
/// Writers of a rebuild from the store (orders dealt to them by id).
const STORE_WRITERS: usize = 3;
/// Chunks read ahead (per partition) while one is written.
const CHUNKS_IN_FLIGHT: usize = 2;
/// A chunk read from the topic is written once nothing arrived for this long.
const READ_IDLE: Duration = Duration::from_millis(50);
/// Consecutive failed rounds tolerated (transient broker or database trouble).
const STEP_FAILURES: usize = 20;

/// How `rebuild` runs.
#[derive(Debug, Clone, Default)]
pub struct RebuildOptions {
    /// Rebuild from the event store instead of the topic's beginning.
    pub from_store: bool,
    /// Drop the retired generations' schemas after the switch.
    pub drop_old: bool,
    /// Draw a progress bar on stdout.
    pub progress: bool,
}

/// What `rebuild` did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    /// The generation built, now live.
    pub generation: i32,
    /// Its schema.
    pub schema: String,
    /// The generation it replaced, now retired.
    pub previous_generation: i32,
    /// `topic` or `store`.
    pub source: String,
    /// Whether an interrupted rebuild was resumed.
    pub resumed: bool,
    /// Events applied from the event store.
    pub store_events: u64,
    /// Events applied from the topic.
    pub topic_events: u64,
    /// Seconds spent building (store and topic), before verification.
    pub build_seconds: f64,
    /// Of those, seconds loading rows (store and topic, indexes deferred).
    pub load_seconds: f64,
    /// Of those, seconds creating the deferred secondary indexes.
    pub index_seconds: f64,
    /// Seconds verifying against the event store.
    pub verify_seconds: f64,
    /// Seconds catching up with the frozen live generation and switching.
    pub switch_seconds: f64,
    /// Seconds in all.
    pub total_seconds: f64,
    /// Orders verified against the event store.
    pub verified_orders: u64,
    /// Events verified.
    pub verified_events: u64,
    /// Orders that were lagging during verification.
    pub lagging: usize,
    /// Schemas dropped (retired by an earlier rebuild, or with `--drop-old`).
    pub dropped: Vec<String>,
}

impl RebuildReport {
    /// Events applied in all.
    pub fn events(&self) -> u64 {
        self.store_events + self.topic_events
    }

    /// Events applied per second of building.
    pub fn events_per_second(&self) -> f64 {
        self.events() as f64 / self.build_seconds.max(0.001)
    }
}

/// Builds, verifies and switches to a new generation (see the module doc).
pub async fn rebuild(
    settings: &AdminSettings,
    options: RebuildOptions,
) -> Result<RebuildReport, AdminError> {
    let started = Instant::now();
    let read_url = settings
        .read_database_url
        .as_ref()
        .map(|url| url.expose().to_owned())
        .ok_or(AdminError::Missing("ORDERS_ADMIN_READ_DATABASE_URL"))?;
    let read = read_pool(settings).await?;
    let write = write_pool(settings).await?;
    let offsets = TopicOffsets::new(&settings.kafka)?;
    live_generation(&read).await?;
    let _lock = try_session_lock(&read_url, REBUILD_LOCK)
        .await?
        .ok_or(AdminError::RebuildRunning)?;
    let generations = Generations::new(read.clone());
    let live = generations.live().await?;
    let live_model = ReadModel::new(read.clone(), &live.schema)?;
    let source = if options.from_store {
        GenerationSource::Store
    } else {
        GenerationSource::Topic
    };

    // A later rebuild drops what the previous one retired.
    let mut dropped = generations.drop_retired().await?;
    let (generation, resumed) = match generations.building().await? {
        Some(building) if building.source == source => (building, true),
        Some(other) => {
            generations
                .fail(
                    other.generation,
                    &format!("abandoned: a rebuild from the {source} was started"),
                )
                .await?;
            if let Some(group) = &other.consumer_group {
                delete_group(&settings.kafka, group).await;
            }
            dropped.extend(generations.drop_retired().await?);
            let created = generations
                .create_building(source, &settings.consumer_group)
                .await?;
            (created, false)
        }
        None => {
            let created = generations
                .create_building(source, &settings.consumer_group)
                .await?;
            (created, false)
        }
    };
    tracing::info!(
        generation = generation.generation,
        schema = %generation.schema,
        %source,
        resumed,
        "rebuilding the projection"
    );
    let read_model = ReadModel::new(read.clone(), &generation.schema)?;
    read_model.migrate().await?;
    kafka::ensure_topic(&settings.kafka).await?;
    let progress = Progress::new(options.progress, generation.generation);
    let condition = WriteCondition {
        generation: generation.generation,
        state: GenerationState::Building,
    };

    let build_started = Instant::now();
    // Into an empty generation, rows load faster without the secondary
    // indexes; they are created again before verification (also when resuming).
    if read_model.defer_indexes().await? {
        tracing::info!("secondary indexes deferred until the generation is loaded");
    }
    let store_events = if source == GenerationSource::Store {
        seed_from_store(&write, &read_model, condition, &offsets, &progress).await?
    } else {
        0
    };
    let group = generation.consumer_group.clone();
    let reader_name = group.clone().unwrap_or_else(|| {
        format!(
            "{}-rebuild-g{}",
            settings.consumer_group, generation.generation
        )
    });
    let mut builder = Builder {
        loader: Loader::new(
            &settings.kafka,
            &reader_name,
            read_model.clone(),
            condition,
            offsets.clone(),
        )?,
        read_model: read_model.clone(),
        offsets: offsets.clone(),
        progress,
    };
    let mut timings = PhaseTimings::default();
    let built = async {
        builder.catch_up().await?;
        timings.load = build_started.elapsed().as_secs_f64();
        read_model.restore_indexes().await?;
        let build_seconds = build_started.elapsed().as_secs_f64();
        timings.index = build_seconds - timings.load;
        builder.progress.phase("verifying");
        let verifying = Instant::now();
        let verified =
            verify::verify_generation(&write, &read_model, generation.generation, &offsets, false)
                .await?;
        if !verified.is_clean() {
            for difference in verified.differences.iter().take(20) {
                tracing::error!(%difference, "rebuilt generation differs from the event store");
            }
            generations
                .fail(
                    generation.generation,
                    &format!(
                        "{} differences from the event store",
                        verified.differences.len()
                    ),
                )
                .await?;
            return Err(AdminError::RebuildUnverified {
                generation: generation.generation,
                differences: verified.differences.len(),
            });
        }
        timings.verify = verifying.elapsed().as_secs_f64();
        builder.progress.phase("switching");
        let switching = Instant::now();
        builder
            .switch(&generations, &live, &live_model, generation.generation)
            .await?;
        timings.switch = switching.elapsed().as_secs_f64();
        Ok::<_, AdminError>((build_seconds, verified))
    }
    .await;
    builder.progress.finish();
    let topic_events = builder.loader.applied;
    drop(builder);
    // A rebuild resumed from before bulk loading may have left a consumer group.
    if let Some(group) = &group {
        delete_group(&settings.kafka, group).await;
    }
    let (build_seconds, verified) = built?;
    if options.drop_old {
        dropped.extend(generations.drop_retired().await?);
    }
    let report = RebuildReport {
        generation: generation.generation,
        schema: generation.schema.clone(),
        previous_generation: live.generation,
        source: source.to_string(),
        resumed,
        store_events,
        topic_events,
        build_seconds,
        load_seconds: timings.load,
        index_seconds: timings.index,
        verify_seconds: timings.verify,
        switch_seconds: timings.switch,
        total_seconds: started.elapsed().as_secs_f64(),
        verified_orders: verified.orders,
        verified_events: verified.events,
        lagging: verified.lagging.len(),
        dropped,
    };
    tracing::info!(?report, "rebuild switched");
    Ok(report)
}

/// Seconds in each phase of a rebuild, for its report.
#[derive(Debug, Default)]
struct PhaseTimings {
    load: f64,
    index: f64,
    verify: f64,
    switch: f64,
}

/// The rebuild's topic reader and what it reports to.
struct Builder {
    loader: Loader,
    read_model: ReadModel,
    offsets: TopicOffsets,
    progress: Progress,
}

impl Builder {
    /// Steps until the positions reach end offsets captured at most
    /// `CAUGHT_UP_ROUND` before (chasing the end while it moves).
    async fn catch_up(&mut self) -> Result<(), AdminError> {
        self.progress.phase("topic");
        loop {
            let ends = self.offsets.end_offsets().await?;
            let round = Instant::now();
            self.step_until(&ends, None).await?;
            if round.elapsed() < CAUGHT_UP_ROUND {
                return Ok(());
            }
        }
    }

    /// Steps until the positions reach `target`; `false` if `deadline` came first.
    async fn step_until(
        &mut self,
        target: &BTreeMap<i32, i64>,
        deadline: Option<Instant>,
    ) -> Result<bool, AdminError> {
        let topic = self.offsets.topic().to_owned();
        let mut failures = 0;
        loop {
            let positions = self.read_model.all_positions(&topic).await?;
            self.progress.offsets(&positions, target);
            if topic::reached(&positions, target) {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            match self
                .loader
                .load(&positions, target, deadline, &self.progress)
                .await
            {
                Ok(()) => failures = 0,
                Err(error @ AdminError::Query(QueryError::GenerationClosed(_))) => {
                    return Err(error);
                }
                Err(error) if failures < STEP_FAILURES => {
                    failures += 1;
                    tracing::warn!(%error, "rebuild round failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Freezes the live generation, catches up with its positions, and switches.
    async fn switch(
        &mut self,
        generations: &Generations,
        live: &Generation,
        live_model: &ReadModel,
        building: i32,
    ) -> Result<(), AdminError> {
        let topic = self.offsets.topic().to_owned();
        for attempt in 1..=SWITCH_ATTEMPTS {
            let freeze = generations
                .freeze(live.generation, FREEZE_LOCK_TIMEOUT_MS)
                .await?;
            // Nothing moves these any more: every live batch has committed or waits.
            let frozen = live_model.all_positions(&topic).await;
            let ends = self.offsets.end_offsets().await;
            let (frozen, ends) = match (frozen, ends) {
                (Ok(frozen), Ok(ends)) => (frozen, ends),
                (Err(error), _) => {
                    freeze.release().await?;
                    return Err(error.into());
                }
                (_, Err(error)) => {
                    freeze.release().await?;
                    return Err(error);
                }
            };
            // A position past the end belongs to an earlier incarnation of the topic.
            let target: BTreeMap<i32, i64> = ends
                .iter()
                .map(|(&p, &end)| (p, frozen.get(&p).copied().unwrap_or(0).min(end)))
                .collect();
            match self
                .step_until(&target, Some(Instant::now() + FREEZE_BUDGET))
                .await
            {
                Ok(true) => {
                    freeze.switch(building).await?;
                    tracing::info!(
                        from = live.generation,
                        to = building,
                        "live projection generation switched"
                    );
                    return Ok(());
                }
                Ok(false) => {
                    freeze.release().await?;
                    tracing::info!(
                        attempt,
                        "not caught up with the frozen generation in time; retrying"
                    );
                    self.catch_up().await?;
                }
                Err(error) => {
                    freeze.release().await?;
                    return Err(error);
                }
            }
        }
        Err(AdminError::NotCaughtUp {
            waited: FREEZE_BUDGET * SWITCH_ATTEMPTS as u32,
            detail: format!(
                "generation {building} did not catch up with the live generation {} while it was frozen",
                live.generation
            ),
        })
    }
}

/// Orders whose state each rebuild writer keeps between its chunks.
const WRITER_KEPT_STATES: usize = 65_536;

/// Applies one chunk to the generation being built (bulk mode), fenced by
/// `advances` when it came from the topic.
async fn write_chunk(
    read_model: &ReadModel,
    condition: WriteCondition,
    topic: &str,
    advances: Option<&BTreeMap<i32, (Option<i64>, i64)>>,
    items: &[Incoming],
    states: &mut OrderStates,
) -> Result<Outcome, QueryError> {
    let target = apply::Target {
        read_model,
        condition: Some(condition),
        topic,
        mode: Mode::Bulk,
        gaps_before: None,
    };
    apply::apply(&target, advances, items, states, &mut Timings::default()).await
}

/// Deletes the rebuild's consumer group (best effort: it only holds courtesy offsets).
async fn delete_group(settings: &KafkaSettings, group: &str) {
    let deleted = async {
        let admin: AdminClient<DefaultClientContext> = kafka::base_config(settings)?.create()?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        admin.delete_groups(&[group], &options).await
    }
    .await;
    match deleted {
        Ok(results) => {
            for result in results {
                if let Err((group, code)) = result {
                    tracing::debug!(%group, ?code, "rebuild consumer group not deleted");
                }
            }
        }
        Err(error) => tracing::debug!(%error, "rebuild consumer group not deleted"),
    }
}

/// The machine-readable line the CLI prints last:
/// `rebuild: events=<n> orders=<n> seconds=<f> events_per_s=<f> load_s=<f>
/// index_s=<f> verify_s=<f> switch_s=<f>`, where `events` were applied (store
/// and topic), `orders` verified, `seconds` spent building (reading and
/// writing, before verification and the switch), and the `_s` figures the
/// seconds of each phase (loading and indexing make up `seconds`).
pub fn machine_line(report: &RebuildReport) -> String {
    format!(
        "rebuild: events={} orders={} seconds={:.3} events_per_s={:.0} \
         load_s={:.3} index_s={:.3} verify_s={:.3} switch_s={:.3}",
        report.events(),
        report.verified_orders,
        report.build_seconds,
        report.events_per_second(),
        report.load_seconds,
        report.index_seconds,
        report.verify_seconds,
        report.switch_seconds,
    )
}

/// The report line the CLI prints when done.
pub fn summary_line(report: &RebuildReport) -> String {
    format!(
        "generation {} ({}) is live, replacing {}: {} events ({} from the store, {} from the topic) \
         in {:.1} s, {:.0} events/s; verified {} orders and {} events{}{}",
        report.generation,
        report.schema,
        report.previous_generation,
        report.events(),
        report.store_events,
        report.topic_events,
        report.build_seconds,
        report.events_per_second(),
        report.verified_orders,
        report.verified_events,
        if report.resumed { "; resumed" } else { "" },
        if report.dropped.is_empty() {
            String::new()
        } else {
            format!("; dropped {}", report.dropped.join(", "))
        }
    )
}
