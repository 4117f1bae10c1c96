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

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::{
    domain::{CustomerId, OrderStatus},
    metrics::{Gauge, Metrics},
    proto,
    query::{
        QueryError,
        cache::ReadCache,
        generation::LiveProjection,
        grpc::{freshness, order_to_proto},
        read_model::{OrderView, ReadModel, Until},
        watch::ProjectionWatch,
    },
};

/// Streams one process serves at most.
pub const MAX_STREAMS: usize = 10_000;
/// Streams one connection may hold at most.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1_000;
/// Messages that may wait for a slow reader, per stream.
pub const BUFFER: usize = 16;
/// How often a stream re-reads its order without a wake-up (a lost NOTIFY).
const RECHECK: Duration = Duration::from_secs(5);

/// What a `WatchOrder` call returns.
pub type WatchStream = ReceiverStream<Result<proto::WatchOrderResponse, Status>>;

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
            "WatchOrder streams open now.",
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

/// One `WatchOrder` stream: what it watches and what it reads with.
pub struct OrderFeed {
    /// The live generation, followed across switches.
    pub live: LiveProjection,
    /// The wake-ups of this process.
    pub watch: ProjectionWatch,
    /// The read cache.
    pub cache: ReadCache,
    /// Cancelled when the server stops.
    pub stopping: CancellationToken,
    /// The order.
    pub order_id: Uuid,
    /// The first version to send (0: the current one).
    pub from_version: u64,
    /// The customer the caller is confined to, if any.
    pub confined: Option<CustomerId>,
}

/// What became of one message.
enum Sent {
    Yes,
    /// The reader is `BUFFER` messages behind.
    Full,
    /// The reader is gone.
    Closed,
}

impl OrderFeed {
    /// Starts the stream's task; it holds `ticket` until it ends.
    pub fn start(self, ticket: Ticket) -> WatchStream {
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(async move {
            let _ticket = ticket;
            if let Err(status) = self.run(&tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        ReceiverStream::new(rx)
    }

    async fn run(
        self,
        tx: &mpsc::Sender<Result<proto::WatchOrderResponse, Status>>,
    ) -> Result<(), Status> {
        // Subscribed before the first read: a commit after it still wakes us.
        let mut subscription = self.watch.subscribe(self.order_id);
        // The state at the last version sent.
        let mut sent: Option<OrderView> = None;
        loop {
            let read_model = self.live.read_model();
            let current =
                match read_current(&self.cache, &self.live, &read_model, self.order_id).await {
                    Err(error) if error.is_generation_gone() => {
                        self.live.refresh().await?;
                        continue;
                    }
                    other => other?,
                };
            if let Some((now, projected_at)) = current {
                if self
                    .confined
                    .as_ref()
                    .is_some_and(|c| now.order.customer_id.as_ref() != Some(c))
                {
                    return Err(QueryError::NotFound(self.order_id).into());
                }
                let from = sent
                    .as_ref()
                    .map_or(self.from_version, |s| s.order.version + 1);
                let views = if sent.is_none() && self.from_version == 0 {
                    vec![now.as_ref().clone()]
                } else if now.order.version >= from {
                    let base = match &sent {
                        Some(state) => Some(state.clone()),
                        None if from > 1 => {
                            read_model
                                .order_until(self.order_id, Until::Version(from - 1))
                                .await?
                        }
                        None => None,
                    };
                    read_model
                        .versions_after(self.order_id, base.as_ref(), now.order.version)
                        .await?
                } else if is_final(&now) {
                    return Err(QueryError::BeyondVersion {
                        order_id: self.order_id,
                        projected: now.order.version,
                        wanted: from,
                    }
                    .into());
                } else {
                    vec![]
                };
                let projected = now.order.version;
                for view in views {
                    match send(tx, &view, projected, projected_at, false) {
                        Sent::Yes => sent = Some(view),
                        Sent::Closed => return Ok(()),
                        Sent::Full => {
                            // Wait for room, then send the latest state instead
                            // of every version in between.
                            let permit = tokio::select! {
                                permit = tx.reserve() => match permit {
                                    Ok(permit) => permit,
                                    Err(_) => return Ok(()),
                                },
                                () = self.stopping.cancelled() => return Err(stopping()),
                            };
                            let Some((latest, at)) =
                                read_current(&self.cache, &self.live, &read_model, self.order_id)
                                    .await?
                            else {
                                return Err(QueryError::NotFound(self.order_id).into());
                            };
                            permit.send(Ok(message(&latest, latest.order.version, at, true)));
                            sent = Some(latest.as_ref().clone());
                            break;
                        }
                    }
                }
                if sent.as_ref().is_some_and(is_final) {
                    return Ok(());
                }
            }
            tokio::select! {
                () = subscription.changed() => {}
                () = tx.closed() => return Ok(()),
                () = self.stopping.cancelled() => return Err(stopping()),
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}

fn is_final(view: &OrderView) -> bool {
    matches!(
        view.order.status,
        OrderStatus::Shipped | OrderStatus::Cancelled
    )
}

fn stopping() -> Status {
    Status::unavailable("the server is stopping; watch again with from_version")
}

fn message(
    view: &OrderView,
    projected: u64,
    projected_at: Option<DateTime<Utc>>,
    coalesced: bool,
) -> proto::WatchOrderResponse {
    proto::WatchOrderResponse {
        order: Some(order_to_proto(view)),
        freshness: Some(freshness(projected, projected_at)),
        coalesced,
    }
}

fn send(
    tx: &mpsc::Sender<Result<proto::WatchOrderResponse, Status>>,
    view: &OrderView,
    projected: u64,
    projected_at: Option<DateTime<Utc>>,
    coalesced: bool,
) -> Sent {
    match tx.try_send(Ok(message(view, projected, projected_at, coalesced))) {
        Ok(()) => Sent::Yes,
        Err(mpsc::error::TrySendError::Full(_)) => Sent::Full,
        Err(mpsc::error::TrySendError::Closed(_)) => Sent::Closed,
    }
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
