//! `WatchOrder`: one order streamed as the projection applies it. Each stream
//! is a task that subscribes to the order's wake-ups (`watch`: this process's
//! projector commits and the NOTIFYs of every other instance's), reads the
//! order when woken, and sends every version since the last one it sent,
//! folded from the projected history, in order. No database is polled per
//! stream: a quiet stream re-reads only every `RECHECK`.
//!
//! Memory per stream is bounded: at most `BUFFER` messages wait for a slow
//! reader. When they are all waiting, the versions in between are skipped and
//! the reader, once it catches up, gets the latest version with `coalesced`
//! set. Streams are limited per process and per connection
//! (RESOURCE_EXHAUSTED beyond).

//! Live reads: `WatchOrder` (`order`: one order, every version) and
//! `WatchOrders` (`customer`: a customer's orders, each as it changes).
//!
//! Each stream is a task that subscribes to its wake-ups (`watch`: this
//! process's projector commits and the NOTIFYs of every other instance's),
//! reads when woken, and sends what changed. No database is polled per
//! stream: a quiet stream re-reads only now and then, in case a wake-up was
//! lost.
//!
//! Memory per stream is bounded: at most `BUFFER` messages wait for a slow
//! reader, and what changes meanwhile is read again once it has caught up.
//! Streams are limited per process and per connection (RESOURCE_EXHAUSTED
//! beyond); both kinds count against the same limits.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::{
    metrics::{Gauge, Metrics},
    query::{
        QueryError, cache::ReadCache, generation::LiveProjection, read_model::OrderView,
        read_model::ReadModel, watch::ProjectionWatch,
    },
};

mod customer;
mod order;

pub use customer::{CustomerFeed, WatchOrdersStream};
pub use order::{OrderFeed, WatchStream};

/// Streams one process serves at most.
pub const MAX_STREAMS: usize = 10_000;
/// Streams one connection may hold at most.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1_000;
/// Messages that may wait for a slow reader, per stream.
pub const BUFFER: usize = 16;

/// Open streams per connection (by the peer's address).
type PerConnection = Arc<Mutex<HashMap<SocketAddr, usize>>>;

/// The stream limits of one process.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    process: Arc<Semaphore>,
    per_connection: PerConnection,
    connection_max: usize,
    open: Gauge,
}

/// A stream's place under the limits; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket {
    _process: OwnedSemaphorePermit,
    connection: Option<(SocketAddr, PerConnection)>,
    open: Gauge,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.open.dec();
        if let Some((peer, counts)) = &self.connection {
            let mut counts = counts.lock().expect("stream limits lock");
            if let Some(count) = counts.get_mut(peer) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(peer);
                }
            }
        }
    }
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self::new(MAX_STREAMS, MAX_STREAMS_PER_CONNECTION)
    }
}

impl StreamLimits {
    /// At most `process` streams, and `connection` per connection.
    pub fn new(process: usize, connection: usize) -> Self {
        Self {
            process: Arc::new(Semaphore::new(process)),
            per_connection: Arc::default(),
            connection_max: connection,
            open: Gauge::default(),
        }
    }

    /// Registers `orders_watch_streams` (streams open now) in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "orders_watch_streams",
            "WatchOrder and WatchOrders streams open now.",
            self.open.clone(),
        );
    }

    /// A place for one more stream of the connection from `peer`, if there is one.
    pub fn admit(&self, peer: Option<SocketAddr>) -> Result<Ticket, Status> {
        let permit = self.process.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("this server serves as many streams as it may; retry later")
        })?;
        let connection = match peer {
            Some(peer) => {
                let mut counts = self.per_connection.lock().expect("stream limits lock");
                let count = counts.entry(peer).or_default();
                if *count >= self.connection_max {
                    return Err(Status::resource_exhausted(format!(
                        "at most {} streams per connection",
                        self.connection_max
                    )));
                }
                *count += 1;
                Some((peer, self.per_connection.clone()))
            }
            None => None,
        };
        self.open.inc();
        Ok(Ticket {
            _process: permit,
            connection,
            open: self.open.clone(),
        })
    }
}

/// The order now: from the read cache where it holds it, else from `read_model`.
pub async fn read_current(
    cache: &ReadCache,
    live: &LiveProjection,
    read_model: &ReadModel,
    order_id: Uuid,
) -> Result<Option<(Arc<OrderView>, Option<DateTime<Utc>>)>, QueryError> {
    if let Some(hit) = cache.get(live.generation(), &order_id) {
        return Ok(Some((hit.view, hit.projected_at)));
    }
    Ok(read_model
        .get_order_fresh(order_id)
        .await?
        .map(|(view, at)| (Arc::new(view), at)))
}

/// What every stream reads with and listens to.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The live generation, followed across switches.
    pub live: LiveProjection,
    /// The wake-ups of this process.
    pub watch: ProjectionWatch,
    /// The read cache.
    pub cache: ReadCache,
    /// Cancelled when the server stops.
    pub stopping: CancellationToken,
}

impl Sources {
    /// The order now, from the cache or the live generation.
    async fn current(
        &self,
        read_model: &ReadModel,
        order_id: Uuid,
    ) -> Result<Option<(Arc<OrderView>, Option<DateTime<Utc>>)>, QueryError> {
        read_current(&self.cache, &self.live, read_model, order_id).await
    }

    /// Sends `message`, waiting for room; `false` once the reader is gone.
    async fn send<T>(
        &self,
        tx: &mpsc::Sender<Result<T, Status>>,
        message: T,
    ) -> Result<bool, Status> {
        tokio::select! {
            sent = tx.send(Ok(message)) => Ok(sent.is_ok()),
            () = self.stopping.cancelled() => Err(stopping()),
        }
    }
}

/// A stream's task: sends its messages to `tx` until it ends.
trait Feed: Send + 'static {
    /// What it sends.
    type Message: Send + 'static;

    /// Runs until the stream is over; an error is the stream's last message.
    fn run(
        self,
        tx: &mpsc::Sender<Result<Self::Message, Status>>,
    ) -> impl Future<Output = Result<(), Status>> + Send;
}

/// Starts `feed`'s task, holding `ticket` until it ends.
fn start<F: Feed>(feed: F, ticket: Ticket) -> ReceiverStream<Result<F::Message, Status>> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let _ticket = ticket;
        if let Err(status) = feed.run(&tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    ReceiverStream::new(rx)
}

/// How a stream ends when the server stops: the caller may watch again.
fn stopping() -> Status {
    Status::unavailable("the server is stopping; watch again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_limited_per_process_and_per_connection_and_freed_on_drop() {
        let limits = StreamLimits::new(3, 2);
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let a = limits.admit(Some(peer)).unwrap();
        let _b = limits.admit(Some(peer)).unwrap();
        let refused = limits.admit(Some(peer)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let _c = limits.admit(Some(other)).unwrap();
        assert_eq!(
            limits.admit(None).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(limits.open.get(), 3);
        drop(a);
        assert!(limits.admit(Some(peer)).is_ok());
    }
}
