//! The fulfilment saga on the real stack: order-command and order-query on a
//! fresh topic, Inventory and Payments on fresh databases, and the saga's
//! worker over a fresh database of its own, all over gRPC.

mod admin;
mod flows;
mod kill;

use std::time::Duration;

use orders::{
    auth::{self, AuthedChannel, BearerToken},
    fulfilment::{
        self,
        calls::Services,
        saga::{Phase, Timings},
        settings::FulfilmentSettings,
        store::{Listed, Store},
        worker::{CrashPoint, StartAt, Worker},
    },
    proto::{
        self, inventory::v1::inventory_client::InventoryClient,
        order_commands_client::OrderCommandsClient, order_queries_client::OrderQueriesClient,
        payments::v1::payments_client::PaymentsClient,
    },
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    admin::System, command::TestCommand, inventory::TestInventory, payments::TestPayments,
    query::TestQuery, support,
};

/// Generous bound for a saga to finish in tests.
pub const FINISHED: Duration = Duration::from_secs(60);

/// The scopes of every service the saga calls.
pub const SERVICE_SCOPES: [&str; 6] = [
    auth::SCOPE_READ,
    auth::SCOPE_WRITE,
    auth::SCOPE_INVENTORY_READ,
    auth::SCOPE_INVENTORY_WRITE,
    auth::SCOPE_PAYMENTS_READ,
    auth::SCOPE_PAYMENTS_WRITE,
];

/// A token for every service the saga calls.
pub fn service_token() -> BearerToken {
    BearerToken::new(&support::token(&SERVICE_SCOPES, None)).expect("ascii token")
}

/// A file holding a token with `scopes`.
pub fn token_file(scopes: &[&str]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.token", support::unique("ful")));
    std::fs::write(&path, support::token(scopes, None)).unwrap();
    path
}

/// The servers an `order-fulfilment` under test calls, by port.
pub struct Peers {
    pub inventory: u16,
    pub payments: u16,
    pub command: u16,
    pub query: u16,
}

/// `order-fulfilment`'s settings for tests: its admin server on any free port
/// over `database_url`, reading `kafka`'s topic as the query user from its
/// start, calling `peers` with a token for `scopes`.
pub fn settings_over(
    database_url: &str,
    kafka: &orders::config::KafkaSettings,
    peers: &Peers,
    scopes: &[&str],
    step_deadline: Duration,
) -> FulfilmentSettings {
    FulfilmentSettings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: orders::secret::DatabaseUrl::new(database_url),
        server: orders::config::ServerSettings {
            allow_superuser: true,
            auth: support::auth_settings(),
            ..Default::default()
        },
        metrics_addr: orders::metrics::MetricsAddr(None),
        kafka: support::kafka_as(kafka, support::KafkaUser::Query),
        start_at: StartAt::Earliest,
        inventory_addr: format!("127.0.0.1:{}", peers.inventory),
        payments_addr: format!("127.0.0.1:{}", peers.payments),
        command_addr: format!("127.0.0.1:{}", peers.command),
        query_addr: format!("127.0.0.1:{}", peers.query),
        token_file: Some(token_file(scopes)),
        tls_ca_file: None,
        tls_client_cert_file: None,
        tls_client_key_file: None,
        step_deadline_ms: step_deadline.as_millis() as u64,
        call_timeout_ms: 2_000,
        max_calls: 64,
        crash_at: None,
    }
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

/// Everything a saga needs, running; the worker started separately.
pub struct SagaStack {
    pub system: System,
    pub command: TestCommand,
    pub query: TestQuery,
    pub inventory: TestInventory,
    pub payments: TestPayments,
    pub database_url: String,
    pub store: Store,
    pub timings: Timings,
    worker: Option<(CancellationToken, JoinHandle<()>)>,
}

