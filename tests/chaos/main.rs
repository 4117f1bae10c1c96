//! Failure tests that take the shared broker down. They live in their own test
//! binary because cargo runs test binaries one after another, so no other test
//! ever sees the broker missing; inside this binary they hold one lock.

#[path = "../it/support.rs"]
mod support;

use orders::auth::AuthedChannel;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use orders::{
    command::app::{Application, StartupError},
    config::KafkaSettings,
    proto::{self, order_commands_client::OrderCommandsClient},
    query::{QueryError, app::Application as QueryApp},
};
use tokio::{
    sync::{Mutex, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

static BROKER: Mutex<()> = Mutex::const_new(());

/// The broker's pid file: `ORDERS_CHAOS_KAFKA_PIDFILE`, else the one `scripts/dev` writes.
fn broker_pidfile() -> PathBuf {
    std::env::var_os("ORDERS_CHAOS_KAFKA_PIDFILE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack/run/kafka.pid"),
        PathBuf::from,
    )
}

/// Sends `sig` to the broker (the pid on the pid file's first line).
fn signal_broker(sig: &str) {
    let pidfile = broker_pidfile();
    let text = std::fs::read_to_string(&pidfile).unwrap_or_else(|e| {
        panic!(
            "read {}: {e}; is the stack up (scripts/dev up)?",
            pidfile.display()
        )
    });
    signal(text.lines().next().expect("pid line").trim(), sig);
}

/// Kills the broker with SIGKILL.
fn kill_broker() {
    signal_broker("-9");
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
            .command
            .client
            .place_order(place(i))
            .await
            .expect("accepted before the outage");
    }
    support::wait_until(
        Duration::from_secs(60),
        "the outbox to drain before the outage",
        || async { outbox_len(&stack.command.pool).await == 0 },
    )
    .await;

    kill_broker();
    // The broker stays down for ten seconds while commands keep arriving.
    let outage = tokio::time::Instant::now();
    let mut accepted = 20;
    for i in 20..70 {
        stack
            .command
            .client
            .place_order(place(i))
            .await
            .expect("accepted while the broker is down");
        accepted += 1;
        tokio::time::sleep_until(outage + Duration::from_millis(200) * (i as u32 - 19)).await;
    }
    assert!(
        outbox_len(&stack.command.pool).await > 0,
        "events wait in the outbox during the outage"
    );
    restart_broker();

    support::wait_until(Duration::from_secs(120), "the backlog to drain", || async {
        outbox_len(&stack.command.pool).await == 0
    })
    .await;
    let reader = support::topic_reader(&stack.command.kafka.topic);
    let messages = support::read_messages(&reader, accepted, Duration::from_secs(60)).await;
    let mut keys: Vec<String> = messages.iter().map(support::key_of).collect();
    keys.sort();
    keys.dedup();
    let mut stored: Vec<String> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT order_id FROM events")
            .fetch_all(&stack.command.pool)
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

/// An in-process order-command on a fresh write database and a fresh topic
/// of the shared broker, and a client of it.
struct CommandServer {
    kafka: KafkaSettings,
    /// The write database.
    pool: sqlx::PgPool,
    client: OrderCommandsClient<AuthedChannel>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), StartupError>>,
}

impl CommandServer {
    async fn start(name: &str) -> Self {
        let database_url = support::fresh_database(name).await;
        let kafka = support::fresh_kafka(name);
        support::create_topic(&kafka).await;
        let kafka = support::kafka_as(&kafka, support::KafkaUser::Relay);
        let app = Application::build(support::command_settings(
            database_url.clone(),
            kafka.clone(),
        ))
        .await
        .expect("build order-command");
        let port = app.port();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let client = OrderCommandsClient::with_interceptor(channel, support::bearer());
        Self {
            kafka,
            pool: support::pool(&database_url).await,
            client,
            stop,
            server,
        }
    }

