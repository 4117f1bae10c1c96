//! Several instances share the partitions through the consumer group; one
//! leaving hands its partitions over with nothing lost or doubled. Also the
//! projector's throughput on a backlog.

use std::time::Instant;

use orders::{domain::Event, query::read_model::DEFAULT_SCHEMA};

use super::{OrderStream, Produced, Stack, TestQuery, line_added, placed};
use crate::support;

fn orders_with_events(orders: usize) -> (Vec<OrderStream>, Vec<Produced>) {
    let mut streams: Vec<OrderStream> = (0..orders).map(|_| OrderStream::new()).collect();
    let mut events = vec![];
    for (i, order) in streams.iter_mut().enumerate() {
        events.push(order.next(placed(&format!("customer-{}", i % 5))));
        events.push(order.next(line_added("sku-9", 1, 10)));
        events.push(order.next(Event::OrderConfirmed));
    }
    (streams, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_topic_and_a_leaver_hands_over_cleanly() {
    let stack = Stack::new("q_share", 3).await;
    let first = stack.start().await;
    let second = stack.start().await;
    let (_, events) = orders_with_events(200);
    let (head, tail) = events.split_at(300);

    stack.produce(head).await;
    stack.wait_caught_up().await;
    first.stop().await;
    stack.produce(tail).await;
    stack.wait_caught_up().await;

    let rows = stack
        .count(&format!(
            "SELECT count(*) FROM {DEFAULT_SCHEMA}.order_history"
        ))
        .await;
    assert_eq!(rows, events.len() as i64);
    let at_v3 = stack
        .count(&format!(
            "SELECT count(*) FROM {DEFAULT_SCHEMA}.order_view WHERE version = 3 AND status = 'confirmed'"
        ))
        .await;
    assert_eq!(at_v3, 200);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_applies_a_backlog_in_large_batches() {
    let stack = Stack::new("q_backlog", 3).await;
    let (_, events) = orders_with_events(2_000);
    stack.produce(&events).await;

    let query: TestQuery = stack.start().await;
    let metrics = query.metrics.clone().unwrap();
    support::wait_until(super::PROJECTED, "the first batch", || {
        let metrics = metrics.clone();
        async move { metrics.events_applied_total.get() > 0 }
    })
    .await;
    let started = Instant::now();
    let before = metrics.events_applied_total.get();
    stack.wait_caught_up().await;
    let elapsed = started.elapsed();
    // The counters move just after the batch's commit, which is what
    // `wait_caught_up` sees: the last batch may not be counted yet.
    support::wait_until(super::PROJECTED, "the last batch counted", || {
        let metrics = metrics.clone();
        let total = events.len() as u64;
        async move { metrics.events_applied_total.get() >= total }
    })
    .await;
    let applied = metrics.events_applied_total.get();
    assert_eq!(applied, events.len() as u64);
    let batches = metrics.batches_total.get();
    eprintln!(
        "backlog: {} events applied in {batches} batches; {} after the first batch in {elapsed:?} \
         ({:.0} events/s)",
        applied,
        applied - before,
        (applied - before) as f64 / elapsed.as_secs_f64().max(0.001)
    );
    assert!(batches < events.len() as u64 / 10, "batches are large");
    query.stop().await;
}
