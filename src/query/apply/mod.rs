//! The one apply path of the read side: what arrives (`Incoming`, decoded
//! from a Kafka message or read from the event store), the fold of a batch in
//! memory (`fold`), the states kept between batches (`states`), and writing
//! the batch (`apply`): one statement for a live batch, `COPY` for a bulk
//! load. The live projector, the rebuild and dead-letter replays all go
//! through `apply`.
//!
//! Orders a batch touches start from the kept states; the others are loaded,
//! except orders whose first event in the batch is version 1 and that are not
//! kept: they are folded as new without a lookup (`unseen`). Every write is
//! fenced (positions, each order's version, unseen orders absent and without
//! parked events); a stale start rolls the write back, drops the kept states
//! and folds the batch again from loaded state.

mod fold;
mod states;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

pub use fold::FoldCounts;
pub use states::{OrderState, OrderStates};

use crate::{
    codec::{self, DecodeError, EventMeta},
    domain::{Event, OrderId},
    query::{
        QueryError,
        control::WriteCondition,
        read_model::{
            Applied, BatchWrite, DeadLetter, EventOrigin, LoadedStates, OrderView, ReadModel,
        },
    },
};
use fold::Fold;

/// A message or stored event, sorted into what a batch does with it.
#[derive(Debug, Clone)]
pub enum Incoming {
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

impl Incoming {
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

    fn event_version(&self) -> Option<(Uuid, u64)> {
        match self {
            Self::Event { meta, .. } => Some((meta.order_id.as_uuid(), meta.version)),
            Self::Dead(_) => None,
        }
    }
}

/// How a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One `apply_batch` call, announced on the generation's channel.
    Live,
    /// New rows with `COPY` in a transaction, not announced (a rebuild).
    Bulk,
}

/// Counts of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// Messages consumed.
    pub messages: usize,
    /// Events applied.
    pub applied: u64,
    /// Messages below the stored position and events at or below the order's version.
    pub duplicates: u64,
    /// Events parked behind a gap.
    pub parked: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Messages of partitions not (yet) positioned; consumed again after the seek.
    pub deferred: u64,
    /// Orders written.
    pub orders: u64,
}

impl BatchSummary {
    pub(crate) fn add(&mut self, counts: FoldCounts) {
        self.applied += counts.applied;
        self.duplicates += counts.duplicates;
        self.parked += counts.parked;
        self.dead_lettered += counts.dead_lettered;
    }
}

/// Where and how one batch is written.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The generation written.
    pub read_model: &'a ReadModel,
    /// The state its generation must be in (none: any).
    pub condition: Option<WriteCondition>,
    /// The topic the items were read from (empty for the event store).
    pub topic: &'a str,
    /// Live or bulk.
    pub mode: Mode,
    /// The projector's gap count so far, for the log (none for a rebuild).
    pub gaps_before: Option<u64>,
}

/// Time spent in each step of `apply` (accumulated over a retry).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Loading the states of orders not kept.
    pub load: Duration,
    /// Folding and preparing the statement's parameters.
    pub write: Duration,
    /// The write's round trip(s), commit included.
    pub commit: Duration,
}

/// What became of a batch.
#[derive(Debug)]
pub enum Outcome {
    /// Committed; in live mode with the orders' new views.
    Committed {
        /// What the fold did.
        counts: FoldCounts,
        /// Orders written.
        orders: u64,
        /// The written views (live mode only).
        changed: Vec<OrderView>,
    },
    /// Another owner had moved a partition's position; nothing written.
    Fenced,
    /// The generation is not in the required state; nothing written.
    Closed,
}