    /// Stops the server and checks that it ran without error.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().expect("order-command ran");
    }
}

/// An order-command and an order-query server in this process, on fresh
/// databases and a fresh topic of the shared broker.
struct ChaosStack {
    command: CommandServer,
    read_pool: sqlx::PgPool,
    /// The projector's consumer session timeout.
    session: Duration,
    stop_query: oneshot::Sender<()>,
    query_server: JoinHandle<Result<(), QueryError>>,
}

impl ChaosStack {
    async fn start(name: &str) -> Self {
        let command = CommandServer::start(name).await;
        let read_url = support::fresh_database(&format!("{name}_read")).await;
        let settings = support::query_settings(
            read_url.clone(),
            command.kafka.clone(),
            support::unique(name),
        );
        let session = Duration::from_millis(settings.consumer.session_timeout_ms.into());
        let query = QueryApp::build(settings).await.expect("build order-query");
        let (stop_query, query_stopped) = oneshot::channel::<()>();
        let query_server = tokio::spawn(query.run_until_stopped(async {
            let _ = query_stopped.await;
        }));
        Self {
            command,
            read_pool: support::pool(&read_url).await,
            session,
            stop_query,
            query_server,
        }
    }

    /// Stops both servers and checks that they ran without error.
    async fn stop(self) {
        let _ = self.stop_query.send(());
        self.query_server.await.unwrap().expect("order-query ran");
        self.command.stop().await;
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
            .command
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
            .command
            .client
            .place_order(place(1_000 + i))
            .await
            .expect("accepted after the outage");
    }
    support::wait_until(
        Duration::from_secs(120),
        "the outbox to drain after the restart",
        || async { outbox_len(&stack.command.pool).await == 0 },
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

/// The group session a spawned query server runs with.
#[derive(Clone, Copy)]
enum Session {
    /// The tests' few seconds.
    Short,
    /// The server's default.
    Default,
}

/// Spawns the real `order-query` binary on `read_url` and the stack's topic,
/// logging to `log`.
fn spawn_query(
    read_url: &str,
    kafka: &KafkaSettings,
    group: &str,
    session: Session,
    log: &Path,
) -> Child {
    let log = std::fs::File::create(log).expect("create the query log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_order-query"));
    command
        .envs(support::server_env())
        .envs(support::kafka_env(support::KafkaUser::Query));
    if let Session::Short = session {
        command.envs(support::query_session_env());
    }
    command
        .env("ORDERS_QUERY_ADDR", "127.0.0.1:0")
        .env("ORDERS_READ_DATABASE_URL", read_url)
        .envs(support::server_env())
        .env("KAFKA_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .env("ORDERS_TOPIC", &kafka.topic)
        .env("ORDERS_CONSUMER_GROUP", group)
        .env(
            "RUST_LOG",
            "info,librdkafka=warn,rdkafka=warn,sqlx=warn,h2=warn",
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn order-query")
}

/// A child process that is killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`-STOP`, `-9`, …) to process `pid` with kill(1).
fn signal(pid: &str, signal: &str) {
    let status = Command::new("kill")
        .args([signal, pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Places orders one after another, about 50 a second, until `stop`; returns how many.
fn keep_placing(
    mut client: OrderCommandsClient<AuthedChannel>,
    first: usize,
    stop: CancellationToken,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut placed = 0;
        while !stop.is_cancelled() {
            client
                .place_order(place(first + placed))
                .await
                .expect("accepted under load");
            placed += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        placed
    })
}

/// What a catch-up test does to the query server while orders keep arriving.
enum Trigger {
    /// Stops its process (SIGSTOP) for twice the group session, then resumes it.
    FreezeProcess,
    /// Kills the broker (kill -9) and restarts it after twice the group session.
    RestartBroker,
    /// Stops the broker's process (SIGSTOP) for twice the group session, then
    /// resumes it: a coordinator that stops answering, as in a long pause.
    PauseBroker,
}

/// Runs the real `order-query` under a steady stream of orders, applies
/// `trigger`, and checks that the projection holds every order within 30 s
/// of the trigger's end. Returns the query server's log.
async fn catches_up_within_30_s_after(name: &str, session: Session, trigger: Trigger) -> String {
    let command = CommandServer::start(name).await;
    let read_url = support::fresh_database(&format!("{name}_read")).await;
    let read_pool = support::pool(&read_url).await;
    let log = std::env::temp_dir().join(format!("{}.log", support::unique(name)));
    eprintln!("order-query logs to {}", log.display());
    let query = Killed(spawn_query(
        &read_url,
        &command.kafka,
        &support::unique(name),
        session,
        &log,
    ));

    let loading = CancellationToken::new();
    let load = keep_placing(command.client.clone(), 10_000, loading.clone());
    support::wait_until(
        Duration::from_secs(60),
        "the projector to apply the first orders",
        || async { projected_orders(&read_pool).await > 0 },
    )
    .await;

    // Twice the tests' short session, whatever the server's.
    let session = Duration::from_millis(support::TEST_SESSION_TIMEOUT_MS.into());
    match trigger {
        // A pause longer than the group session (a stop-the-world pause, a
        // starved CPU): the group drops the member while it cannot answer,
        // and it finds its session gone when it runs again.
        Trigger::FreezeProcess => {
            signal(&query.0.id().to_string(), "-STOP");
            tokio::time::sleep(session * 2).await;
            signal(&query.0.id().to_string(), "-CONT");
        }
        // The coordinator goes away with the group's state in memory; the
        // consumer's session times out while it is down.
        Trigger::RestartBroker => {
            kill_broker();
            tokio::time::sleep(session * 2).await;
            restart_broker();
        }
        Trigger::PauseBroker => {
            signal_broker("-STOP");
            tokio::time::sleep(session * 2).await;
            signal_broker("-CONT");
        }
    }
    let resumed = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    loading.cancel();
    let placed = load.await.expect("load task") as i64;

    let left = Duration::from_secs(30).saturating_sub(resumed.elapsed());
    support::wait_until(
        left,
        "the projection to hold every order within 30 s of the trigger",
        || async { projected_orders(&read_pool).await == placed },
    )
    .await;
    eprintln!(
        "{placed} orders projected {:?} after the trigger",
        resumed.elapsed()
    );
    drop(query);
    command.stop().await;
    std::fs::read_to_string(&log).expect("read the query log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_catches_up_within_30_s_after_its_process_was_frozen_longer_than_its_session()
 {
    let _broker = BROKER.lock().await;
    catches_up_within_30_s_after("chaos_frozen", Session::Short, Trigger::FreezeProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_catches_up_within_30_s_after_the_broker_restarts_under_load() {
    let _broker = BROKER.lock().await;
    catches_up_within_30_s_after("chaos_loaded", Session::Short, Trigger::RestartBroker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_catches_up_within_30_s_after_the_broker_pauses_under_load() {
    let _broker = BROKER.lock().await;
    catches_up_within_30_s_after("chaos_paused", Session::Short, Trigger::PauseBroker).await;
}

/// With the default session a coordinator that stops answering for twelve
/// seconds under load costs the query server nothing: it keeps its
/// partitions (no session time-out, no revoke and rejoin, the
/// `SESSTMOUT` of a loaded benchmark machine) and catches up at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_pause_shorter_than_the_default_session_revokes_nothing() {
    let _broker = BROKER.lock().await;
    let log =
        catches_up_within_30_s_after("chaos_kept", Session::Default, Trigger::PauseBroker).await;
    assert_eq!(
        log.matches("partitions assigned").count(),
        1,
        "assigned once, never again:\n{log}"
    );
    assert!(!log.contains("partitions revoked"), "{log}");
    assert!(!log.contains("SESSTMOUT"), "{log}");
}
