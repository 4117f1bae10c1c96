//! The stack itself: the real broker carries a message, the real database takes the migrations.

use std::time::Duration;

use orders::kafka::{ensure_topic, idempotent_producer};
use rdkafka::{Message, producer::FutureRecord};

use crate::support;

#[tokio::test]
async fn a_message_produced_to_a_fresh_topic_is_consumed() {
    let kafka = support::fresh_kafka("infra");
    ensure_topic(&kafka).await.expect("create topic");
    let producer = idempotent_producer(&support::kafka_as(&kafka, support::KafkaUser::Relay))
        .expect("producer");
    let payload = format!("hello {}", kafka.topic);
    producer
        .send(
            FutureRecord::to(&kafka.topic).key("k").payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");

    let reader = support::topic_reader(&kafka.topic);
    let messages = support::read_messages(&reader, 1, Duration::from_secs(30)).await;

    assert_eq!(messages[0].payload(), Some(payload.as_bytes()));
    assert_eq!(support::key_of(&messages[0]), "k");
}

#[tokio::test]
async fn both_migration_sets_apply_to_fresh_databases() {
    let write = support::pool(&support::fresh_database("mig_w").await).await;
    sqlx::migrate!("migrations/write")
        .run(&write)
        .await
        .expect("write migrations");
    let read = support::pool(&support::fresh_database("mig_r").await).await;
    sqlx::migrate!("migrations/read")
        .run(&read)
        .await
        .expect("read migrations");

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&write)
    .await
    .unwrap();
    for table in ["events", "idempotency_keys", "outbox"] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
    let read_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&read)
    .await
    .unwrap();
    assert!(read_tables > 1, "read migrations created tables");
}
