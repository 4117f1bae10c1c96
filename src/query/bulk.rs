//! Bulk application for rebuilds: a chunk of many thousand events folded in
//! memory and written with a handful of statements (`COPY` for new rows).
//!
//! The in-memory fold (`Fold`, with the decoding of messages into
//! `BulkItem`s) is the one the projector uses for its batches too; a chunk is
//! folded the same way, only larger: per order, a version at or below the projected one is
//! a duplicate (skipped); the next version is applied with `domain::evolve`,
//! followed by any parked successors; a later version is parked in
//! `pending_event`. Messages that cannot be read go to `dead_letter`. The
//! orders a chunk touches are loaded from the generation first, so a chunk
//! continues whatever earlier chunks, or an interrupted rebuild, wrote; no
//! state is kept between chunks.
//!
//! A chunk is one transaction: the generation's state is checked (it must
//! still be building), the partitions' positions are moved from the values
//! the chunk started from (a fence, as in the projector), and the rows are
//! written. An interrupted rebuild therefore resumes from positions that
//! match exactly what was written.

use std::collections::{BTreeMap, HashMap};

use base64::{Engine, engine::general_purpose::STANDARD};
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

use crate::{
    codec::{self, DecodeError, EventMeta},
    domain::{Event, Order, OrderId, evolve},
    query::{
        QueryError,
        generation::WriteCondition,
        read_model::{DeadLetter, EventOrigin, HistoryRecord, OrderView, ParkedEvent, ReadModel},
    },
};

/// A message or stored event, sorted into what a chunk does with it.
#[derive(Debug)]
pub enum BulkItem {
    /// A readable event.
    Event {
        /// Its envelope.
        meta: EventMeta,
        /// The domain event.
        event: Event,
        /// The encoded `OrderEvent` exactly as read.
        payload: Vec<u8>,
        /// Where it was read.
        origin: EventOrigin,
    },
    /// A message that cannot be applied.
    Dead(DeadLetter),
}

impl BulkItem {
    /// Sorts a Kafka message: its event, or a dead letter saying why not.
    pub fn from_message<M: Message>(message: &M) -> Self {
        match decode_message(message.key(), message.payload()) {
            Ok((meta, event)) => Self::Event {
                meta,
                event,
                payload: message.payload().unwrap_or_default().to_vec(),
                origin: EventOrigin::Kafka {
                    partition: message.partition(),
                    offset: message.offset(),
                },
            },
            Err(error) => Self::Dead(DeadLetter {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers_json: headers_json(message),
                error,
            }),
        }
    }

    /// An event read from the event store at `position`.
    pub fn from_store(position: i64, payload: Vec<u8>) -> Result<Self, QueryError> {
        let (meta, event) = codec::decode_event(&payload).map_err(|e| {
            QueryError::Corrupt(format!(
                "stored event at position {position} does not decode: {e}"
            ))
        })?;
        Ok(Self::Event {
            meta,
            event,
            payload,
            origin: EventOrigin::Store { position },
        })
    }
}

/// Counts of one written chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkSummary {
    /// Items in the chunk.
    pub items: u64,
    /// Events applied.
    pub applied: u64,
    /// Events at or below the order's version (or already parked).
    pub duplicates: u64,
    /// Events parked behind a gap.
    pub parked: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Orders written.
    pub orders: u64,
}

/// What became of a chunk's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Committed.
    Written(ChunkSummary),
    /// A partition's stored position was not the one the chunk started from
    /// (another writer moved it); rolled back.
    Fenced,
}

