//! A version gap parks the later events of that order only, counted, until
//! the missing event arrives.

use orders::{domain::Event, query::read_model::DEFAULT_SCHEMA};

use super::{OrderStream, PROJECTED, Stack, get_at_least, placed};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_stalls_only_its_order_until_the_missing_version_arrives() {
    let stack = Stack::new("q_gap", 1).await;
    let mut query = stack.start().await;
    let mut gappy = OrderStream::new();
    let v1 = gappy.next(placed("ann"));
    let v2 = gappy.next(Event::OrderConfirmed);
    let v3 = gappy.next(super::shipped("1Z-GAP"));
    let mut other = OrderStream::new();

    // v1, then v3 (v2 is missing), then another order on the same partition.
    stack.produce(&[v1, v3, other.next(placed("bob"))]).await;
    get_at_least(&mut query.client, &other.id(), 1)
        .await
        .expect("the partition keeps moving past the gap");
    let metrics = query.metrics.clone().unwrap();
    support::wait_until(PROJECTED, "the gap counted", || {
        let metrics = metrics.clone();
        async move { metrics.gaps_total.get() == 1 }
    })
    .await;
    let stalled = get_at_least(&mut query.client, &gappy.id(), 1)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(stalled.version, 1, "v3 is not applied over the gap");
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM {DEFAULT_SCHEMA}.pending_event"
            ))
            .await,
        1,
        "v3 is parked"
    );

    // The missing v2 arrives: v2 and the parked v3 are applied, in order.
    stack.produce(&[v2]).await;
    let complete = get_at_least(&mut query.client, &gappy.id(), 3)
        .await
        .expect("the order reaches v3")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(complete.version, 3);
    assert_eq!(complete.tracking_number, "1Z-GAP");
    assert_eq!(
        super::without_times(complete),
        super::expected_order(&gappy)
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM {DEFAULT_SCHEMA}.pending_event"
            ))
            .await,
        0
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM {DEFAULT_SCHEMA}.order_history WHERE order_id = '{}'",
                gappy.id()
            ))
            .await,
        3
    );
    assert_eq!(query.metrics().gaps_total.get(), 1);

    query.stop().await;
}