/// Applies `items` to `target`, moving each partition of `advances` from its
/// first value to its second in the same transaction, starting orders from
/// `states` where kept and keeping their new states on commit.
pub async fn apply(
    target: &Target<'_>,
    advances: Option<&BTreeMap<i32, (Option<i64>, i64)>>,
    items: &[Incoming],
    states: &mut OrderStates,
    timings: &mut Timings,
) -> Result<Outcome, QueryError> {
    for attempt in 0..2 {
        let started = Instant::now();
        let (order_ids, unseen) = starts_needed(items, states, attempt == 0);
        let kept: Vec<Uuid> = order_ids
            .iter()
            .filter(|id| states.get(id).is_some())
            .copied()
            .collect();
        let to_load: Vec<Uuid> = order_ids
            .iter()
            .filter(|id| states.get(id).is_none() && unseen.binary_search(id).is_err())
            .copied()
            .collect();
        let loaded = target
            .read_model
            .load_states(&to_load, target.mode == Mode::Bulk)
            .await?;
        let mut starts: HashMap<Uuid, OrderState> = kept
            .iter()
            .filter_map(|id| states.get(id).map(|state| (*id, state.clone())))
            .collect();
        add_loaded(&mut starts, loaded);
        let folding = Instant::now();
        timings.load += folding - started;

        let mut fold = Fold::new(&order_ids, starts, target.gaps_before);
        for item in items {
            fold.apply(item)?;
        }
        let changed = fold.changed();
        let write = BatchWrite {
            condition: target.condition,
            topic: target.topic,
            advances,
            orders: changed,
            unseen: unseen.clone(),
            history: &fold.history,
            parked: fold.newly_parked(),
            unparked: &fold.unparked,
            dead: &fold.dead,
            applied: fold.counts.applied,
            notify: target.mode == Mode::Live,
        };
        let writing = Instant::now();
        timings.write += writing - folding;
        let applied = match target.mode {
            Mode::Live => target.read_model.apply(&write).await,
            Mode::Bulk => target.read_model.apply_bulk(&write).await,
        };
        timings.commit += writing.elapsed();
        match applied? {
            Applied::Committed => {
                let orders = write.orders.len() as u64;
                let changed = match target.mode {
                    Mode::Live => write
                        .orders
                        .iter()
                        .map(|(view, _)| (*view).clone())
                        .collect(),
                    Mode::Bulk => vec![],
                };
                drop(write);
                let counts = fold.counts;
                for (id, state) in fold.into_states() {
                    states.insert(id, state);
                }
                return Ok(Outcome::Committed {
                    counts,
                    orders,
                    changed,
                });
            }
            Applied::Fenced => {
                states.clear();
                return Ok(Outcome::Fenced);
            }
            Applied::Closed => {
                states.clear();
                return Ok(Outcome::Closed);
            }
            Applied::Stale => {
                tracing::info!(
                    attempt,
                    "an order's kept or assumed state was stale; folding the batch again from the database"
                );
                states.clear();
            }
        }
    }
    Err(QueryError::Corrupt(
        "a batch stayed stale after folding it from loaded state".to_owned(),
    ))
}

/// Adds the loaded views and parked events to the orders' starting states.
fn add_loaded(starts: &mut HashMap<Uuid, OrderState>, loaded: LoadedStates) {
    for (id, view) in loaded.views {
        starts.entry(id).or_default().view = Some(view);
    }
    for event in loaded.parked {
        starts
            .entry(event.order_id)
            .or_default()
            .parked
            .insert(event.version, event);
    }
}

/// The distinct orders of `items`' events, sorted, and those among them to
/// fold as new without a lookup (sorted): not kept in `states` and first seen
/// at version 1 (only when `assume_new`).
fn starts_needed(
    items: &[Incoming],
    states: &OrderStates,
    assume_new: bool,
) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut first: HashMap<Uuid, u64> = HashMap::new();
    for (id, version) in items.iter().filter_map(Incoming::event_version) {
        first
            .entry(id)
            .and_modify(|v| *v = (*v).min(version))
            .or_insert(version);
    }
    let mut order_ids: Vec<Uuid> = first.keys().copied().collect();
    order_ids.sort_unstable();
    let mut unseen: Vec<Uuid> = if assume_new {
        first
            .iter()
            .filter(|(id, version)| **version == 1 && states.get(id).is_none())
            .map(|(id, _)| *id)
            .collect()
    } else {
        vec![]
    };
    unseen.sort_unstable();
    (order_ids, unseen)
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

