//! Failure tests that take the shared broker down. They live in their own test
//! binary because cargo runs test binaries one after another, so no other test
//! ever sees the broker missing; inside this binary they hold one lock.

#[path = "../it/support.rs"]
mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use orders::{
    command::app::{Application, StartupError},
    config::{CommandSettings, KafkaSettings, QuerySettings},
    proto::{self, order_commands_client::OrderCommandsClient},
    query::{QueryError, app::Application as QueryApp},
};
use tokio::{
    sync::{Mutex, oneshot},
    task::JoinHandle,
};
use tonic::transport::Channel;

static BROKER: Mutex<()> = Mutex::const_new(());

/// The broker's pid file: `ORDERS_CHAOS_KAFKA_PIDFILE`, else the one `scripts/dev` writes.
fn broker_pidfile() -> PathBuf {
    std::env::var_os("ORDERS_CHAOS_KAFKA_PIDFILE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack/run/kafka.pid"),
        PathBuf::from,
    )
}

/// Kills the broker (the pid on the pid file's first line) with SIGKILL.
fn kill_broker() {
    let pidfile = broker_pidfile();
    let text = std::fs::read_to_string(&pidfile).unwrap_or_else(|e| {
        panic!(
            "read {}: {e}; is the stack up (scripts/dev up)?",
            pidfile.display()
        )
    });
    let pid = text.lines().next().expect("pid line").trim().to_owned();
    let status = Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid}");
}

/// Starts the broker again, bounded to 180 s: the executable
/// `ORDERS_CHAOS_KAFKA_START` (which must return once the broker is ready and
/// has written its pid file), else `scripts/dev up --infra-only`.
fn restart_broker() {
    let mut command = Command::new("timeout");
    command.arg("180");
    match std::env::var_os("ORDERS_CHAOS_KAFKA_START") {
        Some(start) => command.arg(start),
        None => command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev"))
            .args(["up", "--infra-only"]),
    };
    let status = command.status().expect("run the broker start command");
    assert!(status.success(), "{command:?} restarted the broker");
}

