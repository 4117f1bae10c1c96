//! `verify`: the projection equals a fold of the event store, field by field.
//!
//! Every order's events are read from the event store and folded with
//! `domain::evolve`; the result is compared with the projected row, its lines
//! and its history (customer, status, currency, lines, total, version,
//! tracking number, cancel reason, placed_at, updated_at, event ids).
//!
//! Under load the projection trails the store. Reads happen in this order:
//!
//! 1. the write database, in one statement: per order, the highest committed
//!    version and the lowest still in the outbox; every version below that was
//!    acknowledged by Kafka already (`published_through`);
//! 2. the topic's end offsets;
//! 3. the projection and its positions, in one snapshot;
//! 4. the event store, folded (a later snapshot, so nothing projected is missing).
//!
//! If the positions of (3) reach the end offsets of (2) on every partition,
//! every event published before (2) has been applied, so each order must be
//! projected at least up to its `published_through` version. An order behind
//! its store version but not behind that bound is *lagging* when the projection
//! equals the fold of the store up to the projected version; otherwise it is a
//! difference. With `exact` (after waiting for quiescence), nothing may lag.

use std::{
    collections::HashMap,
    fmt,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{Executor, PgPool, Row};
use uuid::Uuid;

use crate::{
    admin::{
        AdminError, live_generation, read_pool,
        topic::{self, TopicOffsets},
        write_pool,
    },
    codec::{self, EventMeta},
    config::AdminSettings,
    domain::{Event, Order, evolve},
    query::{Generations, ReadModel, read_model::status_name},
};

/// How `verify` runs.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// First wait up to this long for the outbox to drain and the live
    /// projection to reach the end of the topic, then demand exact equality.
    pub wait_caught_up: Option<Duration>,
}

/// One field of one order where the projection and the event store disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The order.
    pub order_id: Uuid,
    /// The field, e.g. `status`, `lines`, `version`.
    pub field: String,
    /// What the projection holds.
    pub projected: String,
    /// What the fold of the event store gives.
    pub expected: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "order {}: {}: projected {}, event store {}",
            self.order_id, self.field, self.projected, self.expected
        )
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The generation checked.
    pub generation: i32,
    /// Its schema.
    pub schema: String,
    /// Orders in the event store.
    pub orders: u64,
    /// Events in the event store.
    pub events: u64,
    /// Orders behind the store only because of consumer lag.
    pub lagging: Vec<Uuid>,
    /// Every disagreement.
    pub differences: Vec<Difference>,
    /// Whether the live positions had reached the topic's end (step 2).
    pub caught_up: bool,
    /// Whether lagging was disallowed.
    pub exact: bool,
    /// Events parked behind a gap in the projection.
    pub pending_events: i64,
    /// Messages in the projection's dead-letter table.
    pub dead_letters: i64,
}

