//! One batch of the projector: messages checked against the partitions'
//! positions, decoded, applied through `apply` with the read cache and the
//! waiters told, and the metrics of each phase recorded. Each batch is a
//! span that continues the trace of its first event's command (from the
//! Kafka `traceparent` header) and links the next ones.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use rdkafka::{
    Message,
    message::{Headers, OwnedMessage},
};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{BatchSummary, Projector, ProjectorMetrics, StepOutcome, Target, metrics::Phase};
use crate::{
    query::{
        QueryError,
        announce::Announced,
        apply::{self, Incoming, Mode, Outcome, Timings},
    },
    telemetry,
};

/// The `traceparent` header of a message, if it has a readable one.
fn traceparent(message: &OwnedMessage) -> Option<&str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == "traceparent")
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// The span of one batch: it continues the first event's trace and links
/// the next distinct ones.
fn batch_span(batch: &[OwnedMessage]) -> tracing::Span {
    let span = tracing::info_span!(
        "projector.batch",
        otel.kind = "consumer",
        messages = batch.len()
    );
    telemetry::follow(&span, batch.iter().filter_map(traceparent));
    span
}

impl Projector {
    /// Applies one batch in one transaction with its positions.
    pub(super) async fn apply(
        &mut self,
        batch: Vec<OwnedMessage>,
    ) -> Result<StepOutcome, QueryError> {
        let span = batch_span(&batch);
        self.apply_batch(batch).instrument(span).await
    }

    async fn apply_batch(&mut self, batch: Vec<OwnedMessage>) -> Result<StepOutcome, QueryError> {
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
            gaps_before: Some(self.metrics.gaps_total.get()),
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
                let announced: Vec<Announced> = changed
                    .iter()
                    .flat_map(|view| {
                        Announced::change(
                            view.order_id,
                            view.order.version,
                            view.order.customer_id.as_ref(),
                        )
                    })
                    .collect();
                if let Some(delay) = self.cache_fill_delay {
                    tokio::time::sleep(delay).await;
                }
                let generation = self.condition.map_or(0, |c| c.generation);
                self.cache
                    .committed(generation, &begun, changed, chrono::Utc::now());
                if let Some(watch) = &self.announce {
                    watch.announce_changes(&announced);
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

    /// The generation written is no longer in the state this projector writes
    /// it in: a follower moves to the live generation, a rebuild's projector stops.
    pub(super) async fn generation_closed(&mut self) -> Result<StepOutcome, QueryError> {
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
