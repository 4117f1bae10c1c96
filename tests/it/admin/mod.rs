//! `orderctl` and scale-out on the real stack: rebuilds under load, verify,
//! several query and command instances, dead letters and republishing.

mod cli;
mod dead_letters;
mod rebuild;
mod scale;
mod verify;

use orders::auth::AuthedChannel;
use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use orders::{
    admin::{VerifyOptions, VerifyReport},
    config::{AdminSettings, KafkaSettings},
    proto::{self, order_commands_client::OrderCommandsClient},
};
use sqlx::PgPool;

pub use crate::support::{assert_topic_holds, free_port};
use crate::{
    command::{TestCommand, line, place},
    query::TestQuery,
    support,
};

/// Generous bound for anything that converges in these tests.
pub const CONVERGED: Duration = Duration::from_secs(60);

/// Fresh write and read databases, a fresh topic and a consumer group.
pub struct System {
    pub write_url: String,
    pub read_url: String,
    pub kafka: KafkaSettings,
    pub group: String,
    pub write: PgPool,
    pub read: PgPool,
}

impl System {
    /// A fresh system; nothing runs yet.
    pub async fn new(prefix: &str) -> Self {
        let write_url = support::fresh_database(&format!("{prefix}_w")).await;
        let read_url = support::fresh_database(&format!("{prefix}_r")).await;
        Self {
            write: support::pool(&write_url).await,
            read: support::pool(&read_url).await,
            kafka: support::fresh_kafka(prefix),
            group: support::unique(prefix),
            write_url,
            read_url,
        }
    }

    /// `orderctl`'s settings for this system.
    pub fn admin(&self) -> AdminSettings {
        AdminSettings::new(
            &self.write_url,
            &self.read_url,
            self.kafka.clone(),
            &self.group,
        )
    }

    /// An in-process `order-command` with its relay.
    pub async fn start_command(&self) -> TestCommand {
        TestCommand::start_with(self.write_url.clone(), self.kafka.clone(), true).await
    }

    /// An in-process `order-query` in the system's group.
    pub async fn start_query(&self) -> TestQuery {
        TestQuery::start(support::query_settings(
            &self.read_url,
            self.kafka.clone(),
            &self.group,
        ))
        .await
    }

    /// `verify` after waiting (bounded) for quiescence: exact equality.
    pub async fn verify_quiescent(&self) -> VerifyReport {
        orders::admin::verify(
            &self.admin(),
            VerifyOptions {
                wait_caught_up: Some(CONVERGED),
            },
        )
        .await
        .expect("verify ran")
    }

    /// (orders, events) in the event store.
    pub async fn store_counts(&self) -> (u64, u64) {
        let (orders, events): (i64, i64) =
            sqlx::query_as("SELECT count(DISTINCT order_id), count(*) FROM events")
                .fetch_one(&self.write)
                .await
                .unwrap();
        (orders as u64, events as u64)
    }

