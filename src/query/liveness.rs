//! Tells a projector consumer that librdkafka has wedged from a broker that
//! is down. A broker back from a long pause is fenced by its controller until
//! it registers again and meanwhile answers metadata requests with no brokers
//! at all; librdkafka then forgets every broker it knew and, with none left
//! to ask, may never bootstrap again (seen with librdkafka 2.12.1): the
//! consumer stays silent while the broker serves everyone else. The projector
//! checks its own consumer's metadata while it receives nothing, and when
//! that has kept failing for `WEDGED_AFTER` while fresh clients reach the
//! broker, it replaces the consumer. The clock starts only once a fresh client
//! gets through: while the broker is down for everyone, or just back and the
//! consumer still waits out its reconnect backoff, nothing is wedged.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
};

/// How often an idle projector checks its consumer.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long the consumer's own metadata requests must fail, while a fresh
/// client's succeed, before the consumer counts as wedged: longer than
/// librdkafka's longest reconnect backoff (`reconnect.backoff.max.ms`, 10 s).
const WEDGED_AFTER: Duration = Duration::from_secs(15);
/// Bound of one metadata request of the check.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// The state of the check between idle steps.
pub struct Liveness {
    /// A fresh client is made from this for the comparison.
    reference: ClientConfig,
    topic: String,
    checked: Instant,
    /// Since when the consumer has failed while a fresh client got through.
    failing_since: Option<Instant>,
}

impl Liveness {
    /// Checks against fresh clients made from `reference`, on `topic`.
    pub fn new(reference: ClientConfig, topic: String) -> Self {
        Self {
            reference,
            topic,
            checked: Instant::now(),
            failing_since: None,
        }
    }

    /// Starts over (a new consumer).
    pub fn reset(&mut self) {
        self.checked = Instant::now();
        self.failing_since = None;
    }

    /// After an idle step: whether `consumer` is wedged and must be replaced.
    /// Checks at most every `CHECK_EVERY`; the requests run off the async runtime.
    pub async fn is_wedged<X, C>(&mut self, consumer: &Arc<C>) -> bool
    where
        X: ConsumerContext + 'static,
        C: Consumer<X> + Send + Sync + 'static,
    {
        if self.checked.elapsed() < CHECK_EVERY {
            return false;
        }
        self.checked = Instant::now();
        let (own, topic) = (consumer.clone(), self.topic.clone());
        let answers = tokio::task::spawn_blocking(move || {
            own.fetch_metadata(Some(&topic), METADATA_TIMEOUT).is_ok()
        })
        .await
        .unwrap_or(false);
        if answers {
            self.failing_since = None;
            return false;
        }
        let (reference, topic) = (self.reference.clone(), self.topic.clone());
        let reachable = tokio::task::spawn_blocking(move || {
            reference
                .create::<BaseConsumer>()
                .is_ok_and(|fresh| fresh.fetch_metadata(Some(&topic), METADATA_TIMEOUT).is_ok())
        })
        .await
        .unwrap_or(false);
        if !reachable {
            // Down for everyone: the consumer is waiting like any client.
            self.failing_since = None;
            return false;
        }
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        since.elapsed() >= WEDGED_AFTER
    }
}