async fn outbox_len(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn place(i: usize) -> proto::PlaceOrderRequest {
    proto::PlaceOrderRequest {
        request_id: format!("chaos-{i}"),
        customer_id: format!("chaos-{i}"),
        currency_code: "EUR".into(),
        lines: vec![proto::OrderLine {
            product_id: "sku".into(),
            quantity: 1,
            unit_price_minor: 100,
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn commands_are_accepted_while_the_broker_is_down_and_everything_reaches_the_projection_after()
 {
    let _broker = BROKER.lock().await;
    let mut stack = ChaosStack::start("chaos").await;
    for i in 0..20 {
        stack
            .client
            .place_order(place(i))
            .await
            .expect("accepted before the outage");
    }
    support::wait_until(
        Duration::from_secs(60),
        "the outbox to drain before the outage",
        || async { outbox_len(&stack.pool).await == 0 },
    )
    .await;

    kill_broker();
    // The broker stays down for ten seconds while commands keep arriving.
    let outage = tokio::time::Instant::now();
    let mut accepted = 20;
    for i in 20..70 {
        stack
            .client
            .place_order(place(i))
            .await
            .expect("accepted while the broker is down");
        accepted += 1;
        tokio::time::sleep_until(outage + Duration::from_millis(200) * (i as u32 - 19)).await;
    }
    assert!(
        outbox_len(&stack.pool).await > 0,
        "events wait in the outbox during the outage"
    );
    restart_broker();

    support::wait_until(Duration::from_secs(120), "the backlog to drain", || async {
        outbox_len(&stack.pool).await == 0
    })
    .await;
    let reader = support::topic_reader(&stack.kafka.topic);
    let messages = support::read_messages(&reader, accepted, Duration::from_secs(60)).await;
    let mut keys: Vec<String> = messages.iter().map(support::key_of).collect();
    keys.sort();
    keys.dedup();
    let mut stored: Vec<String> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT order_id FROM events")
            .fetch_all(&stack.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.to_string())
            .collect();
    stored.sort();
    assert_eq!(stored.len(), accepted);
    assert_eq!(keys, stored, "every stored event reached the topic");
    support::wait_until(
        Duration::from_secs(60),
        "the projection to catch up",
        || async { projected_orders(&stack.read_pool).await == accepted as i64 },
    )
    .await;
    stack.stop().await;
}

/// An order-command and an order-query server in this process, on fresh
/// databases and a fresh topic of the shared broker.
struct ChaosStack {
    kafka: KafkaSettings,
    /// The write database.
    pool: sqlx::PgPool,
    read_pool: sqlx::PgPool,
    client: OrderCommandsClient<Channel>,
    /// The projector's consumer session timeout.
    session: Duration,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), StartupError>>,
    stop_query: oneshot::Sender<()>,
    query_server: JoinHandle<Result<(), QueryError>>,
}

impl ChaosStack {
    async fn start(name: &str) -> Self {
        let database_url = support::fresh_database(name).await;
        let kafka = support::fresh_kafka(name);
        let app = Application::build(CommandSettings::new(database_url.clone(), kafka.clone()))
            .await
            .expect("build order-command");
        let port = app.port();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let read_url = support::fresh_database(&format!("{name}_read")).await;
        let settings = QuerySettings::new(read_url.clone(), kafka.clone(), support::unique(name));
        let session = Duration::from_millis(settings.consumer.session_timeout_ms.into());
        let query = QueryApp::build(settings).await.expect("build order-query");
        let (stop_query, query_stopped) = oneshot::channel::<()>();
        let query_server = tokio::spawn(query.run_until_stopped(async {
            let _ = query_stopped.await;
        }));
        let client = OrderCommandsClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        Self {
            kafka,
            pool: support::pool(&database_url).await,
            read_pool: support::pool(&read_url).await,
            client,
            session,
            stop,
            server,
            stop_query,
            query_server,
        }
    }

    /// Stops both servers and checks that they ran without error.
    async fn stop(self) {
        let _ = self.stop_query.send(());
        self.query_server.await.unwrap().expect("order-query ran");
        let _ = self.stop.send(());
        self.server.await.unwrap().expect("order-command ran");
    }
}

async fn projected_orders(read_pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM read_model.order_view")
        .fetch_one(read_pool)
        .await
        .unwrap_or(0)
}

#[tokio::test]
async fn the_projector_is_assigned_its_partitions_again_soon_after_an_outage_longer_than_its_session()
 {
    let _broker = BROKER.lock().await;
    let mut stack = ChaosStack::start("chaos_rejoin").await;
    for i in 0..10 {
        stack
            .client
            .place_order(place(1_000 + i))
            .await
            .expect("accepted before the outage");
    }
    support::wait_until(
        Duration::from_secs(60),
        "the projection to hold the orders placed before the outage",
        || async { projected_orders(&stack.read_pool).await == 10 },
    )
    .await;

    // Down for longer than the session: the consumer loses its membership and
    // assignment, and rejoins once the broker is back.
    kill_broker();
    tokio::time::sleep(stack.session * 2).await;
    restart_broker();
    let restarted = tokio::time::Instant::now();
    for i in 10..20 {
        stack
            .client
            .place_order(place(1_000 + i))
            .await
            .expect("accepted after the outage");
    }
    support::wait_until(
        Duration::from_secs(120),
        "the outbox to drain after the restart",
        || async { outbox_len(&stack.pool).await == 0 },
    )
    .await;
    // The new assignment is taken promptly: it must not wait behind the error
    // events librdkafka queued during the outage.
    support::wait_until(
        Duration::from_secs(30),
        "the projection to catch up after the restart",
        || async { projected_orders(&stack.read_pool).await == 20 },
    )
    .await;
    eprintln!(
        "projection caught up {:?} after the broker was ready again",
        restarted.elapsed()
    );
    stack.stop().await;
}
