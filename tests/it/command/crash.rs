//! A crash in the middle of a group commit. The real `order-command` binary,
//! with its test-only fault hook armed (`ORDERS_FAULT_ABORT_MID_BATCH`),
//! aborts once a batch of several commands has inserted its events but not
//! committed them. Nothing of that batch may survive, nothing acknowledged may
//! be lost, and retrying every request with its request id after a restart
//! applies each command exactly once.

use orders::auth::AuthedChannel;
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use orders::{
    config::KafkaSettings,
    proto::{self, order_commands_client::OrderCommandsClient},
};
use sqlx::PgPool;
use uuid::Uuid;

use super::{connect, line, place};
use crate::support::{self, assert_topic_holds, free_port};

/// The hook aborts in a batch of at least this many commands.
const ABORT_AT: usize = 4;
/// Bursts sent before giving up on seeing the crash.
const MAX_ROUNDS: usize = 10;
/// Orders placed (one at a time, so in batches of one) before the bursts.
const EXISTING: usize = 4;
/// New orders placed per burst.
const PLACES_PER_BURST: usize = 12;
/// Lines added to the existing orders per burst.
const ADDS_PER_BURST: usize = 12;
const SIGABRT: i32 = 6;

/// One command of a burst, kept to be retried with the same request id.
#[derive(Clone)]
enum Call {
    Place(proto::PlaceOrderRequest),
    Add(proto::AddOrderLineRequest),
}

impl Call {
    fn request_id(&self) -> &str {
        match self {
            Call::Place(r) => &r.request_id,
            Call::Add(r) => &r.request_id,
        }
    }

    fn order_id(&self) -> &str {
        match self {
            Call::Place(r) => &r.order_id,
            Call::Add(r) => &r.order_id,
        }
    }

    /// Sends it; the answered version on success.
    async fn send(
        &self,
        client: &mut OrderCommandsClient<AuthedChannel>,
    ) -> Result<u64, tonic::Status> {
        match self.clone() {
            Call::Place(r) => client.place_order(r).await.map(|a| a.into_inner().version),
            Call::Add(r) => client
                .add_order_line(r)
                .await
                .map(|a| a.into_inner().version),
        }
    }
}

fn spawn_command(
    database_url: &str,
    kafka: &KafkaSettings,
    port: u16,
    abort_at: Option<usize>,
    log: &Path,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_order-command"));
    command
        .envs(support::server_env())
        .envs(support::kafka_env(support::KafkaUser::Relay))
        .env("ORDERS_COMMAND_ADDR", format!("127.0.0.1:{port}"))
        .env("ORDERS_WRITE_DATABASE_URL", database_url)
        .env("KAFKA_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .env("ORDERS_TOPIC", &kafka.topic)
        .env(
            "ORDERS_TOPIC_PARTITIONS",
            kafka.topic_partitions.to_string(),
        )
        // One writer task: every command of a burst queues for the same batch.
        .env("ORDERS_WRITERS", "1")
        .env("RUST_LOG", "info,rdkafka=warn,sqlx=warn,h2=warn")
        .env_remove("ORDERS_FAULT_ABORT_MID_BATCH")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(n) = abort_at {
        command.env("ORDERS_FAULT_ABORT_MID_BATCH", n.to_string());
    }
    command.spawn().expect("spawn order-command")
}

/// Waits (bounded) for `child` to exit.
async fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One burst: new orders with client-chosen ids and lines on the existing ones,
/// every command with its own request id.
fn burst(round: usize, existing: &[String]) -> Vec<Call> {
    let places = (0..PLACES_PER_BURST).map(|i| {
        Call::Place(proto::PlaceOrderRequest {
            request_id: format!("crash-place-{round}-{i}"),
            order_id: Uuid::new_v4().to_string(),
            ..place(&format!("burst-{round}-{i}"))
        })
    });
    let adds = (0..ADDS_PER_BURST).map(|i| {
        Call::Add(proto::AddOrderLineRequest {
            request_id: format!("crash-add-{round}-{i}"),
            order_id: existing[i % existing.len()].clone(),
            line: Some(line(&format!("r{round}-p{i}"), 1, 100)),
            ..Default::default()
        })
    });
    places.chain(adds).collect()
}

/// Sends `calls` all at once; each call's outcome, in order.
async fn fire(
    client: &OrderCommandsClient<AuthedChannel>,
    calls: &[Call],
) -> Vec<Result<u64, tonic::Status>> {
    let tasks = calls.iter().cloned().map(|call| {
        let mut client = client.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), call.send(&mut client))
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("test timeout")))
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// (order id, version) of the events stored under each request id.
async fn events_by_request(pool: &PgPool) -> HashMap<String, Vec<(String, u64)>> {
    let rows: Vec<(Option<String>, Uuid, i64)> =
        sqlx::query_as("SELECT request_id, order_id, version FROM events ORDER BY position")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut by_request: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for (request_id, order_id, version) in rows {
        if let Some(request_id) = request_id {
            by_request
                .entry(request_id)
                .or_default()
                .push((order_id.to_string(), version as u64));
        }
    }
    by_request
}

