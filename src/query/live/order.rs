//! `WatchOrder`: one order streamed as the projection applies it, every
//! version since the last one sent, folded from the projected history, in
//! order. A quiet stream re-reads its order every `RECHECK`.
//!
//! When `BUFFER` messages wait for a slow reader, the versions in between are
//! skipped and the reader, once it catches up, gets the latest version with
//! `coalesced` set.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use super::{Feed, Sources, Ticket, stopping};
use crate::{
    domain::{CustomerId, OrderStatus},
    proto,
    query::{
        QueryError,
        read_model::{OrderView, Until},
        reply::{freshness, order_to_proto},
    },
};

/// How often a stream re-reads its order without a wake-up (a lost NOTIFY).
const RECHECK: Duration = Duration::from_secs(5);

/// What a `WatchOrder` call returns.
pub type WatchStream = ReceiverStream<Result<proto::WatchOrderResponse, Status>>;

type Sender = mpsc::Sender<Result<proto::WatchOrderResponse, Status>>;

/// One `WatchOrder` stream: what it watches and what it reads with.
pub struct OrderFeed {
    /// What it reads with and listens to.
    pub sources: Sources,
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
        super::start(self, ticket)
    }
}

impl Feed for OrderFeed {
    type Message = proto::WatchOrderResponse;

    async fn run(self, tx: &Sender) -> Result<(), Status> {
        let Self {
            sources,
            order_id,
            from_version,
            confined,
        } = self;
        // Subscribed before the first read: a commit after it still wakes us.
        let mut subscription = sources.watch.subscribe(order_id);
        // The state at the last version sent.
        let mut sent: Option<OrderView> = None;
        loop {
            let read_model = sources.live.read_model();
            let current = match sources.current(&read_model, order_id).await {
                Err(error) if error.is_generation_gone() => {
                    sources.live.refresh().await?;
                    continue;
                }
                other => other?,
            };
            if let Some((now, projected_at)) = current {
                if confined
                    .as_ref()
                    .is_some_and(|c| now.order.customer_id.as_ref() != Some(c))
                {
                    return Err(QueryError::NotFound(order_id).into());
                }
                let from = sent.as_ref().map_or(from_version, |s| s.order.version + 1);
                // The version wanted next is the current one (the usual case
                // once streaming, or a fresh stream): no history to read.
                let views = if (sent.is_none() && from_version == 0) || now.order.version == from {
                    vec![now.as_ref().clone()]
                } else if now.order.version > from {
                    let base = match &sent {
                        Some(state) => Some(state.clone()),
                        None if from > 1 => {
                            read_model
                                .order_until(order_id, Until::Version(from - 1))
                                .await?
                        }
                        None => None,
                    };
                    read_model
                        .versions_after(order_id, base.as_ref(), now.order.version)
                        .await?
                } else if is_final(&now) {
                    return Err(QueryError::BeyondVersion {
                        order_id,
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
                                () = sources.stopping.cancelled() => return Err(stopping()),
                            };
                            let Some((latest, at)) = sources.current(&read_model, order_id).await?
                            else {
                                return Err(QueryError::NotFound(order_id).into());
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
                () = sources.stopping.cancelled() => return Err(stopping()),
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
    tx: &Sender,
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
