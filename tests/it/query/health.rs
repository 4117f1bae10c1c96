//! Health is NOT_SERVING while PostgreSQL or the broker is unreachable.

use std::time::Duration;

use orders::{
    config::KafkaSettings,
    query::{ReadModel, app::DependencyProbe, read_model::DEFAULT_SCHEMA},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::Stack;
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
    let read_model = ReadModel::new(pool, DEFAULT_SCHEMA).unwrap();

    let reachable = DependencyProbe::new(&stack.settings(), read_model.clone()).unwrap();
    assert!(reachable.reachable().await);

    let mut settings = stack.settings();
    settings.kafka = KafkaSettings::new("127.0.0.1:1", &stack.kafka.topic);
    let unreachable = DependencyProbe::new(&settings, read_model).unwrap();
    let started = std::time::Instant::now();
    assert!(!unreachable.reachable().await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the probe is bounded"
    );
    query.stop().await;
}
