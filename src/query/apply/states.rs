//! The state of recently written orders, kept in memory by a projector (or a
//! rebuild's writer) so that a batch needs no load round trip for them.
//!
//! Bounded (`query::segments`). A stale entry cannot corrupt the projection: every
//! write is fenced by the partitions' stored positions and by each order's
//! version (`Applied::Stale`), after which the whole cache is dropped.

use std::collections::BTreeMap;

use crate::query::{
    read_model::{OrderView, ParkedEvent},
    segments::Segments,
};

/// An order as a batch left it: its view (none before version 1 arrives)
/// and its stored parked events by version.
#[derive(Debug, Clone, Default)]
pub struct OrderState {
    /// The projected view.
    pub view: Option<OrderView>,
    /// Events parked behind a gap, all stored.
    pub parked: BTreeMap<u64, ParkedEvent>,
}

/// Recently written orders' states, bounded (see `Segments`).
pub type OrderStates = Segments<OrderState>;

#[cfg(test)]
mod tests {
    use uuid::Uuid;

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
