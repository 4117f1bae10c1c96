//! Folding a batch in memory: per order, a version at or below the projected
//! one is a duplicate (skipped); the next version is applied with
//! `domain::evolve`, followed by any parked successors; a later version is
//! parked. Messages that cannot be read become dead letters.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::{Incoming, states::OrderState};
use crate::{
    codec::{self, EventMeta},
    domain::{Event, Order, evolve},
    query::{
        QueryError,
        read_model::{DeadLetter, EventOrigin, HistoryRecord, OrderView, ParkedEvent},
    },
};

/// One order's state while a batch is folded.
struct Progress {
    view: Option<OrderView>,
    /// The version the view started from (0: not projected yet).
    loaded_version: u64,
    /// Parked events by version, and whether each is already stored.
    parked: BTreeMap<u64, (ParkedEvent, bool)>,
    dirty: bool,
}

impl Progress {
    fn version(&self) -> u64 {
        self.view.as_ref().map_or(0, |v| v.order.version)
    }
}

/// What a fold did with its items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldCounts {
    /// Events applied.
    pub applied: u64,
    /// Events at or below the order's version (or already parked).
    pub duplicates: u64,
    /// Events parked behind a gap.
    pub parked: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
}

/// Items folded in memory: the orders they touch and the rows to write.
pub struct Fold {
    orders: HashMap<Uuid, Progress>,
    pub(super) history: Vec<HistoryRecord>,
    pub(super) unparked: Vec<(Uuid, u64)>,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) counts: FoldCounts,
    /// The projector's gaps counted before this fold, for the running total
    /// in the gap log (none for a rebuild).
    gaps_before: Option<u64>,
}

impl Fold {
    /// Starts every order of `order_ids` from its state in `starts` (absent:
    /// never projected, nothing parked).
    pub(super) fn new(
        order_ids: &[Uuid],
        mut starts: HashMap<Uuid, OrderState>,
        gaps_before: Option<u64>,
    ) -> Self {
        let orders = order_ids
            .iter()
            .map(|id| {
                let state = starts.remove(id).unwrap_or_default();
                let progress = Progress {
                    loaded_version: state.view.as_ref().map_or(0, |v| v.order.version),
                    view: state.view,
                    parked: state
                        .parked
                        .into_iter()
                        .map(|(version, event)| (version, (event, true)))
                        .collect(),
                    dirty: false,
                };
                (*id, progress)
            })
            .collect();
        Self {
            orders,
            history: vec![],
            unparked: vec![],
            dead: vec![],
            counts: FoldCounts::default(),
            gaps_before,
        }
    }

    /// Orders whose view changed, with the version each started from.
    pub(super) fn changed(&self) -> Vec<(&OrderView, u64)> {
        self.orders
            .values()
            .filter(|p| p.dirty)
            .filter_map(|p| p.view.as_ref().map(|view| (view, p.loaded_version)))
            .collect()
    }

    /// Parked events this fold added, which are not stored yet.
    pub(super) fn newly_parked(&self) -> Vec<&ParkedEvent> {
        self.orders
            .values()
            .flat_map(|progress| {
                progress
                    .parked
                    .values()
                    .filter(|(_, stored)| !stored)
                    .map(|(parked, _)| parked)
            })
            .collect()
    }

    /// Every order's state once the fold is written (all parked events stored).
    pub(super) fn into_states(self) -> impl Iterator<Item = (Uuid, OrderState)> {
        self.orders.into_iter().map(|(id, progress)| {
            let parked = progress
                .parked
                .into_iter()
                .map(|(version, (event, _))| (version, event))
                .collect();
            (
                id,
                OrderState {
                    view: progress.view,
                    parked,
                },
            )
        })
    }

    /// Folds one item: a duplicate is skipped, the next version applied (with
    /// any parked successors), a later version parked, a dead letter kept.
    pub(super) fn apply(&mut self, item: &Incoming) -> Result<(), QueryError> {
        let (meta, event, payload, origin) = match item {
            Incoming::Dead(letter) => {
                tracing::warn!(
                    partition = letter.partition,
                    offset = letter.offset,
                    error = %letter.error,
                    "message dead-lettered"
                );
                self.dead.push(letter.clone());
                self.counts.dead_lettered += 1;
                return Ok(());
            }
            Incoming::Event {
                meta,
                event,
                payload,
                origin,
                ..
            } => (meta, event, payload, *origin),
        };
        let order_id = meta.order_id.as_uuid();
        let progress = self.orders.get_mut(&order_id).expect("every order started");
        let projected = progress.version();
        if meta.version <= projected || progress.parked.contains_key(&meta.version) {
            self.counts.duplicates += 1;
            return Ok(());
        }
        if meta.version > projected + 1 {
            let gaps_total = self
                .gaps_before
                .map(|before| before + self.counts.parked + 1);
            tracing::warn!(
                %order_id,
                version = meta.version,
                projected_version = projected,
                projector_gaps_total = gaps_total,
                "gap: event parked until the missing versions arrive"
            );
            let parked = ParkedEvent {
                order_id,
                version: meta.version,
                payload: payload.clone(),
                origin,
            };
            progress.parked.insert(meta.version, (parked, false));
            self.counts.parked += 1;
            return Ok(());
        }
        self.history
            .push(apply_event(progress, meta, event, payload.clone(), origin));
        self.counts.applied += 1;
        // The gap may have closed: apply the parked successors in order.
        while let Some((parked, stored)) = progress.parked.remove(&(progress.version() + 1)) {
            let (meta, event) = codec::decode_event(&parked.payload).map_err(|e| {
                QueryError::Corrupt(format!(
                    "parked event {order_id} v{} no longer decodes: {e}",
                    parked.version
                ))
            })?;
            if stored {
                self.unparked.push((order_id, parked.version));
            }
            tracing::info!(%order_id, version = parked.version, "parked event applied");
            self.history.push(apply_event(
                progress,
                &meta,
                &event,
                parked.payload,
                parked.origin,
            ));
            self.counts.applied += 1;
        }
        Ok(())
    }
}

/// Evolves the order by one event and returns its history record.
fn apply_event(
    progress: &mut Progress,
    meta: &EventMeta,
    event: &Event,
    payload: Vec<u8>,
    origin: EventOrigin,
) -> HistoryRecord {
    let view = progress.view.get_or_insert_with(|| OrderView {
        order_id: meta.order_id.as_uuid(),
        order: Order::default(),
        placed_at: meta.occurred_at,
        updated_at: meta.occurred_at,
    });
    view.order = evolve(std::mem::take(&mut view.order), event);
    debug_assert_eq!(view.order.version, meta.version);
    if view.order.version == 1 {
        view.placed_at = meta.occurred_at;
    }
    view.updated_at = meta.occurred_at;
    progress.dirty = true;
    HistoryRecord {
        order_id: meta.order_id.as_uuid(),
        version: meta.version,
        event_id: meta.event_id,
        event_type: event.type_name(),
        payload,
        occurred_at: meta.occurred_at,
        correlation_id: meta.correlation_id.clone(),
        causation_id: meta.causation_id.clone(),
        origin,
    }
}
