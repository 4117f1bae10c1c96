//! Health is NOT_SERVING while PostgreSQL or the broker is unreachable, and
//! while the projection is stalled (messages wait, no position moves).

use std::time::Duration;

use orders::{
    config::KafkaSettings,
    query::{Generations, LiveProjection, app::DependencyProbe},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{OrderStream, Stack, TestQuery, line_added, placed};
use crate::support;

async fn status(port: u16) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: "orders.v1.OrderQueries".into(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

async fn wait_for_status(port: u16, wanted: ServingStatus) {
    support::wait_until(
        Duration::from_secs(20),
        &format!("health {wanted:?}"),
        || async move { status(port).await == Some(wanted) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database() {
    let stack = Stack::new("q_health", 1).await;
    let query = stack.start().await;
    let port = query.port;
    wait_for_status(port, ServingStatus::Serving).await;

    support::cut_off_database(&stack.database_url, true).await;
    wait_for_status(port, ServingStatus::NotServing).await;

    support::cut_off_database(&stack.database_url, false).await;
    wait_for_status(port, ServingStatus::Serving).await;
    query.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_fails_while_the_broker_is_unreachable() {
    let stack = Stack::new("q_probe", 1).await;
    let query = stack.start().await;
    let pool = support::pool(&stack.database_url).await;
    let live = LiveProjection::load(Generations::new(pool)).await.unwrap();

    let reachable = DependencyProbe::new(&stack.settings(), live.clone()).unwrap();
    assert!(reachable.reachable().await);

    let mut settings = stack.settings();
    settings.kafka = KafkaSettings::new("127.0.0.1:1", &stack.kafka.topic);
    let unreachable = DependencyProbe::new(&settings, live).unwrap();
    let started = std::time::Instant::now();
    assert!(!unreachable.reachable().await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the probe is bounded"
    );
    query.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_projector_is_frozen_with_lag_and_serving_once_it_moves() {
    let stack = Stack::new("q_stall", 1).await;
    let mut settings = stack.settings();
    settings.stall_after_ms = 2_000;
    let query = TestQuery::start(settings).await;
    let port = query.port;
    let mut order = OrderStream::new();
    stack.produce(&[order.next(placed("stall"))]).await;
    stack.wait_caught_up().await;
    wait_for_status(port, ServingStatus::Serving).await;

    let freeze = query.freeze.clone().expect("projector runs");
    freeze.set(true);
    support::wait_until(Duration::from_secs(10), "the projector frozen", || async {
        freeze.is_frozen()
    })
    .await;
    stack
        .produce(&[order.next(line_added("sku-stall", 1, 100))])
        .await;
    // Lag above zero and no position moving: NOT_SERVING after the configured
    // 2 s, plus the once-a-second probe and slack for a loaded machine.
    support::wait_until(
        Duration::from_secs(2 + 8),
        "health NOT_SERVING within the stall limit",
        || async move { status(port).await == Some(ServingStatus::NotServing) },
    )
    .await;
    assert_eq!(query.stalls_total.get(), 1);

    freeze.set(false);
    wait_for_status(port, ServingStatus::Serving).await;
    stack.wait_caught_up().await;
    query.stop().await;
}
