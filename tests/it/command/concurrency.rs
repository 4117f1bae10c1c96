//! Concurrent commands on one order, and group commit.

use std::collections::BTreeSet;

use orders::{
    command::store,
    domain::{OrderId, OrderStatus},
    proto,
};
use tonic::Code;

use super::{TestCommand, line, place};

#[tokio::test]
async fn fifty_concurrent_add_order_lines_get_contiguous_versions_and_all_land() {
    let mut cmd = TestCommand::start().await;
    let order_id = cmd
        .client
        .place_order(place("frank"))
        .await
        .unwrap()
        .into_inner()
        .order_id;

    let calls = (0..50).map(|i| {
        let mut client = cmd.client.clone();
        let order_id = order_id.clone();
        tokio::spawn(async move {
            client
                .add_order_line(proto::AddOrderLineRequest {
                    order_id,
                    line: Some(line(&format!("p-{i}"), 1 + i, 10)),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().version)
        })
    });
    let versions: Vec<u64> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("every add is accepted"))
        .collect();

    let distinct: BTreeSet<u64> = versions.iter().copied().collect();
    assert_eq!(
        distinct,
        (2..=51).collect::<BTreeSet<u64>>(),
        "no gap, no duplicate"
    );
    let id = OrderId::parse(&order_id).unwrap();
    let mut conn = cmd.pool.acquire().await.unwrap();
    let order = store::load_orders(&mut conn, &[id])
        .await
        .unwrap()
        .remove(&id)
        .unwrap();
    assert_eq!(order.version, 51);
    assert_eq!(order.status, OrderStatus::Placed);
    for i in 0..50u32 {
        let product = format!("p-{i}");
        let found = order
            .lines
            .iter()
            .find(|l| l.product_id.as_str() == product);
        assert_eq!(found.map(|l| l.quantity.get()), Some(1 + i), "{product}");
    }
    drop(conn);
    cmd.stop().await;
}

#[tokio::test]
async fn in_one_burst_only_the_stale_command_fails_and_the_others_commit() {
    let mut cmd = TestCommand::start().await;
    let orders: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(
                cmd.client
                    .place_order(place(&format!("c{i}")))
                    .await
                    .unwrap()
                    .into_inner()
                    .order_id,
            );
        }
        ids
    };
    // Twenty confirms at once, two per order, both expecting version 1: exactly one per order wins.
    let calls = orders.iter().flat_map(|order_id| {
        (0..2).map(|_| {
            let mut client = cmd.client.clone();
            let order_id = order_id.clone();
            tokio::spawn(async move {
                client
                    .confirm_order(proto::ConfirmOrderRequest {
                        order_id,
                        expected_version: Some(1),
                        ..Default::default()
                    })
                    .await
            })
        })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();

    let won = results.iter().filter(|r| r.is_ok()).count();
    let aborted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Aborted))
        .count();
    assert_eq!((won, aborted), (10, 10));
    assert_eq!(cmd.event_count().await, 20);
    cmd.stop().await;
}

#[tokio::test]
async fn two_servers_on_one_store_never_fork_an_order() {
    let mut first = TestCommand::start().await;
    let second =
        TestCommand::start_with(first.database_url.clone(), first.kafka.clone(), false).await;
    let order_id = first
        .client
        .place_order(place("gina"))
        .await
        .unwrap()
        .into_inner()
        .order_id;

    let calls = (0..40).map(|i| {
        let mut client = if i % 2 == 0 {
            first.client.clone()
        } else {
            second.client.clone()
        };
        let order_id = order_id.clone();
        tokio::spawn(async move {
            client
                .add_order_line(proto::AddOrderLineRequest {
                    order_id,
                    line: Some(line(&format!("q-{i}"), 1, 1)),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().version)
        })
    });
    let versions: BTreeSet<u64> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| {
            r.unwrap()
                .expect("accepted after re-deciding on fresh state")
        })
        .collect();

    assert_eq!(versions, (2..=41).collect::<BTreeSet<u64>>());
    let stored: Vec<u64> = first
        .stored_versions()
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(stored, (1..=41).collect::<Vec<u64>>());
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_burst_of_new_orders_commits_around_a_placed_twice_order_and_a_retried_request_id() {
    let mut cmd = TestCommand::start().await;
    let taken = uuid::Uuid::new_v4().to_string();
    let first_request = proto::PlaceOrderRequest {
        request_id: "place-once".into(),
        order_id: taken.clone(),
        ..place("hana")
    };
    let first = cmd
        .client
        .place_order(first_request.clone())
        .await
        .unwrap()
        .into_inner();

    // The writer's first attempt guesses every PlaceOrder's order and key unused:
    // the two wrong guesses in this burst must not cost the other commands anything.
    let mut requests: Vec<proto::PlaceOrderRequest> =
        (0..20).map(|i| place(&format!("burst-{i}"))).collect();
    requests.push(proto::PlaceOrderRequest {
        order_id: taken.clone(),
        ..place("ivan")
    });
    requests.push(first_request);
    let calls = requests.into_iter().map(|request| {
        let mut client = cmd.client.clone();
        tokio::spawn(async move { client.place_order(request).await.map(|r| r.into_inner()) })
    });
    let mut results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();

    let retried = results
        .pop()
        .unwrap()
        .expect("a retry gets the first answer");
    assert_eq!(retried, first);
    let twice = results.pop().unwrap().expect_err("the order exists");
    assert_eq!(twice.code(), Code::AlreadyExists);
    for result in &results {
        assert_eq!(result.as_ref().expect("a new order is placed").version, 1);
    }
    assert_eq!(cmd.event_count().await, 21);
    cmd.stop().await;
}
