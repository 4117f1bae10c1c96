//! The outbox relay: publishes committed events to Kafka, then deletes their
//! outbox rows. One relay leads at a time (a PostgreSQL advisory lock held on a
//! dedicated connection); the others stand by and take over when it dies.
//!
//! Rows are read in outbox order with no high-water mark: a row whose
//! transaction committed late is simply found by a later read. Rows are deleted
//! only after Kafka acknowledged them, and only up to the first failure, so a
//! failed event and every event after it are published again, in order.
//!
//! A producer whose deliveries fail when it has not delivered a whole batch
//! for `PRODUCER_STUCK_AFTER` is replaced by a new one. A broker back from a long pause
//! answers metadata requests with no brokers until its controller takes it
//! back; librdkafka then forgets every broker it knew and, with none left to
//! ask, waits minutes before it bootstraps again, so every message times out
//! in the meantime. A new producer bootstraps at once.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{FutureExt as _, future::join_all};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sqlx::{
    ConnectOptions, Connection, PgConnection,
    postgres::{PgConnectOptions, PgListener},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{metrics::RelayMetrics, store::OUTBOX_CHANNEL};
use crate::{config::KafkaSettings, kafka, telemetry};

/// Advisory-lock key that elects the relay leader ("orders-relay").
pub const RELAY_LOCK_KEY: i64 = 0x6f72_6465_7273_726c;

/// Most queued commit notifications folded into one wake-up.
const COALESCED_WAKE_UPS: usize = 4096;

/// How long a producer may go without delivering a whole batch, while
/// deliveries fail, before the relay replaces it.
const PRODUCER_STUCK_AFTER: Duration = Duration::from_secs(10);

/// `ce_source` of every event.
const SOURCE: &str = "/orders/order-command";

/// Failure of one relay step.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database failed (leadership is dropped and re-acquired).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The broker refused a client or topic operation.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Another relay leads; nothing was done.
    Standby,
    /// This relay leads and the outbox is empty.
    Idle,
    /// This many events were acknowledged by Kafka and removed from the outbox
    /// (`failed` more stay for the next step).
    Published {
        /// Events acknowledged and deleted.
        delivered: usize,
        /// Events left in the outbox after a delivery failure.
        failed: usize,
    },
}

/// The outbox relay.
pub struct Relay {
    connect: PgConnectOptions,
    kafka: KafkaSettings,
    producer: FutureProducer,
    /// When the producer was created or last delivered a whole batch.
    delivered_at: Instant,
    batch_size: i64,
    leader: Option<PgConnection>,
    metrics: RelayMetrics,
}

impl Relay {
    /// A relay for the store at `database_url`, publishing to `kafka.topic`.
    pub fn new(
        database_url: impl Into<String>,
        kafka: KafkaSettings,
        batch_size: usize,
    ) -> Result<Self, RelayError> {
        let url: String = database_url.into();
        Self::connecting_with(url.parse()?, kafka, batch_size)
    }

    /// A relay whose lock connection is made with `connect`, publishing to `kafka.topic`.
    pub fn connecting_with(
        connect: PgConnectOptions,
        kafka: KafkaSettings,
        batch_size: usize,
    ) -> Result<Self, RelayError> {
        Ok(Self {
            connect,
            producer: kafka::idempotent_producer(&kafka)?,
            delivered_at: Instant::now(),
            kafka,
            batch_size: batch_size.max(1) as i64,
            leader: None,
            metrics: RelayMetrics::default(),
        })
    }

    /// The relay, recording into `metrics`.
    pub fn with_metrics(mut self, metrics: RelayMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Whether this relay holds the leader lock (as of its last step).
    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    /// Gives up leadership by closing the lock connection.
    pub async fn resign(&mut self) {
        if let Some(conn) = self.leader.take() {
            let _ = conn.close().await;
        }
        self.metrics.leader.set(0);
    }

    /// Publishes one batch of outbox rows, if this relay leads.
    pub async fn step(&mut self) -> Result<StepOutcome, RelayError> {
        let led = if self.leader.is_some() {
            Ok(true)
        } else {
            self.try_lead().await
        };
        self.metrics.leader.set(i64::from(self.leader.is_some()));
        if !led? {
            return Ok(StepOutcome::Standby);
        }
        match self.publish_batch().await {
            Err(RelayError::Database(error)) => {
                // The lock lives on this connection: treat any failure as lost leadership.
                self.leader = None;
                self.metrics.leader.set(0);
                Err(RelayError::Database(error))
            }
            other => other,
        }
    }

    async fn try_lead(&mut self) -> Result<bool, RelayError> {
        // Named, so that `orderctl status` can tell which process leads. Its
        // deletes need no durable commit: a delete lost in a crash only
        // republishes events, which consumers skip by version. That saves one
        // WAL flush per batch, which commands would otherwise wait behind.
        let mut conn = self
            .connect
            .clone()
            .application_name(&leader_application_name())
            .options([("synchronous_commit", "off")])
            .connect()
            .await?;
        let locked = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_lock($1) AS "locked!""#,
            RELAY_LOCK_KEY
        )
        .fetch_one(&mut conn)
        .await?;
        if !locked {
            let _ = conn.close().await;
            return Ok(false);
        }
        kafka::ensure_topic(&self.kafka).await?;
        tracing::info!(topic = %self.kafka.topic, "relay is the leader");
        self.leader = Some(conn);
        Ok(true)
    }

