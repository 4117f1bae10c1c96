//! `consumer_position`: the projector's next offset per partition, written in
//! the same transaction as the projection (the fence itself is in
//! `apply_batch`, migration 0003). Its reads and the seed of a rebuild.

use std::collections::HashMap;

use super::ReadModel;
use crate::query::QueryError;

/// A `consumer_position` row as read.
pub(super) struct Position {
    pub(super) kafka_partition: i32,
    pub(super) next_offset: i64,
}

/// Next offsets by partition.
pub(super) fn by_partition(rows: Vec<Position>) -> HashMap<i32, i64> {
    rows.into_iter()
        .map(|row| (row.kafka_partition, row.next_offset))
        .collect()
}

impl ReadModel {
    /// The stored next offsets of `partitions` of `topic`; absent partitions have none.
    pub async fn positions(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, QueryError> {
        let rows = sqlx::query_as!(
            Position,
            "SELECT kafka_partition, next_offset FROM consumer_position
             WHERE topic = $1 AND kafka_partition = ANY($2)",
            topic,
            partitions
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(by_partition(rows))
    }

    /// The stored next offset of every positioned partition of `topic`.
    pub async fn all_positions(&self, topic: &str) -> Result<HashMap<i32, i64>, QueryError> {
        let rows = sqlx::query_as!(
            Position,
            "SELECT kafka_partition, next_offset FROM consumer_position WHERE topic = $1",
            topic
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(by_partition(rows))
    }

    /// Stores `positions` of a projection that has none yet (a rebuild from the
    /// event store); positions already stored are kept.
    pub async fn seed_positions(
        &self,
        topic: &str,
        positions: &HashMap<i32, i64>,
    ) -> Result<(), QueryError> {
        let (partitions, offsets): (Vec<i32>, Vec<i64>) = positions.iter().unzip();
        sqlx::query!(
            "INSERT INTO consumer_position (topic, kafka_partition, next_offset)
             SELECT $1, p, o FROM UNNEST($2::int4[], $3::int8[]) AS u(p, o)
             ON CONFLICT DO NOTHING",
            topic,
            &partitions,
            &offsets
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
