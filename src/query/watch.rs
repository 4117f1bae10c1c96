//! Read-your-writes wake-ups and generation switches. One `PgListener` per
//! process listens on the live projection's NOTIFY channel and fans the
//! announcements (`announce`) out to the requests waiting for those orders
//! and to the `WatchOrders` streams of those orders' customers; nobody polls
//! for those.
//!
//! A waiter subscribes *before* it reads the projected version, so a commit
//! that lands between its read and its wait still wakes it. When the listener
//! (re)connects, notifications may have been missed, so every waiter is woken
//! to re-read.
//!
//! The same connection listens on `GENERATION_CHANNEL`: when a rebuild
//! switches generations, the process's `LiveProjection` is refreshed, the
//! listener moves to the new generation's channel and every waiter re-reads
//! there. The control table is also re-read on every (re)connection and every
//! few seconds, in case a notification was lost.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::query::{
    announce::{self, Announced, CustomerKey},
    generation::{GENERATION_CHANNEL, LiveProjection},
};

/// How often the control table is re-read even without a notification.
const GENERATION_RECHECK: Duration = Duration::from_secs(5);
/// Changed orders one customer subscription holds at most; beyond, it is told
/// to re-read everything instead.
pub const INBOX_MAX: usize = 1_024;

/// Orders that requests are waiting on, each with a wake-up channel, and the
/// customers that streams watch, each with their inboxes.
#[derive(Debug, Clone, Default)]
pub struct ProjectionWatch {
    waiting: Arc<Mutex<HashMap<Uuid, watch::Sender<u64>>>>,
    customers: Arc<Mutex<HashMap<CustomerKey, Vec<Arc<Inbox>>>>>,
}

/// What one customer subscription has been told since it last looked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Orders of the customer (or of one sharing its key) that changed.
    pub orders: HashSet<Uuid>,
    /// Announcements may have been missed, or too many came: re-read all.
    pub everything: bool,
}

#[derive(Debug, Default)]
struct Inbox {
    changed: Mutex<Changed>,
    notify: Notify,
}

impl Inbox {
    fn push(&self, order_id: Option<Uuid>) {
        {
            let mut changed = self.changed.lock().expect("inbox lock");
            match order_id {
                Some(_) if changed.everything => {}
                Some(id) if changed.orders.len() < INBOX_MAX => {
                    changed.orders.insert(id);
                }
                _ => {
                    changed.orders = HashSet::new();
                    changed.everything = true;
                }
            }
        }
        self.notify.notify_one();
    }
}

/// Interest in one customer's orders; dropping it unregisters.
#[derive(Debug)]
pub struct CustomerSubscription {
    key: CustomerKey,
    inbox: Arc<Inbox>,
    watch: ProjectionWatch,
}

impl CustomerSubscription {
    /// Resolves once something was announced since the last `take`.
    pub async fn changed(&self) {
        self.inbox.notify.notified().await;
    }

    /// What was announced since the last `take`, emptying the inbox.
    pub fn take(&self) -> Changed {
        std::mem::take(&mut *self.inbox.changed.lock().expect("inbox lock"))
    }
}

impl Drop for CustomerSubscription {
    fn drop(&mut self) {
        let mut customers = self.watch.customers.lock().expect("watch lock");
        if let Some(inboxes) = customers.get_mut(&self.key) {
            inboxes.retain(|inbox| !Arc::ptr_eq(inbox, &self.inbox));
            if inboxes.is_empty() {
                customers.remove(&self.key);
            }
        }
    }
}

/// Interest in one order; dropping it unregisters.
#[derive(Debug)]
pub struct Subscription {
    order_id: Uuid,
    receiver: Option<watch::Receiver<u64>>,
    watch: ProjectionWatch,
}