    async fn publish_batch(&mut self) -> Result<StepOutcome, RelayError> {
        let conn = self.leader.as_mut().expect("leader connection");
        let rows = sqlx::query!(
            "SELECT o.id, e.event_id, e.order_id, e.event_type, e.payload, e.occurred_at, e.traceparent \
             FROM outbox o JOIN events e ON e.position = o.event_position \
             ORDER BY o.id LIMIT $1",
            self.batch_size,
        )
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Ok(StepOutcome::Idle);
        }
        // One span per batch: it continues the trace of the first event's
        // command and links those of the next ones.
        let span =
            tracing::info_span!("relay.publish", otel.kind = "producer", events = rows.len());
        telemetry::follow(&span, rows.iter().filter_map(|r| r.traceparent.as_deref()));
        let sent = Instant::now();
        let mut ids = Vec::with_capacity(rows.len());
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let key = row.order_id.to_string();
            let record = FutureRecord::to(&self.kafka.topic)
                .key(&key)
                .payload(&row.payload)
                .headers(cloud_event_headers(
                    &row.event_id.to_string(),
                    &row.event_type,
                    row.occurred_at,
                    row.traceparent.as_deref(),
                ));
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    ids.push(row.id);
                    deliveries.push(delivery);
                }
                Err((error, _)) => {
                    // Queue full or similar: publish what is queued, retry the rest next step.
                    tracing::warn!(%error, "producer refused a message; retrying next step");
                    break;
                }
            }
        }
        let results = join_all(deliveries).instrument(span).await;
        let delivered = results
            .iter()
            .take_while(|r| matches!(r, Ok(Ok(_))))
            .count();
        self.metrics
            .publish_seconds
            .observe(sent.elapsed().as_secs_f64());
        let failed = delivered < rows.len();
        if !failed {
            self.delivered_at = Instant::now();
        }
        if let Some(Ok(Err((error, _)))) = results.get(delivered) {
            tracing::warn!(%error, "delivery failed; the event and those after it stay in the outbox");
        }
        if failed && self.delivered_at.elapsed() >= PRODUCER_STUCK_AFTER {
            tracing::warn!(
                since = ?self.delivered_at.elapsed(),
                "the producer has delivered nothing for too long; replacing it"
            );
            self.producer = kafka::idempotent_producer(&self.kafka)?;
            self.delivered_at = Instant::now();
        }
        sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", &ids[..delivered])
            .execute(&mut *conn)
            .await?;
        self.metrics.published.inc_by(delivered as u64);
        Ok(StepOutcome::Published {
            delivered,
            failed: rows.len() - delivered,
        })
    }

    /// Steps until `stop`: at once after a full batch, else when the writer
    /// notifies a commit or `poll` elapses (the fallback).
    pub async fn run(
        mut self,
        database_listener: Option<PgListener>,
        poll: Duration,
        stop: CancellationToken,
    ) {
        let mut listener = database_listener;
        loop {
            let outcome = tokio::select! {
                () = stop.cancelled() => break,
                outcome = self.step() => outcome,
            };
            let pause = match outcome {
                Ok(StepOutcome::Published {
                    delivered,
                    failed: 0,
                }) if delivered as i64 == self.batch_size => continue,
                Ok(StepOutcome::Published { failed, .. }) if failed > 0 => {
                    Duration::from_millis(500)
                }
                Ok(StepOutcome::Standby) => Duration::from_secs(1),
                Ok(_) => poll,
                Err(error) => {
                    tracing::warn!(%error, "relay step failed");
                    Duration::from_secs(1)
                }
            };
            let woken = async {
                match listener.as_mut() {
                    Some(l) if self.leader.is_some() => match l.recv().await {
                        // Every commit notifies; those already queued are all covered
                        // by the next step, which reads everything committed so far.
                        Ok(_) => {
                            for _ in 0..COALESCED_WAKE_UPS {
                                if !matches!(l.recv().now_or_never(), Some(Ok(_))) {
                                    break;
                                }
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "outbox listener failed; polling");
                            tokio::time::sleep(pause).await;
                        }
                    },
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = woken => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        self.resign().await;
        tracing::info!("relay stopped");
    }
}

/// `application_name` of the leader's lock connection: `orders-relay host=<h> pid=<p>`.
pub fn leader_application_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host.trim().chars().take(32).collect();
    format!("orders-relay host={host} pid={}", std::process::id())
}

/// A listener woken by every commit of the writer.
pub async fn outbox_listener(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(OUTBOX_CHANNEL).await?;
    Ok(listener)
}

/// CloudEvents Kafka binding, binary mode, plus W3C `traceparent`.
fn cloud_event_headers(
    event_id: &str,
    event_type: &str,
    occurred_at: DateTime<Utc>,
    traceparent: Option<&str>,
) -> OwnedHeaders {
    let ce_type = format!("orders.v1.{event_type}");
    let ce_time = occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let headers = OwnedHeaders::new_with_capacity(7)
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(event_id),
        })
        .insert(Header {
            key: "ce_type",
            value: Some(ce_type.as_str()),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(SOURCE),
        })
        .insert(Header {
            key: "ce_time",
            value: Some(ce_time.as_str()),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/protobuf"),
        });
    match traceparent {
        Some(tp) => headers.insert(Header {
            key: "traceparent",
            value: Some(tp),
        }),
        None => headers,
    }
}
