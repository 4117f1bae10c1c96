//! The state of recently written orders, kept in memory by a projector (or a
//! rebuild's writer) so that a batch needs no load round trip for them.
//!
//! Bounded: two segments of at most `capacity / 2` entries; when the newer
//! one fills up, the older one is dropped (an approximate LRU that needs no
//! bookkeeping per read). A stale entry cannot corrupt the projection: every
//! write is fenced by the partitions' stored positions and by each order's
//! version (`Applied::Stale`), after which the whole cache is dropped.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::query::read_model::{OrderView, ParkedEvent};

/// An order as a batch left it: its view (none before version 1 arrives)
/// and its stored parked events by version.
#[derive(Debug, Clone, Default)]
pub struct OrderState {
    /// The projected view.
    pub view: Option<OrderView>,
    /// Events parked behind a gap, all stored.
    pub parked: BTreeMap<u64, ParkedEvent>,
}

/// Recently written orders' states, bounded.
#[derive(Debug)]
pub struct OrderStates {
    newer: HashMap<Uuid, OrderState>,
    older: HashMap<Uuid, OrderState>,
    segment: usize,
}

impl OrderStates {
    /// Keeps at most about `capacity` orders (0: none).
    pub fn new(capacity: usize) -> Self {
        Self {
            newer: HashMap::new(),
            older: HashMap::new(),
            segment: capacity / 2,
        }
    }

    /// The state of `order_id`, if kept.
    pub fn get(&self, order_id: &Uuid) -> Option<&OrderState> {
        self.newer
            .get(order_id)
            .or_else(|| self.older.get(order_id))
    }

    /// Keeps `state` as the state of `order_id`.
    pub fn insert(&mut self, order_id: Uuid, state: OrderState) {
        if self.segment == 0 {
            return;
        }
        self.older.remove(&order_id);
        self.newer.insert(order_id, state);
        if self.newer.len() >= self.segment {
            self.older = std::mem::take(&mut self.newer);
        }
    }

    /// Forgets every order (after a fence, a stale write, a rebalance).
    pub fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
    }

    /// How many orders are kept.
    pub fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_bounded_and_keeps_the_newest() {
        let mut states = OrderStates::new(4);
        let ids: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            states.insert(*id, OrderState::default());
            assert!(states.len() <= 4);
        }
        assert!(states.get(&ids[9]).is_some());
        assert!(states.get(&ids[0]).is_none());
        states.clear();
        assert!(states.is_empty());
        let mut none = OrderStates::new(0);
        none.insert(ids[0], OrderState::default());
        assert!(none.is_empty());
    }
}