/// What replaying one dead letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// It went through the apply path (applied, skipped as a duplicate or
    /// parked behind a gap) and was removed from `dead_letter`.
    Applied(BatchSummary),
    /// It still cannot be applied, for this reason; it stays parked.
    StillFailing(String),
    /// There is no dead letter with that id.
    NotFound,
}

/// Re-runs the dead letter `id` of `read_model` through the decode and apply
/// path, and removes it in the same transaction when it applies. With a
/// `condition`, nothing is written unless the generation is in that state.
pub async fn replay_dead_letter(
    read_model: &ReadModel,
    condition: Option<WriteCondition>,
    id: i64,
) -> Result<Replayed, QueryError> {
    let Some(stored) = read_model.dead_letter(id).await? else {
        return Ok(Replayed::NotFound);
    };
    let letter = &stored.letter;
    let (meta, event) = match decode_message(letter.key.as_deref(), letter.value.as_deref()) {
        Ok(decoded) => decoded,
        Err(reason) => return Ok(Replayed::StillFailing(reason)),
    };
    let item = Incoming::Event {
        meta,
        event,
        payload: letter.value.clone().unwrap_or_default(),
        origin: EventOrigin::Kafka {
            partition: letter.partition,
            offset: letter.offset,
        },
    };
    let order_ids: Vec<Uuid> = item.event_version().map(|(id, _)| id).into_iter().collect();
    let loaded = read_model.load_states(&order_ids, false).await?;
    let mut starts: HashMap<Uuid, OrderState> = HashMap::new();
    add_loaded(&mut starts, loaded);
    let mut fold = Fold::new(&order_ids, starts, None);
    fold.apply(&item)?;
    let write = BatchWrite {
        condition,
        topic: &stored.topic,
        orders: fold.changed(),
        history: &fold.history,
        parked: fold.newly_parked(),
        unparked: &fold.unparked,
        applied: fold.counts.applied,
        notify: true,
        ..BatchWrite::default()
    };
    match read_model.apply_replay(&write, id).await? {
        None => Ok(Replayed::NotFound),
        Some(Applied::Committed) => {
            let mut summary = BatchSummary {
                messages: 1,
                orders: write.orders.len() as u64,
                ..BatchSummary::default()
            };
            summary.add(fold.counts);
            tracing::info!(id, ?summary, "dead letter replayed");
            Ok(Replayed::Applied(summary))
        }
        Some(Applied::Closed) => Err(QueryError::GenerationClosed(
            condition.map_or(0, |c| c.generation),
        )),
        Some(Applied::Fenced | Applied::Stale) => Err(QueryError::Corrupt(format!(
            "dead letter {id}: its order moved while it was replayed; try again"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{codec::EventMeta, domain::OrderId};

    fn event(order_id: OrderId, version: u64) -> Incoming {
        Incoming::Event {
            meta: EventMeta {
                event_id: Uuid::now_v7(),
                order_id,
                version,
                occurred_at: chrono::Utc::now(),
                correlation_id: String::new(),
                causation_id: String::new(),
                actor: None,
            },
            event: Event::OrderConfirmed,
            payload: vec![],
            origin: EventOrigin::Store { position: 0 },
        }
    }

    #[test]
    fn only_unknown_orders_first_seen_at_version_1_skip_the_lookup() {
        let (new, later, kept) = (
            OrderId::generate(),
            OrderId::generate(),
            OrderId::generate(),
        );
        let items = vec![
            event(new, 1),
            event(new, 2),
            event(later, 3),
            event(kept, 1),
        ];
        let mut states = OrderStates::new(8);
        states.insert(kept.as_uuid(), OrderState::default());
        let (ids, unseen) = starts_needed(&items, &states, true);
        let mut all = vec![new.as_uuid(), later.as_uuid(), kept.as_uuid()];
        all.sort_unstable();
        assert_eq!(ids, all);
        assert_eq!(unseen, vec![new.as_uuid()]);
        let (_, unseen) = starts_needed(&items, &states, false);
        assert!(unseen.is_empty(), "a retry looks every order up");
    }

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
