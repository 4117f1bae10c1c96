//! The projector's Kafka consumer: its configuration, and the rebalance
//! callback that starts newly assigned partitions at their stored positions
//! and records rebalances for the step loop.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use rdkafka::{
    ClientConfig, ClientContext, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer},
    error::KafkaError,
    types::RDKafkaRespErr,
};

use crate::{config::QuerySettings, kafka, query::cache::ReadCache};

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// At this stored next offset (`None`: nothing stored, from the beginning).
    Stored(Option<i64>),
    /// No position was known when it was assigned: the projector seeks it.
    Unknown,
}

/// The stored positions of the generation the projector writes, as last
/// loaded or committed (`None` until loaded): where assigned partitions start.
pub(super) type StartOffsets = Arc<Mutex<Option<HashMap<i32, i64>>>>;

/// Partitions assigned and revoked since the projector last looked.
#[derive(Debug, Default)]
pub(super) struct Rebalances {
    pub(super) assigned: HashMap<i32, Start>,
    pub(super) revoked: HashSet<i32>,
}

/// Assigns partitions at their stored positions and records rebalances for
/// the projector.
pub struct ProjectorContext {
    topic: String,
    rebalances: Arc<Mutex<Rebalances>>,
    starts: StartOffsets,
    cache: ReadCache,
}

/// The partitions of `topic` in `list`.
pub(super) fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    list.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

impl ProjectorContext {
    /// A consumer of `config` whose rebalances start partitions at `starts`,
    /// are recorded in `rebalances` and drop revoked partitions from `cache`.
    pub(super) fn consumer(
        config: &ClientConfig,
        topic: &str,
        rebalances: &Arc<Mutex<Rebalances>>,
        starts: &StartOffsets,
        cache: &ReadCache,
    ) -> Result<StreamConsumer<Self>, KafkaError> {
        config.create_with_context(Self {
            topic: topic.to_owned(),
            rebalances: rebalances.clone(),
            starts: starts.clone(),
            cache: cache.clone(),
        })
    }

    /// Sets each partition of `list` to start at its known stored position;
    /// returns where each starts.
    fn set_starts(&self, list: &mut TopicPartitionList) -> Vec<(i32, Start)> {
        let starts = self.starts.lock().expect("start offsets lock");
        partitions_of(list, &self.topic)
            .into_iter()
            .map(|partition| {
                let start = match starts.as_ref() {
                    Some(known) => Start::Stored(known.get(&partition).copied()),
                    None => Start::Unknown,
                };
                let offset = match start {
                    Start::Stored(Some(next)) => Some(Offset::Offset(next)),
                    Start::Stored(None) => Some(Offset::Beginning),
                    Start::Unknown => None,
                };
                if let Some(offset) = offset
                    && let Err(error) = list.set_partition_offset(&self.topic, partition, offset)
                {
                    tracing::warn!(partition, %error, "cannot set a start offset");
                    return (partition, Start::Unknown);
                }
                (partition, start)
            })
            .collect()
    }
}

impl ClientContext for ProjectorContext {}

impl ConsumerContext for ProjectorContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let starts = self.set_starts(list);
                let assigned = if cooperative {
                    consumer.incremental_assign(list)
                } else {
                    consumer.assign(list)
                };
                if let Err(error) = assigned {
                    // librdkafka retries the rebalance; nothing was assigned.
                    tracing::error!(%error, "assigning partitions failed");
                    return;
                }
                tracing::info!(partitions = ?starts, "partitions assigned");
                let mut changes = self.rebalances.lock().expect("rebalance lock");
                for (partition, start) in starts {
                    changes.revoked.remove(&partition);
                    changes.assigned.insert(partition, start);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                let revoked = if cooperative {
                    consumer.incremental_unassign(list)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = revoked {
                    tracing::warn!(%error, "unassigning partitions failed");
                }
                let partitions = partitions_of(list, &self.topic);
                // Before any other member can own them: their orders' next
                // versions will be written elsewhere.
                self.cache.drop_partitions(&partitions);
                tracing::info!(?partitions, lost, "partitions revoked");
                let mut changes = self.rebalances.lock().expect("rebalance lock");
                for partition in partitions {
                    changes.assigned.remove(&partition);
                    changes.revoked.insert(partition);
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance failed");
                // As librdkafka documents: on an error, drop the assignment.
                let _ = consumer.unassign();
            }
        }
    }
}

/// Freezes a projector's `run` loop while on: it neither polls nor applies
/// (a test hook for the stall watchdog).
#[derive(Debug, Clone, Default)]
pub struct FreezeSwitch {
    pub(super) requested: Arc<AtomicBool>,
    /// Set by the loop once it has stopped stepping.
    pub(super) held: Arc<AtomicBool>,
}

impl FreezeSwitch {
    /// Freezes (`true`) or thaws (`false`) the projector.
    pub fn set(&self, frozen: bool) {
        self.requested.store(frozen, Ordering::Relaxed);
    }

    /// Whether the projector's loop is frozen now (it finished its last step).
    pub fn is_frozen(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

/// The projector's consumer configuration.
pub(super) fn consumer_config(settings: &QuerySettings) -> Result<ClientConfig, KafkaError> {
    let consumer = &settings.consumer;
    let mut config = kafka::base_config(&settings.kafka)?;
    config
        .set("group.id", &settings.consumer_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Incremental rebalances: a member joining or leaving moves only the
        // partitions that change owner; the others keep being consumed.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            consumer.session_timeout_ms.to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            consumer.heartbeat_interval_ms.to_string(),
        )
        // Also the rebalance timeout: after a broker restart this process may
        // rejoin as a new member while the coordinator still waits for its old
        // membership; the join completes at the latest after this long
        // (librdkafka's default is 300 s).
        .set(
            "max.poll.interval.ms",
            consumer.max_poll_interval_ms.to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            consumer.queued_max_kbytes.to_string(),
        )
        // When that queue is full, fetch again soon after it drains rather
        // than after librdkafka's default second.
        .set("fetch.queue.backoff.ms", "50");
    if !consumer.debug.is_empty() {
        config.set("debug", &consumer.debug);
    }
    Ok(config)
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
        let config = consumer_config(&settings).unwrap();
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