/// Applies `items` to `read_model` in one transaction, moving each partition
/// of `advances` from its first value (`None`: no position stored yet) to its
/// second. Fails with `GenerationClosed` unless `condition` holds. `topic` is
/// recorded with events read from Kafka (empty for the event store).
pub async fn apply_chunk(
    read_model: &ReadModel,
    condition: WriteCondition,
    topic: &str,
    advances: &BTreeMap<i32, (Option<i64>, i64)>,
    items: Vec<BulkItem>,
) -> Result<ChunkOutcome, QueryError> {
    let order_ids = order_ids(&items);
    let started = std::time::Instant::now();
    let mut tx = read_model.begin().await?;
    if !tx.holds(condition).await? {
        tx.rollback().await?;
        return Err(QueryError::GenerationClosed(condition.generation));
    }
    // Partitions in ascending order, as the projector takes them.
    for (&partition, &(expected, next)) in advances {
        if !tx
            .advance_position(topic, partition, expected, next)
            .await?
        {
            tx.rollback().await?;
            return Ok(ChunkOutcome::Fenced);
        }
    }
    let projected = tx.projected_among(&order_ids).await?;
    let views = tx.load_orders(&projected).await?;
    let parked = tx.load_parked(&order_ids).await?;
    let loaded = started.elapsed();
    let mut fold = Fold::new(&order_ids, views, parked, None);
    let item_count = items.len() as u64;
    for item in items {
        fold.apply(item)?;
    }
    let FoldCounts {
        applied,
        duplicates,
        parked,
        dead_lettered,
    } = fold.counts;
    let mut summary = ChunkSummary {
        items: item_count,
        applied,
        duplicates,
        parked,
        dead_lettered,
        orders: 0,
    };

    for letter in &fold.dead {
        tx.dead_letter(topic, letter).await?;
    }
    for parked in fold.newly_parked() {
        tx.park(topic, parked).await?;
    }
    let mut new_orders: Vec<&OrderView> = vec![];
    let mut moved_orders: Vec<(&OrderView, u64)> = vec![];
    for progress in fold.orders.values() {
        if progress.dirty
            && let Some(view) = &progress.view
        {
            if progress.loaded_version == 0 {
                new_orders.push(view);
            } else {
                moved_orders.push((view, progress.loaded_version));
            }
        }
    }
    summary.orders = (new_orders.len() + moved_orders.len()) as u64;
    let folded = started.elapsed();
    tx.copy_new_orders(&new_orders).await?;
    let orders_written = started.elapsed();
    tx.save_orders(&moved_orders).await?;
    let moved_written = started.elapsed();
    tx.copy_history(topic, &fold.history).await?;
    let history_written = started.elapsed();
    tx.unpark(&fold.unparked).await?;
    if summary.applied > 0 {
        tx.touch_meta(summary.applied).await?;
    }
    // No NOTIFY: nobody reads a generation while it is being built.
    tx.commit().await?;
    tracing::debug!(
        ?summary,
        ?loaded,
        ?folded,
        ?orders_written,
        ?moved_written,
        ?history_written,
        committed = ?started.elapsed(),
        "chunk written"
    );
    Ok(ChunkOutcome::Written(summary))
}

/// One order's state while a batch or chunk is folded.
pub(crate) struct Progress {
    pub(crate) view: Option<OrderView>,
    /// The version the view was loaded at (0: not projected yet).
    pub(crate) loaded_version: u64,
    /// Parked events by version, and whether each is already stored.
    pub(crate) parked: BTreeMap<u64, (ParkedEvent, bool)>,
    pub(crate) dirty: bool,
}

impl Progress {
    fn version(&self) -> u64 {
        self.view.as_ref().map_or(0, |v| v.order.version)
    }
}

/// What a fold did with its items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FoldCounts {
    pub(crate) applied: u64,
    pub(crate) duplicates: u64,
    pub(crate) parked: u64,
    pub(crate) dead_lettered: u64,
}

/// The distinct orders of `items`' events, sorted.
pub(crate) fn order_ids(items: &[BulkItem]) -> Vec<Uuid> {
    let mut order_ids: Vec<Uuid> = items
        .iter()
        .filter_map(|item| match item {
            BulkItem::Event { meta, .. } => Some(meta.order_id.as_uuid()),
            BulkItem::Dead(_) => None,
        })
        .collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    order_ids
}

/// Items folded in memory: the orders they touch and the rows to write.
pub(crate) struct Fold {
    pub(crate) orders: HashMap<Uuid, Progress>,
    pub(crate) history: Vec<HistoryRecord>,
    pub(crate) unparked: Vec<(Uuid, u64)>,
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) counts: FoldCounts,
    /// The projector's gaps counted before this fold, for the running total
    /// in the gap log (none for a rebuild's chunks).
    gaps_before: Option<u64>,
}

