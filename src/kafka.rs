//! Kafka client configuration shared by the relay, the projector and the CLI,
//! and creation of the events topic.

use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
    producer::FutureProducer,
};

use crate::config::KafkaSettings;

/// Client configuration common to every Kafka client of the service.
pub fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", "orders")
        .set("socket.keepalive.enable", "true");
    config
}

/// An idempotent producer (`enable.idempotence=true`, `acks=all`): retries never
/// duplicate or reorder within a partition.
pub fn idempotent_producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    base_config(settings)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        // A message not acknowledged within 15 s fails, and the relay
        // publishes it again from the outbox; see `command::relay` for why it
        // may then need a new producer.
        .set("message.timeout.ms", "15000")
        .set("request.timeout.ms", "10000")
        .set("compression.type", "none")
        .create()
}

/// Creates `settings.topic` with infinite retention if it is missing.
pub async fn ensure_topic(settings: &KafkaSettings) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings).create()?;
    let topic = NewTopic::new(
        &settings.topic,
        settings.topic_partitions,
        TopicReplication::Fixed(1),
    )
    .set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic], &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::warn!(topic = %name, ?code, "topic creation failed");
                });
            }
        }
    }
    Ok(())
}

/// A consumer for reading whole partitions fast with `assign()`: large
/// fetches, a deep local queue, and an end-of-partition event so the reader
/// knows when it has everything. `group` is only its name (librdkafka wants
/// one for `assign()`): it never joins the group and never commits offsets.
pub fn partition_reader(settings: &KafkaSettings, group: &str) -> Result<BaseConsumer, KafkaError> {
    base_config(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", "67108864")
        .set("max.partition.fetch.bytes", "16777216")
        .set("queued.min.messages", "200000")
        .set("queued.max.messages.kbytes", "262144")
        .create()
}

/// The low and high watermarks of every partition of `topic`, each request
/// bounded by `timeout`; empty when the broker knows no such topic. Blocks:
/// call it off the async runtime.
pub fn watermarks(
    client: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|p| Ok((p, client.fetch_watermarks(topic, p, timeout)?)))
        .collect()
}
