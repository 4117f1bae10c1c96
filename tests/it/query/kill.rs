//! `kill -9` of the real `order-query` binary mid-stream loses nothing and
//! doubles nothing: the restarted process resumes from the positions stored
//! with the projection.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use orders::{domain::Event, proto, query::read_model::DEFAULT_SCHEMA};

use super::{
    OrderStream, PROJECTED, Produced, Stack, cancelled, connect, expected_order, line_added,
    placed, shipped, without_times,
};
use crate::support;

const ORDERS: usize = 100;
const EVENTS_PER_ORDER: usize = 10;

fn spawn_query(stack: &Stack, port: u16, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_order-query"))
        .envs(support::server_env())
        .envs(support::kafka_env(support::KafkaUser::Query))
        .env("ORDERS_QUERY_ADDR", format!("127.0.0.1:{port}"))
        .env("ORDERS_READ_DATABASE_URL", &stack.database_url)
        .env("KAFKA_BOOTSTRAP_SERVERS", &stack.kafka.bootstrap_servers)
        .env("ORDERS_TOPIC", &stack.kafka.topic)
        .env(
            "ORDERS_TOPIC_PARTITIONS",
            stack.kafka.topic_partitions.to_string(),
        )
        .env("ORDERS_CONSUMER_GROUP", &stack.group)
        .envs(support::query_session_env())
        .env("RUST_LOG", "info,rdkafka=warn,sqlx=warn,h2=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn order-query")
}

/// Ten events per order: placed, seven more lines, then confirmed and shipped
/// (or cancelled).
fn lifecycle(order: &mut OrderStream, i: usize) -> Vec<Produced> {
    let mut events = vec![order.next(placed(&format!("customer-{}", i % 7)))];
    for l in 0..7 {
        events.push(order.next(line_added(
            &format!("sku-{l}"),
            1 + l as u32,
            100 * (l as i64 + 1),
        )));
    }
    events.push(order.next(Event::OrderConfirmed));
    events.push(if i.is_multiple_of(4) {
        order.next(cancelled("changed my mind"))
    } else {
        order.next(shipped(&format!("1Z{i:06}")))
    });
    events
}

async fn history_rows(stack: &Stack) -> i64 {
    stack
        .count(&format!(
            "SELECT count(*) FROM {DEFAULT_SCHEMA}.order_history"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_projects_every_event_exactly_once() {
    let stack = Stack::new("q_kill", 3).await;
    let log = std::env::temp_dir().join(format!("{}.log", support::unique("order_query_kill")));
    let port = support::free_port();
    let mut child = spawn_query(&stack, port, &log);
    connect(port).await;

    // Interleave the orders' events so that every batch touches many orders.
    let mut streams: Vec<OrderStream> = (0..ORDERS).map(|_| OrderStream::new()).collect();
    let per_order: Vec<Vec<Produced>> = streams
        .iter_mut()
        .enumerate()
        .map(|(i, o)| lifecycle(o, i))
        .collect();
    let mut rounds: Vec<Vec<Produced>> = vec![vec![]; EVENTS_PER_ORDER];
    for events in per_order {
        for (round, event) in events.into_iter().enumerate() {
            rounds[round].push(event);
        }
    }
    let all: Vec<Produced> = rounds.concat();
    assert_eq!(all.len(), ORDERS * EVENTS_PER_ORDER);

    // Produce in a steady stream; kill -9 while it flows and the projector works.
    let producing = async {
        for chunk in all.chunks(20) {
            stack.produce(chunk).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let killing = async {
        support::wait_until(PROJECTED, "part of the stream projected", || async {
            history_rows(&stack).await >= 300
        })
        .await;
        child.kill().expect("kill -9");
        child.wait().unwrap();
        history_rows(&stack).await
    };
    let ((), killed_at) = tokio::join!(producing, killing);
    assert!(
        killed_at < all.len() as i64,
        "killed before the end ({killed_at})"
    );

    let restarted = Instant::now();
    let mut child = spawn_query(&stack, port, &log);
    stack.wait_caught_up().await;
    let caught_up = restarted.elapsed();
    let applied_after_restart = all.len() as i64 - killed_at;
    eprintln!(
        "kill test: killed with {killed_at}/{} events projected; the restarted process \
         applied {applied_after_restart} more, caught up {caught_up:?} after restart \
         (includes rejoining the group); log: {}",
        all.len(),
        log.display()
    );

    // Exactly one history row per (order, version), nothing else.
    let per_order: HashMap<String, (i64, i64, i64)> =
        sqlx::query_as::<_, (String, i64, i64, i64)>(&format!(
            "SELECT order_id::text, count(*), min(version), max(version) \
             FROM {DEFAULT_SCHEMA}.order_history GROUP BY order_id"
        ))
        .fetch_all(&stack.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, n, lo, hi)| (id, (n, lo, hi)))
        .collect();
    assert_eq!(per_order.len(), ORDERS);
    for stream in &streams {
        assert_eq!(
            per_order[&stream.id()],
            (EVENTS_PER_ORDER as i64, 1, EVENTS_PER_ORDER as i64),
            "history of {}",
            stream.id()
        );
    }
    assert_eq!(history_rows(&stack).await, all.len() as i64);
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM {DEFAULT_SCHEMA}.pending_event"
            ))
            .await,
        0
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM {DEFAULT_SCHEMA}.dead_letter"
            ))
            .await,
        0
    );

    // Every order equals the fold of what was produced.
    let mut client = connect(port).await;
    for stream in &streams {
        let order = client
            .get_order(proto::GetOrderRequest {
                order_id: stream.id(),
                min_version: Some(EVENTS_PER_ORDER as u64),
                ..Default::default()
            })
            .await
            .expect("projected order")
            .into_inner()
            .order
            .unwrap();
        assert_eq!(without_times(order), expected_order(stream));
    }

    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&log);
}