impl Fold {
    /// Starts from the loaded `views` and stored `parked` events of `order_ids`.
    pub(crate) fn new(
        order_ids: &[Uuid],
        mut views: HashMap<Uuid, OrderView>,
        parked: Vec<ParkedEvent>,
        gaps_before: Option<u64>,
    ) -> Self {
        let mut orders: HashMap<Uuid, Progress> = order_ids
            .iter()
            .map(|id| {
                let view = views.remove(id);
                let progress = Progress {
                    loaded_version: view.as_ref().map_or(0, |v| v.order.version),
                    view,
                    parked: BTreeMap::new(),
                    dirty: false,
                };
                (*id, progress)
            })
            .collect();
        for event in parked {
            if let Some(progress) = orders.get_mut(&event.order_id) {
                progress.parked.insert(event.version, (event, true));
            }
        }
        Self {
            orders,
            history: vec![],
            unparked: vec![],
            dead: vec![],
            counts: FoldCounts::default(),
            gaps_before,
        }
    }

    /// Parked events this fold added, which are not stored yet.
    pub(crate) fn newly_parked(&self) -> impl Iterator<Item = &ParkedEvent> {
        self.orders.values().flat_map(|progress| {
            progress
                .parked
                .values()
                .filter(|(_, stored)| !stored)
                .map(|(parked, _)| parked)
        })
    }

    /// Folds one item: a duplicate is skipped, the next version applied (with
    /// any parked successors), a later version parked, a dead letter kept.
    pub(crate) fn apply(&mut self, item: BulkItem) -> Result<(), QueryError> {
        let (meta, event, payload, origin) = match item {
            BulkItem::Dead(letter) => {
                tracing::warn!(
                    partition = letter.partition,
                    offset = letter.offset,
                    error = %letter.error,
                    "message dead-lettered"
                );
                self.dead.push(letter);
                self.counts.dead_lettered += 1;
                return Ok(());
            }
            BulkItem::Event {
                meta,
                event,
                payload,
                origin,
            } => (meta, event, payload, origin),
        };
        let order_id = meta.order_id.as_uuid();
        let progress = self.orders.get_mut(&order_id).expect("every order loaded");
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
                payload,
                origin,
            };
            progress.parked.insert(meta.version, (parked, false));
            self.counts.parked += 1;
            return Ok(());
        }
        self.history
            .push(apply_event(progress, &meta, &event, payload, origin));
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

/// The event in a message's value, checked against its key, or why it cannot
/// be applied (the reason stored with the dead letter).
pub(crate) fn decode_message(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<(EventMeta, Event), String> {
    let payload = payload.ok_or("message has no value")?;
    let (meta, event) = codec::decode_event(payload).map_err(|e| match e {
        DecodeError::UnknownType => "unknown event type".to_owned(),
        other => format!("undecodable value: {other}"),
    })?;
    let key = key.ok_or("message has no key")?;
    let key_matches = std::str::from_utf8(key)
        .ok()
        .and_then(|k| OrderId::parse(k).ok())
        .is_some_and(|k| k == meta.order_id);
    if !key_matches {
        return Err(format!(
            "key {:?} does not match the envelope's order_id {}",
            String::from_utf8_lossy(key),
            meta.order_id
        ));
    }
    Ok((meta, event))
}

/// A message's headers as a JSON array, values as text when UTF-8, else base64.
fn headers_json<M: Message>(message: &M) -> String {
    let headers: Vec<serde_json::Value> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| match header.value {
                    None => serde_json::json!({ "key": header.key }),
                    Some(value) => match std::str::from_utf8(value) {
                        Ok(text) => serde_json::json!({ "key": header.key, "value": text }),
                        Err(_) => serde_json::json!({
                            "key": header.key,
                            "value_base64": STANDARD.encode(value),
                        }),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::Value::Array(headers).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_without_a_value_or_key_are_refused_with_the_projectors_reasons() {
        assert_eq!(
            decode_message(Some(b"k"), None).unwrap_err(),
            "message has no value"
        );
        assert!(
            decode_message(Some(b"k"), Some(b"\xff\xff"))
                .unwrap_err()
                .starts_with("undecodable value")
        );
    }
}