impl VerifyReport {
    /// Whether the projection agrees with the event store.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares the live generation with the event store (see the module doc).
pub async fn verify(
    settings: &AdminSettings,
    options: VerifyOptions,
) -> Result<VerifyReport, AdminError> {
    let read = read_pool(settings).await?;
    let write = write_pool(settings).await?;
    let offsets = TopicOffsets::new(&settings.kafka)?;
    live_generation(&read).await?;
    let generations = Generations::new(read.clone());
    if let Some(timeout) = options.wait_caught_up {
        wait_caught_up(&write, &generations, &offsets, timeout).await?;
    }
    let live = generations.live().await?;
    let read_model = ReadModel::new(read, &live.schema)?;
    verify_generation(
        &write,
        &read_model,
        live.generation,
        &offsets,
        options.wait_caught_up.is_some(),
    )
    .await
}

/// Waits until the outbox is empty and the live generation's positions reach
/// the topic's end offsets, checking every 100 ms, for at most `timeout`.
pub async fn wait_caught_up(
    write: &PgPool,
    generations: &Generations,
    offsets: &TopicOffsets,
    timeout: Duration,
) -> Result<(), AdminError> {
    let started = Instant::now();
    loop {
        // The outbox first: what it no longer holds is below the end offsets read next.
        let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(write)
            .await?;
        let ends = offsets.end_offsets().await?;
        let live = generations.live().await?;
        let read_model = ReadModel::new(generations.pool().clone(), &live.schema)?;
        let positions = read_model.all_positions(offsets.topic()).await?;
        if backlog == 0 && topic::reached(&positions, &ends) {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(AdminError::NotCaughtUp {
                waited: timeout,
                detail: format!(
                    "outbox backlog {backlog}, consumer lag {} of generation {}",
                    topic::lag(&positions, &ends),
                    live.generation
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An order as the projection holds it, raw (no validation, so corruption shows as a difference).
#[derive(Debug, Default)]
struct Projected {
    customer_id: Option<String>,
    status: String,
    currency_code: Option<String>,
    total_minor: i64,
    version: i64,
    placed_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    tracking_number: Option<String>,
    cancel_reason: Option<String>,
    lines: Vec<String>,
    history: Vec<(i64, Uuid)>,
}

/// An order folded from the event store up to some version.
struct Folded {
    order: Order,
    placed_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    event_ids: Vec<Uuid>,
}

/// Compares `read_model` (generation `generation`) with the event store; see the module doc.
pub async fn verify_generation(
    write: &PgPool,
    read_model: &ReadModel,
    generation: i32,
    offsets: &TopicOffsets,
    exact: bool,
) -> Result<VerifyReport, AdminError> {
    // 1. What Kafka had acknowledged, per order.
    let published: HashMap<Uuid, i64> = sqlx::query(
        "SELECT e.order_id, \
                coalesce(min(e.version) FILTER (WHERE o.id IS NOT NULL) - 1, max(e.version)) AS through \
         FROM events e LEFT JOIN outbox o ON o.event_position = e.position \
         GROUP BY e.order_id",
    )
    .fetch_all(write)
    .await?
    .iter()
    .map(|row| Ok((row.try_get("order_id")?, row.try_get("through")?)))
    .collect::<Result<_, sqlx::Error>>()?;
    // 2. The end of the topic.
    let ends = offsets.end_offsets().await?;
    // 3. The projection, in one snapshot.
    let snapshot = read_projection(read_model, offsets.topic()).await?;
    let caught_up = topic::reached(&snapshot.positions, &ends);
    let mut projected = snapshot.orders;

    // 4. The event store, folded order by order.
    let mut report = VerifyReport {
        generation,
        schema: read_model.schema().to_owned(),
        orders: 0,
        events: 0,
        lagging: vec![],
        differences: vec![],
        caught_up,
        exact,
        pending_events: snapshot.pending_events,
        dead_letters: snapshot.dead_letters,
    };
    let mut tx = write.begin().await?;
    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let mut current: Option<(Uuid, Vec<(EventMeta, Event)>)> = None;
    {
        let mut rows = sqlx::query(
            "SELECT order_id, version, position, payload FROM events ORDER BY order_id, version",
        )
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            let order_id: Uuid = row.try_get("order_id")?;
            let position: i64 = row.try_get("position")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let (meta, event) =
                codec::decode_event(&payload).map_err(|e| AdminError::CorruptEvent {
                    position,
                    reason: e.to_string(),
                })?;
            report.events += 1;
            match &mut current {
                Some((id, events)) if *id == order_id => events.push((meta, event)),
                _ => {
                    if let Some((id, events)) = current.take() {
                        check_order(
                            &mut report,
                            id,
                            &events,
                            projected.remove(&id),
                            published.get(&id).copied(),
                        );
                    }
                    current = Some((order_id, vec![(meta, event)]));
                }
            }
        }
    }
    tx.commit().await?;
    if let Some((id, events)) = current.take() {
        check_order(
            &mut report,
            id,
            &events,
            projected.remove(&id),
            published.get(&id).copied(),
        );
    }
    let mut strays: Vec<Uuid> = projected.into_keys().collect();
    strays.sort_unstable();
    for order_id in strays {
        report.differences.push(Difference {
            order_id,
            field: "order".into(),
            projected: "present".into(),
            expected: "absent from the event store".into(),
        });
    }
    Ok(report)
}

/// Compares one order's stored events with its projection.
fn check_order(
    report: &mut VerifyReport,
    order_id: Uuid,
    events: &[(EventMeta, Event)],
    projected: Option<Projected>,
    published_through: Option<i64>,
) {
    report.orders += 1;
    let stored = events.len() as i64;
    // How far the projection must be, given the positions (module doc).
    let required = if report.exact {
        stored
    } else if report.caught_up {
        published_through.unwrap_or(0).min(stored)
    } else {
        0
    };
    let Some(projected) = projected else {
        if required > 0 {
            report.differences.push(Difference {
                order_id,
                field: "order".into(),
                projected: "absent".into(),
                expected: format!("version {stored}"),
            });
        } else {
            report.lagging.push(order_id);
        }
        return;
    };
    let version = projected.version;
    if version > stored || version < 1 {
        report.differences.push(Difference {
            order_id,
            field: "version".into(),
            projected: version.to_string(),
            expected: stored.to_string(),
        });
        return;
    }
    let folded = fold(&events[..version as usize]);
    let before = report.differences.len();
    compare(report, order_id, &projected, &folded);
    if version < stored {
        if version < required {
            report.differences.push(Difference {
                order_id,
                field: "version".into(),
                projected: version.to_string(),
                expected: stored.to_string(),
            });
        } else if report.differences.len() == before {
            report.lagging.push(order_id);
        }
    }
}

fn fold(events: &[(EventMeta, Event)]) -> Folded {
    let mut folded = Folded {
        order: Order::default(),
        placed_at: None,
        updated_at: None,
        event_ids: Vec::with_capacity(events.len()),
    };
    for (meta, event) in events {
        folded.order = evolve(std::mem::take(&mut folded.order), event);
        folded.placed_at.get_or_insert(meta.occurred_at);
        folded.updated_at = Some(meta.occurred_at);
        folded.event_ids.push(meta.event_id);
    }
    folded
}

fn compare(report: &mut VerifyReport, order_id: Uuid, projected: &Projected, folded: &Folded) {
    let order = &folded.order;
    let mut field = |name: &str, projected: String, expected: String| {
        if projected != expected {
            report.differences.push(Difference {
                order_id,
                field: name.into(),
                projected,
                expected,
            });
        }
    };
    let text = |value: Option<&str>| value.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"));
    let micros = |at: Option<DateTime<Utc>>| {
        at.map_or_else(
            || "none".to_owned(),
            |at| {
                DateTime::from_timestamp_micros(at.timestamp_micros())
                    .unwrap_or(at)
                    .to_rfc3339()
            },
        )
    };
    field(
        "customer_id",
        text(projected.customer_id.as_deref()),
        text(order.customer_id.as_ref().map(|c| c.as_str())),
    );
    field(
        "status",
        projected.status.clone(),
        status_name(order.status).to_owned(),
    );
    field(
        "currency_code",
        text(projected.currency_code.as_deref()),
        text(order.currency.as_ref().map(|c| c.as_str())),
    );
    field(
        "lines",
        format!("[{}]", projected.lines.join(", ")),
        format!(
            "[{}]",
            order
                .lines
                .iter()
                .map(|l| line_text(
                    l.product_id.as_str(),
                    i64::from(l.quantity.get()),
                    l.unit_price.get()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    field(
        "total_minor",
        projected.total_minor.to_string(),
        order.total_minor().to_string(),
    );
    field(
        "tracking_number",
        text(projected.tracking_number.as_deref()),
        text(order.tracking_number.as_ref().map(|t| t.as_str())),
    );
    field(
        "cancel_reason",
        text(projected.cancel_reason.as_deref()),
        text(order.cancel_reason.as_ref().map(|r| r.as_str())),
    );
    field(
        "placed_at",
        micros(projected.placed_at),
        micros(folded.placed_at),
    );
    field(
        "updated_at",
        micros(projected.updated_at),
        micros(folded.updated_at),
    );
    let expected_history: Vec<(i64, Uuid)> = folded
        .event_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (i as i64 + 1, *id))
        .collect();
    if projected.history != expected_history {
        let first_difference = expected_history
            .iter()
            .zip(&projected.history)
            .position(|(a, b)| a != b)
            .unwrap_or(expected_history.len().min(projected.history.len()));
        field(
            "history",
            format!(
                "{} events, first difference at index {first_difference}",
                projected.history.len()
            ),
            format!("{} events", expected_history.len()),
        );
    }
}

fn line_text(product_id: &str, quantity: i64, unit_price_minor: i64) -> String {
    format!("{product_id:?} x{quantity} @{unit_price_minor}")
}

/// The projection read in one snapshot.
struct ProjectionSnapshot {
    orders: HashMap<Uuid, Projected>,
    positions: HashMap<i32, i64>,
    pending_events: i64,
    dead_letters: i64,
}

async fn read_projection(
    read_model: &ReadModel,
    topic: &str,
) -> Result<ProjectionSnapshot, AdminError> {
    let s = read_model.schema();
    let mut tx = read_model.pool().begin().await?;
    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let positions: HashMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(&format!(
        "SELECT kafka_partition, next_offset FROM {s}.consumer_position WHERE topic = $1"
    ))
    .bind(topic)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut orders: HashMap<Uuid, Projected> = HashMap::new();
    for row in sqlx::query(&format!(
        "SELECT order_id, customer_id, status, currency_code, total_minor, version, placed_at, \
                updated_at, tracking_number, cancel_reason FROM {s}.order_view"
    ))
    .fetch_all(&mut *tx)
    .await?
    {
        orders.insert(
            row.try_get("order_id")?,
            Projected {
                customer_id: row.try_get("customer_id")?,
                status: row.try_get("status")?,
                currency_code: row.try_get("currency_code")?,
                total_minor: row.try_get("total_minor")?,
                version: row.try_get("version")?,
                placed_at: row.try_get("placed_at")?,
                updated_at: row.try_get("updated_at")?,
                tracking_number: row.try_get("tracking_number")?,
                cancel_reason: row.try_get("cancel_reason")?,
                lines: vec![],
                history: vec![],
            },
        );
    }
    let lines: Vec<(Uuid, String, i32, i64)> = sqlx::query_as(&format!(
        "SELECT v.order_id, e.line ->> 'product_id', (e.line ->> 'quantity')::int4, \
                (e.line ->> 'unit_price_minor')::int8 \
         FROM {s}.order_view v, jsonb_array_elements(v.lines) WITH ORDINALITY AS e(line, n) \
         ORDER BY v.order_id, e.n"
    ))
    .fetch_all(&mut *tx)
    .await?;
    for (order_id, product_id, quantity, price) in lines {
        orders.entry(order_id).or_default().lines.push(line_text(
            &product_id,
            i64::from(quantity),
            price,
        ));
    }
    let history: Vec<(Uuid, i64, Uuid)> = sqlx::query_as(&format!(
        "SELECT order_id, version, event_id FROM {s}.order_history ORDER BY order_id, version"
    ))
    .fetch_all(&mut *tx)
    .await?;
    for (order_id, version, event_id) in history {
        orders
            .entry(order_id)
            .or_default()
            .history
            .push((version, event_id));
    }
    let pending_events: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {s}.pending_event"))
            .fetch_one(&mut *tx)
            .await?;
    let dead_letters: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {s}.dead_letter"))
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ProjectionSnapshot {
        orders,
        positions,
        pending_events,
        dead_letters,
    })
}
