//! The command side on the real stack: `order-command` over gRPC, the event
//! store, and the relay to Kafka.

mod concurrency;
mod crash;
mod flow;
mod health;
mod rejections;
mod relay;

use std::time::Duration;

use orders::{
    auth::AuthedChannel,
    command::app::Application,
    config::{CommandSettings, KafkaSettings},
    proto::{self, order_commands_client::OrderCommandsClient},
};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::support;

/// A running `order-command` on a free port.
pub struct TestCommand {
    pub client: OrderCommandsClient<AuthedChannel>,
    pub pool: PgPool,
    pub database_url: String,
    pub kafka: KafkaSettings,
    pub port: u16,
    /// The port of `/metrics`, when the settings ask for it.
    pub metrics_port: Option<u16>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestCommand {
    /// A server with its own fresh database and topic, relay running.
    pub async fn start() -> Self {
        let database_url = support::fresh_database("cmd").await;
        Self::start_with(database_url, support::fresh_kafka("cmd"), true).await
    }

    /// A server on the given database and topic (created first, as the admin
    /// user); it connects to Kafka as the relay user, and so does `kafka`.
    pub async fn start_with(database_url: String, kafka: KafkaSettings, relay: bool) -> Self {
        support::create_topic(&kafka).await;
        let kafka = support::kafka_as(&kafka, support::KafkaUser::Relay);
        let mut settings = support::command_settings(database_url, kafka);
        settings.relay = relay;
        Self::start_with_settings(settings).await
    }

    /// A server with `settings` (its database and topic among them).
    pub async fn start_with_settings(settings: CommandSettings) -> Self {
        let database_url = settings.database_url.expose().to_owned();
        let kafka = settings.kafka.clone();
        let app = Application::build(settings)
            .await
            .expect("build order-command");
        let port = app.port();
        let metrics_port = app.metrics_port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
            .await
            .expect("order-command ran");
        });
        let client = connect(port).await;
        Self {
            client,
            pool: support::pool(&database_url).await,
            database_url,
            kafka,
            port,
            metrics_port,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("order-command stopped in time")
                .expect("order-command task");
        }
    }

    /// Number of events in the store.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// (order id, version) of every stored event, in position order.
    pub async fn stored_versions(&self) -> Vec<(String, u64)> {
        sqlx::query_as::<_, (uuid::Uuid, i64)>(
            "SELECT order_id, version FROM events ORDER BY position",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(o, v)| (o.to_string(), v as u64))
        .collect()
    }
}

/// A gRPC client for a server on `port`, retrying the connection for a few seconds.
pub async fn connect(port: u16) -> OrderCommandsClient<AuthedChannel> {
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(url.clone()).unwrap().connect().await {
            return OrderCommandsClient::with_interceptor(channel, support::bearer());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to order-command on {url}");
}

/// One order line.
pub fn line(product: &str, quantity: u32, unit_price_minor: i64) -> proto::OrderLine {
    proto::OrderLine {
        product_id: product.into(),
        quantity,
        unit_price_minor,
    }
}

/// A valid PlaceOrder request for `customer` with two lines.
pub fn place(customer: &str) -> proto::PlaceOrderRequest {
    proto::PlaceOrderRequest {
        customer_id: customer.into(),
        currency_code: "EUR".into(),
        lines: vec![line("sku-1", 2, 1250), line("sku-2", 1, 999)],
        ..Default::default()
    }
}
