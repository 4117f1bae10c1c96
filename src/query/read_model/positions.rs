//! `consumer_position`: the projector's next offset per partition, written in
//! the same transaction as the projection (the fence itself is in
//! `apply_batch`, migration 0003). Its statements.

/// The statements on `consumer_position` of one generation.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) load: String,
    pub(super) all: String,
    pub(super) seed: String,
}

impl Sql {
    pub(super) fn new(s: &str) -> Self {
        Self {
            load: format!(
                "SELECT kafka_partition, next_offset FROM {s}.consumer_position \
                 WHERE topic = $1 AND kafka_partition = ANY($2)"
            ),
            all: format!(
                "SELECT kafka_partition, next_offset FROM {s}.consumer_position WHERE topic = $1"
            ),
            seed: format!(
                "INSERT INTO {s}.consumer_position (topic, kafka_partition, next_offset) \
                 SELECT $1, p, o FROM UNNEST($2::int4[], $3::int8[]) AS u(p, o) \
                 ON CONFLICT DO NOTHING"
            ),
        }
    }
}
