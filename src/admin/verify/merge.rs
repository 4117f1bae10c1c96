//! The merge-join of `verify`: four streams sorted by order id, consumed one
//! order at a time, each order checked against its fold and its history
//! digest (see the module doc of `verify`).

use std::collections::VecDeque;

use sqlx::{Postgres, pool::PoolConnection};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Difference, VerifyReport, compare};
use crate::{
    admin::AdminError,
    codec,
    command::store::{self, OrderDigest, StoredEvent},
    domain::OrderId,
    query::read_model::digest::{HistoryDigest, SnapshotReader, StoredOrder},
};

/// Most orders held back while their histories wait for the store's digests
/// (with the orders checked after them, reported in order id order).
const HISTORY_BATCH: usize = 1_000;

/// A row of a stream sorted by order id.
pub(super) trait Keyed {
    fn order_id(&self) -> Uuid;
}

impl Keyed for OrderDigest {
    fn order_id(&self) -> Uuid {
        self.order_id.as_uuid()
    }
}

impl Keyed for StoredEvent {
    fn order_id(&self) -> Uuid {
        self.order_id.as_uuid()
    }
}

impl Keyed for HistoryDigest {
    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

impl Keyed for StoredOrder {
    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

/// One stream being merged and the row at its head.
pub(super) struct Head<T> {
    rows: mpsc::Receiver<T>,
    next: Option<T>,
}

impl<T> From<mpsc::Receiver<T>> for Head<T> {
    fn from(rows: mpsc::Receiver<T>) -> Self {
        Self { rows, next: None }
    }
}

impl<T: Keyed> Head<T> {
    /// The order id at the head; `None` once the stream has ended.
    async fn key(&mut self) -> Option<Uuid> {
        if self.next.is_none() {
            self.next = self.rows.recv().await;
        }
        self.next.as_ref().map(Keyed::order_id)
    }

    /// The head row if it belongs to `order_id`.
    async fn take(&mut self, order_id: Uuid) -> Option<T> {
        if self.key().await == Some(order_id) {
            self.next.take()
        } else {
            None
        }
    }
}

/// The streams `verify` merges.
pub(super) struct Streams {
    /// The store's per-order digests (step 1).
    pub(super) store_digests: Head<OrderDigest>,
    /// The store's events by order and version (step 4).
    pub(super) events: Head<StoredEvent>,
    /// The projection's per-order history digests (step 3).
    pub(super) history_digests: Head<HistoryDigest>,
    /// The projection's rows (step 3).
    pub(super) projected: Head<StoredOrder>,
}

/// One order's verdict, possibly waiting for the store's history digest.
struct OrderCheck {
    order_id: Uuid,
    /// Fields (and, once known, the history) that differ.
    differences: Vec<Difference>,
    /// Behind the store: `Err` with the difference when further than lag
    /// allows, `Ok(true)` when within it (lagging unless something differs).
    behind: Result<bool, Difference>,
    /// Where the comparison of its history stands.
    history: HistoryCheck,
}

/// The comparison of an order's history rows with the store's events.
enum HistoryCheck {
    /// Compared (or not to be compared), its difference if any recorded.
    Done,
    /// Differs from the store up to `version`: its rows are read to name the difference.
    Differs { version: i64 },
    /// To compare with the store's digest up to `version`, once asked for.
    Awaits { version: i64, digest: HistoryDigest },
}

/// The merge's state: the report being filled and the orders held back.
pub(super) struct Merge {
    report: VerifyReport,
    /// A connection for the store's digests and event ids of single orders.
    store: PoolConnection<Postgres>,
    /// A reader of the projection's snapshot for single orders' histories.
    lookups: SnapshotReader,
    /// Checked orders, in order id order, from the first whose history waits.
    queue: VecDeque<OrderCheck>,
}

impl Merge {
    /// A merge filling `report`, with a store connection and a snapshot
    /// reader for single orders.
    pub(super) fn new(
        report: VerifyReport,
        store: PoolConnection<Postgres>,
        lookups: SnapshotReader,
    ) -> Self {
        Self {
            report,
            store,
            lookups,
            queue: VecDeque::new(),
        }
    }

