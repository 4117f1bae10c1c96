//! Streams across a rebuild switch and across a restart of the query server:
//! a `WatchOrder` and a `WatchOrders` stream open through a rebuild go on
//! with no error, no version missed or repeated; a stream ended by a stopping
//! server ends with UNAVAILABLE, and `from_version` resumes it exactly on
//! another instance.

use orders::{admin::RebuildOptions, proto};
use tonic::Code;

use super::{
    live::{WITHIN, add_line, confirm, drain, next, place_with_id, ship, versions, watch},
    live_list::{next_change, snapshot, watch_orders},
};
use crate::admin::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_open_through_a_rebuild_switch_go_on_exactly() {
    let system = System::new("q_live_rebuild").await;
    let command = system.start_command().await;
    let query = system.start_query().await;
    let mut commands = command.client.clone();
    let mut reader = query.client.clone();
    let order_id = uuid::Uuid::now_v7().to_string();
    place_with_id(&mut commands, &order_id).await;

    let mut one = watch(&mut reader, &order_id, 1).await;
    assert_eq!(next(&mut one).await.unwrap().order.unwrap().version, 1);
    // `place_with_id` places for the customer "live", whose orders in this
    // fresh database are this one.
    let mut list = watch_orders(&mut reader, "live", proto::OrderStatus::Unspecified).await;
    let listed = snapshot(&mut list).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].order_id, order_id);
    assert_eq!(add_line(&mut commands, &order_id, "sku-before").await, 2);

    let report = orders::admin::rebuild(&system.admin(), RebuildOptions::default())
        .await
        .expect("rebuild");
    eprintln!("rebuild during the watches: {report:?}");

    assert_eq!(add_line(&mut commands, &order_id, "sku-after").await, 3);
    commands
        .cancel_order(proto::CancelOrderRequest {
            order_id: order_id.clone(),
            reason: "rebuilt".into(),
            ..Default::default()
        })
        .await
        .expect("CancelOrder");

    let mut seen = vec![1];
    seen.extend(versions(&drain(&mut one).await));
    assert_eq!(
        seen,
        [1, 2, 3, 4],
        "every version once, ending on CANCELLED"
    );

    let mut last = 1;
    while last < 4 {
        let message = next_change(&mut list).await;
        let order = message.order.expect("an order");
        assert_eq!(order.order_id, order_id);
        assert!(order.version > last, "{} after {last}", order.version);
        last = order.version;
    }
    // No version is sent twice: the next message is about the next order.
    let later = uuid::Uuid::now_v7().to_string();
    place_with_id(&mut commands, &later).await;
    let message = next_change(&mut list).await;
    assert_eq!(message.order.unwrap().order_id, later);

    query.stop().await;
    command.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ended_by_a_stopping_server_resumes_exactly_on_another() {
    let system = System::new("q_live_restart").await;
    let command = system.start_command().await;
    let first = system.start_query().await;
    let mut commands = command.client.clone();
    let order_id = uuid::Uuid::now_v7().to_string();
    place_with_id(&mut commands, &order_id).await;
    add_line(&mut commands, &order_id, "sku-a").await;

    let mut reader = first.client.clone();
    let mut stream = watch(&mut reader, &order_id, 1).await;
    let seen = [
        next(&mut stream).await.unwrap(),
        next(&mut stream).await.unwrap(),
    ];
    assert_eq!(versions(&seen), [1, 2]);

    let stopping = tokio::spawn(first.stop());
    let ended = tokio::time::timeout(WITHIN, stream.message())
        .await
        .expect("the stream ends when its server stops")
        .expect_err("an error the caller can act on");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    stopping.await.unwrap();

    add_line(&mut commands, &order_id, "sku-b").await;
    confirm(&mut commands, &order_id).await;
    ship(&mut commands, &order_id, "1Z-RESUMED").await;

    let second = system.start_query().await;
    let mut reader = second.client.clone();
    let mut resumed = watch(&mut reader, &order_id, 3).await;
    let rest = drain(&mut resumed).await;
    assert_eq!(versions(&rest), [3, 4, 5]);
    assert_eq!(
        rest.last().unwrap().order.as_ref().unwrap().status,
        proto::OrderStatus::Shipped as i32
    );

    second.stop().await;
    command.stop().await;
}
