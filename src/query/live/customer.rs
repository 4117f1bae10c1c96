//! `WatchOrders`: a customer's orders, for an order list page. The stream
//! subscribes to the customer's wake-ups, sends every order the customer has
//! (in the requested status) newest first, marks the end of that snapshot,
//! then sends each order of the customer that changes, as it is after the
//! change, read from the cache or the live generation.
//!
//! It keeps the version it last sent of each order in the filter, so that
//! per order the versions sent only increase and an order that leaves the
//! status is sent once more with `left_filter`: memory per stream grows with
//! the customer's orders, not with the rate of changes. Wake-ups name the
//! changed orders; when they were too many or may have been lost, and every
//! `RESCAN` anyway, the stream re-reads all the customer's orders instead.

use std::{collections::HashMap, time::Duration};

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
        announce::CustomerKey,
        page_token::{ListFilter, OrdersCursor},
        read_model::{OrderView, ReadModel, status_name},
        reply::{freshness, order_to_proto},
    },
};

/// How often a stream re-reads all its customer's orders without a wake-up.
const RESCAN: Duration = Duration::from_secs(30);
/// Orders read per statement when reading all of a customer's orders.
const PAGE: u32 = 500;

/// What a `WatchOrders` call returns.
pub type WatchOrdersStream = ReceiverStream<Result<proto::WatchOrdersResponse, Status>>;

type Sender = mpsc::Sender<Result<proto::WatchOrdersResponse, Status>>;

/// One `WatchOrders` stream: whose orders, in which status.
pub struct CustomerFeed {
    /// What it reads with and listens to.
    pub sources: Sources,
    /// The customer.
    pub customer: CustomerId,
    /// Only orders in this status, if set.
    pub status: Option<OrderStatus>,
}

impl CustomerFeed {
    /// Starts the stream's task; it holds `ticket` until it ends.
    pub fn start(self, ticket: Ticket) -> WatchOrdersStream {
        super::start(self, ticket)
    }
}

/// What to read after a wake-up.
enum Read {
    /// Every order of the customer (in the status, for the snapshot).
    All { snapshot: bool },
    /// These orders.
    Orders(Vec<Uuid>),
}

/// What the stream has sent: the version of each order in the filter.
struct List {
    customer: CustomerId,
    status: Option<OrderStatus>,
    sent: HashMap<Uuid, u64>,
}

impl List {
    /// The message `view` makes, if the reader has not seen it yet.
    fn update(
        &mut self,
        view: &OrderView,
        projected_at: Option<DateTime<Utc>>,
    ) -> Option<proto::WatchOrdersResponse> {
        if view.order.customer_id.as_ref() != Some(&self.customer) {
            // Another customer sharing the key.
            return None;
        }
        let version = view.order.version;
        let matches = self.status.is_none_or(|s| view.order.status == s);
        let left_filter = match self.sent.get(&view.order_id) {
            Some(&sent) if sent >= version => return None,
            Some(_) if !matches => {
                self.sent.remove(&view.order_id);
                true
            }
            _ if matches => {
                self.sent.insert(view.order_id, version);
                false
            }
            _ => return None,
        };
        Some(proto::WatchOrdersResponse {
            order: Some(order_to_proto(view)),
            freshness: Some(freshness(version, projected_at)),
            left_filter,
            snapshot_complete: false,
        })
    }
}

impl Feed for CustomerFeed {
    type Message = proto::WatchOrdersResponse;

    async fn run(self, tx: &Sender) -> Result<(), Status> {
        // Subscribed before the snapshot: a commit during it still wakes us.
        let subscription = self
            .sources
            .watch
            .subscribe_customer(CustomerKey::of(&self.customer));
        let mut list = List {
            customer: self.customer.clone(),
            status: self.status,
            sent: HashMap::new(),
        };
        let mut read = Read::All { snapshot: true };
        let mut snapshot_complete = false;
        loop {
            let read_model = self.sources.live.read_model();
            match self.read(&read_model, &read, &mut list, tx).await {
                Err(Missed::Gone(error)) if error.is_generation_gone() => {
                    self.sources.live.refresh().await?;
                    read = Read::All { snapshot: false };
                    continue;
                }
                Err(Missed::Gone(error)) => return Err(error.into()),
                Err(Missed::Status(status)) => return Err(status),
                Ok(false) => return Ok(()),
                Ok(true) => {}
            }
            if !snapshot_complete {
                snapshot_complete = true;
                let complete = proto::WatchOrdersResponse {
                    snapshot_complete: true,
                    ..Default::default()
                };
                if !self.sources.send(tx, complete).await? {
                    return Ok(());
                }
            }
            let rescan = tokio::select! {
                () = subscription.changed() => false,
                () = tx.closed() => return Ok(()),
                () = self.sources.stopping.cancelled() => return Err(stopping()),
                () = tokio::time::sleep(RESCAN) => true,
            };
            let changed = subscription.take();
            read = if rescan || changed.everything {
                Read::All { snapshot: false }
            } else {
                Read::Orders(changed.orders.into_iter().collect())
            };
        }
    }
}