impl Subscription {
    /// Resolves at the next announcement for the order (or a forced wake-up).
    pub async fn changed(&mut self) {
        let receiver = self.receiver.as_mut().expect("present until drop");
        if receiver.changed().await.is_err() {
            // The sender lives in the map while we are subscribed; never closed.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut waiting = self.watch.waiting.lock().expect("watch lock");
        if waiting
            .get(&self.order_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            waiting.remove(&self.order_id);
        }
    }
}

impl ProjectionWatch {
    /// Registers interest in `order_id`; do this before reading its version.
    pub fn subscribe(&self, order_id: Uuid) -> Subscription {
        let mut waiting = self.waiting.lock().expect("watch lock");
        let receiver = waiting
            .entry(order_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            order_id,
            receiver: Some(receiver),
            watch: self.clone(),
        }
    }

    /// Registers interest in the orders of the customer with `key`; do this
    /// before reading them.
    pub fn subscribe_customer(&self, key: CustomerKey) -> CustomerSubscription {
        let inbox = Arc::new(Inbox::default());
        self.customers
            .lock()
            .expect("watch lock")
            .entry(key)
            .or_default()
            .push(inbox.clone());
        CustomerSubscription {
            key,
            inbox,
            watch: self.clone(),
        }
    }

    /// Wakes the waiters of the orders and customers in one NOTIFY payload.
    pub fn announce(&self, payload: &str) {
        self.wake(announce::parse(payload));
    }

    /// Wakes the waiters of these orders and customers (a commit of this
    /// process's projector).
    pub fn announce_changes(&self, changes: &[Announced]) {
        self.wake(changes.iter().copied());
    }

    /// Wakes the waiters of each order with at least its version, and the
    /// subscriptions of each order's customer (nothing is parsed while
    /// nobody waits).
    fn wake(&self, announced: impl Iterator<Item = Announced>) {
        let waiting = self.waiting.lock().expect("watch lock");
        let customers = self.customers.lock().expect("watch lock");
        if waiting.is_empty() && customers.is_empty() {
            return;
        }
        for entry in announced {
            match entry {
                Announced::Version(order_id, version) => {
                    if let Some(sender) = waiting.get(&order_id) {
                        sender.send_modify(|v| *v = (*v).max(version));
                    }
                }
                Announced::Customer(order_id, key) => {
                    for inbox in customers.get(&key).into_iter().flatten() {
                        inbox.push(Some(order_id));
                    }
                }
            }
        }
    }

    /// Wakes every waiter so that it re-reads (announcements may have been lost).
    pub fn wake_all(&self) {
        for sender in self.waiting.lock().expect("watch lock").values() {
            sender.send_modify(|_| {});
        }
        for inbox in self
            .customers
            .lock()
            .expect("watch lock")
            .values()
            .flatten()
        {
            inbox.push(None);
        }
    }

    /// Number of orders being waited on.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().expect("watch lock").len()
    }

    /// Listens on the live generation's channel and on `GENERATION_CHANNEL` of
    /// the database `connect` reaches until `stop`, reconnecting as needed.
    pub async fn listen(
        self,
        connect: PgConnectOptions,
        live: LiveProjection,
        stop: CancellationToken,
    ) {
        let mut switches = live.subscribe();
        let mut recheck = tokio::time::interval(GENERATION_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let connected = async {
                // As `PgListener::connect` does with a URL: a pool of one, only
                // for reconnecting, here with `connect`'s session settings.
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .max_lifetime(None)
                    .idle_timeout(None)
                    .connect_with(connect.clone())
                    .await?;
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.ignore_pool_close_event(true);
                listener.listen(GENERATION_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                () = stop.cancelled() => break,
                connected = connected => match connected {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "projection listener cannot connect; retrying");
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            backoff = Duration::from_millis(100);
            // A switch may have been missed while disconnected.
            refresh(&live).await;
            let mut channel = switches.borrow_and_update().1.channel().to_owned();
            if let Err(error) = listener.listen(&channel).await {
                tracing::warn!(%error, "projection listener failed; reconnecting");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                continue;
            }
            tracing::debug!(%channel, "projection listener connected");
            // Announcements made before LISTEN took effect were not heard.
            self.wake_all();
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => return,
                    changed = switches.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        // This process switched generations: listen there, re-read there.
                        let moved = channel.clone();
                        channel = switches.borrow_and_update().1.channel().to_owned();
                        let relistened = async {
                            listener.unlisten(&moved).await?;
                            listener.listen(&channel).await
                        };
                        if let Err(error) = relistened.await {
                            tracing::warn!(%error, "projection listener failed; reconnecting");
                            self.wake_all();
                            break;
                        }
                        self.wake_all();
                        continue;
                    }
                    _ = recheck.tick() => {
                        refresh(&live).await;
                        continue;
                    }
                    // Cancel-safe: a partly read message stays buffered.
                    next = listener.try_recv() => next,
                };
                match next {
                    Ok(Some(notification)) if notification.channel() == GENERATION_CHANNEL => {
                        refresh(&live).await;
                    }
                    Ok(Some(notification)) => self.announce(notification.payload()),
                    Ok(None) => {
                        tracing::warn!("projection listener lost its connection; reconnected");
                        refresh(&live).await;
                        self.wake_all();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "projection listener failed; reconnecting");
                        self.wake_all();
                        break;
                    }
                }
            }
        }
    }
}

