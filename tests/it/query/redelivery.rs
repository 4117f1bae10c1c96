//! Redelivery changes nothing: events consumed again (duplicates on the topic,
//! positions rewound under a running projector, or a restart from offset 0)
//! are skipped by version, and the projection stays as it was.

use orders::{domain::Event, query::read_model::DEFAULT_SCHEMA};

use super::{OrderStream, Stack, get_at_least, line_added, placed, shipped};

async fn rewind_positions_to_zero(stack: &Stack) {
    sqlx::query(&format!(
        "UPDATE {DEFAULT_SCHEMA}.consumer_position SET next_offset = 0"
    ))
    .execute(&stack.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_the_topic_again_leaves_the_projection_unchanged() {
    let stack = Stack::new("q_redeliver", 3).await;
    let mut query = stack.start().await;
    let mut streams: Vec<OrderStream> = (0..30).map(|_| OrderStream::new()).collect();
    let mut events = vec![];
    for (i, order) in streams.iter_mut().enumerate() {
        events.push(order.next(placed(&format!("customer-{}", i % 4))));
        events.push(order.next(line_added("sku-2", 3, 700)));
        if i % 2 == 0 {
            events.push(order.next(Event::OrderConfirmed));
            events.push(order.next(shipped(&format!("TRACK-{i}"))));
        }
    }
    // At-least-once delivery: some events arrive twice.
    let duplicates: Vec<_> = events.iter().step_by(5).cloned().collect();
    stack.produce(&events).await;
    stack.produce(&duplicates).await;
    stack.wait_caught_up().await;
    let before = stack.dump().await;
    assert_eq!(
        before
            .iter()
            .filter(|r| r.starts_with("order_history "))
            .count(),
        events.len()
    );

    // Rewind the stored positions under the running projector, then give every
    // partition a new message: its fence fails, it seeks back to 0, and
    // consumes the whole topic again.
    rewind_positions_to_zero(&stack).await;
    let mut markers = vec![];
    for partition in 0..3 {
        let mut marker = OrderStream::new();
        let event = marker.next(placed("marker"));
        stack
            .produce_raw(
                Some(event.order_id.as_bytes()),
                &event.bytes,
                Some(partition),
            )
            .await;
        markers.push(marker);
    }
    for marker in &markers {
        get_at_least(&mut query.client, &marker.id(), 1)
            .await
            .expect("marker projected");
    }
    stack.wait_caught_up().await;
    assert!(query.metrics().fenced_total.get() >= 1);
    let marker_ids: Vec<String> = markers.iter().map(OrderStream::id).collect();
    let after: Vec<String> = stack
        .dump()
        .await
        .into_iter()
        .filter(|row| !marker_ids.iter().any(|id| row.contains(id.as_str())))
        .collect();
    assert_eq!(after, before, "projection changed by redelivery");
    let before = stack.dump().await;
    query.stop().await;

    // A fresh instance starting from offset 0 changes nothing either.
    rewind_positions_to_zero(&stack).await;
    let query = stack.start().await;
    stack.wait_caught_up().await;
    assert_eq!(stack.dump().await, before);
    // The counters move just after the batch's commit that `wait_caught_up` sees.
    let consumed = (events.len() + duplicates.len()) as u64;
    crate::support::wait_until(super::PROJECTED, "everything was consumed again", || {
        let metrics = query.metrics();
        async move { metrics.duplicates_total.get() >= consumed }
    })
    .await;
    assert_eq!(query.metrics().events_applied_total.get(), 0);
    query.stop().await;
}