/// Asserts every order's versions run 1, 2, … with no gap; returns each order's version.
async fn assert_contiguous_versions(pool: &PgPool) -> BTreeMap<String, u64> {
    let rows: Vec<(Uuid, Vec<i64>)> = sqlx::query_as(
        "SELECT order_id, array_agg(version ORDER BY version) FROM events GROUP BY order_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(order_id, versions)| {
            let expected: Vec<i64> = (1..=versions.len() as i64).collect();
            assert_eq!(versions, expected, "versions of {order_id} are contiguous");
            (order_id.to_string(), versions.len() as u64)
        })
        .collect()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_commits_nothing_of_the_batch_and_retries_apply_exactly_once() {
    let database_url = support::fresh_database("cmd_crash").await;
    let kafka = support::fresh_kafka("cmd_crash");
    support::create_topic(&kafka).await;
    let log = std::env::temp_dir().join(format!("{}.log", support::unique("order_command_crash")));
    let port = free_port();
    let mut child = spawn_command(&database_url, &kafka, port, Some(ABORT_AT), &log);
    let mut client = connect(port).await;
    let pool = support::pool(&database_url).await;

    // Arrange: orders placed one at a time (batches of one, under the hook's size).
    let mut existing = Vec::new();
    for i in 0..EXISTING {
        let placed = client
            .place_order(proto::PlaceOrderRequest {
                request_id: format!("crash-existing-{i}"),
                ..place(&format!("existing-{i}"))
            })
            .await
            .expect("a lone command is committed")
            .into_inner();
        assert_eq!(placed.version, 1);
        existing.push(placed.order_id);
    }
    let before: Vec<(Uuid, i64, Uuid)> =
        sqlx::query_as("SELECT order_id, version, event_id FROM events ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(before.len(), EXISTING);

    // Act: bursts until one fills a batch of ABORT_AT commands and the process aborts.
    let mut sent: Vec<(Call, Result<u64, tonic::Status>)> = Vec::new();
    let mut status = None;
    for round in 0..MAX_ROUNDS {
        let calls = burst(round, &existing);
        let outcomes = fire(&client, &calls).await;
        let any_failed = outcomes.iter().any(Result::is_err);
        sent.extend(calls.into_iter().zip(outcomes));
        if any_failed {
            status = wait_for_exit(&mut child, Duration::from_secs(10)).await;
            break;
        }
        if let Some(exited) = child.try_wait().unwrap() {
            status = Some(exited);
            break;
        }
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("order-command did not crash within {MAX_ROUNDS} bursts")
    });
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the fault hook aborted the process: {status:?}"
    );

    // Assert: acknowledged means committed, and nothing else of the crashed batch is there.
    let stored = events_by_request(&pool).await;
    let mut missing = 0;
    for (call, outcome) in &sent {
        let events = stored.get(call.request_id()).cloned().unwrap_or_default();
        match outcome {
            Ok(version) => assert_eq!(
                events,
                vec![(call.order_id().to_owned(), *version)],
                "acknowledged {} is committed as answered",
                call.request_id()
            ),
            Err(_) => assert!(
                events.len() <= 1,
                "{} is all or nothing: {events:?}",
                call.request_id()
            ),
        }
        if events.is_empty() {
            missing += 1;
        }
    }
    eprintln!(
        "crash after {} bursts: {} of {} commands acknowledged, {missing} left no event",
        sent.len() / (PLACES_PER_BURST + ADDS_PER_BURST),
        sent.iter().filter(|(_, o)| o.is_ok()).count(),
        sent.len()
    );
    assert!(
        missing >= ABORT_AT,
        "the aborted batch of at least {ABORT_AT} commands left no event ({missing} commands absent)"
    );
    let keys_without_events = count(
        &pool,
        "SELECT count(*) FROM idempotency_keys k \
         WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = k.request_id)",
    )
    .await;
    assert_eq!(
        keys_without_events, 0,
        "no idempotency key of the batch survived"
    );
    let events_without_keys = count(
        &pool,
        "SELECT count(*) FROM events e \
         WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.request_id = e.request_id)",
    )
    .await;
    assert_eq!(events_without_keys, 0, "every committed event kept its key");
    assert_contiguous_versions(&pool).await;
    let still: Vec<(Uuid, i64, Uuid)> = sqlx::query_as(
        "SELECT order_id, version, event_id FROM events WHERE version = 1 AND order_id = ANY($1) \
         ORDER BY position",
    )
    .bind(before.iter().map(|(o, _, _)| *o).collect::<Vec<_>>())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(still, before, "orders placed before the burst are intact");

    // Act: restart without the hook and retry every request with its request id.
    let port = free_port();
    let mut child = spawn_command(&database_url, &kafka, port, None, &log);
    client = connect(port).await;
    let calls: Vec<Call> = sent.iter().map(|(call, _)| call.clone()).collect();
    let retried = fire(&client, &calls).await;

    // Assert: each command applied exactly once; earlier answers repeated.
    let stored = events_by_request(&pool).await;
    for ((call, first), retry) in sent.iter().zip(&retried) {
        let version = *retry
            .as_ref()
            .unwrap_or_else(|e| panic!("retry of {} failed: {e}", call.request_id()));
        if let Ok(first) = first {
            assert_eq!(
                version,
                *first,
                "{} answers as the first time",
                call.request_id()
            );
        }
        assert_eq!(
            stored.get(call.request_id()),
            Some(&vec![(call.order_id().to_owned(), version)]),
            "{} is applied exactly once",
            call.request_id()
        );
    }
    let versions = assert_contiguous_versions(&pool).await;
    let total_events = count(&pool, "SELECT count(*) FROM events").await;
    assert_eq!(total_events as usize, EXISTING + sent.len());
    for order_id in &existing {
        let adds = calls
            .iter()
            .filter(|c| matches!(c, Call::Add(_)) && c.order_id() == order_id)
            .count();
        assert_eq!(versions[order_id], 1 + adds as u64, "{order_id}");
    }

    // Assert: the outbox publishes everything, in per-order version order.
    support::wait_until(Duration::from_secs(30), "the outbox to drain", || async {
        count(&pool, "SELECT count(*) FROM outbox").await == 0
    })
    .await;
    let stored_versions: Vec<(String, u64)> =
        sqlx::query_as::<_, (Uuid, i64)>("SELECT order_id, version FROM events ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(o, v)| (o.to_string(), v as u64))
            .collect();
    assert_topic_holds(&kafka, &stored_versions).await;

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
}
