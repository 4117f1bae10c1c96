//! `order-command`'s own metrics: the writer's batches (`orders_writer_*`),
//! the relay (`orders_relay_*`) and the outbox (`orders_outbox_*`, sampled
//! from the database every `OUTBOX_SAMPLE_EVERY`).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::store;
use crate::metrics::{
    Counter, FloatGauge, Gauge, Histogram, Metrics, SECONDS_BUCKETS, SIZE_BUCKETS, histogram,
};

/// How often the outbox gauges are refreshed.
const OUTBOX_SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// The writer's batches.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Commands per committed batch.
    pub batch_size: Histogram,
    /// From taking a batch until its commands are answered.
    pub batch_seconds: Histogram,
    /// Commands refused because their `expected_version` was not the order's.
    pub conflicts: Counter,
    /// Batches decided again after another writer won a race.
    pub retries: Counter,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        Self {
            batch_size: histogram(SIZE_BUCKETS),
            batch_seconds: histogram(SECONDS_BUCKETS),
            conflicts: Counter::default(),
            retries: Counter::default(),
        }
    }
}

impl WriterMetrics {
    /// New writer metrics, registered in `metrics`.
    pub fn registered(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "orders_writer_batch_size",
            "Commands decided in one writer batch.",
            m.batch_size.clone(),
        );
        metrics.register(
            "orders_writer_batch_seconds",
            "Time from taking a writer batch until its commands are answered (commit included).",
            m.batch_seconds.clone(),
        );
        metrics.register(
            "orders_writer_conflicts",
            "Commands refused because their expected_version was not the order's version.",
            m.conflicts.clone(),
        );
        metrics.register(
            "orders_writer_retries",
            "Writer batches decided again after another writer won a race.",
            m.retries.clone(),
        );
        m
    }
}

/// The outbox relay.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    /// 1 while this process's relay holds the leader lock.
    pub leader: Gauge,
    /// Events acknowledged by Kafka and removed from the outbox.
    pub published: Counter,
    /// From sending a batch to Kafka until every acknowledgement is in.
    pub publish_seconds: Histogram,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self {
            leader: Gauge::default(),
            published: Counter::default(),
            publish_seconds: histogram(SECONDS_BUCKETS),
        }
    }
}

impl RelayMetrics {
    /// New relay metrics, registered in `metrics`.
    pub fn registered(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "orders_relay_leader",
            "1 while this process's relay leads (holds the advisory lock), else 0.",
            m.leader.clone(),
        );
        metrics.register(
            "orders_relay_published",
            "Events acknowledged by Kafka and removed from the outbox.",
            m.published.clone(),
        );
        metrics.register(
            "orders_relay_publish_seconds",
            "Time from sending a batch of events to Kafka until all are acknowledged.",
            m.publish_seconds.clone(),
        );
        m
    }
}

/// The outbox as last sampled.
#[derive(Debug, Clone, Default)]
pub struct OutboxMetrics {
    backlog: Gauge,
    oldest_age: FloatGauge,
}

impl OutboxMetrics {
    /// New outbox gauges, registered in `metrics`.
    pub fn registered(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "orders_outbox_backlog_events",
            "Events committed but not yet acknowledged by Kafka (sampled every 2 s).",
            m.backlog.clone(),
        );
        metrics.register(
            "orders_outbox_oldest_age_seconds",
            "Age of the oldest event waiting in the outbox; 0 when it is empty (sampled every 2 s).",
            m.oldest_age.clone(),
        );
        m
    }

    /// Samples the outbox of `pool` until `stop`. A failed sample keeps the
    /// last values and is logged at debug level (health reports the database).
    pub async fn sample(self, pool: PgPool, stop: CancellationToken) {
        loop {
            match store::outbox_backlog(&pool).await {
                Ok(outbox) => {
                    self.backlog.set(outbox.events);
                    self.oldest_age
                        .set(outbox.oldest_age_seconds.unwrap_or(0.0).max(0.0));
                }
                Err(error) => tracing::debug!(%error, "cannot sample the outbox"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(OUTBOX_SAMPLE_EVERY) => {}
            }
        }
    }
}