/// Why a read stopped short.
enum Missed {
    /// A read of the read model failed.
    Gone(QueryError),
    /// The stream must end with this.
    Status(Status),
}

impl From<QueryError> for Missed {
    fn from(error: QueryError) -> Self {
        Self::Gone(error)
    }
}

impl From<Status> for Missed {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

impl CustomerFeed {
    /// Reads what `read` names and sends what the reader has not seen;
    /// `false` once the reader is gone.
    async fn read(
        &self,
        read_model: &ReadModel,
        read: &Read,
        list: &mut List,
        tx: &Sender,
    ) -> Result<bool, Missed> {
        match read {
            Read::Orders(orders) => {
                for &order_id in orders {
                    let Some((view, projected_at)) =
                        self.sources.current(read_model, order_id).await?
                    else {
                        continue;
                    };
                    if let Some(message) = list.update(&view, projected_at)
                        && !self.sources.send(tx, message).await?
                    {
                        return Ok(false);
                    }
                }
            }
            Read::All { snapshot } => {
                let filter = ListFilter {
                    customer_id: Some(self.customer.as_str().to_owned()),
                    // A rescan reads every status, to see orders that left it.
                    status: self
                        .status
                        .filter(|_| *snapshot)
                        .map(|s| status_name(s).to_owned()),
                };
                let projected_at = read_model.projected_at().await?;
                let mut after = None;
                loop {
                    let page = read_model.list_orders(&filter, after, PAGE).await?;
                    for view in &page {
                        if let Some(message) = list.update(view, projected_at)
                            && !self.sources.send(tx, message).await?
                        {
                            return Ok(false);
                        }
                    }
                    match page.last() {
                        Some(last) if page.len() == PAGE as usize => {
                            after = Some(OrdersCursor {
                                placed_at_micros: last.placed_at.timestamp_micros(),
                                order_id: last.order_id,
                            });
                        }
                        _ => break,
                    }
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Order;

    fn view(order_id: Uuid, customer: &str, status: OrderStatus, version: u64) -> OrderView {
        let order = Order {
            customer_id: Some(CustomerId::parse(customer).unwrap()),
            status,
            version,
            ..Order::default()
        };
        OrderView {
            order_id,
            order,
            placed_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn each_order_is_sent_at_increasing_versions_and_once_more_when_it_leaves_the_status() {
        let mut list = List {
            customer: CustomerId::parse("c-1").unwrap(),
            status: Some(OrderStatus::Placed),
            sent: HashMap::new(),
        };
        let a = Uuid::now_v7();
        let sent = |m: Option<proto::WatchOrdersResponse>| {
            m.map(|m| (m.order.unwrap().version, m.left_filter))
        };
        assert_eq!(
            sent(list.update(&view(a, "c-1", OrderStatus::Placed, 1), None)),
            Some((1, false))
        );
        assert_eq!(
            sent(list.update(&view(a, "c-1", OrderStatus::Placed, 1), None)),
            None,
            "a version already sent"
        );
        assert_eq!(
            sent(list.update(&view(a, "c-2", OrderStatus::Placed, 2), None)),
            None,
            "another customer's order"
        );
        assert_eq!(
            sent(list.update(&view(a, "c-1", OrderStatus::Placed, 3), None)),
            Some((3, false))
        );
        assert_eq!(
            sent(list.update(&view(a, "c-1", OrderStatus::Confirmed, 4), None)),
            Some((4, true)),
            "it left the status"
        );
        assert_eq!(
            sent(list.update(&view(a, "c-1", OrderStatus::Shipped, 5), None)),
            None,
            "it is out of the list"
        );
        assert!(list.sent.is_empty());
    }
}
