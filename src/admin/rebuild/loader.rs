//! Step 4 of a rebuild: the topic read from the stored positions with
//! `assign()` (no consumer group), a writer per partition applying its chunks.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};
use tokio::sync::mpsc;

use super::{
    CHUNK_EVENTS, CHUNKS_IN_FLIGHT, READ_IDLE, WRITER_KEPT_STATES, progress::Progress, write_chunk,
};
use crate::{
    admin::{AdminError, topic::TopicOffsets},
    config::KafkaSettings,
    kafka,
    query::{
        QueryError, ReadModel,
        apply::{Incoming, OrderStates, Outcome},
        generation::WriteCondition,
    },
};

/// Reads the topic from stored positions with `assign()` and applies it in chunks.
pub(super) struct Loader {
    consumer: Arc<BaseConsumer>,
    read_model: ReadModel,
    condition: WriteCondition,
    topic: String,
    /// Events applied so far.
    pub(super) applied: u64,
}

/// One chunk read from the topic: its items and each partition's move.
struct TopicChunk {
    items: Vec<Incoming>,
    advances: BTreeMap<i32, (Option<i64>, i64)>,
}

impl Loader {
    pub(super) fn new(
        settings: &KafkaSettings,
        group: &str,
        read_model: ReadModel,
        condition: WriteCondition,
        offsets: TopicOffsets,
    ) -> Result<Self, AdminError> {
        Ok(Self {
            consumer: Arc::new(kafka::partition_reader(settings, group)?),
            read_model,
            condition,
            topic: offsets.topic().to_owned(),
            applied: 0,
        })
    }

    /// Reads every partition from `positions` (the beginning where none) up to
    /// `target` (or the partition's end, or `deadline`) and applies what it
    /// read, a chunk per transaction.
    pub(super) async fn load(
        &mut self,
        positions: &HashMap<i32, i64>,
        target: &BTreeMap<i32, i64>,
        deadline: Option<Instant>,
        progress: &Progress,
    ) -> Result<(), AdminError> {
        let starts: BTreeMap<i32, Option<i64>> = target
            .iter()
            .filter(|&(p, &end)| positions.get(p).is_none_or(|&at| at < end))
            .map(|(&p, _)| (p, positions.get(&p).copied()))
            .collect();
        if starts.is_empty() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        for (&partition, &start) in &starts {
            assignment.add_partition_offset(
                &self.topic,
                partition,
                start.map_or(Offset::Beginning, Offset::Offset),
            )?;
        }
        self.consumer.assign(&assignment)?;
        // One writer per partition: an order's events all live in its key's
        // partition, so partitions are written side by side, each in order.
        let mut senders = BTreeMap::new();
        let mut receivers = vec![];
        for &partition in starts.keys() {
            let (sender, receiver) = mpsc::channel::<TopicChunk>(CHUNKS_IN_FLIGHT);
            senders.insert(partition, sender);
            receivers.push(receiver);
        }
        let reader = tokio::task::spawn_blocking({
            let (consumer, target) = (self.consumer.clone(), target.clone());
            move || read_partitions(&consumer, starts, &target, deadline, &senders)
        });
        let reached = std::sync::Mutex::new(positions.clone());
        let (read_model, condition, topic) = (&self.read_model, self.condition, &self.topic);
        let written = futures::future::try_join_all(receivers.iter_mut().map(|received| async {
            let mut applied = 0;
            let mut states = OrderStates::new(WRITER_KEPT_STATES);
            while let Some(chunk) = received.recv().await {
                let outcome = write_chunk(
                    read_model,
                    condition,
                    topic,
                    Some(&chunk.advances),
                    &chunk.items,
                    &mut states,
                )
                .await?;
                match outcome {
                    Outcome::Committed { counts, .. } => applied += counts.applied,
                    Outcome::Closed => {
                        return Err(QueryError::GenerationClosed(condition.generation).into());
                    }
                    Outcome::Fenced => {
                        return Err(AdminError::Query(QueryError::Conflict(
                            "another writer moved the rebuilt generation's positions".into(),
                        )));
                    }
                }
                let mut reached = reached.lock().expect("progress lock");
                for (&p, &(_, next)) in &chunk.advances {
                    reached.insert(p, next);
                }
                progress.offsets(&reached, target);
            }
            Ok(applied)
        }))
        .await
        .map(|applied| self.applied += applied.iter().sum::<u64>());
        drop(receivers);
        let reading = reader
            .await
            .map_err(|e| AdminError::Invalid(format!("topic reader failed: {e}")))?;
        // Nothing more is read until the next round assigns again.
        self.consumer.unassign()?;
        written?;
        reading
    }
}

/// Polls the assigned partitions from `starts` until each reaches `target`
/// (or its end, or `deadline` passes), sending each partition's chunks (of
/// at most `CHUNK_EVENTS`) to its writer.
fn read_partitions(
    consumer: &BaseConsumer,
    starts: BTreeMap<i32, Option<i64>>,
    target: &BTreeMap<i32, i64>,
    deadline: Option<Instant>,
    writers: &BTreeMap<i32, mpsc::Sender<TopicChunk>>,
) -> Result<(), AdminError> {
    /// One partition being read: where its next chunk starts, the next offset
    /// read, the chunk in hand, and whether it is done.
    struct Reading {
        from: Option<i64>,
        next: Option<i64>,
        items: Vec<Incoming>,
        done: bool,
    }
    impl Reading {
        /// Sends the chunk in hand; `false` once the writer is gone.
        fn flush(&mut self, partition: i32, writer: &mpsc::Sender<TopicChunk>) -> bool {
            let Some(next) = self.next else { return true };
            if self.from == Some(next) {
                return true;
            }
            let chunk = TopicChunk {
                items: std::mem::take(&mut self.items),
                advances: BTreeMap::from([(partition, (self.from, next))]),
            };
            self.from = Some(next);
            writer.blocking_send(chunk).is_ok()
        }
    }
    let mut reading: BTreeMap<i32, Reading> = starts
        .into_iter()
        .map(|(p, start)| {
            let state = Reading {
                from: start,
                next: start,
                items: vec![],
                done: false,
            };
            (p, state)
        })
        .collect();
    let mut open = reading.len();
    let finish = |state: &mut Reading, open: &mut usize| {
        if !state.done {
            state.done = true;
            *open -= 1;
        }
    };
    while open > 0 && deadline.is_none_or(|d| Instant::now() < d) {
        match consumer.poll(READ_IDLE) {
            None => {
                for (&partition, state) in &mut reading {
                    if !state.items.is_empty() && !state.flush(partition, &writers[&partition]) {
                        return Ok(());
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(state) = reading.get_mut(&partition) {
                    finish(state, &mut open);
                }
            }
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(message)) => {
                let partition = message.partition();
                let (Some(&end), Some(state)) =
                    (target.get(&partition), reading.get_mut(&partition))
                else {
                    continue;
                };
                if state.done || message.offset() >= end {
                    finish(state, &mut open);
                    continue;
                }
                if state.next.is_some_and(|at| message.offset() < at) {
                    continue;
                }
                state.next = Some(message.offset() + 1);
                state.items.push(Incoming::from_message(&message));
                if message.offset() + 1 >= end {
                    finish(state, &mut open);
                }
                if state.items.len() >= CHUNK_EVENTS
                    && !state.flush(partition, &writers[&partition])
                {
                    return Ok(());
                }
            }
        }
    }
    for (&partition, state) in &mut reading {
        state.flush(partition, &writers[&partition]);
    }
    Ok(())
}
