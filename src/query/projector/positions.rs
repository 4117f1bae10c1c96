//! Where the projector's partitions stand: rebalances noted, stored
//! positions loaded and sought, partitions rewound after a fence or a switch,
//! and the positions committed to Kafka now and then.

use std::{collections::HashSet, time::Instant};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer},
};

use super::{
    OFFSET_COMMIT_INTERVAL, Projector, SEEK_TIMEOUT,
    consumer::{Start, partitions_of},
};
use crate::query::QueryError;

impl Projector {
    pub(super) fn note_rebalances(&mut self) {
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
    pub(super) async fn load_starts(&self) -> Result<(), QueryError> {
        let stored = self.read_model.all_positions(&self.topic).await?;
        *self.starts.lock().expect("start offsets lock") = Some(stored);
        Ok(())
    }

    /// Forgets what the projector knew of `partitions`; they are sought again.
    pub(super) fn rewind(&mut self, partitions: impl IntoIterator<Item = i32>) {
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
    pub(super) async fn position_partitions(&mut self) -> Result<(), QueryError> {
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

    /// Commits the positions to Kafka when the last commit is older than
    /// `OFFSET_COMMIT_INTERVAL`, asynchronously.
    pub(super) fn commit_offsets_now_and_then(&mut self) -> Result<(), QueryError> {
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
}
