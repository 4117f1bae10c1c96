//! Health follows the database: NOT_SERVING while it refuses connections.

use std::time::Duration;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::TestCommand;
use crate::support;

async fn status(port: u16) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: "orders.v1.OrderCommands".into(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_refuses_connections() {
    let cmd = TestCommand::start().await;
    let port = cmd.port;
    support::wait_until(Duration::from_secs(10), "SERVING", || async {
        status(port).await == ServingStatus::Serving
    })
    .await;

    support::cut_off_database(&cmd.database_url, true).await;
    support::wait_until(Duration::from_secs(15), "NOT_SERVING", || async {
        status(port).await == ServingStatus::NotServing
    })
    .await;
    support::cut_off_database(&cmd.database_url, false).await;
    support::wait_until(Duration::from_secs(15), "SERVING again", || async {
        status(port).await == ServingStatus::Serving
    })
    .await;
    cmd.stop().await;
}