/// Re-reads the live generation; a failure is logged and retried later.
async fn refresh(live: &LiveProjection) {
    if let Err(error) = live.refresh().await {
        tracing::warn!(%error, "cannot read the live projection generation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_announcement_wakes_only_the_orders_waiters() {
        let watch = ProjectionWatch::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut on_a = watch.subscribe(a);
        let mut on_b = watch.subscribe(b);
        watch.announce(&format!("{a}:2"));
        tokio::time::timeout(Duration::from_secs(1), on_a.changed())
            .await
            .expect("a is woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), on_b.changed())
                .await
                .is_err(),
            "b is not woken"
        );
    }

    #[tokio::test]
    async fn an_announcement_before_the_wait_is_not_lost() {
        let watch = ProjectionWatch::default();
        let a = Uuid::now_v7();
        let mut on_a = watch.subscribe(a);
        watch.announce(&format!("{a}:1"));
        tokio::time::timeout(Duration::from_secs(1), on_a.changed())
            .await
            .expect("the earlier announcement is seen");
    }

    #[tokio::test]
    async fn a_customer_subscription_collects_its_changed_orders_until_taken() {
        let watch = ProjectionWatch::default();
        let customer = crate::domain::CustomerId::parse("c-1").unwrap();
        let key = CustomerKey::of(&customer);
        let inbox = watch.subscribe_customer(key);
        let other = watch.subscribe_customer(CustomerKey::of(
            &crate::domain::CustomerId::parse("c-2").unwrap(),
        ));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let changes: Vec<Announced> = [(a, 1), (b, 1), (a, 2)]
            .into_iter()
            .flat_map(|(id, v)| Announced::change(id, v, Some(&customer)))
            .collect();
        watch.announce_changes(&changes);
        tokio::time::timeout(Duration::from_secs(1), inbox.changed())
            .await
            .expect("woken");
        assert_eq!(
            inbox.take(),
            Changed {
                orders: HashSet::from([a, b]),
                everything: false
            }
        );
        assert_eq!(inbox.take(), Changed::default(), "taking empties it");
        assert_eq!(
            other.take(),
            Changed::default(),
            "another customer's is untouched"
        );

        // Too many changes at once become one "re-read everything".
        let many: Vec<Announced> = (0..=INBOX_MAX)
            .flat_map(|v| Announced::change(Uuid::now_v7(), v as u64, Some(&customer)))
            .collect();
        watch.announce_changes(&many);
        let changed = inbox.take();
        assert!(changed.everything && changed.orders.is_empty());
        watch.wake_all();
        assert!(other.take().everything, "a lost connection re-reads all");
        drop((inbox, other));
        assert!(watch.customers.lock().unwrap().is_empty());
    }

    #[test]
    fn dropping_the_last_subscription_unregisters_the_order() {
        let watch = ProjectionWatch::default();
        let a = Uuid::now_v7();
        let first = watch.subscribe(a);
        let second = watch.subscribe(a);
        drop(first);
        assert_eq!(watch.waiting(), 1);
        drop(second);
        assert_eq!(watch.waiting(), 0);
    }
}
