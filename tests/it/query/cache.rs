//! The read cache races a projector: `GetOrder` never answers an older version
//! than the database held when the request arrived, while the cache serves.
//! The projector is slowed between each commit and the cache fill (a test
//! hook), so a cache that answered before the fill would be caught.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use orders::{config::QuerySettings, proto, query::read_model::DEFAULT_SCHEMA};
use uuid::Uuid;

use crate::support;

use super::{OrderStream, Stack, TestQuery, get_at_least, line_added, placed};

/// Line additions per order while the readers race.
const ROUNDS: usize = 40;
/// Orders written and read.
const ORDERS: usize = 4;
/// Concurrent readers.
const READERS: usize = 4;
/// Longest the race may run.
const RACE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_are_never_older_than_the_database_when_they_arrive() {
    let stack = Stack::new("q_cache", 2).await;
    // Commits become visible well before the cache is filled: a cache that
    // answered during that window would answer older than the database.
    let mut settings = stack.settings();
    settings.fault_cache_fill_delay_ms = Some(25);
    // One member, nothing to hand over: the default group session, so that a
    // loaded machine neither revokes the partitions (which empties the cache)
    // nor lets the cache's lease (half the session) run out between steps.
    let defaults = QuerySettings::new("", settings.kafka.clone(), "");
    settings.consumer = defaults.consumer;
    let query = TestQuery::start(settings).await;
    let mut orders: Vec<OrderStream> = (0..ORDERS).map(|_| OrderStream::new()).collect();
    let first: Vec<_> = orders.iter_mut().map(|o| o.next(placed("ann"))).collect();
    stack.produce(&first).await;
    let mut client = query.client.clone();
    for order in &orders {
        get_at_least(&mut client, &order.id(), 1)
            .await
            .expect("placed order projected");
    }

    let ids: Vec<String> = orders.iter().map(OrderStream::id).collect();
    let writing = Arc::new(AtomicBool::new(true));
    let reads = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RACE;
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let (ids, writing, reads) = (ids.clone(), writing.clone(), reads.clone());
            let (pool, mut client) = (stack.pool.clone(), query.client.clone());
            tokio::spawn(async move {
                let mut i = reader;
                while writing.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let id = &ids[i % ids.len()];
                    i += 1;
                    // What the database holds now, before the request is sent.
                    let stored: i64 = sqlx::query_scalar(&format!(
                        "SELECT version FROM {DEFAULT_SCHEMA}.order_view WHERE order_id = $1"
                    ))
                    .bind(Uuid::parse_str(id).unwrap())
                    .fetch_one(&pool)
                    .await
                    .expect("stored version");
                    let answered = client
                        .get_order(proto::GetOrderRequest {
                            order_id: id.clone(),
                            min_version: None,
                            ..Default::default()
                        })
                        .await
                        .expect("GetOrder")
                        .into_inner()
                        .order
                        .expect("order")
                        .version;
                    assert!(
                        answered >= stored as u64,
                        "order {id}: answered version {answered} after the database held {stored}"
                    );
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    for round in 0..ROUNDS {
        let batch: Vec<_> = orders
            .iter_mut()
            .map(|o| o.next(line_added(&format!("extra-{round}"), 1, 100)))
            .collect();
        stack.produce(&batch).await;
    }
    let last = (ROUNDS + 1) as u64;
    for order in &orders {
        get_at_least(&mut client, &order.id(), last)
            .await
            .expect("every line projected");
    }
    // Once its fill is done (the hook delays it), every order is served from
    // the cache, at its last version.
    for order in &orders {
        let (cache, client) = (query.cache.clone(), client.clone());
        support::wait_until(
            Duration::from_secs(10),
            "a read served from the cache",
            || {
                let (cache, mut client, id) = (cache.clone(), client.clone(), order.id());
                async move {
                    let before = cache.hits();
                    let read = client
                        .get_order(proto::GetOrderRequest {
                            order_id: id,
                            min_version: None,
                            ..Default::default()
                        })
                        .await
                        .expect("GetOrder")
                        .into_inner()
                        .order
                        .expect("order");
                    assert_eq!(read.version, last);
                    assert_eq!(read.lines.len(), ROUNDS + 1);
                    cache.hits() > before
                }
            },
        )
        .await;
    }
    // The readers ran on while the cache answered: stop them now.
    writing.store(false, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("reader held the invariant");
    }
    let reads = reads.load(Ordering::Relaxed);
    assert!(reads > 0, "the readers ran");
    assert!(
        query.cache.hits() >= ORDERS as u64,
        "the cache answered reads"
    );
    query.stop().await;
}
