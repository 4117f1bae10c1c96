//! Shared test helpers: fresh databases and topics, bounded waits, Kafka reads.

#![allow(dead_code)]

use std::{
    future::Future,
    time::{Duration, Instant},
};

use orders::config::KafkaSettings;
use rdkafka::{
    ClientConfig, Message,
    consumer::{Consumer, StreamConsumer},
    message::OwnedMessage,
};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

/// Reads a variable that `scripts/dev env` exports, with a clear failure.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests with `scripts/dev test` (or `eval \"$(scripts/dev env)\"` first)")
    })
}

/// Kafka bootstrap servers of the test broker.
pub fn bootstrap() -> String {
    env("KAFKA_BOOTSTRAP_SERVERS")
}

/// A unique name for a test resource.
pub fn unique(prefix: &str) -> String {
    format!("it_{prefix}_{}", Uuid::new_v4().simple())
}

/// Kafka settings for a fresh, not yet created topic.
pub fn fresh_kafka(prefix: &str) -> KafkaSettings {
    KafkaSettings::new(bootstrap(), unique(prefix).replace('_', "."))
}

/// A fresh, empty database on the test server; returns its URL.
pub async fn fresh_database(prefix: &str) -> String {
    let admin_url = env("ORDERS_PG_ADMIN_URL");
    let name = unique(prefix);
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("connect to ORDERS_PG_ADMIN_URL");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("admin url has a database");
    format!("{base}/{name}")
}

/// A small pool on `url`.
pub async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("connect to test database")
}

/// Waits until `condition` holds, checking every 50 ms, for at most `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A consumer of `topic` from the beginning, in a group of its own.
pub fn topic_reader(topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create test consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads messages from `consumer` until `count` arrived or `timeout` passed.
pub async fn read_messages(
    consumer: &StreamConsumer,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out after {timeout:?}: {} of {count} messages arrived",
            out.len()
        );
        if let Ok(Ok(message)) = tokio::time::timeout(left, consumer.recv()).await {
            out.push(message.detach());
        }
    }
    out
}

/// The key of a message as UTF-8.
pub fn key_of(message: &OwnedMessage) -> String {
    String::from_utf8(message.key().expect("message has a key").to_vec()).expect("utf-8 key")
}