    /// The environment `orderctl` and the servers read (databases as the
    /// bootstrap superuser, Kafka as the admin user, `orderctl`'s).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("ORDERS_WRITE_DATABASE_URL", self.write_url.clone()),
            ("ORDERS_READ_DATABASE_URL", self.read_url.clone()),
            ("ORDERS_ADMIN_WRITE_DATABASE_URL", self.write_url.clone()),
            ("ORDERS_ADMIN_READ_DATABASE_URL", self.read_url.clone()),
            (
                support::ALLOW_SUPERUSER.0,
                support::ALLOW_SUPERUSER.1.into(),
            ),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                self.kafka.bootstrap_servers.clone(),
            ),
            ("ORDERS_TOPIC", self.kafka.topic.clone()),
            (
                "ORDERS_TOPIC_PARTITIONS",
                self.kafka.topic_partitions.to_string(),
            ),
            ("ORDERS_CONSUMER_GROUP", self.group.clone()),
            ("RUST_LOG", "info,rdkafka=warn,sqlx=warn,h2=warn".into()),
        ];
        env.extend(support::kafka_env(support::KafkaUser::Admin));
        env
    }

    /// Runs the real `orderctl` binary with this system's environment.
    pub fn orderctl(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_orderctl"));
        command.args(args).env("RUST_LOG", "warn");
        for (name, value) in self.env() {
            if name != "RUST_LOG" {
                command.env(name, value);
            }
        }
        command.output().expect("run orderctl")
    }

    /// Spawns a real server binary with this system's environment, logging to `log`.
    pub fn spawn(&self, binary: &str, port: u16, log: &Path) -> Child {
        self.spawn_with(binary, port, log, &[])
    }

    /// `spawn` with `extra` variables on top.
    pub fn spawn_with(
        &self,
        binary: &str,
        port: u16,
        log: &Path,
        extra: &[(&str, String)],
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = Command::new(binary);
        command
            .envs(support::server_env())
            .env("ORDERS_COMMAND_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDERS_QUERY_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log);
        for (name, value) in self.env() {
            command.env(name, value);
        }
        // Each server as its own Kafka user.
        let user = if binary.ends_with("order-command") {
            support::KafkaUser::Relay
        } else {
            support::KafkaUser::Query
        };
        command.envs(support::kafka_env(user));
        command.envs(support::query_session_env());
        command.envs(extra.iter().map(|(k, v)| (*k, v)));
        command.spawn().expect("spawn server binary")
    }
}

/// What the command side acknowledged: the order and its version after each command.
pub type Acked = Vec<(String, u64)>;

/// Places `count` orders from `tasks` concurrent tasks; one in four is then
/// given a line, confirmed and shipped, one in four cancelled, one in four
/// given a line. Returns every acknowledged (order, version).
pub async fn place_orders(
    client: &OrderCommandsClient<AuthedChannel>,
    count: usize,
    tasks: usize,
    prefix: &str,
) -> Acked {
    let mut handles = vec![];
    for task in 0..tasks {
        let mut client = client.clone();
        let prefix = prefix.to_owned();
        handles.push(tokio::spawn(async move {
            let mut acked = vec![];
            for i in (task..count).step_by(tasks) {
                lifecycle(&mut client, &format!("{prefix}-{}", i % 97), i, &mut acked)
                    .await
                    .expect("commands are accepted");
            }
            acked
        }));
    }
    let mut acked = vec![];
    for handle in handles {
        acked.extend(handle.await.unwrap());
    }
    acked
}

/// One order's commands (see `place_orders`), each acknowledged one added to
/// `acked`; stops at the first failure.
pub async fn lifecycle(
    client: &mut OrderCommandsClient<AuthedChannel>,
    customer: &str,
    i: usize,
    acked: &mut Acked,
) -> Result<(), tonic::Status> {
    let placed = client.place_order(place(customer)).await?.into_inner();
    let order_id = placed.order_id;
    acked.push((order_id.clone(), placed.version));
    let add_line = |n: usize| proto::AddOrderLineRequest {
        order_id: order_id.clone(),
        line: Some(line(&format!("extra-{}", n % 5), 1 + (n % 3) as u32, 75)),
        ..Default::default()
    };
    let confirm = || proto::ConfirmOrderRequest {
        order_id: order_id.clone(),
        ..Default::default()
    };
    match i % 4 {
        0 => {
            let v = client.add_order_line(add_line(i)).await?.into_inner();
            acked.push((order_id.clone(), v.version));
            let v = client.confirm_order(confirm()).await?.into_inner();
            acked.push((order_id.clone(), v.version));
            let v = client
                .ship_order(proto::ShipOrderRequest {
                    order_id: order_id.clone(),
                    tracking_number: format!("1Z{i:08}"),
                    ..Default::default()
                })
                .await?
                .into_inner();
            acked.push((order_id.clone(), v.version));
        }
        1 => {
            let v = client
                .cancel_order(proto::CancelOrderRequest {
                    order_id: order_id.clone(),
                    reason: "changed my mind".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            acked.push((order_id.clone(), v.version));
        }
        2 => {
            let v = client.add_order_line(add_line(i)).await?.into_inner();
            acked.push((order_id.clone(), v.version));
        }
        _ => {}
    }
    Ok(())
}

/// A flag that asks background load to stop.
#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
