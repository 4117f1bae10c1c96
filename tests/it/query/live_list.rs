//! `WatchOrders` on the real stack: the customer's orders first, newest
//! first, then the end of the snapshot, then each change, nothing of other
//! customers; on an instance that projects nothing itself (woken by the
//! projecting instance's NOTIFYs) and on the projecting one (woken in
//! process); a status filter that an order leaves.

use std::collections::HashMap;

use orders::{auth::AuthedChannel, proto, proto::order_queries_client::OrderQueriesClient};
use tonic::{Code, Streaming};

use super::live::{Commands, WITHIN, add_line, confirm, ship, start_reader_only};
use crate::{admin::System, command::place, support};

pub(super) async fn watch_orders(
    reader: &mut OrderQueriesClient<AuthedChannel>,
    customer: &str,
    status: proto::OrderStatus,
) -> Streaming<proto::WatchOrdersResponse> {
    reader
        .watch_orders(proto::WatchOrdersRequest {
            customer_id: customer.to_owned(),
            status: status as i32,
        })
        .await
        .expect("WatchOrders")
        .into_inner()
}

/// The next message; the stream must neither fail nor end.
pub(super) async fn next_change(
    stream: &mut Streaming<proto::WatchOrdersResponse>,
) -> proto::WatchOrdersResponse {
    tokio::time::timeout(WITHIN, stream.message())
        .await
        .expect("a message within a minute")
        .expect("no error")
        .expect("the stream goes on")
}

/// The snapshot: the orders sent before the message that completes it.
pub(super) async fn snapshot(
    stream: &mut Streaming<proto::WatchOrdersResponse>,
) -> Vec<proto::Order> {
    let mut orders = vec![];
    loop {
        let message = next_change(stream).await;
        if message.snapshot_complete {
            assert!(message.order.is_none());
            return orders;
        }
        assert!(!message.left_filter, "nothing leaves during the snapshot");
        orders.push(message.order.expect("an order"));
    }
}

async fn place_for(commands: &mut Commands, customer: &str) -> String {
    commands
        .place_order(place(customer))
        .await
        .expect("PlaceOrder")
        .into_inner()
        .order_id
}

/// Waits until `reader` serves `order_id` at `version` or later.
async fn projected(reader: &mut OrderQueriesClient<AuthedChannel>, order_id: &str, version: u64) {
    reader
        .get_order(proto::GetOrderRequest {
            order_id: order_id.to_owned(),
            min_version: Some(version),
            ..Default::default()
        })
        .await
        .expect("projected");
}

fn ids(orders: &[proto::Order]) -> Vec<&str> {
    orders.iter().map(|o| o.order_id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_watch_sends_its_orders_then_each_change_and_nothing_of_others() {
    let system = System::new("q_watch_list").await;
    let command = system.start_command().await;
    let projecting = system.start_query().await;
    let watching = start_reader_only(&system).await;
    let mut commands = command.client.clone();
    let mut reader = watching.client.clone();
    let customer = support::unique("cust");
    let other = support::unique("other");

    let first = place_for(&mut commands, &customer).await;
    let second = place_for(&mut commands, &customer).await;
    let theirs = place_for(&mut commands, &other).await;
    for id in [&first, &second, &theirs] {
        projected(&mut reader, id, 1).await;
    }

    let mut stream = watch_orders(&mut reader, &customer, proto::OrderStatus::Unspecified).await;
    let listed = snapshot(&mut stream).await;
    assert_eq!(
        ids(&listed),
        [second.as_str(), first.as_str()],
        "newest first"
    );
    assert!(listed.iter().all(|o| o.version == 1));

    // Changes to the customer's orders, a new one, and one of another customer's.
    let first_at = add_line(&mut commands, &first, "sku-more").await;
    let second_at = confirm(&mut commands, &second).await;
    add_line(&mut commands, &theirs, "sku-theirs").await;
    let third = place_for(&mut commands, &customer).await;
    let expected: HashMap<&str, u64> = HashMap::from([
        (first.as_str(), first_at),
        (second.as_str(), second_at),
        (third.as_str(), 1),
    ]);

    let mut latest: HashMap<String, u64> = HashMap::new();
    while expected
        .iter()
        .any(|(id, v)| latest.get(*id).is_none_or(|seen| seen < v))
    {
        let message = next_change(&mut stream).await;
        assert!(!message.left_filter && !message.snapshot_complete);
        let order = message.order.expect("an order");
        assert_eq!(order.customer_id, customer, "only the customer's orders");
        let previous = latest.insert(order.order_id.clone(), order.version);
        assert!(
            previous.is_none_or(|p| p < order.version),
            "versions only increase: {} after {previous:?}",
            order.version
        );
        assert_eq!(
            message.freshness.expect("freshness").projected_version,
            order.version
        );
    }
    assert_eq!(latest.len(), 3, "{latest:?}");

    let missing = reader
        .watch_orders(proto::WatchOrdersRequest::default())
        .await
        .expect_err("no customer");
    assert_eq!(missing.code(), Code::InvalidArgument);

    drop(stream);
    watching.stop().await;
    projecting.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_one_status_sends_an_order_that_leaves_it_once_more_then_no_more() {
    let system = System::new("q_watch_status").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let mut commands = command.client.clone();
    let mut reader = query.client.clone();
    let customer = support::unique("cust");

    let leaving = place_for(&mut commands, &customer).await;
    let staying = place_for(&mut commands, &customer).await;
    let confirmed = place_for(&mut commands, &customer).await;
    let at = confirm(&mut commands, &confirmed).await;
    projected(&mut reader, &confirmed, at).await;
    for id in [&leaving, &staying] {
        projected(&mut reader, id, 1).await;
    }

    let mut stream = watch_orders(&mut reader, &customer, proto::OrderStatus::Placed).await;
    assert_eq!(
        ids(&snapshot(&mut stream).await),
        [staying.as_str(), leaving.as_str()],
        "only the placed orders"
    );

    let left_at = confirm(&mut commands, &leaving).await;
    let message = next_change(&mut stream).await;
    let order = message.order.as_ref().unwrap();
    assert!(message.left_filter, "{message:?}");
    assert_eq!(
        (order.order_id.as_str(), order.version, order.status),
        (
            leaving.as_str(),
            left_at,
            proto::OrderStatus::Confirmed as i32
        )
    );

    // The order that left changes again, then one in the list: only the
    // latter is sent (were the former, it would come first).
    ship(&mut commands, &leaving, "1Z-LEFT").await;
    let staying_at = add_line(&mut commands, &staying, "sku-more").await;
    let message = next_change(&mut stream).await;
    let order = message.order.as_ref().unwrap();
    assert!(!message.left_filter);
    assert_eq!(
        (order.order_id.as_str(), order.version),
        (staying.as_str(), staying_at)
    );

    drop(stream);
    query.stop().await;
    command.stop().await;
}