impl SagaStack {
    /// The stack with the default timings.
    pub async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, Timings::default(), |_| {}).await
    }

    /// The stack with `timings`, Payments' settings changed by `payments`.
    pub async fn start_with(
        prefix: &str,
        timings: Timings,
        payments: impl FnOnce(&mut orders::config::PaymentsSettings),
    ) -> Self {
        let system = System::new(prefix).await;
        let command = system.start_command().await;
        let query = system.start_query().await;
        let inventory = TestInventory::start().await;
        let payments = TestPayments::start_with(payments).await;
        let database_url = support::fresh_database(&format!("{prefix}_f")).await;
        let pool = support::pool(&database_url).await;
        fulfilment::MIGRATOR.run(&pool).await.expect("migrate");
        Self {
            store: Store::new(pool, timings),
            timings,
            database_url,
            system,
            command,
            query,
            inventory,
            payments,
            worker: None,
        }
    }

    /// The worker's parts, over this stack.
    pub async fn worker(&self, crash: Option<CrashPoint>) -> Worker {
        let token = service_token();
        Worker {
            store: self.store.clone(),
            services: Services {
                inventory: InventoryClient::with_interceptor(
                    channel(self.inventory.port).await,
                    token.clone(),
                ),
                payments: PaymentsClient::with_interceptor(
                    channel(self.payments.port).await,
                    token.clone(),
                ),
                commands: OrderCommandsClient::with_interceptor(
                    channel(self.command.port).await,
                    token.clone(),
                ),
                timeout: Duration::from_secs(2),
            },
            queries: OrderQueriesClient::with_interceptor(channel(self.query.port).await, token),
            kafka: support::kafka_as(&self.system.kafka, support::KafkaUser::Query),
            start_at: StartAt::Earliest,
            max_calls: 64,
            crash,
            work: Default::default(),
        }
    }

    /// Starts an in-process worker.
    pub async fn start_worker(&mut self) {
        let worker = self.worker(None).await;
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { worker.run(stop).await.expect("the worker ran") }
        });
        self.worker = Some((stop, task));
    }

    /// `order-fulfilment`'s settings over this stack, its admin server on any free port.
    pub fn settings(&self) -> FulfilmentSettings {
        let peers = Peers {
            inventory: self.inventory.port,
            payments: self.payments.port,
            command: self.command.port,
            query: self.query.port,
        };
        settings_over(
            &self.database_url,
            &self.system.kafka,
            &peers,
            &SERVICE_SCOPES,
            self.timings.step_deadline,
        )
    }

    /// The real `order-fulfilment` binary over this stack, killed on drop;
    /// `crash` names the point where it kills itself.
    pub fn spawn(&self, crash: Option<&str>) -> tokio::process::Child {
        let settings = self.settings();
        let log = std::env::temp_dir().join(format!("{}.log", support::unique("fulfilment")));
        let log = std::fs::File::create(&log).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-fulfilment"));
        command
            .envs(self.system.env())
            .envs(support::server_env())
            .envs(support::kafka_env(support::KafkaUser::Query))
            .env("RUST_LOG", "info,rdkafka=warn,sqlx=warn,h2=warn")
            .env("ORDERS_FULFILMENT_ADDR", "127.0.0.1:0")
            .env("ORDERS_FULFILMENT_DATABASE_URL", &self.database_url)
            .env("ORDERS_FULFILMENT_START_AT", "earliest")
            .env("ORDERS_INVENTORY_ADDR", &settings.inventory_addr)
            .env("ORDERS_PAYMENTS_ADDR", &settings.payments_addr)
            .env("ORDERS_COMMAND_ADDR", &settings.command_addr)
            .env("ORDERS_QUERY_ADDR", &settings.query_addr)
            .env("ORDERS_FULFILMENT_TOKEN_FILE", settings.token_file.unwrap())
            .env("ORDERS_FULFILMENT_CALL_TIMEOUT_MS", "2000")
            .env_remove("ORDERS_FULFILMENT_CRASH_AT")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(point) = crash {
            command.env("ORDERS_FULFILMENT_CRASH_AT", point);
        }
        command.spawn().expect("start order-fulfilment")
    }

    /// Stops the in-process worker and waits for it.
    pub async fn stop_worker(&mut self) {
        if let Some((stop, task)) = self.worker.take() {
            stop.cancel();
            task.await.expect("the worker stopped");
        }
    }

    pub fn commands(&self) -> OrderCommandsClient<AuthedChannel> {
        self.command.client.clone()
    }

    /// Places an order of `lines` (product, quantity, unit price) and confirms it.
    pub async fn place_and_confirm(&self, customer: &str, lines: &[(&str, u32, i64)]) -> String {
        let mut commands = self.commands();
        let placed = commands
            .place_order(proto::PlaceOrderRequest {
                customer_id: customer.into(),
                currency_code: "EUR".into(),
                lines: lines
                    .iter()
                    .map(|&(product, quantity, price)| {
                        crate::command::line(product, quantity, price)
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("PlaceOrder")
            .into_inner();
        commands
            .confirm_order(proto::ConfirmOrderRequest {
                order_id: placed.order_id.clone(),
                ..Default::default()
            })
            .await
            .expect("ConfirmOrder");
        placed.order_id
    }

    /// The order once it is SHIPPED or CANCELLED, watched on the query server.
    pub async fn final_order(&self, order_id: &str) -> proto::Order {
        let mut stream = self
            .query
            .client
            .clone()
            .watch_order(proto::WatchOrderRequest {
                order_id: order_id.to_owned(),
                from_version: 0,
            })
            .await
            .expect("WatchOrder")
            .into_inner();
        let mut last = None;
        loop {
            match tokio::time::timeout(FINISHED, stream.message())
                .await
                .unwrap_or_else(|_| {
                    panic!("order {order_id} not finished within {FINISHED:?}: {last:?}")
                })
                .expect("the watch does not fail")
            {
                Some(message) => last = message.order,
                None => return last.expect("a final version"),
            }
        }
    }

    /// The saga of `order_id` once it is finished.
    pub async fn finished_saga(&self, order_id: &str) -> Listed {
        let id: Uuid = order_id.parse().unwrap();
        support::wait_until(FINISHED, "the saga finishes", || async {
            self.store
                .get(id)
                .await
                .expect("read the saga")
                .is_some_and(|s| s.saga.phase.is_finished())
        })
        .await;
        self.store.get(id).await.unwrap().expect("the saga")
    }

    /// Sagas in the store, by phase.
    pub async fn phases(&self) -> Vec<(Phase, i64)> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT phase, count(*) FROM saga GROUP BY phase ORDER BY phase")
                .fetch_all(self.store.pool())
                .await
                .unwrap();
        rows.into_iter()
            .map(|(p, n)| (fulfilment::store::phase_named(&p).unwrap(), n))
            .collect()
    }

    pub async fn stop(mut self) {
        self.stop_worker().await;
        self.query.stop().await;
        self.command.stop().await;
        self.inventory.stop().await;
        self.payments.stop().await;
    }
}
