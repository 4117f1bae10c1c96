//! `GetOrder` with `min_version` waits for the projection, woken by NOTIFY.

use std::time::{Duration, Instant};

use orders::{domain::Event, proto};
use tonic::Code;

use super::{OrderStream, Stack, get_at_least, placed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_order_with_min_version_returns_an_event_produced_just_before() {
    let stack = Stack::new("q_ryw", 3).await;
    let mut query = stack.start().await;
    let mut order = OrderStream::new();

    stack.produce(&[order.next(placed("ann"))]).await;
    let response = get_at_least(&mut query.client, &order.id(), 1)
        .await
        .expect("order at version 1");

    let projected_version = response.metadata().get("x-projected-version").cloned();
    let projected_at = response.metadata().get("x-projected-at").cloned();
    let body = response.into_inner();
    let placed_order = body.order.expect("order");
    assert_eq!(placed_order.version, 1);
    assert_eq!(placed_order.status(), proto::OrderStatus::Placed);
    assert_eq!(placed_order.customer_id, "ann");
    assert_eq!(placed_order.total_minor, 2 * 1_250);
    let freshness = body.freshness.expect("freshness");
    assert_eq!(freshness.projected_version, 1);
    assert!(freshness.projected_at.is_some());
    assert_eq!(projected_version.unwrap(), "1");
    let projected_at = projected_at.expect("x-projected-at");
    chrono::DateTime::parse_from_rfc3339(projected_at.to_str().unwrap())
        .expect("x-projected-at is RFC 3339");

    stack.produce(&[order.next(Event::OrderConfirmed)]).await;
    let confirmed = get_at_least(&mut query.client, &order.id(), 2)
        .await
        .expect("order at version 2")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(confirmed.version, 2);
    assert_eq!(confirmed.status(), proto::OrderStatus::Confirmed);

    query.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_version_far_ahead_is_unavailable_within_the_callers_deadline() {
    let stack = Stack::new("q_deadline", 1).await;
    let mut query = stack.start().await;
    let mut order = OrderStream::new();
    stack.produce(&[order.next(placed("ann"))]).await;
    get_at_least(&mut query.client, &order.id(), 1)
        .await
        .expect("order at version 1");

    let mut request = tonic::Request::new(proto::GetOrderRequest {
        order_id: order.id(),
        min_version: Some(7),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = query
        .client
        .get_order(request)
        .await
        .expect_err("version 7 never comes");
    let elapsed = started.elapsed();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        elapsed < Duration::from_millis(1_500),
        "answered after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(150),
        "it waited for the version ({elapsed:?})"
    );
    assert!(
        status.message().contains("is at version 1, waited for 7"),
        "{}",
        status.message()
    );
    assert_eq!(status.metadata().get("x-projected-version").unwrap(), "1");

    query.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_version_on_an_unknown_order_waits_then_reports_version_0() {
    let stack = Stack::new("q_unknown_wait", 1).await;
    let mut query = stack.start().await;

    let mut request = tonic::Request::new(proto::GetOrderRequest {
        order_id: OrderStream::new().id(),
        min_version: Some(1),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(200));
    let status = query.client.get_order(request).await.unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("is at version 0, waited for 1"));

    query.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_pending_waits_and_drains_promptly() {
    let stack = Stack::new("q_shutdown", 1).await;
    let query = stack.start().await;
    let mut client = query.client.clone();
    let order_id = OrderStream::new().id();
    let waiting = tokio::spawn(async move { get_at_least(&mut client, &order_id, 99).await });
    let watch = query.watch.clone();
    crate::support::wait_until(Duration::from_secs(5), "the request waiting", || {
        let watch = watch.clone();
        async move { watch.waiting() == 1 }
    })
    .await;

    let started = Instant::now();
    query.stop().await;
    let status = waiting.await.unwrap().expect_err("no version 99");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped after {:?}",
        started.elapsed()
    );
}
