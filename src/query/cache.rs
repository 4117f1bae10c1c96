//! Recently projected orders, served to `GetOrder` without a database round
//! trip.
//!
//! Only the projector of this process fills the cache, and only with orders of
//! the partitions it owns: it is their only writer while it owns them (every
//! other writer is fenced by the stored positions). Before a batch's write it
//! marks the batch's orders *pending*; after the commit it stores their new
//! views. A request that finds an order pending or absent reads the database.
//! So an answer from the cache is never older than what the database held
//! when the request arrived: until the cache holds the new view, the order
//! is pending, and pending orders are read from the database.
//!
//! Entries of a partition are dropped when it is revoked (in the rebalance
//! callback, before any other member can own it), and all entries when the
//! projector is fenced, switches generation or replaces its consumer. The
//! cache only answers while its lease is fresh: the projector renews it at
//! every step, so a projector that stops stepping (stalled, or its process
//! paused past the group's session timeout) stops the cache from answering
//! before another member can have taken its partitions over.
//!
//! Bounded (`query::segments`).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    metrics::{Counter, Metrics},
    query::{read_model::OrderView, segments::Segments},
};

/// Orders the cache holds at most (about 400 bytes each).
pub const DEFAULT_CAPACITY: usize = 16_384;

#[derive(Debug, Clone)]
enum Entry {
    /// Being written: read the database.
    Pending { partition: i32 },
    /// As committed at `projected_at`.
    Ready {
        view: Arc<OrderView>,
        partition: i32,
    },
}

impl Entry {
    fn partition(&self) -> i32 {
        match self {
            Entry::Pending { partition } | Entry::Ready { partition, .. } => *partition,
        }
    }
}

#[derive(Debug)]
struct Inner {
    entries: Segments<Entry>,
    /// The generation the entries belong to.
    generation: i32,
    /// When this process's projector last committed.
    projected_at: Option<DateTime<Utc>>,
    /// Until when the cache may answer.
    lease_until: Option<Instant>,
}

/// The read cache of one `order-query` process; clones share it.
#[derive(Debug, Clone)]
pub struct ReadCache {
    inner: Arc<Mutex<Inner>>,
    hits: Counter,
    misses: Counter,
}

/// An order answered from the cache.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Its view as last committed.
    pub view: Arc<OrderView>,
    /// When this process's projector last committed.
    pub projected_at: Option<DateTime<Utc>>,
}

impl ReadCache {
    /// A cache of at most about `capacity` orders (0: never answers).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                entries: Segments::new(capacity),
                generation: 0,
                projected_at: None,
                lease_until: None,
            })),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("read cache lock")
    }

    /// The committed view of `order_id` in `generation`, unless it is pending,
    /// absent or the lease has run out.
    pub fn get(&self, generation: i32, order_id: &Uuid) -> Option<Hit> {
        let inner = self.lock();
        let live = inner.generation == generation
            && inner
                .lease_until
                .is_some_and(|until| Instant::now() < until);
        let hit = match inner.entries.get(order_id) {
            Some(Entry::Ready { view, .. }) if live => Some(Hit {
                view: view.clone(),
                projected_at: inner.projected_at,
            }),
            _ => None,
        };
        drop(inner);
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.inc();
        hit
    }

    /// Lets the cache answer for `valid_for` from now (the projector steps).
    pub fn renew(&self, valid_for: Duration) {
        self.lock().lease_until = Some(Instant::now() + valid_for);
    }

    /// Marks orders about to be written (with their partitions) pending.
    pub fn begin(&self, orders: &HashMap<Uuid, i32>) {
        let mut inner = self.lock();
        for (&order_id, &partition) in orders {
            inner.entries.insert(order_id, Entry::Pending { partition });
        }
    }

    /// Stores the views a batch committed in `generation`; the other orders
    /// of the batch (`begun`) are forgotten.
    pub fn committed(
        &self,
        generation: i32,
        begun: &HashMap<Uuid, i32>,
        views: Vec<OrderView>,
        at: DateTime<Utc>,
    ) {
        let mut inner = self.lock();
        if inner.generation != generation {
            inner.entries.clear();
            inner.generation = generation;
        }
        inner.projected_at = Some(at);
        let mut written = HashSet::with_capacity(views.len());
        for view in views {
            let order_id = view.order_id;
            let Some(&partition) = begun.get(&order_id) else {
                continue;
            };
            written.insert(order_id);
            let entry = Entry::Ready {
                view: Arc::new(view),
                partition,
            };
            inner.entries.insert(order_id, entry);
        }
        for order_id in begun.keys().filter(|id| !written.contains(id)) {
            inner.entries.remove(order_id);
        }
    }

    /// Forgets the orders of a batch whose write failed or was abandoned.
    pub fn abandon(&self, begun: &HashMap<Uuid, i32>) {
        let mut inner = self.lock();
        for order_id in begun.keys() {
            inner.entries.remove(order_id);
        }
    }

    /// Forgets the orders of `partitions` (revoked from this process).
    pub fn drop_partitions(&self, partitions: &[i32]) {
        self.lock()
            .entries
            .retain(|e| !partitions.contains(&e.partition()));
    }

    /// Forgets every order.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// Orders held (pending included).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads answered from the cache since start.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Registers the hit and miss counters in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "orders_read_cache_hits",
            "GetOrder reads answered from the read cache.",
            self.hits.clone(),
        );
        metrics.register(
            "orders_read_cache_misses",
            "GetOrder reads the read cache could not answer (read from PostgreSQL).",
            self.misses.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Order;

    fn view(order_id: Uuid, version: u64) -> OrderView {
        OrderView {
            order_id,
            order: Order {
                version,
                ..Order::default()
            },
            placed_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn pending_orders_and_an_expired_lease_are_misses() {
        let cache = ReadCache::new(8);
        let id = Uuid::now_v7();
        let begun = HashMap::from([(id, 2)]);
        cache.renew(Duration::from_secs(60));
        cache.begin(&begun);
        assert!(cache.get(1, &id).is_none(), "pending");
        cache.committed(1, &begun, vec![view(id, 3)], Utc::now());
        assert_eq!(cache.get(1, &id).unwrap().view.order.version, 3);
        assert!(cache.get(2, &id).is_none(), "another generation");
        cache.renew(Duration::ZERO);
        assert!(cache.get(1, &id).is_none(), "lease expired");
        cache.renew(Duration::from_secs(60));
        cache.drop_partitions(&[2]);
        assert!(cache.get(1, &id).is_none(), "partition revoked");
        let metrics = Metrics::default();
        cache.register(&metrics);
        assert!(
            metrics
                .encode(false)
                .contains("orders_read_cache_hits_total 1\n")
        );
    }

    #[test]
    fn orders_of_a_batch_that_did_not_change_are_forgotten() {
        let cache = ReadCache::new(8);
        cache.renew(Duration::from_secs(60));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        cache.committed(1, &HashMap::from([(a, 0)]), vec![view(a, 1)], Utc::now());
        let begun = HashMap::from([(a, 0), (b, 0)]);
        cache.begin(&begun);
        cache.committed(1, &begun, vec![view(b, 1)], Utc::now());
        assert!(cache.get(1, &a).is_none());
        assert!(cache.get(1, &b).is_some());
        cache.abandon(&begun);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = ReadCache::new(4);
        for _ in 0..20 {
            let id = Uuid::now_v7();
            cache.committed(1, &HashMap::from([(id, 0)]), vec![view(id, 1)], Utc::now());
            assert!(cache.len() <= 4);
        }
    }
}