    /// Merges the streams to their ends and returns the report.
    pub(super) async fn run(mut self, mut streams: Streams) -> Result<VerifyReport, AdminError> {
        let mut strays = vec![];
        loop {
            let s = &mut streams;
            let next = [
                s.store_digests.key().await,
                s.events.key().await,
                s.history_digests.key().await,
                s.projected.key().await,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(order_id) = next else { break };
            let published = s.store_digests.take(order_id).await;
            let history = s.history_digests.take(order_id).await;
            let projected = s.projected.take(order_id).await;
            let mut events = vec![];
            while let Some(event) = s.events.take(order_id).await {
                events.push(event);
            }
            if events.is_empty() {
                // Step 1 saw nothing that step 4 does not: the store only grows.
                if history.is_some() || projected.is_some() {
                    strays.push(order_id);
                }
                continue;
            }
            let check = self.check(order_id, published, events, history, projected)?;
            self.hold(check).await?;
        }
        self.settle().await?;
        self.lookups.close().await?;
        for order_id in strays {
            self.report.differences.push(Difference {
                order_id,
                field: "order".into(),
                projected: "present".into(),
                expected: "absent from the event store".into(),
            });
        }
        Ok(self.report)
    }

    /// Compares one stored order with its projection, all but a history that
    /// needs the store's digest up to the projected version.
    fn check(
        &mut self,
        order_id: Uuid,
        published: Option<OrderDigest>,
        events: Vec<StoredEvent>,
        history: Option<HistoryDigest>,
        projected: Option<StoredOrder>,
    ) -> Result<OrderCheck, AdminError> {
        let decoded = events
            .iter()
            .map(|e| {
                codec::decode_event(&e.payload).map_err(|error| AdminError::CorruptEvent {
                    position: e.position,
                    reason: error.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let report = &mut self.report;
        report.orders += 1;
        report.events += events.len() as u64;
        let stored = events.len() as i64;
        // How far the projection must be, given the positions (module doc).
        let required = if report.exact {
            stored
        } else if report.caught_up {
            published
                .as_ref()
                .map_or(0, |p| p.published_through)
                .min(stored)
        } else {
            0
        };
        let mut check = OrderCheck {
            order_id,
            differences: vec![],
            behind: Ok(false),
            history: HistoryCheck::Done,
        };
        let version_difference = |projected: i64| Difference {
            order_id,
            field: "version".into(),
            projected: projected.to_string(),
            expected: stored.to_string(),
        };
        let Some(projected) = projected else {
            if history.is_some() {
                // History rows without their order row: projected at no version.
                check.differences.push(version_difference(0));
            } else if required > 0 {
                check.differences.push(Difference {
                    order_id,
                    field: "order".into(),
                    projected: "absent".into(),
                    expected: format!("version {stored}"),
                });
            } else {
                check.behind = Ok(true);
            }
            return Ok(check);
        };
        let version = projected.version;
        if version > stored || version < 1 {
            check.differences.push(version_difference(version));
            return Ok(check);
        }
        let folded = compare::fold(&decoded[..version as usize]);
        check.differences = compare::fields(&projected, &folded);
        if version < stored {
            check.behind = if version < required {
                Err(version_difference(version))
            } else {
                Ok(true)
            };
        }
        check.history = match (history, published) {
            // The store's digest of step 1 covers exactly the projected versions.
            (Some(history), Some(published)) if published.events == version => {
                if history.digest == published.digest {
                    HistoryCheck::Done
                } else {
                    HistoryCheck::Differs { version }
                }
            }
            (Some(digest), _) => HistoryCheck::Awaits { version, digest },
            (None, _) => HistoryCheck::Differs { version },
        };
        Ok(check)
    }

    /// Reports `check` now, or queues it behind orders that wait.
    async fn hold(&mut self, mut check: OrderCheck) -> Result<(), AdminError> {
        if let HistoryCheck::Differs { version } = check.history {
            self.name_history_difference(&mut check, version).await?;
        }
        let waits = matches!(check.history, HistoryCheck::Awaits { .. });
        if self.queue.is_empty() && !waits {
            self.report_order(check);
            return Ok(());
        }
        self.queue.push_back(check);
        if self.queue.len() >= HISTORY_BATCH {
            self.settle().await?;
        }
        Ok(())
    }

    /// Compares the queued histories with the store's digests up to their
    /// projected versions, then reports every queued order.
    async fn settle(&mut self) -> Result<(), AdminError> {
        let wanted: Vec<(OrderId, i64)> = self
            .queue
            .iter()
            .filter_map(|check| match check.history {
                HistoryCheck::Awaits { version, .. } => {
                    Some((OrderId::from_uuid(check.order_id), version))
                }
                _ => None,
            })
            .collect();
        let stored = store::digests_through(&mut self.store, &wanted).await?;
        while let Some(mut check) = self.queue.pop_front() {
            if let HistoryCheck::Awaits { version, digest } = &check.history {
                let version = *version;
                let same = stored.get(&OrderId::from_uuid(check.order_id)) == Some(&digest.digest);
                check.history = HistoryCheck::Done;
                if !same {
                    self.name_history_difference(&mut check, version).await?;
                }
            }
            self.report_order(check);
        }
        Ok(())
    }

    /// Reads the order's history rows and the store's event ids up to
    /// `version` and records the difference between them.
    async fn name_history_difference(
        &mut self,
        check: &mut OrderCheck,
        version: i64,
    ) -> Result<(), AdminError> {
        let order_id = check.order_id;
        let projected = self.lookups.history(order_id).await?;
        let stored =
            store::event_ids(&mut self.store, OrderId::from_uuid(order_id), version).await?;
        check
            .differences
            .extend(compare::history(order_id, &projected, &stored));
        check.history = HistoryCheck::Done;
        Ok(())
    }

    fn report_order(&mut self, check: OrderCheck) {
        let clean = check.differences.is_empty();
        self.report.differences.extend(check.differences);
        match check.behind {
            Err(difference) => self.report.differences.push(difference),
            Ok(true) if clean => self.report.lagging.push(check.order_id),
            Ok(_) => {}
        }
    }
}
