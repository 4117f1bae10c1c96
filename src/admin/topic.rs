//! The topic's end offsets (high watermarks), and how positions compare with them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use rdkafka::consumer::BaseConsumer;

use crate::{admin::AdminError, config::KafkaSettings, kafka};

/// Longest a metadata or watermark request may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the end offsets of the events topic.
#[derive(Clone)]
pub struct TopicOffsets {
    consumer: Arc<BaseConsumer>,
    topic: String,
}

impl TopicOffsets {
    /// A client of the broker and topic in `settings`.
    pub fn new(settings: &KafkaSettings) -> Result<Self, AdminError> {
        Ok(Self {
            consumer: Arc::new(kafka::base_config(settings)?.create()?),
            topic: settings.topic.clone(),
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The end offset of every partition: the offset the next message will get.
    pub async fn end_offsets(&self) -> Result<BTreeMap<i32, i64>, AdminError> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            let ends: BTreeMap<i32, i64> = kafka::watermarks(&consumer, &topic, BROKER_TIMEOUT)?
                .into_iter()
                .map(|(p, (_, high))| (p, high))
                .collect();
            if ends.is_empty() {
                return Err(AdminError::NoTopic(topic));
            }
            Ok(ends)
        })
        .await
        .map_err(|e| AdminError::Invalid(format!("watermark task failed: {e}")))?
    }
}

/// Whether `positions` reach `ends` on every partition (an empty partition needs none).
pub fn reached(positions: &HashMap<i32, i64>, ends: &BTreeMap<i32, i64>) -> bool {
    ends.iter()
        .all(|(p, &end)| end == 0 || positions.get(p).is_some_and(|&pos| pos >= end))
}

/// Messages between `positions` and `ends`, summed over partitions.
pub fn lag(positions: &HashMap<i32, i64>, ends: &BTreeMap<i32, i64>) -> i64 {
    ends.iter()
        .map(|(p, &end)| (end - positions.get(p).copied().unwrap_or(0)).max(0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_partitions_need_no_position_and_others_need_the_end() {
        let ends = BTreeMap::from([(0, 0), (1, 5)]);
        assert!(!reached(&HashMap::new(), &ends));
        assert!(!reached(&HashMap::from([(1, 4)]), &ends));
        assert!(reached(&HashMap::from([(1, 5)]), &ends));
        assert_eq!(lag(&HashMap::from([(1, 2)]), &ends), 3);
    }
}
