//! `verify` on the real stack: an order missing from the projection and a
//! history changed by hand are named; orders behind a stopped projector are
//! lagging (unless their history differs); both sides' digests agree; and
//! 100,000 orders are checked by the real binary in bounded memory.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::TryStreamExt;
use orders::{
    admin::{RebuildOptions, VerifyOptions},
    codec::{self, EventMeta},
    command::store,
    domain::{
        CancelReason, CurrencyCode, CustomerId, Event, OrderId, OrderLine, ProductId, Quantity,
        TrackingNumber, UnitPrice,
    },
    proto,
    query::{ReadModel, read_model::DEFAULT_SCHEMA},
};
use prost::Message;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Acked, System, place_orders};
use crate::command::{line, place};

/// The highest acknowledged version of each order, by order id.
fn versions(acked: &Acked) -> Vec<(Uuid, u64)> {
    let mut latest = std::collections::BTreeMap::new();
    for (order, version) in acked {
        let latest = latest.entry(order.parse::<Uuid>().unwrap()).or_insert(0);
        *latest = (*latest).max(*version);
    }
    latest.into_iter().collect()
}

/// Replaces the event id of `order_id`'s history row at `version`.
async fn change_history(read: &PgPool, order_id: Uuid, version: i64) {
    let changed = sqlx::query(&format!(
        "UPDATE {DEFAULT_SCHEMA}.order_history SET event_id = $3 \
         WHERE order_id = $1 AND version = $2"
    ))
    .bind(order_id)
    .bind(version)
    .bind(Uuid::new_v4())
    .execute(read)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_an_order_missing_from_the_projection_and_a_changed_history() {
    let system = System::new("a_missing").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let acked = place_orders(&command.client, 12, 3, "missing").await;
    let clean = system.verify_quiescent().await;
    assert!(clean.is_clean(), "{:?}", clean.differences);
    assert!(clean.lagging.is_empty(), "{:?}", clean.lagging);

    // Both sides summarise an order's events with the same digest.
    let mut write = store::snapshot(&system.write).await.unwrap();
    let stored: Vec<(Uuid, String)> = store::order_digests(&mut write)
        .map_ok(|d| (d.order_id.as_uuid(), d.digest))
        .try_collect()
        .await
        .unwrap();
    let read_model = ReadModel::new(system.read.clone(), DEFAULT_SCHEMA).unwrap();
    let mut snapshot = read_model.snapshot(&system.kafka.topic, 1).await.unwrap();
    let projected: Vec<(Uuid, String)> = snapshot.readers[0]
        .history_digests()
        .map_ok(|d| (d.order_id, d.digest))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored.len(), 12);
    assert_eq!(projected, stored);
    drop((write, snapshot));

    let latest = versions(&acked);
    let (missing, missing_version) = latest[3];
    let (changed, changed_version) = latest[7];
    let deleted = sqlx::query(&format!(
        "WITH history AS (DELETE FROM {DEFAULT_SCHEMA}.order_history WHERE order_id = $1) \
         DELETE FROM {DEFAULT_SCHEMA}.order_view WHERE order_id = $1"
    ))
    .bind(missing)
    .execute(&system.read)
    .await
    .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    change_history(&system.read, changed, 1).await;

    let verified = system.orderctl(&["verify", "--wait-caught-up", "60"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{verified:?}");
    assert!(
        text.contains(&format!(
            "order {missing}: order: projected absent, event store version {missing_version}"
        )),
        "names the missing order: {text}"
    );
    assert!(
        text.contains(&format!(
            "order {changed}: history: projected {changed_version} events, first difference \
             at index 0, event store {changed_version} events"
        )),
        "names the changed history: {text}"
    );
    assert!(text.contains("2 differences, 0 lagging"), "{text}");
    query.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_behind_a_stopped_projector_are_lagging_unless_their_history_differs() {
    let system = System::new("a_lagging").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let acked = place_orders(&command.client, 16, 4, "lagging").await;
    assert!(system.verify_quiescent().await.is_clean());
    query.stop().await;

    // Orders only placed (version 1) get a line; new orders are placed.
    let mut client = command.client.clone();
    let placed_only: Vec<Uuid> = versions(&acked)
        .into_iter()
        .filter(|&(_, version)| version == 1)
        .map(|(order, _)| order)
        .collect();
    assert!(placed_only.len() >= 3, "{placed_only:?}");
    let mut behind = vec![];
    for &order in &placed_only {
        client
            .add_order_line(proto::AddOrderLineRequest {
                order_id: order.to_string(),
                line: Some(line("late", 1, 10)),
                ..Default::default()
            })
            .await
            .unwrap();
        behind.push(order);
    }
    for _ in 0..3 {
        let placed = client
            .place_order(place("late"))
            .await
            .unwrap()
            .into_inner();
        behind.push(placed.order_id.parse().unwrap());
    }
    behind.sort_unstable();

    let report = orders::admin::verify(&system.admin(), VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.differences);
    assert_eq!(report.lagging, behind);

    // A lagging order whose history differs is a difference, not lagging.
    let changed = placed_only[0];
    change_history(&system.read, changed, 1).await;
    let report = orders::admin::verify(&system.admin(), VerifyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    let difference = &report.differences[0];
    assert_eq!(
        (difference.order_id, difference.field.as_str()),
        (changed, "history")
    );
    assert_eq!(
        difference.projected,
        "1 events, first difference at index 0"
    );
    assert_eq!(difference.expected, "1 events");
    assert!(!report.lagging.contains(&changed));
    assert_eq!(report.lagging.len(), behind.len() - 1);
    command.stop().await;
}

/// Orders in the bounded-memory test.
const MANY_ORDERS: usize = 100_000;
/// Events inserted per statement.
const INSERT_CHUNK: usize = 20_000;
/// What `orderctl verify` may use at most, over 100,000 orders.
const VERIFY_PEAK_RSS: u64 = 100 * 1024 * 1024;

/// The events of order `i`: placed, then like `place_orders`' lifecycles one
/// in four gets a line, is confirmed and shipped, one in four is cancelled,
/// one in four gets a line.
fn lifecycle_events(i: usize) -> Vec<Event> {
    let line = |product: &str, quantity: u32, price: i64| OrderLine {
        product_id: ProductId::parse(product).unwrap(),
        quantity: Quantity::parse(quantity).unwrap(),
        unit_price: UnitPrice::parse(price).unwrap(),
    };
    let mut events = vec![Event::OrderPlaced {
        customer_id: CustomerId::parse(&format!("bulk-{}", i % 97)).unwrap(),
        currency: CurrencyCode::parse("EUR").unwrap(),
        lines: vec![line("sku-1", 2, 1250), line("sku-2", 1, 999)],
    }];
    let added = Event::OrderLineAdded {
        line: line(&format!("extra-{}", i % 5), 1 + (i % 3) as u32, 75),
    };
    match i % 4 {
        0 => events.extend([
            added,
            Event::OrderConfirmed,
            Event::OrderShipped {
                tracking_number: TrackingNumber::parse(&format!("1Z{i:08}")).unwrap(),
            },
        ]),
        1 => events.push(Event::OrderCancelled {
            reason: CancelReason::parse("changed my mind").unwrap(),
        }),
        2 => events.push(added),
        _ => {}
    }
    events
}

/// Appends the events of `orders` orders straight to the event store (no
/// outbox rows: as if all were published), `INSERT_CHUNK` per statement.
/// Returns how many events.
async fn append_many(write: &PgPool, orders: usize) -> u64 {
    #[derive(Default)]
    struct Columns {
        event_ids: Vec<Uuid>,
        order_ids: Vec<Uuid>,
        versions: Vec<i64>,
        types: Vec<&'static str>,
        payloads: Vec<Vec<u8>>,
        times: Vec<chrono::DateTime<Utc>>,
    }
    async fn insert(write: &PgPool, columns: Columns) {
        sqlx::query(
            "INSERT INTO events (event_id, order_id, version, event_type, payload, occurred_at, \
                                 correlation_id, causation_id) \
             SELECT e, o, v, t, p, at, e::text, e::text \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::bytea[], \
                         $6::timestamptz[]) AS u(e, o, v, t, p, at)",
        )
        .bind(columns.event_ids)
        .bind(columns.order_ids)
        .bind(columns.versions)
        .bind(columns.types)
        .bind(columns.payloads)
        .bind(columns.times)
        .execute(write)
        .await
        .unwrap();
    }
    let mut columns = Columns::default();
    let mut appended = 0;
    for i in 0..orders {
        let order_id = OrderId::generate();
        for (n, event) in lifecycle_events(i).iter().enumerate() {
            let meta = EventMeta {
                event_id: Uuid::now_v7(),
                order_id,
                version: n as u64 + 1,
                occurred_at: Utc::now(),
                correlation_id: format!("bulk-{i}"),
                causation_id: format!("bulk-{i}-{n}"),
                actor: None,
            };
            columns.event_ids.push(meta.event_id);
            columns.order_ids.push(order_id.as_uuid());
            columns.versions.push(n as i64 + 1);
            columns.types.push(event.type_name());
            columns
                .payloads
                .push(codec::event_to_proto(&meta, event).encode_to_vec());
            columns.times.push(meta.occurred_at);
            appended += 1;
        }
        if columns.event_ids.len() >= INSERT_CHUNK {
            insert(write, std::mem::take(&mut columns)).await;
        }
    }
    if !columns.event_ids.is_empty() {
        insert(write, columns).await;
    }
    appended
}

/// The `VmHWM` (peak resident set) of a running process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_100k_orders_with_bounded_memory() {
    let system = System::new("a_verify_many").await;
    sqlx::migrate!("migrations/write")
        .run(&system.write)
        .await
        .unwrap();
    let started = Instant::now();
    let events = append_many(&system.write, MANY_ORDERS).await;
    let appended = started.elapsed();
    // The projection of those events, made by the real rebuild path.
    let rebuilt = orders::admin::rebuild(
        &system.admin(),
        RebuildOptions {
            from_store: true,
            ..RebuildOptions::default()
        },
    )
    .await
    .expect("rebuild from the store");
    assert_eq!(rebuilt.store_events, events);
    assert_eq!(rebuilt.verified_orders, MANY_ORDERS as u64);
    let built = started.elapsed();

    let mut verify = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderctl"));
    verify
        .arg("verify")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in system.env() {
        if name != "RUST_LOG" {
            verify.env(name, value);
        }
    }
    let mut child = verify.spawn().expect("run orderctl verify");
    let pid = child.id().expect("running");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak = 0;
    // VmHWM only grows; sampled until the process exits (a reaped one has none).
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            child.kill().await.unwrap();
            panic!("orderctl verify ran over 120 s");
        }
        peak = peak.max(peak_rss(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.contains(&format!(
            "checked {MANY_ORDERS} orders and {events} events against generation 2"
        )),
        "{text}"
    );
    assert!(text.contains("0 differences, 0 lagging"), "{text}");
    assert!(peak > 0, "VmHWM was sampled");
    assert!(
        peak < VERIFY_PEAK_RSS,
        "orderctl verify peaked at {} MiB",
        peak / 1024 / 1024
    );
    eprintln!(
        "{MANY_ORDERS} orders, {events} events: appended in {appended:?}, rebuilt by {built:?}, \
         verified by {:?}, verify peak RSS {} MiB",
        started.elapsed(),
        peak / 1024 / 1024
    );
}
