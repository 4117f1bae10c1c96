//! A map of orders bounded by two segments of at most `capacity / 2` entries:
//! inserts go to the newer one; when it fills up, the older one is dropped
//! and the newer takes its place (an approximate LRU that needs no
//! bookkeeping per read). Used by the projector's kept order states and by
//! the read cache.

use std::collections::HashMap;

use uuid::Uuid;

/// Orders mapped to `V`, bounded.
#[derive(Debug)]
pub struct Segments<V> {
    newer: HashMap<Uuid, V>,
    older: HashMap<Uuid, V>,
    segment: usize,
}

impl<V> Segments<V> {
    /// Keeps at most about `capacity` orders (below 2: none).
    pub fn new(capacity: usize) -> Self {
        Self {
            newer: HashMap::new(),
            older: HashMap::new(),
            segment: capacity / 2,
        }
    }

    /// The value of `order_id`, if kept.
    pub fn get(&self, order_id: &Uuid) -> Option<&V> {
        self.newer
            .get(order_id)
            .or_else(|| self.older.get(order_id))
    }

    /// Keeps `value` for `order_id`, dropping the older segment when the newer is full.
    pub fn insert(&mut self, order_id: Uuid, value: V) {
        if self.segment == 0 {
            return;
        }
        self.older.remove(&order_id);
        self.newer.insert(order_id, value);
        if self.newer.len() >= self.segment {
            self.older = std::mem::take(&mut self.newer);
        }
    }

    /// Forgets `order_id`.
    pub fn remove(&mut self, order_id: &Uuid) {
        self.newer.remove(order_id);
        self.older.remove(order_id);
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.newer.retain(|_, value| keep(value));
        self.older.retain(|_, value| keep(value));
    }

    /// Forgets every order.
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
    fn the_map_stays_bounded_and_keeps_the_newest() {
        let mut map = Segments::new(4);
        let ids: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
        for (i, id) in ids.iter().enumerate() {
            map.insert(*id, i);
            assert!(map.len() <= 4);
        }
        assert_eq!(map.get(&ids[9]), Some(&9));
        assert!(map.get(&ids[0]).is_none());
        map.retain(|&i| i != 9);
        assert!(map.get(&ids[9]).is_none());
        map.clear();
        assert!(map.is_empty());
        let mut none = Segments::new(0);
        none.insert(ids[0], 0);
        assert!(none.is_empty());
    }
}
